//! The node's QUIC transport: one UDP port for dialing and accepting, every connection mutually authenticated by
//! node keys and authorized by the roster, framed streams with hard limits.
//!
//! # What "connected" means
//!
//! A [`PeerConnection`] is only handed out once all of this held, in order:
//! 1. TLS 1.3 with ed25519 raw public keys on both sides (see [`tls`]); the dialer's verifier accepts only the key it
//!    asked for (encoded in the TLS server name), the acceptor's verifier asks the [`Authorizer`].
//! 2. After the handshake, on both sides, the ALPN is [`ALPN`] and the [`Authorizer`] is asked *again* with the key from
//!    `peer_identity()`: TLS session resumption skips the verifiers, so without this a revoked key would get back in.
//! 3. The hello exchange on the first bidirectional stream: the dialer sends a hello frame (protocol version + its key),
//!    the acceptor checks it and answers with its own. QUIC lets the dialer finish its handshake before the acceptor
//!    has checked the dialer's key, so the dialer treats the connection as authorized only once the acceptor's hello
//!    has arrived.
//!
//! A connection beyond [`TransportConfig::connections_max`] is refused before its handshake; a peer key with more than
//! [`TransportConfig::connections_per_peer_max`] live connections is closed after it. On revocation the roster calls
//! [`Transport::disconnect`], which closes every live connection of the key.
//!
//! # API
//!
//! ```no_run
//! # async fn example(identity: std::sync::Arc<zhaowo_node::identity::NodeIdentity>, peer_key: [u8; 32]) -> Result<(), zhaowo_node::transport::TransportError> {
//! use zhaowo_node::transport::{Transport, TransportConfig, WIRE_VERSION};
//! let roster = std::sync::Arc::new(move |key: &[u8; 32]| *key == peer_key);
//! let transport = Transport::bind("0.0.0.0:7411".parse().unwrap(), identity, roster, TransportConfig::recommended())?;
//! let peer = transport.dial("192.168.1.20:7411".parse().unwrap(), peer_key).await?;
//! let (mut writer, mut reader) = peer.open_bi().await?;
//! writer.send_frame(&[WIRE_VERSION, 42]).await?;
//! let reply = reader.recv_frame().await?;
//! # drop(reply);
//! // Elsewhere: `while let Some(result) = transport.accept().await { .. }` hands out accepted peers.
//! transport.close().await;
//! # Ok(()) }
//! ```
//!
//! The sync layer drives everything above the frames; this module makes no protocol decisions beyond the hello.

/// A fault-injecting UDP socket for tests (the `testkit` feature: never in a production build).
#[cfg(feature = "testkit")]
pub mod faults;
pub mod frame;
pub mod tls;

pub use frame::{FRAME_BYTES_MAX, FRAME_HEADER_BYTES, FrameReader, FrameWriter, WIRE_VERSION};

use crate::identity::NodeIdentity;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// A node key: the 32 bytes of its ed25519 public key.
pub type NodeKey = [u8; 32];
/// Bytes of a node key.
pub const NODE_KEY_BYTES: usize = 32;
/// The only application protocol a zhaowo node speaks.
pub const ALPN: &[u8] = b"zhaowo/1";
/// The hello's protocol version: bumped when the meaning of the frames after the hello changes.
pub const PROTOCOL_VERSION: u16 = 1;
/// The hello's tag, after the wire version byte.
const HELLO_TAG: u8 = b'H';
/// A hello payload: wire version, tag, protocol version (u16 BE), node key.
const HELLO_BYTES: usize = 1 + 1 + 2 + NODE_KEY_BYTES;

/// A lost first packet is resent after about three initial RTTs: quinn's default 333 ms turns one lost handshake
/// packet into ~1 s; 20 ms is generous for a hall LAN (sub-millisecond RTTs) and brings the worst case to ~0.14 s.
pub const INITIAL_RTT_MS: u64 = 20;
/// A silent peer (cable pulled, laptop lid closed) is declared gone after 20 s: long enough to ride out a Wi-Fi
/// roam, short enough that the desk's sync status is not stale for long.
pub const IDLE_TIMEOUT_MS: u64 = 20_000;
/// Keep-alive pings every 5 s, well below the idle timeout (4 pings per timeout), so an idle but healthy connection
/// never times out and NAT-less LAN switches keep their tables warm.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 5_000;
/// TLS handshake plus hello must finish in 5 s: ~2 ms on a LAN, so this only trips on a peer that stalls on purpose
/// or a network so lossy that sync would not work anyway.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Once a frame has started it must arrive whole within 10 s: [`FRAME_BYTES_MAX`] in 10 s is 0.4 MB/s, which any
/// hall LAN or Wi-Fi sustains, so only a stalling (slowloris) peer is cut off.
pub const FRAME_TIMEOUT_MS: u64 = 10_000;
/// 4 MiB UDP send and receive buffers: the kernel default (~208 KiB) dropped packets under sync bursts. The kernel
/// caps the value at `net.core.rmem_max`/`wmem_max`; [`Transport::udp_buffer_bytes`] reports what it granted.
pub const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Concurrent bidirectional streams a peer may open: the sync layer runs per-document syncs with bounded concurrency
/// (a few dozen), and each open stream may buffer up to a frame.
pub const STREAMS_BIDI_MAX: u32 = 64;
/// Live plus handshaking connections: a hall has a few dozen window PCs and laptops; 64 leaves room for reconnects
/// overlapping the old connection and refuses a flood before it costs handshakes.
pub const CONNECTIONS_MAX: usize = 64;
/// Live connections of one peer key: one is normal, a second overlaps while a reconnect replaces a dead one, a few
/// more cover both sides dialing at once. More is a broken or hostile peer.
pub const CONNECTIONS_PER_PEER_MAX: usize = 4;
/// Accepted connections not yet taken by [`Transport::accept`]: beyond this, handshake tasks wait for the caller.
const ACCEPT_QUEUE_MAX: usize = 16;

