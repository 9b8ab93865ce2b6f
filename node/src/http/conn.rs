//! One listener's accept loop: HTTP/1 connections served by hyper under caps and timeouts that `axum::serve` does
//! not have (issue 14 §2: ~20,000 connections that never finished their headers exhausted the node's descriptors).
//!
//! - a header-read timeout (hyper's, with a tokio timer): a request head must arrive whole within it, and a
//!   kept-alive connection waits that long for its next request;
//! - an idle timeout: a connection on which no byte moved either way for that long is closed (a client that stops
//!   reading its answer or trickles its body);
//! - a cap per client address: connections beyond it get a `503` and are closed at once;
//! - a cap per listener: when full, the oldest connection that is not in the middle of a request (a slow head or
//!   an idle keep-alive) is closed to make room, so a new citizen gets in however many slow clients hold the port;
//!   only when every connection is busy with a request is the newcomer answered `503`.
//!
//! Each listener has its own loop and registry, so the desk never shares a cap with the public port.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// How long the accept loop pauses after an accept error (out of descriptors, too many connections in the kernel):
/// long enough for connections to close, short enough that a citizen barely notices.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;

/// The answer to a connection over a cap, written without waiting (a client that does not read it loses nothing).
fn refusal() -> String {
    let body = "连接过多，请稍后再试。\r\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The caps and timeouts of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub connections_max: usize,
    pub per_address_max: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One open connection, as the registry sees it.
#[derive(Debug)]
struct Entry {
    addr: IpAddr,
    opened: Instant,
    /// Requests being answered on it (0: reading a head or idle between requests).
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

/// The open connections of one listener.
#[derive(Debug, Default)]
struct Registry {
    entries: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// What the registry decided about a new connection.
enum Admission {
    Admitted { id: u64, in_flight: Arc<AtomicUsize>, close: Arc<Notify> },
    OverAddressCap,
    Full,
}

impl Registry {
    fn admit(&mut self, addr: IpAddr, limits: &ConnectionLimits) -> Admission {
        if self.per_address.get(&addr).copied().unwrap_or(0) >= limits.per_address_max {
            return Admission::OverAddressCap;
        }
        if self.entries.len() >= limits.connections_max {
            let oldest_waiting = self
                .entries
                .iter()
                .filter(|(_, entry)| entry.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, entry)| entry.opened)
                .map(|(id, _)| *id);
            match oldest_waiting {
                Some(id) => {
                    if let Some(entry) = self.remove(id) {
                        entry.close.notify_one();
                    }
                }
                None => return Admission::Full,
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let (in_flight, close) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        self.entries
            .insert(id, Entry { addr, opened: Instant::now(), in_flight: in_flight.clone(), close: close.clone() });
        *self.per_address.entry(addr).or_insert(0) += 1;
        Admission::Admitted { id, in_flight, close }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(count) = self.per_address.get_mut(&entry.addr) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&entry.addr);
            }
        }
        Some(entry)
    }
}

/// Counts one request in flight on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that records when a byte last moved (milliseconds since `base`), for the idle timeout.
struct Watched {
    stream: TcpStream,
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Resolves once no byte moved for `idle` (checked at the moments it could first have run out).
async fn idle_for(base: Instant, last_ms: Arc<AtomicU64>, idle: Duration) {
    loop {
        let last = base + Duration::from_millis(last_ms.load(Ordering::Acquire));
        let deadline = last + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Accepts and serves connections on `listener` until accepting fails for good.
pub(crate) async fn serve_listener(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
) -> std::io::Result<()> {
    let registry = Arc::new(Mutex::new(Registry::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_transient(&error) => {
                tracing::warn!(listener = name, %error, "accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let addr = peer.ip().to_canonical();
        let admission = registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(addr, &limits);
        let (id, in_flight, close) = match admission {
            Admission::Admitted { id, in_flight, close } => (id, in_flight, close),
            refused => {
                let why = if matches!(refused, Admission::Full) { "listener full" } else { "address over its cap" };
                tracing::debug!(listener = name, why, "connection refused");
                let _ = stream.try_write(refusal().as_bytes());
                continue;
            }
        };
        let router = router.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router, limits, in_flight, close).await;
            registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        });
    }
}

/// Errors after which accepting goes on (a connection reset before accept, descriptors exhausted for a moment).
fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(error.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory)
        || matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// `EMFILE` and `ENFILE` on Linux (the process or the system out of descriptors): no libc dependency for two numbers.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
) {
    let base = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched { stream, base, last_ms: last_ms.clone() });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let guard = InFlight::new(&in_flight);
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "http connection ended");
            }
        }
        () = close.notified() => tracing::debug!(%peer, "connection closed to make room on a full listener"),
        () = idle_for(base, last_ms, limits.idle_timeout) => tracing::debug!(%peer, "idle connection closed"),
    }
}
