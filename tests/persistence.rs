//! T2 crash tests of the store: a child process writing cases (and, separately, applying remote batches, compacting
//! on every edit, migrating an old store) is killed with SIGKILL at random points; after each kill the parent reopens
//! the store and checks that every acknowledged case and event is present, `PRAGMA integrity_check` is ok and `verify`
//! finds nothing. The child is this test binary itself, re-executed with `ZHAOWO_CRASH_CHILD` set (built once).
//!
//! The power-cut model (an fsync interposer keeping only synced bytes) lives in `powercut`.

mod powercut;

use automerge::ActorId;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::store::{RemoteChanges, Store, StoreOptions};

const CHILD_ENV: &str = "ZHAOWO_CRASH_CHILD";
/// Kill cycles per mode in CI (TESTING.md T2: 100+); `ZHAOWO_CRASH_CYCLES` raises it for longer runs.
const CYCLES_CI: usize = 100;
/// A fresh store every this many cycles keeps the per-cycle `verify` cheap while still crashing over existing data.
const CYCLES_PER_STORE: usize = 10;
/// Batches (of 1-8 cases) the parent makes once for the remote children.
const REMOTE_POOL_BATCHES: usize = 60;
/// Batches one remote child applies (then repeats).
const REMOTE_BATCHES_PER_CHILD: usize = 6;
/// Cases in the old-schema store that the migration child upgrades.
const MIGRATION_CASES: usize = 60;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime")
}

fn remote_of(case: &mut zhaowo_crdt::CaseDoc) -> RemoteChanges {
    let changes = case.automerge_mut().get_changes(&[]).iter().map(|change| change.raw_bytes().to_vec()).collect();
    RemoteChanges { case_id: case.case_id().as_str().to_owned(), changes }
}

/// The child's side: runs until killed, printing `ACK <case> [<event>]` after each acknowledged write.
#[test]
#[allow(clippy::print_stdout)] // The child reports acknowledgements to its parent on stdout.
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let path = PathBuf::from(std::env::var("ZHAOWO_CRASH_DB").expect("db path"));
    let seed: u64 = std::env::var("ZHAOWO_CRASH_SEED").expect("seed").parse().expect("a number");
    let mut options = StoreOptions::recommended(path, actor(1));
    if mode == "compact" {
        options.compact_min_bytes = 0;
    }
    let mut factory = CaseFactory::new(seed, actor(1), CaseFactory::start_2026() + seed as i64 * 1000);
    // The remote child reads batches the parent made once, so kills land in the store, not in making cases.
    let batches = if mode == "remote" {
        let pool =
            decode_pool(&std::fs::read(std::env::var("ZHAOWO_CRASH_POOL").expect("pool path")).expect("pool file"));
        let first = (seed as usize * REMOTE_BATCHES_PER_CHILD) % pool.len();
        (0..REMOTE_BATCHES_PER_CHILD).map(|i| pool[(first + i) % pool.len()].clone()).collect()
    } else {
        Vec::new()
    };
    let store = Store::open(options).expect("child opens the store");
    println!("OPEN");
    runtime().block_on(async {
        let mut mine: Vec<String> = Vec::new();
        let mut round = 0;
        loop {
            match mode.as_str() {
                "local" | "migrate" | "compact" => {
                    let register = mine.len() < 3 || (mode != "compact" && factory.below(3) == 0);
                    if register {
                        let ack = store.register(factory.register()).await.expect("register");
                        println!("ACK {}", ack.case_id);
                        mine.push(ack.case_id);
                    } else {
                        let case_id = mine[factory.below(mine.len() as u64) as usize].clone();
                        let view = store.case_view(&case_id).await.expect("view");
                        let command = factory.next_command(&view);
                        if let Ok(ack) = store.apply(&case_id, factory.ctx(), factory.hall(), command).await {
                            println!("ACK {} {}", ack.case_id, ack.event_id.expect("an edit adds an event"));
                        }
                    }
                }
                "remote" => {
                    // The first pass stores the batches, later passes repeat them (no-ops, crashed into or not).
                    let batch: Vec<RemoteChanges> = batches[round % batches.len()].clone();
                    round += 1;
                    let ids: Vec<String> = batch.iter().map(|remote| remote.case_id.clone()).collect();
                    store.apply_remote(batch).await.expect("apply remote");
                    for id in ids {
                        println!("ACK {id}");
                    }
                }
                other => panic!("unknown crash mode {other}"),
            }
        }
    });
}

