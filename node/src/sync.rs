//! The node's sync runtime: the QUIC endpoint, one driver per connected peer, static peers redialed with backoff,
//! the roster shared by the transport and the sessions, and per-peer status.
//!
//! Each connection runs one [`Session`] (the sans-IO protocol in `zhaowo_crdt::sync`). The driver never touches the
//! database: it batches what happened (frames from the peer, "our catalog grew", a reconciliation tick) into a
//! [`SyncStep`] that the store thread runs inside one transaction, and sends the frames that come back only after that
//! transaction committed. So a peer is never told "I have it" before it is on disk.
//!
//! ```text
//!  reader task ──frames──▶ driver ──SyncStep──▶ store thread (Session + DbReplica, BEGIN … COMMIT)
//!                            ▲  ◀──SyncOutcome (frames, events)──┘
//!  store.subscribe() ────────┘  └──frames──▶ writer task ──▶ QUIC stream
//! ```
//!
//! The hall document (configuration and desk accounts) is synced by the same sessions: the node holds it in memory
//! (`Shared::hall`), each step locks it, and when a peer's admin-signed changes grow it the driver writes
//! `hall.automerge` and `hall.signatures` (so the desk's next sign-in sees a new account) and every driver pushes it to
//! its peer. The admin's CLI writes the same files: the poll loop merges them in and pushes what is new.
//!
//! One sync per peer pair: when two connections to the same key exist (both sides dialed at once), both nodes keep
//! the one dialed by the smaller key and close the other, so they agree without talking.

use crate::home::Home;
use crate::store::{Store, SyncInput, SyncStep};
use crate::transport::{
    Authorizer, CloseCode, FrameReader, FrameWriter, NodeKey, PeerConnection, Transport, TransportConfig,
    TransportError, short_key,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use zhaowo_crdt::hall::SignedHall;
use zhaowo_crdt::roster::{Record, Roster, SignedRecord};
use zhaowo_crdt::sync::{Session, SessionEvent, SyncError};
use zhaowo_crdt::wire::{self, Frame};

/// The first redial of a static peer after a failure: a LAN peer that just restarted is back within a second.
pub const REDIAL_MIN_MS: u64 = 250;
/// Redials back off to this: a laptop away for days costs one handshake attempt every 30 s.
pub const REDIAL_MAX_MS: u64 = 30_000;
/// Every peer gets our whole catalog again this often (full reconciliation, ~50 bytes per document): repairs anything
/// a checkpoint missed without costing a hall LAN anything noticeable.
pub const RECONCILE_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// The roster file and the store's counter are polled this often: picks up a revocation or a case written by the
/// admin's CLI (another process) while the node runs.
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// Frames the reader task buffers ahead of the driver: enough for a step to batch a burst into one transaction.
pub const READ_QUEUE_FRAMES_MAX: usize = 256;
/// Frames handled in one store step (one transaction, one fsync): batching is what makes an initial sync fast;
/// the bound keeps one step short so local commands are not held up behind it.
pub const STEP_FRAMES_MAX: usize = 128;
/// Bytes queued for a peer that does not read: a healthy peer drains a LAN pipe; beyond this the peer is dropped
/// as too slow (it reconnects and resumes from its checkpoint).
pub const WRITE_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Peers shown in the status: static peers plus every member that connected; bounded by the roster anyway.
pub const STATUS_PEERS_MAX: usize = 1_000;

/// How the sync runtime runs. Build it with [`SyncOptions::recommended`].
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The UDP address of the QUIC endpoint (port 0 picks one).
    pub listen: SocketAddr,
    /// Static peers, dialed and redialed forever.
    pub peers: Vec<SocketAddr>,
    pub transport: TransportConfig,
    pub redial_min: Duration,
    pub redial_max: Duration,
    pub reconcile_interval: Duration,
    pub poll_interval: Duration,
    /// The data directory whose roster file and hall document the node keeps up to date (what peers teach is written
    /// to it, what the CLI writes is read from it). `None` keeps the roster in memory only and does not sync the hall
    /// document (tests).
    pub roster_dir: Option<PathBuf>,
}

