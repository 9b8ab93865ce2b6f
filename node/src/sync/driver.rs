//! One connection's session: a reader task, the driver (batches frames and "our catalog grew" into store steps,
//! one transaction each) and a writer task that sends only what a committed step produced.

use super::peers::{claim, hint};
use super::{READ_QUEUE_FRAMES_MAX, STEP_FRAMES_MAX, Shared, WRITE_QUEUE_BYTES_MAX, lock, now_ms};
use crate::store::{SyncInput, SyncStep};
use crate::transport::{CloseCode, FrameReader, FrameWriter, PeerConnection, TransportError, short_key};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;
use zhaowo_crdt::sync::{Session, SessionEvent, SyncError};
use zhaowo_crdt::wire::{self, Frame};

/// Runs one connection's session until it ends. Returns whether it ended cleanly (the peer or we closed it in order).
pub(super) async fn run_connection(shared: Arc<Shared>, connection: PeerConnection, dialed_by_us: bool) -> bool {
    let key = connection.peer_key();
    let span = tracing::info_span!("peer", peer = %short_key(&key), remote = %connection.remote_address());
    async {
        let Some(id) = claim(&shared, &connection, dialed_by_us) else { return true };
        shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
        shared.update_status(&key, |status| {
            status.connected = true;
            status.settled = false;
            status.refusal = None;
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
    let (mut writer, reader) = streams.map_err(|error| error.to_string())?;
    // Case sync goes before material bytes on this connection (`transfer`).
    drop(writer.stream_mut().set_priority(super::transfer::SYNC_STREAM_PRIORITY));
    let (checkpoint, _) = shared.store.checkpoint(key).await.map_err(|error| error.to_string())?;
    let mut session = Session::new(shared.our_key, key, checkpoint, &shared.live.roster());

    let (frames_in, mut frames_rx) = mpsc::channel(READ_QUEUE_FRAMES_MAX);
    let reader = tokio::spawn(reader_task(reader, frames_in));
    let (frames_out, frames_out_rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(writer_task(writer, frames_out_rx, queued.clone()));
    let mut tasks = vec![reader, writer];
    let mut ready = None;
    if let Some(transfers) = shared.transfers.clone() {
        // Only now, with the sync stream accepted or opened: every later stream of this connection is a blob stream.
        let serve = super::transfer::serve_streams(shared.clone(), transfers.clone(), connection.clone());
        tasks.push(tokio::spawn(serve.instrument(tracing::Span::current())));
        ready = Some(super::transfer::peer_connected(transfers, connection));
    }
    let _abort = AbortOnDrop(tasks);
    let _ready = ready;
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
    let mut roster_changed = shared.live.watch_roster();
    let mut hall_changed = shared.live.watch_hall();
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
                let records = shared.live.roster().records().to_vec();
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
            roster: (*shared.live.roster()).clone(),
            inputs,
            hall: shared.live.signed_hall(),
        };
        let outcome = shared.store.sync_step(step).await;
        session = outcome.session;
        if !outcome.new_records.is_empty() {
            // Published to every driver (gossip) and the transport; live connections of revoked keys are closed by
            // the revocation watcher (`super::revocations`).
            shared.live.add_records(outcome.new_records);
        }
        if outcome.hall_changed {
            shared.live.hall_grew();
        }
        for event in outcome.events {
            match event {
                SessionEvent::ChangeRefused { doc_id, reason } => {
                    shared.counters.refused_changes.fetch_add(1, Ordering::Relaxed);
                    shared.update_status(&key, |status| status.refused_changes += 1);
                    tracing::warn!(%doc_id, %reason, "refused a document from this peer; the session goes on");
                }
                SessionEvent::KeyReceived { doc_id } => {
                    tracing::debug!(%doc_id, "case key received");
                }
                SessionEvent::KeyRefused { doc_id, reason } => {
                    shared.counters.refused_changes.fetch_add(1, Ordering::Relaxed);
                    shared.update_status(&key, |status| status.refused_changes += 1);
                    tracing::warn!(%doc_id, %reason, "refused a case key from this peer");
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
                SyncError::Unauthorized => CloseCode::Unauthorized,
                SyncError::OtherHall => CloseCode::OtherHall,
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
