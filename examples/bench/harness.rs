//! What every row shares: a hall roster, a node (store + sync runtime) on 127.0.0.1, catalogs, the signed case
//! stores generated once and reused across rows and runs, and the statistics we quote (median, p99).
//!
//! The stores are generated with the node's own code paths (`Store::register` with a change signer) so that a peer
//! accepts every change; only the generation turns `synchronous` off (through the store's test hook), the stores the
//! rows measure run with the recommended `synchronous = FULL`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zhaowo_crdt::CaseDoc;
use zhaowo_crdt::model::Role;
use zhaowo_crdt::roster::{Enrollment, Record, Roster};
use zhaowo_crdt::time::Date;
pub use zhaowo_examples::rss_mb;
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::identity::NodeIdentity;
use zhaowo_node::store::{CATALOG_PAGE_MAX, Store, StoreOptions};
use zhaowo_node::sync::{SyncNode, SyncOptions};

/// Bound on any wait for convergence or settling: far above every goal, so a hang fails the run instead of blocking.
pub const WAIT_MAX: Duration = Duration::from_secs(3600);
/// Cases per batch handed from a maker thread to the storing loop while generating.
const GENERATE_BATCH_CASES: usize = 500;

/// The hall root key and the roster every node of a scenario shares.
pub struct Hall {
    root: ed25519_dalek::SigningKey,
    pub roster: Roster,
    windows: u32,
}

impl Hall {
    pub fn new() -> Hall {
        let root = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let roster = Roster::new(root.verifying_key().to_bytes());
        Hall { root, roster, windows: 0 }
    }

    /// Enrolls a node under the next window code (a window code belongs to one active node).
    pub fn enroll(&mut self, identity: &NodeIdentity) {
        self.windows += 1;
        let window = format!("BBC{:02}", self.windows);
        let record = Record::Enrollment(Enrollment {
            hall: self.root.verifying_key().to_bytes(),
            node_key: identity.verifying_key().to_bytes(),
            window: window.clone(),
            role: Role::Window,
            display_name: format!("{window} 窗口"),
            issued_ms: 1,
        })
        .sign(&self.root);
        self.roster.insert(record).expect("a fresh enrollment");
    }
}

/// One node of a scenario: its key, its store and (once started) its sync runtime.
pub struct BenchNode {
    pub identity: Arc<NodeIdentity>,
    pub store: Arc<Store>,
    pub sync: Option<SyncNode>,
}

impl BenchNode {
    /// Opens (or creates) the store at `path` with the recommended options and a change signer, as `zhaowo run` does.
    pub fn open(path: &Path, identity: Arc<NodeIdentity>) -> BenchNode {
        let store = Arc::new(open_store(path, &identity));
        BenchNode { identity, store, sync: None }
    }

    /// Starts the sync runtime on 127.0.0.1 with the recommended options and the given static peers.
    pub fn start(&mut self, roster: &Roster, peers: Vec<SocketAddr>) -> SocketAddr {
        let options = SyncOptions::recommended("127.0.0.1:0".parse().expect("an address"), peers);
        let sync = SyncNode::start(self.store.clone(), self.identity.clone(), roster.clone(), options).expect("start");
        let addr = sync.local_addr().expect("bound");
        self.sync = Some(sync);
        addr
    }

    pub async fn stop(&mut self) {
        if let Some(sync) = self.sync.take() {
            sync.shutdown().await;
        }
    }

    /// Whether a connected peer reports both directions caught up.
    pub fn settled(&self) -> bool {
        self.sync.as_ref().is_some_and(|sync| sync.status().peers().iter().any(|peer| peer.connected && peer.settled))
    }

    /// Frame payload bytes sent plus received, over every peer of the running sync runtime.
    pub fn frame_bytes(&self) -> (u64, u64) {
        self.sync.as_ref().map_or((0, 0), |sync| {
            sync.status()
                .peers()
                .iter()
                .fold((0, 0), |(sent, received), peer| (sent + peer.bytes_sent, received + peer.bytes_received))
        })
    }

    /// `(case id, heads hash)` of every document: what two converged nodes share.
    pub async fn catalog(&self) -> BTreeMap<String, [u8; 32]> {
        catalog(&self.store).await
    }
}

pub fn open_store(path: &Path, identity: &NodeIdentity) -> Store {
    let mut options = StoreOptions::recommended(path.to_path_buf(), identity.new_actor().expect("an actor"));
    options.signer = Some(identity.change_signer());
    Store::open(options).expect("open the store")
}