impl SyncOptions {
    pub fn recommended(listen: SocketAddr, peers: Vec<SocketAddr>) -> SyncOptions {
        SyncOptions {
            listen,
            peers,
            transport: TransportConfig::recommended(),
            redial_min: Duration::from_millis(REDIAL_MIN_MS),
            redial_max: Duration::from_millis(REDIAL_MAX_MS),
            reconcile_interval: Duration::from_millis(RECONCILE_INTERVAL_MS),
            poll_interval: Duration::from_millis(POLL_INTERVAL_MS),
            roster_dir: None,
        }
    }

    /// The options of a node's data directory: its listen address and static peers from the config.
    pub fn of_home(home: &Home) -> SyncOptions {
        let mut options = SyncOptions::recommended(home.config.listen, home.config.peers.clone());
        options.roster_dir = Some(home.dir.clone());
        options
    }
}

/// Why the sync runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncStartError {
    #[error("this node has not joined a hall (no roster): run `zhaowo init` or `zhaowo join` first")]
    NoRoster,
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// What one peer looks like from here, for the desk's sync page, `zhaowo status` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PeerStatus {
    /// The peer's node id (hex); empty for a static address that never answered.
    pub node_id: String,
    pub window: String,
    pub display_name: String,
    pub address: Option<SocketAddr>,
    pub connected: bool,
    /// Wall-clock milliseconds of the last frame received.
    pub last_contact_ms: Option<i64>,
    /// Our documents changed since the peer's last acknowledgement (what it still has to take from us).
    pub docs_behind_peer: u64,
    /// Documents of the peer's catalog we are still syncing.
    pub docs_behind_us: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Changes from this peer refused as forged, unsigned or by a non-member (the peer was dropped each time).
    pub rejected_changes: u64,
    /// Changes by a revoked member the peer relayed, refused per document (the peer was kept).
    pub refused_changes: u64,
    /// Both directions caught up since the connection started.
    pub settled: bool,
    pub last_error: Option<String>,
}

/// Node-wide sync counters.
#[derive(Debug, Default)]
struct Counters {
    rejected_changes: AtomicU64,
    refused_changes: AtomicU64,
    sessions: AtomicU64,
    sessions_failed: AtomicU64,
}

/// A copy of the node-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SyncCounts {
    pub peers_connected: u64,
    pub rejected_changes: u64,
    pub refused_changes: u64,
    pub sessions: u64,
    pub sessions_failed: u64,
    /// The largest `docs_behind_peer` over connected peers: how far the slowest peer lags behind us.
    pub max_docs_behind: u64,
}

/// The roster the transport and the sessions share.
#[derive(Debug)]
struct SharedRoster(RwLock<Roster>);