/// Why the transport (or one connection, or one stream) failed. Everything a peer can cause is here; nothing panics.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be created, tuned or bound.
    #[error("cannot bind the QUIC endpoint to {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The TLS configuration could not be built: a setup bug, not peer input.
    #[error("invalid TLS configuration: {0}")]
    TlsConfig(String),
    /// The transport configuration is inconsistent.
    #[error("invalid transport configuration: {0}")]
    Config(&'static str),
    /// quinn would not start the dial (invalid address or server name, endpoint closing).
    #[error("cannot dial {addr}")]
    Connect { addr: SocketAddr, source: quinn::ConnectError },
    /// The QUIC connection failed or was lost: TLS rejection (unknown key, wrong ALPN), timeout, refusal.
    #[error("connection failed: {0}")]
    Connection(quinn::ConnectionError),
    /// The peer closed the connection with an application close code (see [`CloseCode`]).
    #[error("peer closed the connection ({}): {reason}", .code.map_or("unknown code", CloseCode::name))]
    ClosedByPeer { code: Option<CloseCode>, reason: String },
    /// The TLS handshake and the hello did not finish within the handshake timeout.
    #[error("handshake did not finish within {timeout_ms} ms")]
    HandshakeTimeout { timeout_ms: u64 },
    /// The roster does not authorize the peer's key (checked after the handshake, which resumption may shortcut).
    #[error("peer {} is refused: {}", short_key(.peer), .refusal.describe_for_us())]
    Unauthorized { peer: NodeKey, refusal: Refusal },
    /// The peer's TLS identity is missing or is not a single ed25519 raw public key.
    #[error("peer presented no ed25519 raw public key")]
    PeerIdentity,
    /// The peer negotiated no ALPN or another one than `zhaowo/1`.
    #[error("peer negotiated ALPN {alpn:?}, expected `zhaowo/1`")]
    WrongAlpn { alpn: Option<String> },
    /// The peer's key is not the one the dial expected, or its hello names another key than its TLS identity.
    #[error("peer identity mismatch: {what}")]
    IdentityMismatch { what: &'static str },
    /// The peer's hello is malformed or of another protocol version.
    #[error("bad hello: {reason}")]
    Hello { reason: String },
    /// A connection limit was reached; `scope` is `node` (all connections) or `peer` (one key).
    #[error("too many connections ({scope} limit {limit})")]
    TooManyConnections { scope: &'static str, limit: usize },
    /// A frame announced more than [`FRAME_BYTES_MAX`] bytes; nothing was allocated for it.
    #[error("frame of {length} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { length: usize, max: usize },
    /// A frame had no payload (not even the version byte).
    #[error("empty frame")]
    FrameEmpty,
    /// A frame's first byte is not the wire version this node speaks.
    #[error("frame has wire version {version}, expected {expected}")]
    WireVersion { version: u8, expected: u8 },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    FrameTruncated,
    /// A started frame did not arrive whole within the frame timeout (a stalled or slowloris peer).
    #[error("frame did not arrive within {timeout_ms} ms")]
    FrameTimeout { timeout_ms: u64 },
    /// Reading a stream failed (reset by the peer, connection lost).
    #[error("cannot read from stream: {0}")]
    Read(quinn::ReadError),
    /// Writing a stream failed (stopped by the peer, connection lost).
    #[error("cannot write to stream: {0}")]
    Write(quinn::WriteError),
    /// The stream was already finished or reset.
    #[error("stream already closed")]
    StreamClosed,
    /// The transport has been closed.
    #[error("transport closed")]
    Closed,
}

impl From<quinn::ConnectionError> for TransportError {
    /// Singles out the peer's application close ([`TransportError::ClosedByPeer`]).
    fn from(error: quinn::ConnectionError) -> TransportError {
        TransportError::from_connection(error)
    }
}

impl TransportError {
    /// The application close code the peer sent, if the peer closed the connection with one.
    pub fn peer_close_code(&self) -> Option<CloseCode> {
        match self {
            TransportError::ClosedByPeer { code, .. } => *code,
            _ => None,
        }
    }

    /// Why a dial or a connection was refused, whichever side refused (issue 14 §5): the peer's close code (it does
    /// not let this node in: not enrolled, revoked, another protocol version), or this node's own roster check of
    /// the peer (the dialed node is no member of this node's hall). `None` for every other failure.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            TransportError::ClosedByPeer { code: Some(code), .. } => match code {
                CloseCode::Unauthorized => Some(Refusal::NotEnrolled),
                CloseCode::Revoked => Some(Refusal::Revoked),
                CloseCode::OtherHall => Some(Refusal::OtherHall),
                CloseCode::Version => Some(Refusal::Version),
                _ => None,
            },
            TransportError::Unauthorized { .. } => Some(Refusal::PeerNotMember),
            TransportError::Hello { reason } if reason.starts_with(VERSION_MISMATCH) => Some(Refusal::Version),
            // Our own TLS verifier refused the dialed node's key: the roster does not hold it (see `tls`).
            TransportError::Connection(quinn::ConnectionError::TransportError(error))
                if error.code == quinn::TransportErrorCode::crypto(ACCESS_DENIED_ALERT) =>
            {
                Some(Refusal::PeerNotMember)
            }
            _ => None,
        }
    }

    /// Maps a quinn connection error, singling out the peer's application close.
    fn from_connection(error: quinn::ConnectionError) -> TransportError {
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => TransportError::ClosedByPeer {
                code: CloseCode::from_code(close.error_code.into_inner()),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            other => TransportError::Connection(other),
        }
    }

    pub(crate) fn from_read(error: quinn::ReadError) -> TransportError {
        match error {
            quinn::ReadError::ConnectionLost(error) => TransportError::from_connection(error),
            other => TransportError::Read(other),
        }
    }

    pub(crate) fn from_write(error: quinn::WriteError) -> TransportError {
        match error {
            quinn::WriteError::ConnectionLost(error) => TransportError::from_connection(error),
            other => TransportError::Write(other),
        }
    }

    /// The code we close a connection with when this error ends it.
    fn close_code(&self) -> CloseCode {
        match self {
            TransportError::Unauthorized { refusal: Refusal::Revoked, .. } => CloseCode::Revoked,
            TransportError::Hello { reason } if reason.starts_with(VERSION_MISMATCH) => CloseCode::Version,
            TransportError::Unauthorized { .. } | TransportError::PeerIdentity => CloseCode::Unauthorized,
            TransportError::WrongAlpn { .. } => CloseCode::WrongAlpn,
            TransportError::IdentityMismatch { .. } | TransportError::Hello { .. } => CloseCode::HelloMismatch,
            TransportError::TooManyConnections { .. } => CloseCode::TooManyConnections,
            TransportError::HandshakeTimeout { .. } => CloseCode::HandshakeTimeout,
            TransportError::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
            TransportError::FrameTimeout { .. } => CloseCode::FrameTimeout,
            _ => CloseCode::Protocol,
        }
    }

    /// The reason sent with the close: what the refused peer reads (so it speaks of the peer, not of us).
    fn close_reason(&self) -> String {
        match self {
            TransportError::Unauthorized { refusal, .. } => refusal.describe().to_owned(),
            other => other.to_string(),
        }
    }
}