pub async fn catalog(store: &Store) -> BTreeMap<String, [u8; 32]> {
    let mut all = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.catalog_since(after, CATALOG_PAGE_MAX).await.expect("catalog");
        let Some(last) = page.last() else { return all };
        after = last.local_seq;
        all.extend(page.into_iter().map(|entry| (entry.case_id, entry.heads_hash)));
    }
}

/// Polls `condition` every `every` until it holds; panics after [`WAIT_MAX`].
pub async fn wait_until(what: &str, every: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT_MAX, "{what}: not within {WAIT_MAX:?}");
        tokio::time::sleep(every).await;
    }
    started.elapsed()
}

// ---- statistics ----

/// Median and p99 (nearest rank) of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(samples: &[Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Summary { n: ms.len(), median_ms: median_f64(&ms), p99_ms: nearest_rank(&ms, 0.99), max_ms: ms[ms.len() - 1] }
}

/// The median of sorted or unsorted values (the mean of the two middle ones for an even count).
pub fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

fn nearest_rank(sorted: &[f64], quantile: f64) -> f64 {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median_u64(values: &[u64]) -> u64 {
    median_f64(&values.iter().map(|&v| v as f64).collect::<Vec<_>>()).round() as u64
}

/// The database file plus its WAL.
pub fn file_bytes(path: &Path) -> u64 {
    ["", "-wal"].iter().map(|suffix| std::fs::metadata(with_suffix(path, suffix)).map_or(0, |meta| meta.len())).sum()
}

pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        drop(std::fs::remove_file(with_suffix(path, suffix)));
    }
}

/// Copies a closed store (file and WAL) so a row can change the copy and keep the generated original reusable.
pub fn copy_db(from: &Path, to: &Path) {
    remove_db(to);
    std::fs::copy(from, to).expect("copy the store");
    let wal = with_suffix(from, "-wal");
    if wal.exists() {
        std::fs::copy(&wal, with_suffix(to, "-wal")).expect("copy the WAL");
    }
}

// ---- generated stores ----

/// A store of `cases` signed cases and the key of the node that wrote them.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub cases: usize,
    pub db: PathBuf,
    pub key: PathBuf,
    /// Seconds spent generating in this run; `None` when a store from an earlier run was reused.
    pub generated_secs: Option<f64>,
}

impl Fixture {
    pub fn identity(&self) -> Arc<NodeIdentity> {
        Arc::new(NodeIdentity::load(&self.key).expect("the fixture's node key"))
    }

    fn read_only(&self) -> rusqlite::Connection {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        rusqlite::Connection::open_with_flags(&self.db, flags).expect("open the fixture read-only")
    }

    /// Bytes of the case documents as stored: snapshots plus change rows (what a fresh node must receive at least,
    /// compressed as the store keeps them; signatures and the catalog are not counted).
    pub fn document_bytes(&self) -> u64 {
        let conn = self.read_only();
        let snapshots: i64 =
            conn.query_row("SELECT coalesce(sum(length(snapshot)), 0) FROM docs", [], |row| row.get(0)).expect("sum");
        let changes: i64 =
            conn.query_row("SELECT coalesce(sum(length(bytes)), 0) FROM changes", [], |row| row.get(0)).expect("sum");
        (snapshots + changes) as u64
    }

    /// Bytes of the change signatures stored for the cases (64 each): what a node must receive beside the documents.
    pub fn signature_bytes(&self) -> u64 {
        let conn = self.read_only();
        let signatures: i64 = conn
            .query_row("SELECT coalesce(sum(length(signature)), 0) FROM change_signatures", [], |row| row.get(0))
            .expect("sum");
        signatures as u64
    }
}

/// The signed store of `cases` cases in `dir`, generated on first use (a `.done` marker says it is complete).
pub fn signed_store(dir: &Path, cases: usize) -> Fixture {
    let db = dir.join(format!("signed-{cases}.db"));
    let key = dir.join(format!("signed-{cases}.key"));
    let done = dir.join(format!("signed-{cases}.done"));
    let mut fixture = Fixture { cases, db: db.clone(), key: key.clone(), generated_secs: None };
    if done.exists() && db.exists() && key.exists() {
        return fixture;
    }
    remove_db(&db);
    drop(std::fs::remove_file(&key));
    let started = Instant::now();
    // Generation drives its own runtime: run it on a thread of its own, outside the caller's runtime.
    std::thread::scope(|scope| scope.spawn(|| generate(&db, &key, cases)).join().expect("the generator thread"));
    let secs = started.elapsed().as_secs_f64();
    std::fs::write(&done, format!("{secs:.1}\n")).expect("write the marker");
    fixture.generated_secs = Some(secs);
    fixture
}