impl SharedRoster {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Roster> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Roster> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Authorizer for SharedRoster {
    fn is_authorized(&self, node_key: &NodeKey) -> bool {
        self.read().authorized(node_key).is_some()
    }
}

struct Active {
    id: usize,
    dialer: NodeKey,
    connection: PeerConnection,
}

struct Shared {
    store: Arc<Store>,
    transport: Transport,
    our_key: NodeKey,
    roster: Arc<SharedRoster>,
    options: SyncOptions,
    active: Mutex<HashMap<NodeKey, Active>>,
    runtime: tokio::runtime::Handle,
    /// Members being dialed because of a hint (one attempt at a time per member).
    hinted: Mutex<std::collections::HashSet<NodeKey>>,
    status: Mutex<BTreeMap<String, PeerStatus>>,
    counters: Counters,
    shutdown: watch::Sender<bool>,
    /// Bumped when the roster gains records: every driver sends the records to its peer (gossip while connected).
    roster_changed: watch::Sender<u64>,
    /// The hall document and its signatures, when the data directory holds one (see the module docs).
    hall: Option<Arc<Mutex<SignedHall>>>,
    /// Bumped when the hall document grows: every driver pushes what its peer lacks.
    hall_changed: watch::Sender<u64>,
}

fn now_ms() -> i64 {
    crate::home::now_ms()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn update_status(&self, key: &NodeKey, update: impl FnOnce(&mut PeerStatus)) {
        let mut status = lock(&self.status);
        let node_id = crate::home::hex(key);
        if !status.contains_key(&node_id) && status.len() >= STATUS_PEERS_MAX {
            return;
        }
        let entry = status.entry(node_id.clone()).or_insert_with(|| {
            let roster = self.roster.read();
            let enrollment = roster.enrollment(key);
            PeerStatus {
                node_id,
                window: enrollment.map(|e| e.window.clone()).unwrap_or_default(),
                display_name: enrollment.map(|e| e.display_name.clone()).unwrap_or_default(),
                ..PeerStatus::default()
            }
        });
        update(entry);
    }

    /// Adds verified records to the shared roster, writes the roster file, and closes connections of revoked keys.
    fn learn_records(&self, records: Vec<SignedRecord>) {
        let mut revoked = Vec::new();
        let mut added = 0;
        {
            let mut roster = self.roster.write();
            for record in records {
                if let Ok(true) = roster.insert(record.clone()) {
                    added += 1;
                    if let Record::Revocation(revocation) = &record.record {
                        revoked.push(revocation.node_key);
                    }
                }
            }
            if added > 0 {
                self.roster_changed.send_modify(|version| *version += 1);
            }
            if added > 0
                && let Some(dir) = &self.options.roster_dir
                && let Err(error) = Home::write_roster(dir, &roster)
            {
                tracing::error!(%error, "cannot write the roster file");
            }
        }
        // The authorizer already refuses the key (updated above); now close what is live.
        for key in revoked {
            let closed = self.transport.disconnect(&key, CloseCode::Revoked, "revoked by the hall admin");
            tracing::warn!(peer = %short_key(&key), closed, "peer revoked");
            self.update_status(&key, |status| {
                status.connected = false;
                status.last_error = Some("已被管理员吊销".to_owned());
            });
        }
        if added > 0 {
            tracing::info!(added, "roster records learned");
        }
    }

    /// Writes the hall document's files after a peer grew it, and has every driver push it on.
    fn hall_grew(&self) {
        let (Some(hall), Some(dir)) = (&self.hall, &self.options.roster_dir) else { return };
        {
            // Held while writing: two drivers never write the files in the opposite order of their changes.
            let mut hall = lock(hall);
            if let Err(error) = Home::write_signed_hall(dir, &mut hall) {
                tracing::error!(%error, "cannot write the hall document");
            }
        }
        self.hall_changed.send_modify(|version| *version += 1);
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The running sync runtime. Dropping it stops everything; [`SyncNode::shutdown`] says goodbye to peers first.
pub struct SyncNode {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SyncNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncNode").field("me", &short_key(&self.shared.our_key)).finish_non_exhaustive()
    }
}

impl Drop for SyncNode {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A cheap handle for reading status (the HTTP pages hold one).
#[derive(Clone)]
pub struct SyncStatus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SyncStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStatus").finish_non_exhaustive()
    }
}

impl SyncStatus {
    /// Every known peer, by node id.
    pub fn peers(&self) -> Vec<PeerStatus> {
        lock(&self.shared.status).values().cloned().collect()
    }

    pub fn counts(&self) -> SyncCounts {
        let peers = self.peers();
        let counters = &self.shared.counters;
        SyncCounts {
            peers_connected: peers.iter().filter(|p| p.connected).count() as u64,
            rejected_changes: counters.rejected_changes.load(Ordering::Relaxed),
            refused_changes: counters.refused_changes.load(Ordering::Relaxed),
            sessions: counters.sessions.load(Ordering::Relaxed),
            sessions_failed: counters.sessions_failed.load(Ordering::Relaxed),
            max_docs_behind: peers.iter().filter(|p| p.connected).map(|p| p.docs_behind_peer).max().unwrap_or(0),
        }
    }

    /// An address hint for a member (see [`SyncNode::hint`]); callable from discovery callbacks.
    pub fn hint(&self, node_key: NodeKey, addr: SocketAddr) {
        hint(&self.shared, node_key, addr);
    }

    /// The QUIC address peers reach this node at.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.transport.local_addr().ok()
    }
}