/// The start of a hello error about the protocol version (read back by [`TransportError::refusal`]).
const VERSION_MISMATCH: &str = "protocol version";
/// The TLS alert rustls sends for `CertificateError::ApplicationVerificationFailure` (access_denied, RFC 8446): what
/// our verifier answers when the roster does not hold the dialed node's key.
const ACCESS_DENIED_ALERT: u8 = 49;

/// Why a node is not let in, as both sides read it (issue 14 §5): the refusing node closes the connection with the
/// matching [`CloseCode`] and [`Refusal::describe`] as the reason, so a refused node is told why at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The dialed node's roster does not hold this node's key: it was never enrolled in that hall (or the enrollment
    /// has not reached the dialed node yet).
    NotEnrolled,
    /// The hall admin revoked this node's key.
    Revoked,
    /// The dialed node belongs to another hall.
    OtherHall,
    /// The two nodes speak different protocol versions.
    Version,
    /// This node's own roster does not hold the dialed node's key (another hall's node, a revoked one, or a wrong
    /// address): this node refused it.
    PeerNotMember,
}

impl Refusal {
    /// What the refused node reads (lowercase, English: logs and CLI).
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::NotEnrolled => "this node is not enrolled in the hall of the node it dialed",
            Refusal::Revoked => "this node was revoked by the hall admin",
            Refusal::OtherHall => "the dialed node belongs to another hall",
            Refusal::Version => "the two nodes speak different protocol versions",
            Refusal::PeerNotMember => "the dialed node is not a member of this node's hall",
        }
    }

    /// The same from the refusing node's side, for its own logs.
    fn describe_for_us(self) -> &'static str {
        match self {
            Refusal::NotEnrolled | Refusal::PeerNotMember => "not enrolled in this hall",
            Refusal::Revoked => "revoked by the hall admin",
            Refusal::OtherHall => "of another hall",
            Refusal::Version => "another protocol version",
        }
    }

    /// The desk's zh-CN line.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotEnrolled => "对方拒绝连接：本节点未在该大厅登记（请管理员 zhaowo enroll）",
            Refusal::Revoked => "对方拒绝连接：本节点已被管理员吊销",
            Refusal::OtherHall => "对方拒绝连接：对方属于另一个大厅",
            Refusal::Version => "对方拒绝连接：双方协议版本不同，请升级",
            Refusal::PeerNotMember => "本节点拒绝连接：对方不在本大厅的名册中",
        }
    }

    /// What to do about it (the CLI's `hint:`).
    pub fn hint(self) -> &'static str {
        match self {
            Refusal::NotEnrolled => {
                "ask the hall admin to enroll this node (`zhaowo enroll`), then install the file with `zhaowo join FILE`"
            }
            Refusal::Revoked => {
                "a revoked node cannot come back: ask the hall admin for a new enrollment of a new node"
            }
            Refusal::OtherHall | Refusal::PeerNotMember => {
                "check the peer address (`zhaowo peers list`): it reaches a node that is not a member of this hall"
            }
            Refusal::Version => "run the same zhaowo version on both nodes",
        }
    }
}

