//! Material file transfer (issue 16 §3): the sealed files cases name move on the peers' existing QUIC connection,
//! one bidirectional stream per file, beside (and below) the one sync stream.
//!
//! ```text
//!  requester                                   server
//!  open_bi ── Request { hash, offset } ──────▶ blob_ref(hash) → case; may the asker hold its key? have the file?
//!          ◀── Answer(Sending { total } | NotHere | NotAllowed | Unknown | Busy)
//!          ◀── total - offset raw sealed bytes, read from the file in chunks, then the end of the stream
//!  Partial::write … finish (installed only when it hashes to its name)
//! ```
//!
//! Separation from sync: the dialer opens the sync stream first and the acceptor's driver accepts the first stream;
//! the blob accept loop ([`serve_streams`]) starts only after that, and every blob frame carries
//! `wire::BLOB_STREAM_TAG`, which no sync frame can start with. Priority: the sync stream's send side is set to
//! [`SYNC_STREAM_PRIORITY`], blob streams to [`BLOB_STREAM_PRIORITY`], so quinn sends pending sync frames first.
//! Each side serves or requests at most [`BLOB_STREAMS_PER_CONNECTION_MAX`] files at once on one connection.
//!
//! The fetcher: a hall PC (`MaterialsOptions::background`) fetches every file a case names whose key it holds, from
//! any connected peer, through a token bucket of `fetch_bytes_per_sec` (the bandwidth share of `[materials]` in
//! `node.toml`) with at most `fetch_in_flight_max` files at once; a volunteer laptop fetches only when asked
//! ([`super::SyncNode::fetch_material`], a desk page opening a material). A cut keeps the part on disk
//! (`Partial::suspend`) and the next attempt resumes from its length. A peer that announces another size than the
//! event names, sends more than announced, sends bytes that do not hash to the name, or is too slow
//! ([`BLOB_STALL_TIMEOUT`], [`BLOB_MIN_BYTES_PER_SEC`]) is dropped like any hostile peer (connection closed with
//! [`CloseCode::BlobFault`], counted in the status) and not asked for files again for [`BLOB_BLAME_DURATION`].

use super::{Shared, lock, now_ms};
use crate::blobs::{BlobError, BlobStore, Partial};
use crate::store::BlobRef;
use crate::transport::{CloseCode, FrameReader, FrameWriter, NodeKey, PeerConnection, short_key};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;
use zhaowo_crdt::wire::{self, BlobAnswer, BlobFrame};