impl SyncNode {
    /// Binds the endpoint and starts accepting, dialing the static peers and polling the roster file.
    pub fn start(
        store: Arc<Store>,
        identity: Arc<crate::identity::NodeIdentity>,
        roster: Roster,
        options: SyncOptions,
    ) -> Result<SyncNode, SyncStartError> {
        let our_key = identity.verifying_key().to_bytes();
        let roster = Arc::new(SharedRoster(RwLock::new(roster)));
        let hall = match &options.roster_dir {
            Some(dir) => load_hall(dir, &identity),
            None => None,
        };
        let transport = Transport::bind(options.listen, identity, roster.clone(), options.transport.clone())?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            transport,
            our_key,
            roster,
            options,
            active: Mutex::new(HashMap::new()),
            hinted: Mutex::new(std::collections::HashSet::new()),
            runtime: tokio::runtime::Handle::current(),
            status: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
            shutdown,
            roster_changed: watch::channel(0).0,
            hall: hall.map(|hall| Arc::new(Mutex::new(hall))),
            hall_changed: watch::channel(0).0,
        });
        let span = tracing::info_span!("sync", me = %short_key(&our_key));
        let mut tasks = vec![tokio::spawn(accept_loop(shared.clone()).instrument(span.clone()))];
        for addr in shared.options.peers.clone() {
            tasks.push(tokio::spawn(dial_loop(shared.clone(), addr).instrument(span.clone())));
        }
        if shared.options.roster_dir.is_some() {
            tasks.push(tokio::spawn(roster_poll_loop(shared.clone()).instrument(span)));
        }
        Ok(SyncNode { shared, tasks })
    }

    /// Starts sync for a node's data directory (its config, key and roster).
    pub fn start_home(home: &Home, store: Arc<Store>) -> Result<SyncNode, SyncStartError> {
        let roster = home.roster().cloned().ok_or(SyncStartError::NoRoster)?;
        let identity = Arc::new(crate::identity::NodeIdentity::load(&home.config.key_path()).map_err(|error| {
            SyncStartError::Transport(TransportError::TlsConfig(format!("cannot load the node key: {error}")))
        })?);
        SyncNode::start(store, identity, roster, SyncOptions::of_home(home))
    }

    pub fn status(&self) -> SyncStatus {
        SyncStatus { shared: self.shared.clone() }
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.shared.transport.local_addr()
    }

    pub fn node_key(&self) -> NodeKey {
        self.shared.our_key
    }

    /// Dials a peer once more (in addition to the static peers) and keeps it redialed.
    pub fn add_peer(&mut self, addr: SocketAddr) {
        let span = tracing::info_span!("sync", me = %short_key(&self.shared.our_key));
        self.tasks.push(tokio::spawn(dial_loop(self.shared.clone(), addr).instrument(span)));
    }

    /// An address hint for a member (from mDNS or a peer's peer list): dialed once now unless the member is already
    /// connected, being dialed, not an active member, or this node itself. Repeated hints retry.
    pub fn hint(&self, node_key: NodeKey, addr: SocketAddr) {
        hint(&self.shared, node_key, addr);
    }

    /// Adds roster records (e.g. a revocation issued on this node) as if a peer had sent them.
    pub fn add_roster_records(&self, records: Vec<SignedRecord>) {
        self.shared.learn_records(records);
    }

    /// A copy of the roster as this node knows it now (its own plus what peers gossiped).
    pub fn roster(&self) -> Roster {
        self.shared.roster.read().clone()
    }

    /// The transport, for tests that count connections.
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
    }

    /// Says goodbye to every peer and closes the endpoint.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        // Drivers see the flag, send `Bye` and stop; give them a moment, then close everything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.shared.transport.close().await;
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = shared.transport.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            None => return,
            Some(Ok(connection)) => {
                let shared = shared.clone();
                tokio::spawn(
                    async move { run_connection(shared, connection, false).await }.instrument(tracing::Span::current()),
                );
            }
            Some(Err(error)) => tracing::debug!(%error, "incoming connection refused"),
        }
    }
}