/// Application close codes: why this node closed a connection. The peer sees them in [`TransportError::ClosedByPeer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// An orderly close.
    Normal = 0,
    /// The roster does not authorize the peer's key.
    Unauthorized = 1,
    /// The peer's key was revoked while connected.
    Revoked = 2,
    /// A connection limit was reached.
    TooManyConnections = 3,
    /// The peer broke the framing or the hello.
    Protocol = 4,
    /// The peer announced a frame larger than [`FRAME_BYTES_MAX`].
    FrameTooLarge = 5,
    /// The peer started a frame and stalled.
    FrameTimeout = 6,
    /// The peer's hello did not match its TLS identity.
    HelloMismatch = 7,
    /// The peer negotiated another application protocol.
    WrongAlpn = 8,
    /// The handshake and hello took too long.
    HandshakeTimeout = 9,
    /// This node is shutting down.
    Shutdown = 10,
    /// The peer belongs to another hall.
    OtherHall = 11,
    /// The peer speaks another protocol version.
    Version = 12,
    /// The peer served a material file that did not match (hash, size) or too slowly (`sync::transfer`).
    BlobFault = 13,
}

impl CloseCode {
    const ALL: [CloseCode; 14] = [
        CloseCode::Normal,
        CloseCode::Unauthorized,
        CloseCode::Revoked,
        CloseCode::TooManyConnections,
        CloseCode::Protocol,
        CloseCode::FrameTooLarge,
        CloseCode::FrameTimeout,
        CloseCode::HelloMismatch,
        CloseCode::WrongAlpn,
        CloseCode::HandshakeTimeout,
        CloseCode::Shutdown,
        CloseCode::OtherHall,
        CloseCode::Version,
        CloseCode::BlobFault,
    ];

    /// A short lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Revoked => "revoked",
            CloseCode::TooManyConnections => "too many connections",
            CloseCode::Protocol => "protocol violation",
            CloseCode::FrameTooLarge => "frame too large",
            CloseCode::FrameTimeout => "frame timeout",
            CloseCode::HelloMismatch => "hello mismatch",
            CloseCode::WrongAlpn => "wrong alpn",
            CloseCode::HandshakeTimeout => "handshake timeout",
            CloseCode::Shutdown => "shutdown",
            CloseCode::OtherHall => "other hall",
            CloseCode::Version => "protocol version",
            CloseCode::BlobFault => "bad material transfer",
        }
    }

    /// The close code with this number, if it is one of ours.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|close| *close as u64 == code)
    }
}

impl From<CloseCode> for quinn::VarInt {
    fn from(code: CloseCode) -> quinn::VarInt {
        quinn::VarInt::from_u32(code as u32)
    }
}

/// Decides whether a node key may connect. The roster implements it (enrolled and not revoked).
///
/// It is asked from inside the TLS handshake and again after it, so it must be quick and must not block on I/O.
pub trait Authorizer: Send + Sync + 'static {
    /// Whether `node_key` may connect to (or be dialed by) this node right now.
    fn is_authorized(&self, node_key: &NodeKey) -> bool;

    /// Why `node_key` is refused (asked after `is_authorized` said no), sent to the refused node with the close.
    fn refusal(&self, _node_key: &NodeKey) -> Refusal {
        Refusal::NotEnrolled
    }
}

impl<F: Fn(&NodeKey) -> bool + Send + Sync + 'static> Authorizer for F {
    fn is_authorized(&self, node_key: &NodeKey) -> bool {
        self(node_key)
    }
}

/// Counters for `/metrics` and for tests that must tell a full handshake from a resumed one.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Calls of the TLS certificate verifiers (client or server side): a resumed handshake makes none.
    pub certificate_verifications: AtomicU64,
    /// Connections whose handshake succeeded but whose key the roster refused afterwards.
    pub post_handshake_rejections: AtomicU64,
    /// Incoming connections refused before their handshake because the node was full.
    pub refused_connections: AtomicU64,
    /// Connections that completed the hello (authorized, handed to the caller).
    pub authorized_connections: AtomicU64,
}

/// A copy of [`TransportCounters`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportCounts {
    pub certificate_verifications: u64,
    pub post_handshake_rejections: u64,
    pub refused_connections: u64,
    pub authorized_connections: u64,
}

impl TransportCounters {
    pub fn snapshot(&self) -> TransportCounts {
        TransportCounts {
            certificate_verifications: self.certificate_verifications.load(Ordering::Relaxed),
            post_handshake_rejections: self.post_handshake_rejections.load(Ordering::Relaxed),
            refused_connections: self.refused_connections.load(Ordering::Relaxed),
            authorized_connections: self.authorized_connections.load(Ordering::Relaxed),
        }
    }
}

/// LAN tuning and limits. Build it with [`TransportConfig::recommended`] and change fields explicitly (tests shorten
/// the timeouts and lower the limits).
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The RTT assumed before the first measurement (see [`INITIAL_RTT_MS`]).
    pub initial_rtt: Duration,
    /// A connection with no packet for this long is dead (see [`IDLE_TIMEOUT_MS`]).
    pub idle_timeout: Duration,
    /// Interval of keep-alive pings; must be below `idle_timeout` (see [`KEEP_ALIVE_INTERVAL_MS`]).
    pub keep_alive_interval: Duration,
    /// Deadline for TLS handshake plus hello (see [`HANDSHAKE_TIMEOUT_MS`]).
    pub handshake_timeout: Duration,
    /// Deadline for one frame once its first byte has arrived, and for writing one frame (see [`FRAME_TIMEOUT_MS`]).
    pub frame_timeout: Duration,
    /// Requested UDP send and receive buffer size (see [`UDP_BUFFER_BYTES`]).
    pub udp_buffer_bytes: usize,
    /// Concurrent bidirectional streams a peer may open (see [`STREAMS_BIDI_MAX`]).
    pub streams_bidi_max: u32,
    /// Live plus handshaking connections of this node (see [`CONNECTIONS_MAX`]).
    pub connections_max: usize,
    /// Live connections of one peer key (see [`CONNECTIONS_PER_PEER_MAX`]).
    pub connections_per_peer_max: usize,
    /// Tests only: send every datagram through this network's faults (loss, duplication, delay, partitions).
    #[cfg(feature = "testkit")]
    pub faults: Option<Arc<faults::FaultyNetwork>>,
}

