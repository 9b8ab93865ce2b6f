//! A fault-injecting UDP socket under quinn, for tests of whole nodes over a bad network (TESTING.md T1 with the
//! real endpoint, drivers and SQLite stores): per-packet loss, duplication, delay with jitter (which reorders), and
//! partitions by link and direction.
//!
//! Every node of a test binds its endpoint through [`TransportConfig::faults`](super::TransportConfig::faults) onto one
//! shared [`FaultyNetwork`]; each datagram a node sends is judged once, on the sending side, by a seeded generator.
//! Nothing here is deterministic across runs (the kernel and tokio schedule real sockets): the seed fixes the fault
//! rates' draws, not the trace. The deterministic, replayable model of the same faults is `crdt/tests/simulation.rs`.
//!
//! Off unless a test sets it: a node built with [`TransportConfig::recommended`](super::TransportConfig::recommended)
//! uses quinn's own socket.

use quinn::{AsyncUdpSocket, UdpPoller, udp::RecvMeta, udp::Transmit};
use std::collections::HashSet;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Faults applied to every datagram while they are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Datagrams dropped, per thousand sent.
    pub loss_per_mille: u32,
    /// Datagrams sent twice, per thousand sent.
    pub dup_per_mille: u32,
    /// Each datagram waits a uniform 0..=this many milliseconds before it leaves (so later ones may overtake it).
    pub delay_ms_max: u64,
}

/// What the network did, counted over every socket on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub datagrams: u64,
    pub lost: u64,
    pub partitioned: u64,
    pub duplicated: u64,
    pub delayed: u64,
}

#[derive(Debug)]
struct NetState {
    rng: u64,
    plan: Option<FaultPlan>,
    /// Directed links that drop everything: `(from, to)`.
    blocked: HashSet<(SocketAddr, SocketAddr)>,
    counts: FaultCounts,
}

/// The network every faulty socket of a test shares.
#[derive(Debug)]
pub struct FaultyNetwork {
    state: Mutex<NetState>,
}

/// What happens to one datagram.
enum Verdict {
    Drop,
    Send { copies: usize, delay_ms: u64 },
}

impl FaultyNetwork {
    pub fn new(seed: u64) -> Arc<FaultyNetwork> {
        Arc::new(FaultyNetwork {
            state: Mutex::new(NetState {
                rng: seed ^ 0x9e37_79b9_7f4a_7c15,
                plan: None,
                blocked: HashSet::new(),
                counts: FaultCounts::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Turns per-packet faults on (`Some`) or off (`None`); partitions are separate.
    pub fn set_faults(&self, plan: Option<FaultPlan>) {
        self.lock().plan = plan;
    }

    /// Drops everything `from` sends to `to` (one direction).
    pub fn block(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().blocked.insert((from, to));
    }

    /// Lifts every partition.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    pub fn counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// A uniform draw in `0..n` (SplitMix64; `n` > 0).
    fn draw(state: &mut NetState, n: u64) -> u64 {
        state.rng = state.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }

    fn judge(&self, from: SocketAddr, to: SocketAddr) -> Verdict {
        let mut state = self.lock();
        state.counts.datagrams += 1;
        if state.blocked.contains(&(from, to)) {
            state.counts.partitioned += 1;
            return Verdict::Drop;
        }
        let Some(plan) = state.plan else { return Verdict::Send { copies: 1, delay_ms: 0 } };
        if FaultyNetwork::draw(&mut state, 1000) < u64::from(plan.loss_per_mille) {
            state.counts.lost += 1;
            return Verdict::Drop;
        }
        let copies = if FaultyNetwork::draw(&mut state, 1000) < u64::from(plan.dup_per_mille) {
            state.counts.duplicated += 1;
            2
        } else {
            1
        };
        let delay_ms = if plan.delay_ms_max == 0 { 0 } else { FaultyNetwork::draw(&mut state, plan.delay_ms_max + 1) };
        if delay_ms > 0 {
            state.counts.delayed += 1;
        }
        Verdict::Send { copies, delay_ms }
    }
}

/// quinn's socket with the network's faults applied to what it sends.
#[derive(Debug)]
pub(crate) struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    network: Arc<FaultyNetwork>,
    local: SocketAddr,
}

impl FaultySocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, network: Arc<FaultyNetwork>) -> std::io::Result<FaultySocket> {
        let local = inner.local_addr()?;
        Ok(FaultySocket { inner, network, local })
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> std::io::Result<()> {
        let (copies, delay_ms) = match self.network.judge(self.local, transmit.destination) {
            // A dropped datagram was "sent" as far as quinn knows: its loss detection takes it from there.
            Verdict::Drop => return Ok(()),
            Verdict::Send { copies, delay_ms } => (copies, delay_ms),
        };
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if delay_ms > 0 => {
                let inner = self.inner.clone();
                let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
                let contents = transmit.contents.to_vec();
                runtime.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    let delayed = Transmit { destination, ecn, contents: &contents, segment_size: None, src_ip };
                    for _ in 0..copies {
                        // A full socket buffer later is a loss like any other.
                        drop(inner.try_send(&delayed));
                    }
                });
                Ok(())
            }
            _ => {
                self.inner.try_send(transmit)?;
                if copies > 1 {
                    drop(self.inner.try_send(transmit));
                }
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per transmit (no GSO batches), so each datagram meets its own fate.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