/// Dials a static peer forever: at once, then after a capped exponential backoff whenever the connection fails or
/// ends. While another connection to the same key is live (the peer dialed us), it waits instead of dialing.
async fn dial_loop(shared: Arc<Shared>, addr: SocketAddr) {
    let mut backoff = shared.options.redial_min;
    let mut known_key: Option<NodeKey> = None;
    let mut shutdown = shared.shutdown.subscribe();
    while !shared.is_shutting_down() {
        if let Some(key) = known_key
            && lock(&shared.active).contains_key(&key)
        {
            tokio::select! {
                _ = tokio::time::sleep(shared.options.redial_min) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let dialed = tokio::select! {
            dialed = shared.transport.dial_member(addr) => dialed,
            _ = shutdown.changed() => return,
        };
        match dialed {
            Ok(connection) if connection.peer_key() == shared.our_key => {
                connection.close(CloseCode::Normal, "dialed itself");
                tracing::warn!(%addr, "static peer is this node itself; not dialing it again");
                return;
            }
            Ok(connection) => {
                let key = connection.peer_key();
                known_key = Some(key);
                shared.update_status(&key, |status| status.address = Some(addr));
                let clean = run_connection(shared.clone(), connection, true).await;
                if clean {
                    backoff = shared.options.redial_min;
                }
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "dial failed");
                if let Some(key) = known_key {
                    let text = error.to_string();
                    shared.update_status(&key, |status| status.last_error = Some(text));
                }
            }
        }
        // Jitter from the clock's low bits: two nodes that lost each other at once do not redial in lockstep.
        let jitter = Duration::from_millis((now_ms().unsigned_abs() % 97) * backoff.as_millis() as u64 / 400);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(shared.options.redial_max);
    }
}

/// The hall document of a data directory, with this node's own unsigned changes signed (an admin node from before
/// signed hall changes), or `None` (no hall document, or an unreadable one: the node runs without hall sync).
fn load_hall(dir: &std::path::Path, identity: &crate::identity::NodeIdentity) -> Option<SignedHall> {
    let actor = identity.new_actor().ok()?;
    match Home::read_signed_hall(dir, actor) {
        Ok(Some(mut hall)) => {
            let signer = identity.change_signer();
            if hall.sign_own(&signer.node_key, |hash| (signer.sign)(hash)) > 0
                && let Err(error) = Home::write_signed_hall(dir, &mut hall)
            {
                tracing::error!(%error, "cannot write the hall document");
            }
            Some(hall)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%error, "cannot read the hall document: it is not synced");
            None
        }
    }
}

/// Size and modification time of the hall files: a change means the CLI (or a driver) wrote them.
fn hall_files_stamp(dir: &std::path::Path) -> Vec<Option<(u64, std::time::SystemTime)>> {
    ["hall.automerge", "hall.signatures"]
        .iter()
        .map(|name| std::fs::metadata(dir.join(name)).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
        .collect()
}

/// Merges the hall files into the node's hall document when they changed on disk (the admin's CLI added an account):
/// what is new is pushed to every peer; what the node holds beyond the files (changes a peer sent while the CLI
/// wrote an older copy) is written back.
fn poll_hall_files(shared: &Shared, dir: &std::path::Path, identity_actor: automerge::ActorId) {
    let Some(hall) = &shared.hall else { return };
    let mut on_disk = match Home::read_signed_hall(dir, identity_actor) {
        Ok(Some(on_disk)) => on_disk,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot read the hall document");
            return;
        }
    };
    let disk_heads = on_disk.heads();
    let disk_signatures = on_disk.signatures.len();
    let grew = {
        let mut hall = lock(hall);
        let grew = match hall.merge_local(&mut on_disk) {
            Ok(grew) => grew,
            Err(error) => {
                tracing::warn!(%error, "cannot merge the hall document");
                return;
            }
        };
        let mut heads = hall.heads();
        heads.sort();
        let mut disk_heads = disk_heads;
        disk_heads.sort();
        if (heads != disk_heads || hall.signatures.len() != disk_signatures)
            && let Err(error) = Home::write_signed_hall(dir, &mut hall)
        {
            tracing::error!(%error, "cannot write the hall document");
        }
        grew
    };
    if grew {
        tracing::info!("hall document changed on disk");
        shared.hall_changed.send_modify(|version| *version += 1);
    }
}