fn encode_pool(pool: &[Vec<RemoteChanges>]) -> Vec<u8> {
    let mut out = Vec::new();
    let put = |bytes: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    out.extend_from_slice(&(pool.len() as u32).to_le_bytes());
    for batch in pool {
        out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        for remote in batch {
            put(remote.case_id.as_bytes(), &mut out);
            out.extend_from_slice(&(remote.changes.len() as u32).to_le_bytes());
            for change in &remote.changes {
                put(change, &mut out);
            }
        }
    }
    out
}

fn decode_pool(mut bytes: &[u8]) -> Vec<Vec<RemoteChanges>> {
    let u32_ = |bytes: &mut &[u8]| {
        let (head, rest) = bytes.split_at(4);
        *bytes = rest;
        u32::from_le_bytes(head.try_into().unwrap()) as usize
    };
    let take = |bytes: &mut &[u8], n: usize| {
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        head.to_vec()
    };
    let n_batches = u32_(&mut bytes);
    let mut pool = Vec::with_capacity(n_batches);
    for _ in 0..n_batches {
        let n_docs = u32_(&mut bytes);
        let mut batch = Vec::with_capacity(n_docs);
        for _ in 0..n_docs {
            let id_len = u32_(&mut bytes);
            let case_id = String::from_utf8(take(&mut bytes, id_len)).unwrap();
            let n_changes = u32_(&mut bytes);
            let mut changes = Vec::with_capacity(n_changes);
            for _ in 0..n_changes {
                let len = u32_(&mut bytes);
                changes.push(take(&mut bytes, len));
            }
            batch.push(RemoteChanges { case_id, changes });
        }
        pool.push(batch);
    }
    pool
}

/// The remote children's batches, made once per test run.
fn remote_pool() -> &'static (tempfile::TempDir, PathBuf) {
    static POOL: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut factory = CaseFactory::new(77, actor(2), CaseFactory::start_2026());
        let pool: Vec<Vec<RemoteChanges>> = (0..REMOTE_POOL_BATCHES)
            .map(|_| {
                (0..1 + factory.below(8))
                    .map(|_| {
                        let mut case = factory.register();
                        let steps = factory.below(6) as usize;
                        factory.work(&mut case, steps);
                        remote_of(&mut case)
                    })
                    .collect()
            })
            .collect();
        assert_eq!(decode_pool(&encode_pool(&pool)), pool);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.bin");
        std::fs::write(&path, encode_pool(&pool)).unwrap();
        (dir, path)
    })
}

/// Everything the child acknowledged: case → event ids (empty for a registration or a remote case).
type Acked = BTreeMap<String, BTreeSet<String>>;

struct CycleResult {
    acked_cases: usize,
    acked_events: usize,
    lost: usize,
    integrity_ok: bool,
    verify_problems: usize,
    opened: bool,
}

/// Longest wait for the child to open its store before the kill timer starts anyway (a loaded CI machine).
const CHILD_OPEN_WAIT_MS_MAX: u64 = 10_000;