/// The sync stream's send priority: above every blob stream, so a transfer never queues case sync behind file bytes.
pub const SYNC_STREAM_PRIORITY: i32 = 16;
/// A blob stream's send priority (quinn's default is 0).
pub const BLOB_STREAM_PRIORITY: i32 = 0;
/// Files served to, and requested from, one peer at once: 4 × 64 KiB chunks keep a LAN link busy; more would only
/// add open files and buffers (a peer opening more gets `Busy`).
pub const BLOB_STREAMS_PER_CONNECTION_MAX: usize = 4;
const _: () = assert!(BLOB_STREAMS_PER_CONNECTION_MAX < crate::transport::STREAMS_BIDI_MAX as usize);
/// Bytes read from a file or a stream at once: memory per transfer is one chunk, never a file.
pub const BLOB_CHUNK_BYTES: usize = 64 * 1024;
/// The default bandwidth share of a hall PC's background fetching: 2 MiB/s is ~2 % of a 1 Gbit/s hall LAN and ~17 %
/// of a 100 Mbit/s one, and still brings a day's ~500 photos of 2 MiB in under ten minutes.
pub const FETCH_BYTES_PER_SEC_DEFAULT: u64 = 2 * 1024 * 1024;
/// The smallest share `node.toml` accepts: below one chunk per second a 10 MiB file takes minutes.
pub const FETCH_BYTES_PER_SEC_MIN: u64 = 64 * 1024;
/// The largest share: 1 GiB/s, more than any hall link, i.e. "unlimited".
pub const FETCH_BYTES_PER_SEC_MAX: u64 = 1024 * 1024 * 1024;
/// Files a hall PC fetches in the background at once (over all peers).
pub const FETCH_IN_FLIGHT_DEFAULT: usize = 4;
/// The largest `fetch_in_flight` `node.toml` accepts.
pub const FETCH_IN_FLIGHT_MAX: usize = 32;
/// A serving peer that sends nothing for this long (no answer, no byte) is dropped as too slow: a LAN peer answers
/// in milliseconds; 10 s covers a busy disk and a loaded PC.
pub const BLOB_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A serving peer slower than this, measured over [`BLOB_RATE_WINDOW`] of waiting for its bytes (our own bandwidth
/// share excluded), is dropped: a trickle that never stalls long enough would otherwise hold a slot for ever. 16 KiB/s
/// is a tenth of the worst Wi-Fi seen in a hall.
pub const BLOB_MIN_BYTES_PER_SEC: u64 = 16 * 1024;
/// The window of [`BLOB_MIN_BYTES_PER_SEC`].
pub const BLOB_RATE_WINDOW: Duration = Duration::from_secs(10);
/// A peer dropped for a hostile transfer is not asked for files again for this long (it still syncs cases).
pub const BLOB_BLAME_DURATION: Duration = Duration::from_secs(10 * 60);
/// How often the background fetcher looks for missing files even when nothing woke it.
pub const FETCH_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// The fetcher re-scans at most this often when the store keeps changing (an initial sync).
pub const FETCH_SCAN_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A file no connected peer had is asked for again after this (or when a new peer connects).
pub const FETCH_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long an on-demand fetch (a desk page opening a material) waits for a peer to deliver.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// `blob_refs` rows read per scan page.
const SCAN_PAGE_ROWS: usize = 1_000;

/// Misbehaviour of a serving node for tests (`MaterialsOptions::fault`, `testkit` feature only): what a hostile peer
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobFault {
    /// Sends the file with one byte flipped.
    FlipByte,
    /// Sends the file and then more bytes than it announced.
    Oversend,
    /// Announces a size larger than the file the event names.
    WrongTotal,
    /// Answers, sends one chunk, then nothing.
    Stall,
}

/// How a node moves material files. Build it with [`MaterialsOptions::recommended`].
#[derive(Debug, Clone)]
pub struct MaterialsOptions {
    /// The node's material files.
    pub blobs: BlobStore,
    /// Fetch every file a case names whose key this node holds, without being asked (hall PCs); `false` fetches only
    /// on demand (a volunteer laptop).
    pub background: bool,
    /// The bandwidth share of background fetching, bytes received per second (see [`FETCH_BYTES_PER_SEC_DEFAULT`]).
    pub fetch_bytes_per_sec: u64,
    /// Files fetched in the background at once (see [`FETCH_IN_FLIGHT_DEFAULT`]).
    pub fetch_in_flight_max: usize,
    /// See [`BLOB_STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// See [`BLOB_MIN_BYTES_PER_SEC`].
    pub min_bytes_per_sec: u64,
    /// See [`BLOB_RATE_WINDOW`].
    pub rate_window: Duration,
    /// See [`FETCH_SCAN_INTERVAL`].
    pub scan_interval: Duration,
    /// See [`FETCH_TIMEOUT`].
    pub fetch_timeout: Duration,
    /// Tests only: serve files like a hostile peer.
    #[cfg(feature = "testkit")]
    pub fault: Option<BlobFault>,
}

impl MaterialsOptions {
    /// The defaults; `background` for hall PCs (`Role::is_staff`).
    pub fn recommended(blobs: BlobStore, background: bool) -> MaterialsOptions {
        MaterialsOptions {
            blobs,
            background,
            fetch_bytes_per_sec: FETCH_BYTES_PER_SEC_DEFAULT,
            fetch_in_flight_max: FETCH_IN_FLIGHT_DEFAULT,
            stall_timeout: BLOB_STALL_TIMEOUT,
            min_bytes_per_sec: BLOB_MIN_BYTES_PER_SEC,
            rate_window: BLOB_RATE_WINDOW,
            scan_interval: FETCH_SCAN_INTERVAL,
            fetch_timeout: FETCH_TIMEOUT,
            #[cfg(feature = "testkit")]
            fault: None,
        }
    }
}

/// Why an on-demand fetch did not bring the file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The node runs without a material store (a tool, a test).
    #[error("this node does not move material files")]
    NotConfigured,
    /// No case on this node names the file.
    #[error("no case names material file {0}")]
    Unknown(String),
    /// Every peer that has the file refused: this node may not hold the case's key.
    #[error("the peers refused material file {0}: this node may not hold the case key")]
    NotAllowed(String),
    /// No connected peer delivered the file in time.
    #[error("no connected peer delivered material file {0} in time")]
    Timeout(String),
    #[error(transparent)]
    Read(#[from] crate::store::ReadError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl FetchError {
    /// The sentence a clerk reads.
    pub fn zh(&self) -> &'static str {
        match self {
            FetchError::NotConfigured | FetchError::Read(_) | FetchError::Blob(_) => "材料文件读写失败，请联系管理员",
            FetchError::Unknown(_) => "没有案件引用该材料",
            FetchError::NotAllowed(_) => "本机无权获取此案件的材料",
            FetchError::Timeout(_) => "暂时无法从其他电脑获取该材料，请稍后再试",
        }
    }
}

