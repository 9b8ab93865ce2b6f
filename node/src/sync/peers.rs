//! Finding peers: the accept loop, static peers dialed and redialed with capped backoff, address hints (peers' peer
//! lists, mDNS) dialed once, and the one-session-per-pair tie-break ([`claim`]).

use super::driver::run_connection;
use super::{Active, Shared, lock, now_ms};
use crate::transport::{CloseCode, NodeKey, PeerConnection, Refusal, TransportError, short_key};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

pub(super) async fn accept_loop(shared: Arc<Shared>) {
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
            Some(Err(error)) => refused_incoming(&shared, &error),
        }
    }
}

/// Dials a static peer forever: at once, then after a capped exponential backoff whenever the connection fails or
/// ends. While another connection to the same key is live (the peer dialed us), it waits instead of dialing.
pub(super) async fn dial_loop(shared: Arc<Shared>, addr: SocketAddr) {
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
                shared.forget_address_status(addr);
                shared.update_status(&key, |status| status.address = Some(addr));
                let clean = run_connection(shared.clone(), connection, true).await;
                if clean {
                    backoff = shared.options.redial_min;
                }
            }
            Err(error) => match error.refusal() {
                Some(refusal) => {
                    // Told why (issue 14 §5): say it where a person looks, and do not hammer the peer; a refusal
                    // lasts until an admin acts.
                    tracing::warn!(%addr, reason = refusal.describe(), "the peer refused this node");
                    match known_key {
                        Some(key) => shared.update_status(&key, |status| shared.refused(status, refusal)),
                        None => shared.update_address_status(addr, |status| shared.refused(status, refusal)),
                    }
                    backoff = shared.options.redial_max;
                }
                None => {
                    tracing::debug!(%addr, %error, "dial failed");
                    let text = error.to_string();
                    match known_key {
                        Some(key) => shared.update_status(&key, |status| status.last_error = Some(text)),
                        None => shared.update_address_status(addr, |status| status.last_error = Some(text)),
                    }
                }
            },
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

pub(super) fn hint(shared: &Arc<Shared>, node_key: NodeKey, addr: SocketAddr) {
    if node_key == shared.our_key
        || shared.is_shutting_down()
        || shared.live.roster().authorized(&node_key).is_none()
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
pub(super) fn claim(shared: &Shared, connection: &PeerConnection, dialed_by_us: bool) -> Option<usize> {
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

/// An incoming connection this node refused: logged with the reason (the refused node reads it in the close), counted,
/// and shown on the peers page for a member of the roster (a revoked one). Unknown keys are not given a status entry:
/// a stranger with many keys must not fill the table and push the hall's own nodes out of it.
fn refused_incoming(shared: &Shared, error: &TransportError) {
    let TransportError::Unauthorized { peer, refusal } = error else {
        tracing::debug!(%error, "incoming connection refused");
        return;
    };
    shared.counters.refused_connections.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = %short_key(peer), reason = refusal.describe(), "refused a node");
    if shared.live.roster().enrollment(peer).is_some() {
        let refusal: Refusal = *refusal;
        shared.update_status(peer, |status| shared.refused(status, refusal));
    }
}