/// Runs the child and kills it `kill_after` after it opened its store (the migration child: after it started, so
/// that kills land inside the migration).
fn run_child(mode: &str, db: &Path, seed: u64, kill_after: Duration) -> (Acked, bool) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "persistence::crash_child", "--nocapture", "--test-threads", "1", "-q"])
        .env(CHILD_ENV, mode)
        .env("ZHAOWO_CRASH_DB", db)
        .env("ZHAOWO_CRASH_SEED", seed.to_string())
        .env("ZHAOWO_CRASH_POOL", if mode == "remote" { remote_pool().1.clone() } else { PathBuf::new() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the crash child");
    let stdout = child.stdout.take().expect("piped stdout");
    let acked = Arc::new(Mutex::new((Acked::new(), false)));
    let (opened_sender, opened) = std::sync::mpsc::channel();
    let reader = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("OPEN") => {
                        acked.lock().unwrap().1 = true;
                        // The parent may have stopped waiting; then nobody needs the signal.
                        let _ = opened_sender.send(());
                    }
                    Some("ACK") => {
                        let case = words.next().expect("a case id").to_owned();
                        let mut guard = acked.lock().unwrap();
                        let events = guard.0.entry(case).or_default();
                        if let Some(event) = words.next() {
                            events.insert(event.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    if mode != "migrate" {
        // A child that never opens is killed after the wait like any other.
        let _ = opened.recv_timeout(Duration::from_millis(CHILD_OPEN_WAIT_MS_MAX));
    }
    std::thread::sleep(kill_after);
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no COMMIT of anything in flight.
    child.kill().expect("kill the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child must die by the signal, not finish: {status:?}");
    reader.join().expect("reader thread");
    let guard = acked.lock().unwrap();
    (guard.0.clone(), guard.1)
}

fn check_store(db: &Path, acked: &Acked, must_exist: &[String]) -> CycleResult {
    let store = Store::open(StoreOptions::recommended(db.to_path_buf(), actor(1))).expect("reopen after kill");
    runtime().block_on(async {
        let mut lost = 0;
        for (case_id, events) in acked {
            match store.case_view(case_id).await {
                Ok(view) => {
                    let present: BTreeSet<String> = view.event_ids.iter().map(|id| id.to_string()).collect();
                    lost += events.difference(&present).count();
                }
                Err(error) => {
                    eprintln!("LOST case {case_id}: {error}");
                    lost += 1 + events.len();
                }
            }
        }
        for case_id in must_exist {
            if store.case_view(case_id).await.is_err() {
                lost += 1;
            }
        }
        let integrity = store.integrity_check().await.expect("integrity check");
        let verify = store.verify(None).await.expect("verify");
        for problem in &verify.problems {
            eprintln!("verify: {problem}");
        }
        CycleResult {
            acked_cases: acked.len(),
            acked_events: acked.values().map(BTreeSet::len).sum(),
            lost,
            integrity_ok: integrity == ["ok"],
            verify_problems: verify.problems.len(),
            opened: true,
        }
    })
}

fn cycles() -> usize {
    std::env::var("ZHAOWO_CRASH_CYCLES").ok().and_then(|text| text.parse().ok()).unwrap_or(CYCLES_CI)
}

/// A small xorshift for kill delays, seeded and printed so a failing run can be repeated.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn crash_cycles(mode: &str, kill_ms: std::ops::Range<u64>, prepare: impl Fn(&Path) -> Vec<String>) {
    let seed =
        std::env::var("ZHAOWO_CRASH_SEED_BASE").ok().and_then(|text| text.parse().ok()).unwrap_or(0x2545_f491u64);
    let mut rng = seed;
    let n = cycles();
    let started = Instant::now();
    let mut dir = tempfile::tempdir().unwrap();
    let mut db = dir.path().join("cases.db");
    let mut must_exist = Vec::new();
    let (mut acked_cases, mut acked_events, mut lost, mut integrity_ok, mut verify_clean, mut child_opened) =
        (0, 0, 0, 0, 0, 0);
    let mut all_acked = Acked::new();
    let mut versions_seen = BTreeMap::<i64, usize>::new();
    for cycle in 0..n {
        if cycle % CYCLES_PER_STORE == 0 || mode == "migrate" {
            dir = tempfile::tempdir().unwrap();
            db = dir.path().join("cases.db");
            must_exist = prepare(&db);
            all_acked.clear();
        }
        let kill_after = Duration::from_millis(kill_ms.start + next(&mut rng) % (kill_ms.end - kill_ms.start));
        let (acked, opened) = run_child(mode, &db, 1 + cycle as u64, kill_after);
        child_opened += usize::from(opened);
        if mode == "migrate" {
            // Before anything reopens it: the file holds the old schema or the new one, never a mix.
            let raw = rusqlite::Connection::open(&db).unwrap();
            let version: i64 = raw.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
            let integrity: String = raw.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
            assert_eq!(integrity, "ok", "migrate: integrity after the kill in cycle {cycle}");
            let tables: i64 =
                raw.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'cases'", [], |row| row.get(0)).unwrap();
            assert_eq!(
                tables,
                i64::from(version >= 2),
                "migrate: schema version {version} with cases table count {tables}"
            );
            *versions_seen.entry(version).or_insert(0) += 1;
        }
        for (case, events) in acked {
            all_acked.entry(case).or_default().extend(events);
        }
        let result = check_store(&db, &all_acked, &must_exist);
        assert!(result.opened);
        acked_cases += result.acked_cases;
        acked_events += result.acked_events;
        lost += result.lost;
        integrity_ok += usize::from(result.integrity_ok);
        verify_clean += usize::from(result.verify_problems == 0);
        assert_eq!(result.lost, 0, "{mode}: acknowledged writes lost in cycle {cycle} (seed {seed})");
        assert!(result.integrity_ok, "{mode}: integrity_check failed in cycle {cycle} (seed {seed})");
        assert_eq!(result.verify_problems, 0, "{mode}: verify found problems in cycle {cycle} (seed {seed})");
    }
    eprintln!(
        "kill9 mode={mode} cycles={n} child_opened={child_opened} acked_cases={acked_cases} acked_events={acked_events} lost={lost} \
         integrity_ok={integrity_ok}/{n} verify_clean={verify_clean}/{n} schema_after_kill={versions_seen:?} seed={seed} \
         elapsed={:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn kill9_while_writing_cases_loses_no_acknowledged_case() {
    crash_cycles("local", 0..150, |_| Vec::new());
}

#[test]
fn kill9_while_applying_remote_batches_loses_no_acknowledged_batch() {
    crash_cycles("remote", 0..150, |_| Vec::new());
}

#[test]
fn kill9_while_compacting_on_every_edit_loses_nothing() {
    crash_cycles("compact", 0..150, |_| Vec::new());
}

/// An old (schema version 1) store with cases, built once and copied for every cycle.
fn migration_template() -> &'static (tempfile::TempDir, PathBuf, Vec<String>) {
    static TEMPLATE: std::sync::OnceLock<(tempfile::TempDir, PathBuf, Vec<String>)> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let mut options = StoreOptions::recommended(path.clone(), actor(1));
        options.schema_version_target = 1;
        let store = Store::open(options).unwrap();
        let mut factory = CaseFactory::new(99, actor(2), CaseFactory::start_2026());
        let mut ids = Vec::new();
        runtime().block_on(async {
            let mut batch = Vec::new();
            for _ in 0..MIGRATION_CASES {
                let mut case = factory.register();
                let steps = factory.below(6) as usize;
                factory.work(&mut case, steps);
                ids.push(case.case_id().as_str().to_owned());
                batch.push(remote_of(&mut case));
            }
            store.apply_remote(batch).await.unwrap();
        });
        store.close();
        (dir, path, ids)
    })
}

#[test]
fn kill9_while_migrating_leaves_the_old_or_the_new_schema_whole() {
    crash_cycles("migrate", 5..400, |db| {
        let (_, template, ids) = migration_template();
        std::fs::copy(template, db).unwrap();
        ids.clone()
    });
}