/// Transfer counters for the status and the tests.
#[derive(Debug, Default)]
pub(super) struct TransferCounters {
    pub(super) files_received: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) files_served: AtomicU64,
    pub(super) bytes_served: AtomicU64,
    pub(super) rejected_transfers: AtomicU64,
    pub(super) resumed_transfers: AtomicU64,
}

/// A copy of the transfer counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TransferCounts {
    /// Files verified and installed.
    pub files_received: u64,
    /// Sealed bytes read from peers' blob streams (resumes count only what moved again).
    pub bytes_received: u64,
    pub files_served: u64,
    pub bytes_served: u64,
    /// Transfers refused as hostile (the peer was dropped each time).
    pub rejected_transfers: u64,
    /// Transfers that started from a part already on disk.
    pub resumed_transfers: u64,
}

/// The node's transfer state, shared by the server, the background fetcher and on-demand fetches.
pub(super) struct Transfers {
    pub(super) options: MaterialsOptions,
    /// Received bytes of background fetching: (tokens, last refill). Tokens go negative: a chunk waits for its debt.
    bucket: std::sync::Mutex<(f64, Instant)>,
    in_flight: std::sync::Mutex<HashSet<String>>,
    /// Files with a `Partial` open right now: one writer per part file, whoever asked.
    receiving: std::sync::Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    /// Connections whose sync stream is set up, by peer: the only ones a blob stream may be opened on (a blob stream
    /// opened before the dialer's sync stream would take its place as the acceptor's first stream).
    ready: std::sync::Mutex<HashMap<NodeKey, PeerConnection>>,
    /// Per peer, requests we have open to it.
    requests: std::sync::Mutex<HashMap<NodeKey, Arc<Semaphore>>>,
    retry_after: std::sync::Mutex<HashMap<String, Instant>>,
    blamed: std::sync::Mutex<HashMap<NodeKey, Instant>>,
    pub(super) wake: Notify,
    pub(super) counters: TransferCounters,
}

impl Transfers {
    pub(super) fn new(options: MaterialsOptions) -> Transfers {
        let slots = Arc::new(Semaphore::new(options.fetch_in_flight_max.max(1)));
        Transfers {
            options,
            bucket: std::sync::Mutex::new((0.0, Instant::now())),
            in_flight: std::sync::Mutex::new(HashSet::new()),
            receiving: std::sync::Mutex::new(HashSet::new()),
            ready: std::sync::Mutex::new(HashMap::new()),
            slots,
            requests: std::sync::Mutex::new(HashMap::new()),
            retry_after: std::sync::Mutex::new(HashMap::new()),
            blamed: std::sync::Mutex::new(HashMap::new()),
            wake: Notify::new(),
            counters: TransferCounters::default(),
        }
    }

    pub(super) fn counts(&self) -> TransferCounts {
        let c = &self.counters;
        TransferCounts {
            files_received: c.files_received.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            files_served: c.files_served.load(Ordering::Relaxed),
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            rejected_transfers: c.rejected_transfers.load(Ordering::Relaxed),
            resumed_transfers: c.resumed_transfers.load(Ordering::Relaxed),
        }
    }