impl TransportConfig {
    /// The defaults for a hall LAN; each number's reason is on its constant.
    pub fn recommended() -> TransportConfig {
        TransportConfig {
            initial_rtt: Duration::from_millis(INITIAL_RTT_MS),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            keep_alive_interval: Duration::from_millis(KEEP_ALIVE_INTERVAL_MS),
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            frame_timeout: Duration::from_millis(FRAME_TIMEOUT_MS),
            udp_buffer_bytes: UDP_BUFFER_BYTES,
            streams_bidi_max: STREAMS_BIDI_MAX,
            connections_max: CONNECTIONS_MAX,
            connections_per_peer_max: CONNECTIONS_PER_PEER_MAX,
            #[cfg(feature = "testkit")]
            faults: None,
        }
    }

    fn quinn_transport_config(&self) -> Result<quinn::TransportConfig, TransportError> {
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(TransportError::Config("keep_alive_interval must be below idle_timeout"));
        }
        if self.connections_max == 0 || self.connections_per_peer_max == 0 {
            return Err(TransportError::Config("connection limits must be at least 1"));
        }
        let idle_timeout = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| TransportError::Config("idle_timeout is too large for QUIC"))?;
        let mut config = quinn::TransportConfig::default();
        config
            .initial_rtt(self.initial_rtt)
            .max_idle_timeout(Some(idle_timeout))
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.streams_bidi_max))
            // The protocol uses bidirectional streams only; a unidirectional stream would be buffered and never read.
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
        Ok(config)
    }
}

/// Live connections by peer key, plus handshakes in flight: what the limits count.
#[derive(Default)]
struct Connections {
    by_key: HashMap<NodeKey, HashMap<usize, quinn::Connection>>,
    live: usize,
    handshaking: usize,
}

struct Shared {
    local_key: NodeKey,
    authorizer: Arc<dyn Authorizer>,
    config: TransportConfig,
    counters: Arc<TransportCounters>,
    connections: Mutex<Connections>,
}

/// A handshake in flight, counted against the node limit. It becomes a live connection in [`Shared::register`]
/// (under the same lock, so the count never has a gap or a double) or is freed when dropped, however it ends.
struct HandshakeSlot {
    shared: Arc<Shared>,
    counted: bool,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if self.counted {
            self.shared.lock().handshaking -= 1;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters: keep serving.
        self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves a handshake slot, or refuses when live plus handshaking connections reach the node limit.
    fn begin_handshake(self: &Arc<Shared>) -> Result<HandshakeSlot, TransportError> {
        let mut connections = self.lock();
        if connections.live + connections.handshaking >= self.config.connections_max {
            return Err(TransportError::TooManyConnections { scope: "node", limit: self.config.connections_max });
        }
        connections.handshaking += 1;
        Ok(HandshakeSlot { shared: self.clone(), counted: true })
    }

    /// The checks after every handshake, full or resumed: ALPN and the peer's key from `peer_identity()` (the roster is
    /// asked in [`Shared::register`]).
    fn check_after_handshake(&self, connection: &quinn::Connection) -> Result<NodeKey, TransportError> {
        let alpn = connection
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol);
        if alpn.as_deref() != Some(ALPN) {
            return Err(TransportError::WrongAlpn {
                alpn: alpn.map(|alpn| String::from_utf8_lossy(&alpn).into_owned()),
            });
        }
        let key = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
            .filter(|chain| chain.len() == 1)
            .and_then(|chain| tls::node_key_of_spki(&chain[0]))
            .ok_or(TransportError::PeerIdentity)?;
        Ok(key)
    }