/// Two threads make cases (Automerge and the fold cost about as much as storing them); the store thread registers
/// them, signed, one transaction each.
fn generate(db: &Path, key: &Path, cases: usize) {
    let identity = Arc::new(NodeIdentity::generate().expect("a key"));
    identity.save_new(key).expect("save the key");
    let store = open_store(db, &identity);
    // One case a minute from 2025-01-01: a million cases span two years of a busy hall.
    let first_ms = Date::new(2025, 1, 1).expect("a date").at_minute_ms(0);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        store.execute_raw("PRAGMA synchronous = OFF").await.expect("generation without fsync");
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<CaseDoc>>(4);
        let makers: Vec<_> = (0..2usize)
            .map(|maker| {
                let sender = sender.clone();
                let actor = identity.new_actor().expect("an actor");
                std::thread::spawn(move || {
                    // One window code per generator: both share the node's actor, hence its default window.
                    let mut factory =
                        CaseFactory::new(42 + maker as u64, actor, first_ms).with_window(&format!("GEN{maker}"));
                    let mut start = maker * GENERATE_BATCH_CASES;
                    while start < cases {
                        let count = GENERATE_BATCH_CASES.min(cases - start);
                        let batch = (start..start + count).map(|i| make_case(&mut factory, first_ms, i)).collect();
                        if sender.send(batch).is_err() {
                            return;
                        }
                        start += 2 * GENERATE_BATCH_CASES;
                    }
                })
            })
            .collect();
        drop(sender);
        let mut done = 0;
        for batch in receiver {
            for case in batch {
                store.register(case).await.expect("register a generated case");
                done += 1;
            }
            if done % 10_000 == 0 || done == cases {
                eprintln!(
                    "  generated {done}/{cases} signed cases in {:.0} s (rss {:.0} MB)",
                    started.elapsed().as_secs_f64(),
                    rss_mb()
                );
            }
        }
        for maker in makers {
            maker.join().expect("maker thread");
        }
    });
    store.close();
}

/// Case `i`: registered at minute `i` from `first_ms`, most worked a step or two, a third to (or near) the end of
/// its life (as `store_bench` makes them).
pub fn make_case(factory: &mut CaseFactory, first_ms: i64, i: usize) -> CaseDoc {
    factory.set_now_ms(first_ms + i as i64 * 60_000);
    let mut case = factory.register();
    let steps = if factory.below(3) == 0 { 4 + factory.below(5) } else { factory.below(3) } as usize;
    factory.work(&mut case, steps);
    case
}

// ---- where the time goes ----

/// CPU seconds (user + system) of every thread of this process, by thread id, with the thread's name.
pub fn thread_cpu() -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return threads };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`: the name may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the state field; clock ticks of 1/100 s.
        let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
        threads.insert(tid, (name, ticks as f64 / 100.0));
    }
    threads
}

/// CPU seconds (user + system) of the whole process so far, threads that ended included (sync checks pages of whole
/// documents on short-lived helper threads that [`thread_cpu`] cannot see once they are gone).
pub fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after the state field; clock ticks of 1/100 s. The
    // children's share (P6's child processes) is not wanted here, so only the first two.
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    ticks as f64 / 100.0
}

/// CPU seconds per thread name spent between two [`thread_cpu`] snapshots (threads that ended are not counted).
pub fn cpu_by_name(before: &BTreeMap<u32, (String, f64)>, after: &BTreeMap<u32, (String, f64)>) -> Vec<(String, f64)> {
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, secs)) in after {
        let earlier = before.get(tid).map_or(0.0, |(_, secs)| *secs);
        *by_name.entry(name.clone()).or_default() += secs - earlier;
    }
    let mut list: Vec<(String, f64)> = by_name.into_iter().filter(|(_, secs)| *secs > 0.0).collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    list
}

/// The busiest single thread between two snapshots: `(name, cpu seconds)`.
pub fn busiest_thread(before: &BTreeMap<u32, (String, f64)>, after: &BTreeMap<u32, (String, f64)>) -> (String, f64) {
    after
        .iter()
        .map(|(tid, (name, secs))| (name.clone(), secs - before.get(tid).map_or(0.0, |(_, secs)| *secs)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default()
}