    /// Charges `bytes` received to the bandwidth share (token bucket, burst of 1/8 s or a chunk) and waits off any debt.
    async fn take_tokens(&self, bytes: usize) {
        let rate = self.options.fetch_bytes_per_sec.max(1) as f64;
        let burst = (rate / 8.0).max(BLOB_CHUNK_BYTES as f64);
        let wait = {
            let mut bucket = lock(&self.bucket);
            let now = Instant::now();
            let (tokens, last) = *bucket;
            let refilled = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
            let left = refilled - bytes as f64;
            *bucket = (left, now);
            if left < 0.0 { Duration::from_secs_f64(-left / rate) } else { Duration::ZERO }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn is_blamed(&self, peer: &NodeKey) -> bool {
        let mut blamed = lock(&self.blamed);
        blamed.retain(|_, until| *until > Instant::now());
        blamed.contains_key(peer)
    }

    fn request_slots(&self, peer: &NodeKey) -> Arc<Semaphore> {
        lock(&self.requests)
            .entry(*peer)
            .or_insert_with(|| Arc::new(Semaphore::new(BLOB_STREAMS_PER_CONNECTION_MAX)))
            .clone()
    }
}

/// Removes a hash from the in-flight set when a transfer ends, however it ends.
struct InFlight<'a>(&'a Transfers, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.0.in_flight).remove(&self.1);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Serving.

/// Accepts the peer's blob streams on one connection (started by the driver after the sync stream is set up) and
/// serves each, at most [`BLOB_STREAMS_PER_CONNECTION_MAX`] at once.
pub(super) async fn serve_streams(shared: Arc<Shared>, transfers: Arc<Transfers>, connection: PeerConnection) {
    let slots = Arc::new(Semaphore::new(BLOB_STREAMS_PER_CONNECTION_MAX));
    loop {
        let Ok((writer, reader)) = connection.accept_bi().await else { return };
        let permit = slots.clone().try_acquire_owned().ok();
        let (shared, transfers, connection) = (shared.clone(), transfers.clone(), connection.clone());
        tokio::spawn(
            async move {
                serve_one(&shared, &transfers, &connection, writer, reader, permit.is_some()).await;
                drop(permit);
            }
            .instrument(tracing::Span::current()),
        );
    }
}

async fn serve_one(
    shared: &Shared,
    transfers: &Transfers,
    connection: &PeerConnection,
    mut writer: FrameWriter,
    mut reader: FrameReader,
    admitted: bool,
) {
    let peer = connection.peer_key();
    let frame_timeout = shared.options.transport.frame_timeout;
    let request = match tokio::time::timeout(frame_timeout, reader.recv_frame()).await {
        Ok(Ok(Some(frame))) => wire::decode_blob(&frame),
        // The connection closed, or the peer opened a stream and sent nothing: nothing to answer.
        _ => return,
    };
    let (hash, offset) = match request {
        Ok(BlobFrame::Request { hash, offset }) => (hex::encode(hash), offset),
        Ok(BlobFrame::Answer(_)) | Err(_) => {
            tracing::warn!("a peer sent a malformed blob request; dropping it");
            connection.close(CloseCode::Protocol, "malformed blob request");
            return;
        }
    };
    let answer = if admitted { judge(shared, transfers, &peer, &hash).await } else { Err(BlobAnswer::Busy) };
    let total = match answer {
        Ok(total) => total,
        Err(refusal) => {
            drop(writer.send_frame(&wire::encode_blob(&BlobFrame::Answer(refusal))).await);
            drop(writer.finish());
            return;
        }
    };
    drop(writer.stream_mut().set_priority(BLOB_STREAM_PRIORITY));
    #[cfg(feature = "testkit")]
    let fault = transfers.options.fault;
    #[cfg(not(feature = "testkit"))]
    let fault: Option<BlobFault> = None;
    let announced = if fault == Some(BlobFault::WrongTotal) { total + 1 } else { total };
    if writer
        .send_frame(&wire::encode_blob(&BlobFrame::Answer(BlobAnswer::Sending { total: announced })))
        .await
        .is_err()
    {
        return;
    }
    let Ok(path) = transfers.options.blobs.file_path(&hash) else { return };
    let sent = send_file(transfers, writer.stream_mut(), &path, offset.min(total), fault).await;
    if let Ok(bytes) = sent {
        drop(writer.finish());
        transfers.counters.files_served.fetch_add(1, Ordering::Relaxed);
        transfers.counters.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Whether `peer` gets file `hash`: `Ok(size)` or the refusal to answer.
async fn judge(shared: &Shared, transfers: &Transfers, peer: &NodeKey, hash: &str) -> Result<u64, BlobAnswer> {
    let found = shared.store.blob_ref(hash).await.ok().flatten().ok_or(BlobAnswer::Unknown)?;
    let role = shared.live.roster().authorized(peer).map(|enrollment| enrollment.role).ok_or(BlobAnswer::NotAllowed)?;
    // The key rule decides who gets a file, as it decides who gets the key (`DbReplica::key_for_peer`): a hall PC
    // every case not purged (the projection holds no purged case's files), anyone else after reading the case.
    if !role.is_staff() {
        let view = shared.store.case_view(&found.doc_id).await.map_err(|_| BlobAnswer::Unknown)?;
        if !zhaowo_crdt::seal::may_hold_key(role, &zhaowo_crdt::ids::hex_encode(peer), &view, now_ms()) {
            return Err(BlobAnswer::NotAllowed);
        }
    }
    let blobs = transfers.options.blobs.clone();
    let (hash, expected) = (hash.to_owned(), found.bytes);
    // Checked before sending (one streaming pass): a file damaged on this disk is deleted and fetched again here,
    // instead of getting this honest node dropped as hostile by the asker.
    tokio::task::spawn_blocking(move || blobs.verify(&hash).ok().filter(|size| *size == expected))
        .await
        .ok()
        .flatten()
        .ok_or(BlobAnswer::NotHere)
}

/// Streams the file from `offset`, one chunk in memory at a time. Returns the bytes sent.
async fn send_file(
    transfers: &Transfers,
    stream: &mut quinn::SendStream,
    path: &std::path::Path,
    offset: u64,
    fault: Option<BlobFault>,
) -> Result<u64, ()> {
    // std::fs on the blocking pool, one chunk per call (the workspace's tokio has no `fs`).
    let path = path.to_owned();
    let mut file = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(drop)?
    .map_err(drop)?;
    let mut buffer = vec![0u8; BLOB_CHUNK_BYTES];
    let mut sent = 0u64;
    let stall = transfers.options.stall_timeout;
    loop {
        let (returned, filled, read) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let read = file.read(&mut buffer);
            (file, buffer, read)
        })
        .await
        .map_err(drop)?;
        (file, buffer) = (returned, filled);
        let read = read.map_err(drop)?;
        if read == 0 {
            break;
        }
        match fault {
            Some(BlobFault::FlipByte) if sent == 0 => buffer[0] ^= 0x55,
            Some(BlobFault::Stall) if sent > 0 => std::future::pending::<()>().await,
            _ => {}
        }
        match tokio::time::timeout(stall, stream.write_all(&buffer[..read])).await {
            Ok(Ok(())) => sent += read as u64,
            // The asker stopped reading (or went away): give the stream up, the connection stays.
            _ => {
                drop(stream.reset(CloseCode::Normal.into()));
                return Err(());
            }
        }
    }
    if fault == Some(BlobFault::Oversend) {
        drop(stream.write_all(&[0u8; 1024]).await);
    }
    Ok(sent)
}

// ---------------------------------------------------------------------------------------------------------------
// Fetching.

/// How one request to one peer ended.
#[derive(Debug)]
enum Attempt {
    Stored,
    Refused(BlobAnswer),
    /// The connection or the stream went away: the part is kept for a resume.
    Cut(String),
    /// The peer misbehaved: it is dropped, the part deleted.
    Hostile(String),
}

/// How asking every connected peer ended.
enum Outcome {
    Stored,
    NotAllowed,
    Unavailable,
}

/// Asks the connected peers (not blamed ones) in turn for the file until one delivers it.
async fn fetch_any(shared: &Arc<Shared>, transfers: &Transfers, blob: &BlobRef, limited: bool) -> Outcome {
    let mut peers: Vec<PeerConnection> = lock(&transfers.ready).values().cloned().collect();
    // Spread the files over the peers: start at a place the hash picks.
    if !peers.is_empty() {
        let start = usize::from(blob.hash.as_bytes()[0]) % peers.len();
        peers.rotate_left(start);
    }
    let mut not_allowed = false;
    for connection in peers {
        let peer = connection.peer_key();
        if transfers.is_blamed(&peer) {
            continue;
        }
        let Ok(_permit) = transfers.request_slots(&peer).acquire_owned().await else { continue };
        if transfers.options.blobs.has(&blob.hash) {
            return Outcome::Stored;
        }
        if !lock(&transfers.receiving).insert(blob.hash.clone()) {
            // Another request (a page's on-demand fetch, a background one) is writing this part: leave it to it.
            return Outcome::Unavailable;
        }
        let attempt = request(transfers, &connection, blob, limited).await;
        lock(&transfers.receiving).remove(&blob.hash);
        match attempt {
            Attempt::Stored => {
                transfers.counters.files_received.fetch_add(1, Ordering::Relaxed);
                return Outcome::Stored;
            }
            Attempt::Refused(BlobAnswer::NotAllowed) => not_allowed = true,
            Attempt::Refused(_) => {}
            Attempt::Cut(reason) => tracing::debug!(peer = %short_key(&peer), %reason, "material transfer cut"),
            Attempt::Hostile(reason) => {
                tracing::warn!(peer = %short_key(&peer), hash = %blob.hash, %reason, "dropping peer: hostile transfer");
                transfers.counters.rejected_transfers.fetch_add(1, Ordering::Relaxed);
                lock(&transfers.blamed).insert(peer, Instant::now() + BLOB_BLAME_DURATION);
                shared.update_status(&peer, |status| {
                    status.rejected_transfers += 1;
                    status.last_transfer_error = Some(reason.clone());
                });
                connection.close(CloseCode::BlobFault, &reason);
            }
        }
    }
    if not_allowed { Outcome::NotAllowed } else { Outcome::Unavailable }
}

/// One request of `blob` from one peer, streamed into a [`Partial`].
async fn request(transfers: &Transfers, connection: &PeerConnection, blob: &BlobRef, limited: bool) -> Attempt {
    let options = &transfers.options;
    let blobs = options.blobs.clone();
    let (hash, expected) = (blob.hash.clone(), blob.bytes);
    let partial = match tokio::task::spawn_blocking(move || blobs.begin(&hash, expected)).await {
        Ok(Ok(partial)) => partial,
        Ok(Err(error)) => return Attempt::Cut(error.to_string()),
        Err(_) => return Attempt::Cut("the task failed".to_owned()),
    };
    let resumed_from = partial.offset();
    let Ok(hash_bytes) = hex::decode(&blob.hash) else { return Attempt::Refused(BlobAnswer::Unknown) };
    let Ok(hash_bytes) = <[u8; 32]>::try_from(hash_bytes) else { return Attempt::Refused(BlobAnswer::Unknown) };
    let (mut writer, mut reader) = match connection.open_bi().await {
        Ok(streams) => streams,
        Err(error) => return suspend(partial, error.to_string()),
    };
    drop(writer.stream_mut().set_priority(BLOB_STREAM_PRIORITY));
    let frame = wire::encode_blob(&BlobFrame::Request { hash: hash_bytes, offset: resumed_from });
    if let Err(error) = writer.send_frame(&frame).await {
        return suspend(partial, error.to_string());
    }
    drop(writer.finish());
    let answer = match tokio::time::timeout(options.stall_timeout, reader.recv_frame()).await {
        Err(_) => return hostile(partial, format!("no answer within {:?}", options.stall_timeout)),
        Ok(Err(error)) => return suspend(partial, error.to_string()),
        Ok(Ok(None)) => return suspend(partial, "the stream ended before the answer".to_owned()),
        Ok(Ok(Some(frame))) => frame,
    };
    let total = match wire::decode_blob(&answer) {
        Ok(BlobFrame::Answer(BlobAnswer::Sending { total })) => total,
        Ok(BlobFrame::Answer(refusal)) => return suspend_refused(partial, refusal),
        Ok(BlobFrame::Request { .. }) | Err(_) => return hostile(partial, "a malformed blob answer".to_owned()),
    };
    if total != expected {
        return hostile(partial, format!("announced {total} bytes; the case names {expected}"));
    }
    if resumed_from > 0 {
        transfers.counters.resumed_transfers.fetch_add(1, Ordering::Relaxed);
    }
    receive(transfers, reader.stream_mut(), partial, resumed_from, limited).await
}

async fn receive(
    transfers: &Transfers,
    stream: &mut quinn::RecvStream,
    mut partial: Partial,
    resumed_from: u64,
    limited: bool,
) -> Attempt {
    let options = &transfers.options;
    let (mut window_bytes, mut window_wait) = (0u64, Duration::ZERO);
    while !partial.complete() {
        let left = (partial.expected() - partial.offset()).min(BLOB_CHUNK_BYTES as u64) as usize;
        let started = Instant::now();
        let chunk = match tokio::time::timeout(options.stall_timeout, stream.read_chunk(left, true)).await {
            Err(_) => return hostile(partial, format!("no byte for {:?}", options.stall_timeout)),
            Ok(Err(error)) => return suspend(partial, error.to_string()),
            Ok(Ok(None)) => return suspend(partial, "the peer ended the file early".to_owned()),
            Ok(Ok(Some(chunk))) => chunk.bytes,
        };
        window_wait += started.elapsed();
        window_bytes += chunk.len() as u64;
        if limited {
            // Charged after the read, by what arrived (a read returns about one QUIC packet): the bucket's debt is
            // paid by waiting before the next read, which QUIC's flow control passes back to the server.
            transfers.take_tokens(chunk.len()).await;
        }
        transfers.counters.bytes_received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Err(error) = partial.write(&chunk) {
            return Attempt::Hostile(error.to_string());
        }
        if window_wait >= options.rate_window {
            let rate = window_bytes as f64 / window_wait.as_secs_f64();
            if rate < options.min_bytes_per_sec as f64 {
                return hostile(partial, format!("{rate:.0} bytes/s, below {} bytes/s", options.min_bytes_per_sec));
            }
            (window_bytes, window_wait) = (0, Duration::ZERO);
        }
    }
    // Every announced byte is here: the stream must end now.
    match tokio::time::timeout(options.stall_timeout, stream.read_chunk(BLOB_CHUNK_BYTES, true)).await {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(_))) => return hostile(partial, "more bytes than announced".to_owned()),
        Err(_) => return hostile(partial, "the stream did not end after the announced bytes".to_owned()),
        Ok(Err(error)) => return suspend(partial, error.to_string()),
    }
    match tokio::task::spawn_blocking(move || partial.finish()).await {
        Ok(Ok(())) => Attempt::Stored,
        // Bytes from an earlier attempt (maybe another peer) were part of the file: the part is gone, start again
        // without blaming this peer.
        Ok(Err(BlobError::HashMismatch { .. })) if resumed_from > 0 => {
            Attempt::Cut("a resumed file did not hash to its name; starting over".to_owned())
        }
        Ok(Err(BlobError::HashMismatch { expected })) => {
            Attempt::Hostile(format!("the bytes do not hash to {expected}"))
        }
        Ok(Err(error)) => Attempt::Cut(error.to_string()),
        Err(_) => Attempt::Cut("the task failed".to_owned()),
    }
}

