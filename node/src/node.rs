//! [`Node`]: one running zhaowo node — store, live hall document and roster, sync, HTTP (desk and citizen pages) and
//! optional mDNS discovery — assembled in one place, so `zhaowo run`, `zhaowo demo`, the tests and the examples start
//! the same thing and shut it down the same way (issue 12 §3).
//!
//! ```text
//!  Node::spawn(home, options)
//!    ├─ Store            (its own thread: SQLite, documents, sync steps)
//!    ├─ Live             (hall document + roster, watch channels; writer and poller tasks)
//!    ├─ SyncNode         (QUIC endpoint, accept/dial loops, one driver per peer)
//!    ├─ HTTP task        (desk listener + citizen listener, reading Live for sign-in)
//!    ├─ SMS outbox       (with `[sms]` in node.toml: posts the messages due to the hall's SMS platform)
//!    └─ Discovery        (mDNS thread, opt-in: address hints to the SyncNode)
//!  node.shutdown().await: discovery → sync (bye to peers) → HTTP → Live (pending files written) → store closed
//! ```

use crate::discovery::{Discovery, DiscoveryOptions};
use crate::home::{Home, HomeError};
use crate::http::{HttpOptions, ServeError};
use crate::identity::NodeIdentity;
use crate::live::{Live, LiveError};
use crate::store::Store;
use crate::sync::{SyncNode, SyncOptions, SyncStartError, SyncStatus};
use crate::transport::NodeKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a node runs. Build it with [`NodeOptions::recommended`] and change what a caller needs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The staff desk listener (keep it on loopback: only this PC's browser).
    pub desk: SocketAddr,
    /// The citizen pages and Open311, on the hall LAN address phones reach.
    pub http: SocketAddr,
    /// The citizen pages' address as printed in QR codes (default: `http://` + the bound citizen address).
    pub public_url: Option<String>,
    /// The QUIC endpoint for peers (default: `listen` of the config file).
    pub listen: Option<SocketAddr>,
    /// Dial the static peers of the config file.
    pub config_peers: bool,
    /// Also dial these peers.
    pub peers: Vec<SocketAddr>,
    /// Announce on the LAN and dial members heard of (mDNS, address hints only).
    pub mdns: bool,
    /// Sync tuning: the store's counter, the roster and hall files are polled this often.
    pub poll_interval: Duration,
    /// Sync tuning: redial backoff bounds of static peers.
    pub redial_min: Duration,
    pub redial_max: Duration,
    /// The SMS sender's timing (it runs when `node.toml` has `[sms]`).
    pub outbox: crate::outbox::OutboxTiming,
    /// Tests only: change the material transfer options the node derives from its config (a hostile server, a short
    /// stall timeout).
    #[cfg(feature = "testkit")]
    pub materials: Option<fn(&mut crate::sync::MaterialsOptions)>,
}

