//! mDNS announcements on the hall LAN, turned into address hints for the sync runtime.
//!
//! Every node registers one DNS-SD service (`_zhaowo._udp.local.`, see [`SERVICE_TYPE`]) whose SRV record carries
//! its QUIC port and whose TXT record says which hall it belongs to (`hall`, the first [`HALL_PREFIX_BYTES`] of the
//! hall key in hex) and who it is (`node`, the 64-hex node key). It also browses the same service type, and for
//! every announcement of the same hall that is not its own calls `on_hint(node_key, addr)` for each announced
//! address, IPv4 first. The sync runtime dials a hinted member once if it is not connected (`SyncNode::hint`).
//!
//! Discovery only ever adds hints. Everything it hears comes from the LAN and proves nothing: the QUIC handshake
//! checks the node key against the roster, so a forged announcement costs at most one failed dial. Multicast only
//! reaches one network segment (not across VLANs, not through Wi-Fi client isolation), so static peers must keep
//! working without it. Malformed announcements (another hall, a bad key, our own) are dropped, and at most
//! [`DISCOVERED_NODES_MAX`] announcements are remembered however many a LAN sends.
//!
//! `mdns-sd` runs its own thread and hands events over a channel, so no second async runtime comes along; this
//! module adds one more thread that turns the events into hints and re-hints remembered nodes every
//! [`DiscoveryOptions::rehint_interval_ms`] (a hint whose dial failed, e.g. because the peer's enrollment had not
//! reached us yet, is retried).
//!
//! Wiring it to a running node (`zhaowo run`): hints go through the cheap [`SyncStatus`](crate::sync::SyncStatus)
//! handle, since the callback runs on the discovery thread and outlives any borrow of the `SyncNode`.
//!
//! ```no_run
//! # async fn example(sync: &zhaowo_node::sync::SyncNode) -> Result<(), Box<dyn std::error::Error>> {
//! use zhaowo_node::discovery::{Discovery, DiscoveryOptions};
//! let status = sync.status();
//! let options = DiscoveryOptions::recommended(*sync.roster().hall(), sync.node_key(), sync.local_addr()?.port());
//! let discovery = Discovery::start(options, move |node_key, addr| status.hint(node_key, addr))?;
//! // … run until asked to stop …
//! discovery.shutdown(); // says goodbye on the LAN (blocks up to ~2 s)
//! # Ok(())
//! # }
//! ```

use crate::transport::{NodeKey, short_key};
use mdns_sd::{DaemonEvent, IfKind, Receiver, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The DNS-SD service type every zhaowo node announces and browses. The name part ("zhaowo") fits the 15-byte
/// limit of RFC 6763 section 7.2.
pub const SERVICE_TYPE: &str = "_zhaowo._udp.local.";
/// The standard mDNS port (RFC 6762). Tests use another one so they never talk to a responder of the host.
pub const MDNS_PORT: u16 = 5353;
/// The TXT record layout this module writes and reads (RFC 6763 section 6.7 `txtvers`); a node that changes the
/// meaning of `hall` or `node` bumps it, and older nodes then ignore its announcements instead of misreading them.
pub const TXT_VERSION: &str = "1";
/// Bytes of the hall key announced in the `hall` TXT property: 64 bits keep halls sharing a LAN apart (a chance
/// collision costs one refused dial, the roster still decides) while keeping the record small.
pub const HALL_PREFIX_BYTES: usize = 8;
/// Announcements remembered at once. A hall has a few dozen window PCs and laptops; this is far beyond any hall
/// yet bounds what a LAN full of forged announcements can make a node hold (~1 KB each at most).
pub const DISCOVERED_NODES_MAX: usize = 1024;
/// Addresses kept per announcement: a PC has one or two per interface; a forged record with hundreds of A records
/// must not turn into hundreds of dials.
pub const ADDRESSES_PER_NODE_MAX: usize = 8;
/// How long [`Discovery::shutdown`] waits for the goodbye packet and for the mDNS daemon to stop, each: both are a
/// local channel round trip, so this only matters when the daemon is stuck.
pub const SHUTDOWN_WAIT_MS: u64 = 1_000;

const _: () = assert!(HALL_PREFIX_BYTES <= 32);
const _: () = assert!(ADDRESSES_PER_NODE_MAX >= 1);

/// TXT property names. Short: the whole record goes out in every announcement.
const TXT_KEY_VERSION: &str = "txtvers";
const TXT_KEY_HALL: &str = "hall";
const TXT_KEY_NODE: &str = "node";

/// Which interfaces mDNS runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryInterfaces {
    /// Every interface that is up, the hall LAN included: what a node uses.
    All,
    /// IPv4 loopback only, so nothing leaves the machine: what tests use.
    Loopback,
}