    /// Asks the roster again (a resumed handshake skipped the verifiers), then turns the handshake slot into a live
    /// connection under `key`, and forgets the connection when it closes.
    ///
    /// The roster is asked under the registry lock: a revocation updates the [`Authorizer`] and then calls
    /// [`Transport::disconnect`], which takes the same lock, so a connection is either refused here or registered in
    /// time to be closed there. No window lets a revoked key slip between the two.
    fn register(
        self: &Arc<Shared>,
        key: NodeKey,
        connection: &quinn::Connection,
        mut slot: HandshakeSlot,
    ) -> Result<(), TransportError> {
        {
            let mut connections = self.lock();
            if !self.authorizer.is_authorized(&key) {
                self.counters.post_handshake_rejections.fetch_add(1, Ordering::Relaxed);
                return Err(TransportError::Unauthorized { peer: key, refusal: self.authorizer.refusal(&key) });
            }
            // The slot already holds one place in `live + handshaking`, so this cannot exceed the node limit.
            debug_assert!(connections.live < self.config.connections_max);
            if connections.live >= self.config.connections_max {
                return Err(TransportError::TooManyConnections { scope: "node", limit: self.config.connections_max });
            }
            let of_key = connections.by_key.entry(key).or_default();
            if of_key.len() >= self.config.connections_per_peer_max {
                return Err(TransportError::TooManyConnections {
                    scope: "peer",
                    limit: self.config.connections_per_peer_max,
                });
            }
            of_key.insert(connection.stable_id(), connection.clone());
            connections.live += 1;
            connections.handshaking -= 1;
            slot.counted = false;
        }
        let shared = self.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            connection.closed().await;
            let mut connections = shared.lock();
            let removed = connections.by_key.get_mut(&key).and_then(|of_key| of_key.remove(&connection.stable_id()));
            if removed.is_some() {
                connections.live -= 1;
            }
            if connections.by_key.get(&key).is_some_and(HashMap::is_empty) {
                connections.by_key.remove(&key);
            }
        });
        Ok(())
    }

    /// Everything after the TLS handshake: checks, registration, hello. `expected` is the key a dial asked for (`None`
    /// when accepting or when dialing any member).
    async fn authorize(
        self: &Arc<Shared>,
        connection: &quinn::Connection,
        expected: Option<NodeKey>,
        slot: HandshakeSlot,
        dialing: bool,
    ) -> Result<PeerConnection, TransportError> {
        let key = self.check_after_handshake(connection)?;
        if expected.is_some_and(|expected| expected != key) {
            return Err(TransportError::IdentityMismatch { what: "the peer's TLS key is not the dialed key" });
        }
        tracing::Span::current().record("peer", tracing::field::display(short_key(&key)));
        self.register(key, connection, slot)?;
        let timeout = self.config.frame_timeout;
        let hello = hello_payload(&self.local_key);
        if dialing {
            let (send, recv) = connection.open_bi().await.map_err(TransportError::from_connection)?;
            let (mut writer, mut reader) = (
                FrameWriter::new(send, connection.clone(), timeout),
                FrameReader::new(recv, connection.clone(), timeout),
            );
            writer.send_frame(&hello).await?;
            check_hello(reader.recv_frame().await?, &key)?;
            writer.finish()?;
        } else {
            let (send, recv) = connection.accept_bi().await.map_err(TransportError::from_connection)?;
            let (mut writer, mut reader) = (
                FrameWriter::new(send, connection.clone(), timeout),
                FrameReader::new(recv, connection.clone(), timeout),
            );
            check_hello(reader.recv_frame().await?, &key)?;
            writer.send_frame(&hello).await?;
            writer.finish()?;
        }
        self.counters.authorized_connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(remote = %connection.remote_address(), "peer authorized");
        Ok(PeerConnection { peer_key: key, connection: connection.clone(), frame_timeout: timeout })
    }

    /// Runs `authorize` under the handshake deadline (which also covers the TLS handshake, already running) and
    /// closes the connection with a reason when anything fails.
    async fn finish_handshake(
        self: &Arc<Shared>,
        connecting: quinn::Connecting,
        expected: Option<NodeKey>,
        slot: HandshakeSlot,
        dialing: bool,
    ) -> Result<PeerConnection, TransportError> {
        let timeout_ms = self.config.handshake_timeout.as_millis() as u64;
        let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
        let connection = match tokio::time::timeout_at(deadline, connecting).await {
            Err(_elapsed) => return Err(TransportError::HandshakeTimeout { timeout_ms }),
            Ok(result) => result.map_err(TransportError::from_connection)?,
        };
        let result = match tokio::time::timeout_at(deadline, self.authorize(&connection, expected, slot, dialing)).await
        {
            Err(_elapsed) => Err(TransportError::HandshakeTimeout { timeout_ms }),
            Ok(result) => result,
        };
        if let Err(error) = &result {
            tracing::warn!(%error, remote = %connection.remote_address(), "connection rejected");
            connection.close(error.close_code().into(), error.close_reason().as_bytes());
        }
        result
    }
}

fn hello_payload(key: &NodeKey) -> Vec<u8> {
    let mut hello = Vec::with_capacity(HELLO_BYTES);
    hello.push(WIRE_VERSION);
    hello.push(HELLO_TAG);
    hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    hello.extend_from_slice(key);
    hello
}

fn check_hello(frame: Option<Vec<u8>>, tls_key: &NodeKey) -> Result<(), TransportError> {
    let frame = frame.ok_or_else(|| TransportError::Hello { reason: "the stream ended before the hello".into() })?;
    if frame.len() != HELLO_BYTES || frame[1] != HELLO_TAG {
        return Err(TransportError::Hello { reason: format!("expected a {HELLO_BYTES}-byte hello frame") });
    }
    let version = u16::from_be_bytes([frame[2], frame[3]]);
    if version != PROTOCOL_VERSION {
        return Err(TransportError::Hello {
            reason: format!("{VERSION_MISMATCH} {version}, expected {PROTOCOL_VERSION}"),
        });
    }
    if frame[4..] != tls_key[..] {
        return Err(TransportError::IdentityMismatch { what: "the hello names another key than the TLS identity" });
    }
    Ok(())
}

/// The first 8 bytes of a key in hex: enough to tell a hall's nodes apart in logs.
pub fn short_key(key: &NodeKey) -> String {
    zhaowo_crdt::ids::hex_encode(&key[..8])
}

/// An authenticated, authorized connection to one peer.
#[derive(Clone)]
pub struct PeerConnection {
    peer_key: NodeKey,
    connection: quinn::Connection,
    frame_timeout: Duration,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("peer", &short_key(&self.peer_key))
            .field("remote", &self.connection.remote_address())
            .field("id", &self.connection.stable_id())
            .finish()
    }
}