async fn roster_poll_loop(shared: Arc<Shared>) {
    let Some(dir) = shared.options.roster_dir.clone() else { return };
    let mut shutdown = shared.shutdown.subscribe();
    let mut interval = tokio::time::interval(shared.options.poll_interval);
    let mut hall_stamp = hall_files_stamp(&dir);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        if shared.hall.is_some() {
            let stamp = hall_files_stamp(&dir);
            if stamp != hall_stamp {
                hall_stamp = stamp;
                let (poll_shared, poll_dir) = (shared.clone(), dir.clone());
                let actor = automerge::ActorId::from(shared.our_key.to_vec());
                let polled = tokio::task::spawn_blocking(move || poll_hall_files(&poll_shared, &poll_dir, actor)).await;
                if polled.is_ok() {
                    // Our own write-back (if any) must not look like a new change next time.
                    hall_stamp = hall_files_stamp(&dir);
                }
            }
        }
        let dir = dir.clone();
        let read = tokio::task::spawn_blocking(move || Home::read_roster_file(&dir)).await;
        match read {
            Ok(Ok(Some(file))) => {
                let digest = shared.roster.read().digest();
                if file.digest() != digest {
                    shared.learn_records(file.records().to_vec());
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the roster file"),
            Err(_) => {}
        }
    }
}

fn hint(shared: &Arc<Shared>, node_key: NodeKey, addr: SocketAddr) {
    if node_key == shared.our_key
        || shared.is_shutting_down()
        || shared.roster.read().authorized(&node_key).is_none()
        || lock(&shared.active).contains_key(&node_key)
        || !lock(&shared.hinted).insert(node_key)
    {
        return;
    }
    let runtime = shared.runtime.clone();
    let shared = shared.clone();
    // Hints may come from a discovery thread outside the runtime: spawn on the node's runtime explicitly.
    runtime.spawn(
        async move {
            match shared.transport.dial(addr, node_key).await {
                Ok(connection) => {
                    shared.update_status(&node_key, |status| status.address = Some(addr));
                    lock(&shared.hinted).remove(&node_key);
                    run_connection(shared.clone(), connection, true).await;
                }
                Err(error) => {
                    tracing::debug!(%addr, %error, "hinted peer did not answer");
                    lock(&shared.hinted).remove(&node_key);
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
}

/// Registers the connection as the one sync with its peer (or drops it, see the module docs). Returns the
/// registration id, or `None` when this connection lost the tie-break.
fn claim(shared: &Shared, connection: &PeerConnection, dialed_by_us: bool) -> Option<usize> {
    let key = connection.peer_key();
    let id = connection.quinn_connection().stable_id();
    let dialer = if dialed_by_us { shared.our_key } else { key };
    let mut active = lock(&shared.active);
    if let Some(existing) = active.get(&key) {
        // Same dialer: a reconnect replacing a connection that died silently. Different dialers: both dialed at
        // once; keep the smaller key's dial on both sides.
        let keep_new = existing.dialer == dialer || dialer == shared.our_key.min(key);
        if !keep_new {
            connection.close(CloseCode::Normal, "duplicate connection");
            return None;
        }
        existing.connection.close(CloseCode::Normal, "replaced by a newer connection");
    }
    active.insert(key, Active { id, dialer, connection: connection.clone() });
    Some(id)
}

/// Runs one connection's session until it ends. Returns whether it ended cleanly (the peer or we closed it in order).
async fn run_connection(shared: Arc<Shared>, connection: PeerConnection, dialed_by_us: bool) -> bool {
    let key = connection.peer_key();
    let span = tracing::info_span!("peer", peer = %short_key(&key), remote = %connection.remote_address());
    async {
        let Some(id) = claim(&shared, &connection, dialed_by_us) else { return true };
        shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
        shared.update_status(&key, |status| {
            status.connected = true;
            status.settled = false;
            status.last_contact_ms = Some(now_ms());
            if dialed_by_us {
                status.address = Some(connection.remote_address());
            }
        });
        let result = drive(&shared, &connection, dialed_by_us).await;
        {
            let mut active = lock(&shared.active);
            if active.get(&key).is_some_and(|active| active.id == id) {
                active.remove(&key);
            }
        }
        let clean = result.is_ok();
        let error = result.err();
        if let Some(error) = &error {
            shared.counters.sessions_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%error, "sync session ended");
        }
        shared.update_status(&key, |status| {
            status.connected = false;
            status.last_error = error;
        });
        clean
    }
    .instrument(span)
    .await
}

async fn reader_task(mut reader: FrameReader, frames: mpsc::Sender<Result<Vec<u8>, TransportError>>) {
    loop {
        match reader.recv_frame().await {
            Ok(Some(frame)) => {
                if frames.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                drop(frames.send(Err(TransportError::StreamClosed)).await);
                return;
            }
            Err(error) => {
                drop(frames.send(Err(error)).await);
                return;
            }
        }
    }
}

async fn writer_task(mut writer: FrameWriter, mut frames: mpsc::UnboundedReceiver<Vec<u8>>, queued: Arc<AtomicUsize>) {
    while let Some(frame) = frames.recv().await {
        let result = writer.send_frame(&frame).await;
        queued.fetch_sub(frame.len(), Ordering::Relaxed);
        if let Err(error) = result {
            tracing::debug!(%error, "cannot write to peer");
            return;
        }
    }
    drop(writer.finish());
}

/// The session loop of one connection. `Err` carries the reason shown in the peer status.
async fn drive(shared: &Arc<Shared>, connection: &PeerConnection, dialed_by_us: bool) -> Result<(), String> {
    let key = connection.peer_key();
    let streams = if dialed_by_us { connection.open_bi().await } else { connection.accept_bi().await };
    let (writer, reader) = streams.map_err(|error| error.to_string())?;
    let (checkpoint, _) = shared.store.checkpoint(key).await.map_err(|error| error.to_string())?;
    let roster = shared.roster.read().clone();
    let mut session = Session::new(shared.our_key, key, checkpoint, &roster);
    drop(roster);

    let (frames_in, mut frames_rx) = mpsc::channel(READ_QUEUE_FRAMES_MAX);
    let reader = tokio::spawn(reader_task(reader, frames_in));
    let (frames_out, frames_out_rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(writer_task(writer, frames_out_rx, queued.clone()));
    let _abort = AbortOnDrop(vec![reader, writer]);
    let send = |frame: Vec<u8>| {
        queued.fetch_add(frame.len(), Ordering::Relaxed);
        shared.update_status(&key, |status| status.bytes_sent += frame.len() as u64);
        frames_out.send(frame).map_err(|_| "the connection closed".to_owned())
    };
    while let Some(frame) = session.poll_transmit() {
        send(frame)?;
    }

    let mut changes = shared.store.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut roster_changed = shared.roster_changed.subscribe();
    let mut hall_changed = shared.hall_changed.subscribe();
    let mut reconcile = tokio::time::interval(shared.options.reconcile_interval);
    reconcile.tick().await;
    let mut poll = tokio::time::interval(shared.options.poll_interval);
    let mut session = Some(session);
    let mut last_behind_count = tokio::time::Instant::now();
    loop {
        let mut inputs = Vec::new();
        tokio::select! {
            frame = frames_rx.recv() => {
                let mut next = frame;
                loop {
                    match next {
                        Some(Ok(frame)) => {
                            shared.update_status(&key, |status| {
                                status.bytes_received += frame.len() as u64;
                                status.last_contact_ms = Some(now_ms());
                            });
                            inputs.push(SyncInput::Frame(frame));
                        }
                        Some(Err(error)) => {
                            if inputs.is_empty() {
                                return closed_reason(error);
                            }
                            break;
                        }
                        None => return Err("the connection closed".to_owned()),
                    }
                    if inputs.len() >= STEP_FRAMES_MAX {
                        break;
                    }
                    match frames_rx.try_recv() {
                        Ok(frame) => next = Some(frame),
                        Err(_) => break,
                    }
                }
            }
            _ = changes.changed() => inputs.push(SyncInput::CatchUp),
            _ = roster_changed.changed() => {
                let records = shared.roster.read().records().to_vec();
                send(wire::encode(&Frame::Roster { records }))?;
                continue;
            }
            _ = hall_changed.changed() => inputs.push(SyncInput::HallPush),
            _ = poll.tick() => inputs.push(SyncInput::CatchUp),
            _ = reconcile.tick() => inputs.push(SyncInput::Reconcile),
            _ = shutdown.changed() => {
                drop(send(Session::bye("the node is shutting down")));
                tokio::time::sleep(Duration::from_millis(20)).await;
                connection.close(CloseCode::Shutdown, "node shutting down");
                return Ok(());
            }
        }
        let step = SyncStep {
            session: session.take().expect("the session is back after every step"),
            peer_key: key,
            roster: shared.roster.read().clone(),
            inputs,
            hall: shared.hall.clone(),
        };
        let outcome = shared.store.sync_step(step).await;
        session = outcome.session;
        if !outcome.new_records.is_empty() {
            shared.learn_records(outcome.new_records);
        }
        if outcome.hall_changed {
            shared.hall_grew();
        }
        for event in outcome.events {
            match event {
                SessionEvent::ChangeRefused { doc_id, reason } => {
                    shared.counters.refused_changes.fetch_add(1, Ordering::Relaxed);
                    shared.update_status(&key, |status| status.refused_changes += 1);
                    tracing::warn!(%doc_id, %reason, "refused a relayed change");
                }
                SessionEvent::Settled => {
                    shared.update_status(&key, |status| status.settled = true);
                    tracing::info!("sync settled");
                    // Tell the peer where we reach the other members: it may not know them (peers' peer lists).
                    let peers: Vec<wire::PeerHint> = lock(&shared.active)
                        .iter()
                        .filter(|(other, _)| **other != key)
                        .take(wire::PEER_HINTS_MAX)
                        .map(|(other, active)| wire::PeerHint {
                            node_key: *other,
                            addr: active.connection.remote_address().to_string(),
                        })
                        .collect();
                    if !peers.is_empty() {
                        send(wire::encode(&Frame::Peers { peers }))?;
                    }
                }
                SessionEvent::PeerHints(hints) => {
                    for peer in hints {
                        if let Ok(addr) = peer.addr.parse::<SocketAddr>() {
                            hint(shared, peer.node_key, addr);
                        }
                    }
                }
                SessionEvent::HallChanged { applied, signatures_learned } => {
                    tracing::info!(applied, signatures_learned, "hall document changed by sync");
                }
                SessionEvent::CheckpointAdvanced { .. }
                | SessionEvent::DocChanged { .. }
                | SessionEvent::RosterChanged { .. } => {}
            }
        }
        if let Some(error) = outcome.storage_error {
            connection.close(CloseCode::Normal, "storage error");
            return Err(error);
        }
        for frame in outcome.frames {
            send(frame)?;
        }
        if let Some(error) = outcome.error {
            if matches!(error, SyncError::RejectedChange(_)) {
                shared.counters.rejected_changes.fetch_add(1, Ordering::Relaxed);
                shared.update_status(&key, |status| status.rejected_changes += 1);
            }
            tracing::warn!(%error, "dropping peer");
            drop(send(Session::bye(&error.to_string())));
            tokio::time::sleep(Duration::from_millis(20)).await;
            let code = match error {
                SyncError::Unauthorized | SyncError::OtherHall => CloseCode::Unauthorized,
                SyncError::Closed(_) => CloseCode::Normal,
                _ => CloseCode::Protocol,
            };
            connection.close(code, &error.to_string());
            return match error {
                SyncError::Closed(reason) => Err(format!("对方关闭了会话：{reason}")),
                other => Err(other.to_string()),
            };
        }
        let Some(current) = &session else { return Err("the store is closed".to_owned()) };
        let behind_us = current.docs_behind() as u64;
        shared.update_status(&key, |status| status.docs_behind_us = behind_us);
        if queued.load(Ordering::Relaxed) > WRITE_QUEUE_BYTES_MAX {
            connection.close(CloseCode::Normal, "peer reads too slowly");
            return Err(format!("the peer did not read {WRITE_QUEUE_BYTES_MAX} queued bytes"));
        }
        // Counting what the peer lacks is a range count over the catalog: at most once per poll interval.
        if last_behind_count.elapsed() >= shared.options.poll_interval {
            last_behind_count = tokio::time::Instant::now();
            if let Ok((_, behind_peer)) = shared.store.checkpoint(key).await {
                shared.update_status(&key, |status| status.docs_behind_peer = behind_peer);
            }
        }
    }
}

fn closed_reason(error: TransportError) -> Result<(), String> {
    match error {
        TransportError::ClosedByPeer { code: Some(CloseCode::Normal | CloseCode::Shutdown), .. } => Ok(()),
        other => Err(other.to_string()),
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