/// How discovery runs. Build it with [`DiscoveryOptions::recommended`].
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// The DNS-SD service type announced and browsed ([`SERVICE_TYPE`]).
    pub service_type: String,
    /// The hall this node belongs to (the roster's hall key): announcements of other halls are ignored.
    pub hall_id: [u8; 32],
    /// This node's key, announced in TXT `node`; our own announcement is never hinted.
    pub node_key: NodeKey,
    /// The UDP port of this node's QUIC endpoint, announced in the SRV record.
    pub port: u16,
    /// The UDP port mDNS itself uses ([`MDNS_PORT`] on a LAN).
    pub mdns_port: u16,
    /// Which interfaces announce and listen.
    pub interfaces: DiscoveryInterfaces,
    /// Every remembered node is hinted again this often: retries a dial that failed, cheap when connected (the
    /// sync runtime ignores hints for connected peers).
    pub rehint_interval_ms: u64,
    /// The service type is queried afresh this often. `mdns-sd` backs its queries off to one an hour (RFC 6762
    /// section 5.2); a PC whose cable came back after its records expired would otherwise stay unheard that long.
    pub browse_interval_ms: u64,
}

impl DiscoveryOptions {
    /// The settings of a node on a hall LAN.
    pub fn recommended(hall_id: [u8; 32], node_key: NodeKey, port: u16) -> DiscoveryOptions {
        DiscoveryOptions {
            service_type: SERVICE_TYPE.to_owned(),
            hall_id,
            node_key,
            port,
            mdns_port: MDNS_PORT,
            interfaces: DiscoveryInterfaces::All,
            // Half a minute: a member enrolled a moment ago is dialed soon after its record reaches us.
            rehint_interval_ms: 30_000,
            // One small query a minute per node is nothing on a LAN of a few dozen PCs.
            browse_interval_ms: 60_000,
        }
    }

    /// The DNS-SD instance name: `zhaowo-` and the node's short key, unique per node without naming the PC.
    pub fn instance_name(&self) -> String {
        format!("zhaowo-{}", short_key(&self.node_key))
    }

    /// The mDNS host name the address records are published under (one per node, so two nodes never fight over
    /// one name).
    pub fn host_name(&self) -> String {
        format!("{}.local.", self.instance_name())
    }