impl PeerConnection {
    /// The peer's node key, as proven in the TLS handshake and confirmed by its hello.
    pub fn peer_key(&self) -> NodeKey {
        self.peer_key
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Opens a framed bidirectional stream (the peer sees it once the first frame is sent).
    pub async fn open_bi(&self) -> Result<(FrameWriter, FrameReader), TransportError> {
        let (send, recv) = self.connection.open_bi().await.map_err(TransportError::from_connection)?;
        Ok(self.framed(send, recv))
    }

    /// Waits for the peer to open a framed bidirectional stream.
    pub async fn accept_bi(&self) -> Result<(FrameWriter, FrameReader), TransportError> {
        let (send, recv) = self.connection.accept_bi().await.map_err(TransportError::from_connection)?;
        Ok(self.framed(send, recv))
    }

    fn framed(&self, send: quinn::SendStream, recv: quinn::RecvStream) -> (FrameWriter, FrameReader) {
        (
            FrameWriter::new(send, self.connection.clone(), self.frame_timeout),
            FrameReader::new(recv, self.connection.clone(), self.frame_timeout),
        )
    }

    /// Closes the connection with `code`; `reason` is shown to the peer.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.connection.close(code.into(), reason.as_bytes());
    }

    /// Waits until the connection is closed, by either side or by a timeout, and says why.
    pub async fn closed(&self) -> TransportError {
        TransportError::from_connection(self.connection.closed().await)
    }

    /// The quinn connection, for statistics (RTT, bytes, lost packets).
    pub fn quinn_connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

/// The node's QUIC endpoint. Dropping it aborts the accept loop; call [`Transport::close`] for an orderly close.
pub struct Transport {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<Result<PeerConnection, TransportError>>>,
    accept_task: tokio::task::JoinHandle<()>,
    udp_buffer_bytes: (usize, usize),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_key", &short_key(&self.shared.local_key))
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Creates the UDP socket with large buffers (they must be set before quinn takes the socket).
fn bind_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<(std::net::UdpSocket, (usize, usize))> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual stack where the OS allows it, as quinn's own `Endpoint::server` does; not fatal when it does not.
        drop(socket.set_only_v6(false));
    }
    socket.set_recv_buffer_size(buffer_bytes)?;
    socket.set_send_buffer_size(buffer_bytes)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let granted = (socket.recv_buffer_size()?, socket.send_buffer_size()?);
    Ok((socket.into(), granted))
}

impl Transport {
    /// Binds the endpoint on `addr` (use port 0 in tests) and starts accepting. Must run inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: Arc<NodeIdentity>,
        authorizer: Arc<dyn Authorizer>,
        config: TransportConfig,
    ) -> Result<Transport, TransportError> {
        let quinn_transport = Arc::new(config.quinn_transport_config()?);
        let counters = Arc::new(TransportCounters::default());
        let tls_error = |error: &dyn std::fmt::Display| TransportError::TlsConfig(error.to_string());

        let client_tls = tls::client_config(&identity, authorizer.clone(), counters.clone(), ALPN)?;
        let client_quic = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).map_err(|e| tls_error(&e))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_quic));
        client_config.transport_config(quinn_transport.clone());

        let server_tls = tls::server_config(&identity, authorizer.clone(), counters.clone())?;
        let server_quic = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).map_err(|e| tls_error(&e))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
        server_config.transport_config(quinn_transport);
        // Incoming connections quinn holds before we decide: never more than we would accept.
        server_config.max_incoming(config.connections_max);

        let (socket, udp_buffer_bytes) =
            bind_socket(addr, config.udp_buffer_bytes).map_err(|source| TransportError::Bind { addr, source })?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        #[cfg(not(feature = "testkit"))]
        let faults: Option<std::convert::Infallible> = None;
        #[cfg(feature = "testkit")]
        let faults = config.faults.as_ref();
        let mut endpoint = match faults {
            None => quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server_config), socket, runtime),
            #[cfg(not(feature = "testkit"))]
            Some(never) => match never {},
            #[cfg(feature = "testkit")]
            Some(network) => runtime
                .wrap_udp_socket(socket)
                .and_then(|inner| faults::FaultySocket::new(inner, network.clone()))
                .and_then(|socket| {
                    quinn::Endpoint::new_with_abstract_socket(
                        quinn::EndpointConfig::default(),
                        Some(server_config),
                        Arc::new(socket),
                        runtime,
                    )
                }),
        }
        .map_err(|source| TransportError::Bind { addr, source })?;
        endpoint.set_default_client_config(client_config);

        let local_key = *identity.verifying_key().as_bytes();
        let shared = Arc::new(Shared { local_key, authorizer, config, counters, connections: Mutex::default() });
        let (sender, receiver) = mpsc::channel(ACCEPT_QUEUE_MAX);
        let accept_task = tokio::spawn(
            accept_loop(endpoint.clone(), shared.clone(), sender)
                .instrument(tracing::info_span!("transport", me = %short_key(&local_key))),
        );
        tracing::info!(me = %short_key(&local_key), addr = ?endpoint.local_addr().ok(), ?udp_buffer_bytes, "transport bound");
        Ok(Transport { endpoint, shared, accepted: tokio::sync::Mutex::new(receiver), accept_task, udp_buffer_bytes })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr().map_err(|source| TransportError::Bind { addr: ([0, 0, 0, 0], 0).into(), source })
    }

    /// This node's key.
    pub fn local_key(&self) -> NodeKey {
        self.shared.local_key
    }

    /// The UDP (receive, send) buffer sizes the kernel granted (Linux reports twice the usable size).
    pub fn udp_buffer_bytes(&self) -> (usize, usize) {
        self.udp_buffer_bytes
    }

    /// Dials `addr` expecting the node `peer_key`; returns once the peer's hello arrived (the peer accepted us).
    pub async fn dial(&self, addr: SocketAddr, peer_key: NodeKey) -> Result<PeerConnection, TransportError> {
        let span = tracing::info_span!("peer", direction = "dial", peer = %short_key(&peer_key), %addr);
        async {
            let slot = self.shared.begin_handshake()?;
            let server_name = tls::server_name_for(&peer_key);
            let connecting =
                self.endpoint.connect(addr, &server_name).map_err(|source| TransportError::Connect { addr, source })?;
            self.shared.finish_handshake(connecting, Some(peer_key), slot, true).await
        }
        .instrument(span)
        .await
    }

    /// Dials `addr` accepting whichever active member of the hall answers (a static peer configured by address
    /// only); the roster is asked during and after the handshake as for every connection.
    pub async fn dial_member(&self, addr: SocketAddr) -> Result<PeerConnection, TransportError> {
        let span = tracing::info_span!("peer", direction = "dial", peer = tracing::field::Empty, %addr);
        async {
            let slot = self.shared.begin_handshake()?;
            let connecting = self
                .endpoint
                .connect(addr, tls::ANY_MEMBER_SERVER_NAME)
                .map_err(|source| TransportError::Connect { addr, source })?;
            self.shared.finish_handshake(connecting, None, slot, true).await
        }
        .instrument(span)
        .await
    }

    /// The next accepted connection (or the reason one was rejected, so callers can count and log them); `None` once
    /// the transport is closed. Rejected connections have already been closed with a [`CloseCode`].
    pub async fn accept(&self) -> Option<Result<PeerConnection, TransportError>> {
        self.accepted.lock().await.recv().await
    }

    /// Closes every live connection of `peer_key` (the roster calls this on revocation); returns how many there were.
    ///
    /// Update the [`Authorizer`] first, then call this: a connection still in its handshake is then refused by the
    /// post-handshake check, and every registered one is closed here.
    pub fn disconnect(&self, peer_key: &NodeKey, code: CloseCode, reason: &str) -> usize {
        let closing =
            self.shared.lock().by_key.get(peer_key).map(|of_key| of_key.values().cloned().collect::<Vec<_>>());
        let closing = closing.unwrap_or_default();
        for connection in &closing {
            connection.close(code.into(), reason.as_bytes());
        }
        tracing::info!(peer = %short_key(peer_key), connections = closing.len(), ?code, "disconnected peer");
        closing.len()
    }

    /// Live connections of `peer_key`.
    pub fn connection_count(&self, peer_key: &NodeKey) -> usize {
        self.shared.lock().by_key.get(peer_key).map_or(0, HashMap::len)
    }

    /// Live connections of every peer.
    pub fn live_connections(&self) -> usize {
        self.shared.lock().live
    }

    pub fn counters(&self) -> TransportCounts {
        self.shared.counters.snapshot()
    }

    /// Closes every connection and the endpoint, then waits (briefly) until the peers were told.
    pub async fn close(&self) {
        self.accept_task.abort();
        self.endpoint.close(CloseCode::Shutdown.into(), b"node shutting down");
        // wait_idle waits for the close to be acknowledged or for 3 PTOs; bound it anyway.
        drop(tokio::time::timeout(self.shared.config.handshake_timeout, self.endpoint.wait_idle()).await);
    }
}