fn suspend(partial: Partial, reason: String) -> Attempt {
    drop(partial.suspend());
    Attempt::Cut(reason)
}

fn suspend_refused(partial: Partial, answer: BlobAnswer) -> Attempt {
    drop(partial.suspend());
    Attempt::Refused(answer)
}

/// A hostile peer's bytes are never kept for a resume.
fn hostile(partial: Partial, reason: String) -> Attempt {
    partial.abandon();
    Attempt::Hostile(reason)
}

/// The background fetcher of a hall PC: scans the files cases name (`blob_refs`) for those whose key this node holds
/// and that are not here, and fetches them, at most `fetch_in_flight_max` at once under the bandwidth share. Woken by
/// new connections and by the store's counter (new cases, new materials), at most every
/// [`FETCH_SCAN_MIN_INTERVAL`], and every `scan_interval` anyway.
pub(super) async fn fetch_loop(shared: Arc<Shared>, transfers: Arc<Transfers>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut changes = shared.store.subscribe();
    // The transfers this loop started: aborted with it (a node shutting down leaves its parts for the next start).
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        if !lock(&transfers.ready).is_empty() {
            scan(&shared, &transfers, &mut running).await;
        }
        let started = Instant::now();
        tokio::select! {
            () = transfers.wake.notified() => {}
            _ = changes.changed() => {}
            () = tokio::time::sleep(transfers.options.scan_interval) => {}
            _ = shutdown.changed() => return,
        }
        let rest = FETCH_SCAN_MIN_INTERVAL.saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(rest) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn scan(shared: &Arc<Shared>, transfers: &Arc<Transfers>, running: &mut tokio::task::JoinSet<()>) {
    let mut after = String::new();
    loop {
        let Ok(page) = shared.store.blob_refs(&after, SCAN_PAGE_ROWS).await else { return };
        let Some(last) = page.last() else { return };
        after = last.hash.clone();
        for blob in page {
            if !blob.keyed || transfers.options.blobs.has(&blob.hash) {
                continue;
            }
            if lock(&transfers.retry_after).get(&blob.hash).is_some_and(|at| *at > Instant::now()) {
                continue;
            }
            if !lock(&transfers.in_flight).insert(blob.hash.clone()) {
                continue;
            }
            let Ok(slot) = transfers.slots.clone().acquire_owned().await else { return };
            if shared.is_shutting_down() {
                return;
            }
            let (shared, transfers) = (shared.clone(), transfers.clone());
            running.spawn(
                async move {
                    let _in_flight = InFlight(&transfers, blob.hash.clone());
                    match fetch_any(&shared, &transfers, &blob, true).await {
                        Outcome::Stored => {
                            lock(&transfers.retry_after).remove(&blob.hash);
                        }
                        Outcome::NotAllowed | Outcome::Unavailable => {
                            lock(&transfers.retry_after).insert(blob.hash.clone(), Instant::now() + FETCH_RETRY_AFTER);
                        }
                    }
                    drop(slot);
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
}

/// A connection's sync stream is set up: blob streams may be opened on it now, and files no peer had may be there.
/// The returned guard takes the connection out again when the driver ends.
pub(super) fn peer_connected(transfers: Arc<Transfers>, connection: &PeerConnection) -> ReadyGuard {
    lock(&transfers.ready).insert(connection.peer_key(), connection.clone());
    lock(&transfers.retry_after).clear();
    transfers.wake.notify_one();
    ReadyGuard { transfers, connection: connection.clone() }
}

/// See [`peer_connected`].
pub(super) struct ReadyGuard {
    transfers: Arc<Transfers>,
    connection: PeerConnection,
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        let mut ready = lock(&self.transfers.ready);
        let id = self.connection.quinn_connection().stable_id();
        if ready.get(&self.connection.peer_key()).is_some_and(|c| c.quinn_connection().stable_id() == id) {
            ready.remove(&self.connection.peer_key());
        }
    }
}

/// Fetches one file now (a desk page opening a material): asks the connected peers until one delivers it, for at most
/// `fetch_timeout`. Not limited by the bandwidth share: a person is waiting. The peers decide by the key rule.
pub(super) async fn fetch_now(shared: &Arc<Shared>, hash: &str) -> Result<(), FetchError> {
    let transfers = shared.transfers.clone().ok_or(FetchError::NotConfigured)?;
    if transfers.options.blobs.has(hash) {
        return Ok(());
    }
    let blob = shared.store.blob_ref(hash).await?.ok_or_else(|| FetchError::Unknown(hash.to_owned()))?;
    let attempt = async {
        loop {
            if transfers.options.blobs.has(hash) {
                return Ok(());
            }
            if !lock(&transfers.in_flight).insert(blob.hash.clone()) {
                // The background fetcher (or another page) is on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let in_flight = InFlight(&transfers, blob.hash.clone());
            let outcome = fetch_any(shared, &transfers, &blob, false).await;
            drop(in_flight);
            match outcome {
                Outcome::Stored => return Ok(()),
                Outcome::NotAllowed => return Err(FetchError::NotAllowed(hash.to_owned())),
                Outcome::Unavailable => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    match tokio::time::timeout(transfers.options.fetch_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(hash.to_owned())),
    }
}