impl NodeOptions {
    /// `zhaowo run`'s defaults on these listeners: the config's peers, no mDNS, the sync runtime's intervals.
    pub fn recommended(desk: SocketAddr, http: SocketAddr) -> NodeOptions {
        let sync = SyncOptions::recommended(SocketAddr::from(([0, 0, 0, 0], 0)), Vec::new());
        NodeOptions {
            desk,
            http,
            public_url: None,
            listen: None,
            config_peers: true,
            peers: Vec::new(),
            mdns: false,
            poll_interval: sync.poll_interval,
            redial_min: sync.redial_min,
            redial_max: sync.redial_max,
            outbox: crate::outbox::OutboxTiming::recommended(),
            #[cfg(feature = "testkit")]
            materials: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store, the key or another file of the data directory cannot be opened.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The node key cannot be loaded.
    #[error("failed to load the node key")]
    Key(#[source] crate::identity::IdentityError),
    /// The hall document or the roster cannot be read.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// An HTTP listener cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The sync runtime cannot start (QUIC endpoint).
    #[error("failed to start sync")]
    Sync(#[source] SyncStartError),
}

/// A running node. [`Node::shutdown`] stops it in order; dropping it stops its tasks without the goodbyes.
#[derive(Debug)]
pub struct Node {
    home: Arc<Home>,
    store: Arc<Store>,
    live: Live,
    live_stop: watch::Sender<bool>,
    live_tasks: Vec<tokio::task::JoinHandle<()>>,
    sync: SyncNode,
    discovery: Option<Discovery>,
    http: tokio::task::JoinHandle<Result<(), ServeError>>,
    desk_addr: SocketAddr,
    public_addr: SocketAddr,
    public_url: String,
    warnings: Vec<String>,
}

impl Node {
    /// Opens the store, reads the hall document and roster, binds the HTTP listeners and the QUIC endpoint, and starts
    /// serving and syncing (and announcing, with `mdns`). Must run inside a tokio runtime.
    pub async fn spawn(home: Home, options: NodeOptions) -> Result<Node, NodeError> {
        let identity = Arc::new(NodeIdentity::load(&home.config.key_path()).map_err(NodeError::Key)?);
        let live = Live::open(&home, &identity)?;
        let store = Arc::new(home.open_store()?);
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { addr, source })
        };
        let desk = bind(options.desk).await?;
        let public = bind(options.http).await?;
        let local = |listener: &tokio::net::TcpListener, addr| {
            listener.local_addr().map_err(|source| NodeError::Bind { addr, source })
        };
        let (desk_addr, public_addr) = (local(&desk, options.desk)?, local(&public, options.http)?);
        let public_url = options.public_url.clone().unwrap_or_else(|| format!("http://{public_addr}"));

        let mut sync_options = SyncOptions::recommended(options.listen.unwrap_or(home.config.listen), Vec::new());
        sync_options.roster_dir = Some(home.dir.clone());
        sync_options.poll_interval = options.poll_interval;
        sync_options.redial_min = options.redial_min;
        sync_options.redial_max = options.redial_max;
        // Hall PCs fetch every file their cases name in the background; a laptop only on demand (issue 16 §3).
        let mut materials = crate::sync::MaterialsOptions::recommended(home.blobs()?, home.config.role.is_staff());
        materials.fetch_bytes_per_sec = home.config.materials_fetch_bytes_per_sec;
        materials.fetch_in_flight_max = home.config.materials_fetch_in_flight;
        #[cfg(feature = "testkit")]
        if let Some(adjust) = options.materials {
            adjust(&mut materials);
        }
        sync_options.materials = Some(materials);
        let configured = if options.config_peers { home.config.peers.clone() } else { Vec::new() };
        for peer in configured.into_iter().chain(options.peers.iter().copied()) {
            if !sync_options.peers.contains(&peer) {
                sync_options.peers.push(peer);
            }
        }
        let (live_stop, live_stop_rx) = watch::channel(false);
        let mut live_tasks = live.spawn_tasks(options.poll_interval, live_stop_rx.clone());
        let sync =
            SyncNode::start_live(store.clone(), identity, live.clone(), sync_options).map_err(NodeError::Sync)?;

        let mut warnings = Vec::new();
        let discovery = if options.mdns {
            let status = sync.status();
            let port = sync.local_addr().map_err(|error| NodeError::Sync(error.into()))?.port();
            let discovery_options = DiscoveryOptions::recommended(*live.roster().hall(), sync.node_key(), port);
            // Discovery only adds address hints: a LAN without multicast costs nothing but this warning.
            match Discovery::start(discovery_options, move |key, addr| status.hint(key, addr)) {
                Ok(discovery) => Some(discovery),
                Err(error) => {
                    warnings.push(format!("mDNS discovery is off ({error}); static peers still sync"));
                    None
                }
            }
        } else {
            None
        };

        let home = Arc::new(home);
        if let Some(endpoint) = home.config.sms.clone() {
            let sender =
                crate::outbox::run(store.clone(), live.clone(), endpoint, options.outbox, live_stop_rx.clone());
            live_tasks.push(tokio::spawn(sender));
        }
        live_tasks.push(tokio::spawn(housekeeping_loop(store.clone(), home.clone(), live.clone(), live_stop_rx)));
        let mut http_options = HttpOptions::recommended(desk_addr, public_url.clone());
        http_options.sync = Some(sync.status());
        http_options.live = Some(live.clone());
        http_options.blobs = Some(home.blobs()?);
        let http = tokio::spawn(crate::http::serve_on(home.clone(), store.clone(), desk, public, http_options));
        Ok(Node {
            home,
            store,
            live,
            live_stop,
            live_tasks,
            sync,
            discovery,
            http,
            desk_addr,
            public_addr,
            public_url,
            warnings,
        })
    }

    /// The staff desk's address.
    pub fn desk_addr(&self) -> SocketAddr {
        self.desk_addr
    }

    /// The citizen listener's address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// The citizen pages' base URL (QR codes).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The QUIC address peers reach this node at.
    pub fn sync_addr(&self) -> Option<SocketAddr> {
        self.sync.local_addr().ok()
    }

    pub fn node_key(&self) -> NodeKey {
        self.sync.node_key()
    }

    pub fn home(&self) -> &Arc<Home> {
        &self.home
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The hall document and roster as this node holds them now.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The sync runtime (status, peers, transport counters).
    pub fn sync(&self) -> &SyncNode {
        &self.sync
    }

    pub fn status(&self) -> SyncStatus {
        self.sync.status()
    }

    /// What the node started without (mDNS off), for the operator.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Waits until the HTTP server fails (it does not end otherwise): the error, for the caller to report.
    pub async fn failed(&mut self) -> ServeError {
        match (&mut self.http).await {
            Ok(Err(error)) => error,
            Ok(Ok(())) => {
                ServeError::Serve { addr: self.desk_addr, source: std::io::Error::other("the HTTP server stopped") }
            }
            Err(join) => ServeError::Serve { addr: self.desk_addr, source: std::io::Error::other(join.to_string()) },
        }
    }

    /// Stops in order: discovery says goodbye on the LAN, sync says goodbye to peers, the HTTP listeners close, the
    /// hall and roster files pending are written, and the store closes once its last handle is gone.
    pub async fn shutdown(self) {
        let Node { store, live, live_stop, live_tasks, sync, discovery, http, home, .. } = self;
        if let Some(discovery) = discovery {
            // Blocks for at most a couple of seconds.
            drop(tokio::task::spawn_blocking(move || discovery.shutdown()).await);
        }
        sync.shutdown().await;
        http.abort();
        drop(http.await);
        live_stop.send_replace(true);
        for task in live_tasks {
            drop(task.await);
        }
        drop((live, home));
        // Connections the HTTP server had accepted may still hold the store for a moment; it then closes on drop.
        if let Ok(store) = Arc::try_unwrap(store) {
            store.close();
        }
    }
}

/// How often a running node destroys the case keys it may no longer hold (a volunteer laptop's visits past
/// `seal::VISIT_KEY_DAYS_MAX`), deletes material files no case names (`sweep_materials`) and, on an oversight PC,
/// applies the hall's retention rule; commands and sync destroy keys as they happen, this catches time passing.
pub const KEY_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Purges one retention run makes at most (the next run goes on): bounds the store's work per hour.
pub const RETENTION_PURGES_PER_RUN_MAX: usize = 500;
/// The staff name on the purges the retention rule makes.
pub const RETENTION_STAFF: &str = "系统（保存期限）";

async fn housekeeping_loop(store: Arc<Store>, home: Arc<Home>, live: Live, mut stop: watch::Receiver<bool>) {
    loop {
        sweep_materials(&store, &home).await;
        match store.sweep_keys().await {
            Ok(0) => {}
            Ok(destroyed) => tracing::info!(destroyed, "case keys this node may no longer hold were destroyed"),
            Err(error) => tracing::warn!(%error, "sweeping case keys failed; retrying at the next interval"),
        }
        if home.config.role.is_oversight() {
            let hall = live.hall().hall.clone();
            match purge_expired(&store, &home, &hall, crate::home::now_ms()).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "personal data purged by the hall's retention rule"),
                Err(error) => tracing::warn!(%error, "the retention run failed; retrying at the next interval"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(KEY_SWEEP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Deletes the material files no case names any more (removed materials, purged cases, an attach that crashed before
/// its event) once they are older than `blobs::ORPHAN_GRACE`, and stale partial transfers: at start and hourly.
async fn sweep_materials(store: &Store, home: &Home) {
    let mut wanted = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        match store.blob_refs(&after, 10_000).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                after = page.last().map(|last| last.hash.clone()).unwrap_or_default();
                wanted.extend(page.into_iter().map(|blob| blob.hash));
            }
            Err(error) => {
                tracing::warn!(%error, "reading the material files cases name failed; no sweep this time");
                return;
            }
        }
    }
    let Ok(blobs) = home.blobs() else { return };
    match tokio::task::spawn_blocking(move || blobs.sweep(&wanted, crate::blobs::ORPHAN_GRACE)).await {
        Ok(Ok(report)) if report.orphans + report.partials > 0 => tracing::info!(
            orphans = report.orphans,
            orphan_bytes = report.orphan_bytes,
            partials = report.partials,
            "material files no case names were deleted"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the material sweep failed; retrying at the next interval"),
        Err(_) => tracing::warn!("the material sweep task failed"),
    }
}

/// Why a retention run stopped (the next run starts over).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("reading the cases due failed")]
    Read(#[from] crate::store::ReadError),
    #[error("no context for the purge")]
    Home(#[from] HomeError),
    #[error("purging {case_id} failed")]
    Purge { case_id: String, source: crate::store::WriteError },
}

/// The hall's retention rule (issue 13 §3), as an oversight PC (督查科, admin) applies it: purges the personal data of
/// every case closed more than `hall.retention_days` before `now_ms` (at most [`RETENTION_PURGES_PER_RUN_MAX`]), one
/// signed `PiPurged` event each, which makes every node that learns it destroy the case key. Returns how many.
pub async fn purge_expired(
    store: &Store,
    home: &Home,
    hall: &zhaowo_crdt::Hall,
    now_ms: i64,
) -> Result<usize, RetentionError> {
    let before = now_ms - i64::from(hall.retention_days) * zhaowo_crdt::time::DAY_MS;
    let due = store.retention_due(before, RETENTION_PURGES_PER_RUN_MAX).await?;
    let hall = Arc::new(hall.clone());
    let mut purged = 0;
    for case_id in due {
        let ctx = home.ctx(RETENTION_STAFF)?;
        match store.apply(&case_id, ctx, hall.clone(), zhaowo_crdt::Command::PurgePersonalData).await {
            Ok(_) => purged += 1,
            Err(crate::store::WriteError::Command(zhaowo_crdt::CommandError::Purged)) => {}
            Err(source) => return Err(RetentionError::Purge { case_id, source }),
        }
    }
    Ok(purged)
}