/// Takes incoming connections: refuses them when the node is full, otherwise finishes each handshake in its own task so
/// one slow peer never holds up the others.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    sender: mpsc::Sender<Result<PeerConnection, TransportError>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let slot = match shared.begin_handshake() {
            Ok(slot) => slot,
            Err(error) => {
                shared.counters.refused_connections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%remote, %error, "refusing connection");
                incoming.refuse();
                // Best effort: a caller that is not listening must not stall the accept loop.
                drop(sender.try_send(Err(error)));
                continue;
            }
        };
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(error) => {
                drop(sender.try_send(Err(TransportError::from_connection(error))));
                continue;
            }
        };
        let span = tracing::info_span!("peer", direction = "accept", %remote, peer = tracing::field::Empty);
        let (shared, sender) = (shared.clone(), sender.clone());
        tokio::spawn(
            async move {
                let result = shared.finish_handshake(connecting, None, slot, false).await;
                // The caller may be gone (transport dropped): the connection then closes with its handle.
                drop(sender.send(result).await);
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_must_be_exact_and_name_the_tls_key() {
        let key = [3u8; 32];
        let hello = hello_payload(&key);
        assert_eq!(hello.len(), HELLO_BYTES);
        assert!(check_hello(Some(hello.clone()), &key).is_ok());
        assert!(matches!(check_hello(Some(hello.clone()), &[4u8; 32]), Err(TransportError::IdentityMismatch { .. })));
        assert!(matches!(check_hello(None, &key), Err(TransportError::Hello { .. })));
        assert!(matches!(
            check_hello(Some(hello[..HELLO_BYTES - 1].to_vec()), &key),
            Err(TransportError::Hello { .. })
        ));
        let mut other_tag = hello.clone();
        other_tag[1] = b'X';
        assert!(matches!(check_hello(Some(other_tag), &key), Err(TransportError::Hello { .. })));
        let mut other_version = hello;
        other_version[3] = 2;
        let error = check_hello(Some(other_version), &key).unwrap_err();
        assert!(error.to_string().contains("protocol version 2"), "{error}");
    }

    #[test]
    fn close_codes_round_trip_and_config_is_checked() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code as u64), Some(code));
        }
        assert_eq!(CloseCode::from_code(999), None);
        let mut config = TransportConfig::recommended();
        assert!(config.quinn_transport_config().is_ok());
        config.keep_alive_interval = config.idle_timeout;
        assert!(matches!(config.quinn_transport_config(), Err(TransportError::Config(_))));
    }
}