    /// The `hall` TXT value: hex of the first [`HALL_PREFIX_BYTES`] of the hall key.
    pub fn hall_prefix_hex(&self) -> String {
        hex_encode(&self.hall_id[..HALL_PREFIX_BYTES])
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// An interval of 0 would spin the discovery thread.
    #[error("discovery interval `{name}` must be positive")]
    ZeroInterval { name: &'static str },
    /// The mDNS daemon thread or its channels could not be created.
    #[error("cannot start the mDNS daemon")]
    Daemon(#[source] mdns_sd::Error),
    /// The service type or instance was refused (e.g. the type does not end in `._udp.local.`).
    #[error("invalid mDNS service `{service_type}`")]
    Service {
        service_type: String,
        #[source]
        source: mdns_sd::Error,
    },
    /// The daemon refused a command (its command queue is full or it stopped).
    #[error("the mDNS daemon refused a command")]
    Command(#[source] mdns_sd::Error),
    /// The thread that turns announcements into hints could not be spawned.
    #[error("cannot spawn the discovery thread")]
    Thread(#[source] std::io::Error),
}

/// Why an announcement heard on the LAN was not turned into hints. Logged at debug level only: a LAN can send any
/// number of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementRefused {
    /// `txtvers` is missing or not [`TXT_VERSION`].
    #[error("unknown TXT version")]
    Version,
    /// `hall` is missing or not `2 * HALL_PREFIX_BYTES` hex digits.
    #[error("malformed hall property")]
    MalformedHall,
    /// `hall` names another hall sharing the LAN.
    #[error("another hall")]
    OtherHall,
    /// `node` is missing or not 64 hex digits.
    #[error("malformed node property")]
    MalformedNode,
    /// The announcement is our own (heard back through multicast loopback).
    #[error("our own announcement")]
    Ourselves,
    /// The SRV record says port 0.
    #[error("port 0")]
    NoPort,
    /// No usable address came with the announcement.
    #[error("no usable address")]
    NoAddress,
}

/// Reads the TXT properties of an announcement (raw values, `None` when absent) and returns the announced node key
/// if it is a node of our hall other than us. Never panics and allocates nothing: the values come from the LAN.
pub fn announced_node_key(
    version: Option<&[u8]>,
    hall: Option<&[u8]>,
    node: Option<&[u8]>,
    hall_id: &[u8; 32],
    our_key: &NodeKey,
) -> Result<NodeKey, AnnouncementRefused> {
    if version != Some(TXT_VERSION.as_bytes()) {
        return Err(AnnouncementRefused::Version);
    }
    let hall = hex_decode::<HALL_PREFIX_BYTES>(hall.ok_or(AnnouncementRefused::MalformedHall)?)
        .ok_or(AnnouncementRefused::MalformedHall)?;
    if hall[..] != hall_id[..HALL_PREFIX_BYTES] {
        return Err(AnnouncementRefused::OtherHall);
    }
    let node_key =
        hex_decode::<32>(node.ok_or(AnnouncementRefused::MalformedNode)?).ok_or(AnnouncementRefused::MalformedNode)?;
    if node_key == *our_key {
        return Err(AnnouncementRefused::Ourselves);
    }
    Ok(node_key)
}

/// Orders announced addresses for dialing and caps them: IPv4 first (every hall LAN has it, and a QUIC endpoint
/// bound to `0.0.0.0` only answers there), then global IPv6, then link-local IPv6 with its interface as scope.
/// Unspecified and multicast addresses are dropped.
pub fn dial_addresses(ips: impl IntoIterator<Item = (IpAddr, u32)>, port: u16) -> Vec<SocketAddr> {
    let mut addresses: Vec<(u8, SocketAddr)> = Vec::new();
    for (ip, interface_index) in ips {
        if ip.is_unspecified() || ip.is_multicast() {
            continue;
        }
        let ranked = match ip {
            IpAddr::V4(ip) => (0, SocketAddr::V4(SocketAddrV4::new(ip, port))),
            IpAddr::V6(ip) if ip.is_unicast_link_local() => {
                (2, SocketAddr::V6(SocketAddrV6::new(ip, port, 0, interface_index)))
            }
            IpAddr::V6(ip) => (1, SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))),
        };
        addresses.push(ranked);
        // Bounded while collecting: the input is as long as a LAN packet makes it.
        if addresses.len() >= ADDRESSES_PER_NODE_MAX * 4 {
            break;
        }
    }
    addresses.sort();
    addresses.dedup();
    addresses.truncate(ADDRESSES_PER_NODE_MAX);
    addresses.into_iter().map(|(_, address)| address).collect()
}

/// Running discovery: our service registered, the service type browsed, hints flowing to the callback.
/// Dropping it (or [`Discovery::shutdown`]) unregisters the service and stops the daemon and the thread.
pub struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: bool,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("fullname", &self.fullname).finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts the mDNS daemon, registers this node's service and browses for the others. `on_hint` runs on the
    /// discovery thread: keep it quick (the daemon drops a browse whose events are not drained).
    pub fn start(
        options: DiscoveryOptions,
        on_hint: impl Fn(NodeKey, SocketAddr) + Send + Sync + 'static,
    ) -> Result<Discovery, DiscoveryError> {
        if options.rehint_interval_ms == 0 {
            return Err(DiscoveryError::ZeroInterval { name: "rehint_interval_ms" });
        }
        if options.browse_interval_ms == 0 {
            return Err(DiscoveryError::ZeroInterval { name: "browse_interval_ms" });
        }
        let service_error = |source| DiscoveryError::Service { service_type: options.service_type.clone(), source };
        let properties = [
            (TXT_KEY_VERSION, TXT_VERSION.to_owned()),
            (TXT_KEY_HALL, options.hall_prefix_hex()),
            (TXT_KEY_NODE, hex_encode(&options.node_key)),
        ];
        // No addresses given: `enable_addr_auto` publishes each interface's own addresses on that interface and
        // follows them when DHCP changes them.
        let mut service = ServiceInfo::new(
            &options.service_type,
            &options.instance_name(),
            &options.host_name(),
            "",
            options.port,
            &properties[..],
        )
        .map_err(service_error)?
        .enable_addr_auto();
        let daemon = ServiceDaemon::new_with_port(options.mdns_port).map_err(DiscoveryError::Daemon)?;
        // From here on the daemon thread runs: stop it on every error path.
        let started = (|| {
            if options.interfaces == DiscoveryInterfaces::Loopback {
                daemon.disable_interface(IfKind::All).map_err(DiscoveryError::Command)?;
                daemon.enable_interface(IfKind::LoopbackV4).map_err(DiscoveryError::Command)?;
                service.set_interfaces(vec![IfKind::LoopbackV4]);
            }
            let monitor = daemon.monitor().map_err(DiscoveryError::Command)?;
            let fullname = service.get_fullname().to_owned();
            daemon.register(service).map_err(service_error)?;
            let events = daemon.browse(&options.service_type).map_err(service_error)?;
            Ok((fullname, monitor, events))
        })();
        let (fullname, monitor, events) = match started {
            Ok(started) => started,
            Err(error) => {
                let _ = daemon.shutdown();
                return Err(error);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!("discovery", me = %short_key(&options.node_key));
        let browser = Browser {
            now_rehint: Instant::now() + Duration::from_millis(options.rehint_interval_ms),
            now_browse: Instant::now() + Duration::from_millis(options.browse_interval_ms),
            options,
            daemon: daemon.clone(),
            events,
            monitor,
            on_hint: Box::new(on_hint),
            nodes: BTreeMap::new(),
            stop: stop.clone(),
            round: 0,
        };
        let thread = std::thread::Builder::new()
            .name("zhaowo-discovery".to_owned())
            .spawn(move || span.in_scope(|| browser.run()))
            .map_err(|error| {
                let _ = daemon.shutdown();
                DiscoveryError::Thread(error)
            })?;
        tracing::debug!(%fullname, "mDNS service registered");
        Ok(Discovery { daemon, fullname, stop, thread: Some(thread), stopped: false })
    }

    /// The DNS-SD full name this node announces (`zhaowo-….​_zhaowo._udp.local.`).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Says goodbye on the LAN (so peers drop our record now instead of at its TTL), stops the daemon and waits for
    /// the discovery thread. Blocks up to about `2 * SHUTDOWN_WAIT_MS`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.stop.store(true, Ordering::Relaxed);
        let wait = Duration::from_millis(SHUTDOWN_WAIT_MS);
        if let Ok(unregistered) = self.daemon.unregister(&self.fullname) {
            let _ = unregistered.recv_timeout(wait);
        }
        // When the daemon stops it drops our browse channel, which wakes and ends the discovery thread. If the
        // daemon did not confirm, the thread is left to notice the stop flag at its next timer.
        let daemon_stopped = match self.daemon.shutdown() {
            Ok(status) => status.recv_timeout(wait).is_ok(),
            Err(mdns_sd::Error::DaemonShutdown) => true,
            Err(_) => false,
        };
        if let Some(thread) = self.thread.take()
            && daemon_stopped
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One remembered announcement.
#[derive(Debug)]
struct Discovered {
    node_key: NodeKey,
    addresses: Vec<SocketAddr>,
}

/// The discovery thread's state: turns daemon events into hints.
struct Browser {
    options: DiscoveryOptions,
    daemon: ServiceDaemon,
    events: Receiver<ServiceEvent>,
    monitor: Receiver<DaemonEvent>,
    on_hint: Box<dyn Fn(NodeKey, SocketAddr) + Send + Sync>,
    /// Keyed by DNS-SD full name, as removals name them. At most `DISCOVERED_NODES_MAX` entries.
    nodes: BTreeMap<String, Discovered>,
    stop: Arc<AtomicBool>,
    now_rehint: Instant,
    now_browse: Instant,
    /// Rehint rounds so far: each round starts at another address, so one dead address is not retried forever.
    round: usize,
}

impl Browser {
    fn run(mut self) {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let deadline = self.now_rehint.min(self.now_browse);
            match self.events.recv_deadline(deadline) {
                Ok(event) => self.handle_event(event),
                Err(mdns_sd::RecvTimeoutError::Timeout) => {}
                // The daemon stopped (shutdown, or it died): nothing more will come.
                Err(mdns_sd::RecvTimeoutError::Disconnected) => return,
            }
            self.drain_monitor();
            let now = Instant::now();
            if now >= self.now_rehint {
                self.rehint();
                self.now_rehint = now + Duration::from_millis(self.options.rehint_interval_ms);
            }
            if now >= self.now_browse && !self.stop.load(Ordering::Relaxed) {
                // Browsing again replaces the old channel (the daemon drops its sender) and restarts the query
                // backoff; the daemon replays what it has cached, which only refreshes `nodes`.
                match self.daemon.browse(&self.options.service_type) {
                    Ok(events) => self.events = events,
                    Err(mdns_sd::Error::DaemonShutdown) => return,
                    Err(error) => tracing::debug!(%error, "mDNS browse not restarted"),
                }
                self.now_browse = now + Duration::from_millis(self.options.browse_interval_ms);
            }
        }
    }

    fn drain_monitor(&self) {
        while let Ok(event) = self.monitor.try_recv() {
            if let DaemonEvent::Error(error) = event {
                tracing::warn!(%error, "mDNS daemon error");
            }
        }
    }

    fn handle_event(&mut self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                if !resolved.ty_domain.eq_ignore_ascii_case(&self.options.service_type) {
                    return;
                }
                match self.parse(&resolved) {
                    Ok(discovered) => self.remember(resolved.fullname.clone(), discovered),
                    Err(refused) => {
                        if refused != AnnouncementRefused::Ourselves {
                            tracing::debug!(fullname = %resolved.fullname, %refused, "mDNS announcement ignored");
                        }
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Some(gone) = self.nodes.remove(&fullname) {
                    tracing::debug!(node = %short_key(&gone.node_key), "mDNS announcement withdrawn");
                }
            }
            _ => {}
        }
    }

    fn parse(&self, resolved: &ResolvedService) -> Result<Discovered, AnnouncementRefused> {
        let property = |key: &str| resolved.get_property_val(key).flatten();
        let node_key = announced_node_key(
            property(TXT_KEY_VERSION),
            property(TXT_KEY_HALL),
            property(TXT_KEY_NODE),
            &self.options.hall_id,
            &self.options.node_key,
        )?;
        if resolved.port == 0 {
            return Err(AnnouncementRefused::NoPort);
        }
        let ips = resolved.addresses.iter().map(|ip| match ip {
            ScopedIp::V6(v6) => (IpAddr::V6(*v6.addr()), v6.scope_id().index),
            other => (other.to_ip_addr(), 0),
        });
        let addresses = dial_addresses(ips, resolved.port);
        if addresses.is_empty() {
            return Err(AnnouncementRefused::NoAddress);
        }
        Ok(Discovered { node_key, addresses })
    }

    fn remember(&mut self, fullname: String, discovered: Discovered) {
        let is_new = !self.nodes.contains_key(&fullname);
        if is_new && self.nodes.len() >= DISCOVERED_NODES_MAX {
            tracing::debug!(%fullname, "mDNS announcement ignored: too many remembered");
            return;
        }
        if is_new {
            let (node, addr) = (short_key(&discovered.node_key), discovered.addresses[0]);
            tracing::info!(%node, %addr, "member announced on the LAN");
        }
        for address in &discovered.addresses {
            (self.on_hint)(discovered.node_key, *address);
        }
        self.nodes.insert(fullname, discovered);
    }

    fn rehint(&mut self) {
        self.round = self.round.wrapping_add(1);
        for known in self.nodes.values() {
            let n = known.addresses.len();
            for i in 0..n {
                (self.on_hint)(known.node_key, known.addresses[(self.round % n + i) % n]);
            }
        }
    }
}

use zhaowo_crdt::ids::hex_encode;

/// Decodes exactly `2 * N` hex digits (either case); anything else is `None`.
fn hex_decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    zhaowo_crdt::ids::hex_decode(std::str::from_utf8(text).ok()?)?.try_into().ok()
}
