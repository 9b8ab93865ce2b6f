//! Store benchmark (not a test): generates N cases (default 1,000,000), then prints a table of store size, open time,
//! RSS after open (measured in a fresh process), a register page with two filters, a full-text query and statistics
//! for a year; and a local acknowledged write against a bare rusqlite INSERT+COMMIT of the same bytes with the same
//! pragmas, in the same run.
//!
//! ```text
//! cargo run --release -p zhaowo-examples --example store_bench -- --cases 1000000 --dir /tmp/zhaowo-bench
//! # or measure a store generated elsewhere, e.g. the bench's signed million (`bench --generate 1000000`):
//! cargo run --release -p zhaowo-examples --example store_bench -- --db /tmp/zhaowo-bench/signed-1000000.db
//! ```
//! Goals (issue 3): open ≤ 2 s, RSS ≤ 300 MB, a filtered page ≤ 50 ms, acknowledged write ≤ 1.5× the bare commit.

#![allow(clippy::print_stdout)] // The benchmark's table is its output.

use automerge::ActorId;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zhaowo_crdt::model::Status;
use zhaowo_crdt::time::Date;
use zhaowo_examples::rss_mb;
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::store::{RegisterQuery, RemoteChanges, Store, StoreOptions};

static MAKING_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Documents per remote batch while loading: one transaction each.
const LOAD_BATCH_DOCS: usize = 1000;
/// Timed repetitions of each query (the median is printed).
const QUERY_RUNS: usize = 15;
/// Writes in the acknowledged-write comparison.
const WRITE_RUNS: usize = 400;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn file_size(path: &Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        total += std::fs::metadata(&name).map_or(0, |meta| meta.len());
    }
    total
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

fn generate(db: &Path, n_cases: usize) {
    let mut options = StoreOptions::recommended(db.to_path_buf(), actor(1));
    if let Some(cache) = std::env::var("ZHAOWO_BENCH_CACHE_DOCS").ok().and_then(|text| text.parse().ok()) {
        options.cache_docs_max = cache;
    }
    let store = Store::open(options).expect("open");
    // One case a minute from 2025-01-01: a million cases span two years of a busy hall.
    let first_ms = Date::new(2025, 1, 1).expect("a date").at_minute_ms(0);
    let started = Instant::now();
    runtime().block_on(async {
        let mut done = 0;
        let mut storing = Duration::ZERO;
        // Two threads make the cases (Automerge + the fold cost as much as storing them); this one stores.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<RemoteChanges>>(4);
        let makers: Vec<_> = (0..2u8)
            .map(|maker| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    let mut factory = CaseFactory::new(42 + u64::from(maker), actor(2 + maker), first_ms);
                    let mut start = usize::from(maker) * LOAD_BATCH_DOCS;
                    while start < n_cases {
                        let started = Instant::now();
                        let batch = make_batch(&mut factory, first_ms, start, LOAD_BATCH_DOCS.min(n_cases - start));
                        MAKING_NS.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
                        if sender.send(batch).is_err() {
                            break;
                        }
                        start += 2 * LOAD_BATCH_DOCS;
                    }
                })
            })
            .collect();
        drop(sender);
        for batch in receiver {
            done += batch.len();
            let storing_started = Instant::now();
            let report = store.apply_remote(batch).await.expect("apply");
            storing += storing_started.elapsed();
            assert!(report.rejected.is_empty(), "{:?}", report.rejected);
            if done % 50_000 == 0 || done == n_cases {
                eprintln!(
                    "generated {done} cases in {:.0} s (making {:.0} s of thread time, storing {:.0} s, rss {:.0} MB)",
                    started.elapsed().as_secs_f64(),
                    MAKING_NS.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9,
                    storing.as_secs_f64(),
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

/// `count` cases registered one a minute from `first_ms + start` minutes, each worked a few steps, as remote changes.
fn make_batch(factory: &mut CaseFactory, first_ms: i64, start: usize, count: usize) -> Vec<RemoteChanges> {
    let mut batch = Vec::with_capacity(count);
    for i in 0..count {
        factory.set_now_ms(first_ms + (start + i) as i64 * 60_000);
        let mut case = factory.register();
        // Most cases get a step or two; a third are worked to (or near) the end of their life.
        let steps = if factory.below(3) == 0 { 4 + factory.below(5) } else { factory.below(3) } as usize;
        factory.work(&mut case, steps);
        let changes = case.automerge_mut().get_changes(&[]).iter().map(|change| change.raw_bytes().to_vec()).collect();
        batch.push(RemoteChanges { case_id: case.case_id().as_str().to_owned(), changes });
    }
    batch
}

/// Runs in a fresh process so RSS counts only what opening and querying cost.
fn measure_open(db: &Path) {
    let rss_before = rss_mb();
    let started = Instant::now();
    let store = Store::open(StoreOptions::recommended(db.to_path_buf(), actor(1))).expect("open");
    let open_time = started.elapsed();
    let rss_open = rss_mb();
    let runtime = runtime();
    runtime.block_on(async {
        let counts = store.counts().await.unwrap();
        let query = RegisterQuery {
            status: Some(Status::InProgress),
            category: Some("BDC".to_owned()),
            limit: 50,
            ..RegisterQuery::default()
        };
        let mut page_times = Vec::new();
        let mut rows = 0;
        let mut deep_times = Vec::new();
        for _ in 0..QUERY_RUNS {
            let started = Instant::now();
            let page = store.register_page(query.clone()).await.unwrap();
            page_times.push(started.elapsed());
            rows = page.rows.len();
            // A later page through the keyset cursor.
            if let Some(cursor) = page.next {
                let started = Instant::now();
                store.register_page(RegisterQuery { after: Some(cursor), ..query.clone() }).await.unwrap();
                deep_times.push(started.elapsed());
            }
        }
        let mut search_times = Vec::new();
        let mut hits = 0;
        for _ in 0..QUERY_RUNS {
            let started = Instant::now();
            hits = store.search("户口迁移 材料不齐", 50).await.unwrap().len();
            search_times.push(started.elapsed());
        }
        let mut rare_times = Vec::new();
        for _ in 0..QUERY_RUNS {
            let started = Instant::now();
            store.search("编号 777", 50).await.unwrap();
            rare_times.push(started.elapsed());
        }
        let mut short_times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            store.search("户口", 50).await.unwrap();
            short_times.push(started.elapsed());
        }
        let mut absent_times = Vec::new();
        for _ in 0..QUERY_RUNS {
            let started = Instant::now();
            store.search("绿卡", 50).await.unwrap();
            absent_times.push(started.elapsed());
        }
        let mut stats_times = Vec::new();
        let mut stats = None;
        for _ in 0..QUERY_RUNS {
            let started = Instant::now();
            stats =
                Some(store.statistics(Date::new(2025, 1, 1).unwrap(), Date::new(2025, 12, 31).unwrap()).await.unwrap());
            stats_times.push(started.elapsed());
        }
        let stats = stats.unwrap();
        let mut overdue_times = Vec::new();
        for _ in 0..QUERY_RUNS {
            let started = Instant::now();
            store.overdue(Date::new(2026, 12, 1).unwrap().at_minute_ms(0), 50).await.unwrap();
            overdue_times.push(started.elapsed());
        }
        println!("| cases | {} |", counts.docs);
        println!(
            "| store size | {:.0} MB ({:.0} B/case) |",
            file_size(db) as f64 / 1e6,
            file_size(db) as f64 / counts.docs.max(1) as f64
        );
        println!("| open (includes any migration and its reindex) | {:.1} ms |", ms(open_time));
        println!("| RSS before open / after open | {rss_before:.1} MB / {rss_open:.1} MB |");
        println!("| register page, status+category, 50 rows ({rows}) | {:.2} ms median |", ms(median(page_times)));
        if !deep_times.is_empty() {
            println!("| next page via cursor | {:.2} ms median |", ms(median(deep_times)));
        }
        println!("| full-text \"户口迁移 材料不齐\" ({hits} rows of 50) | {:.2} ms median |", ms(median(search_times)));
        println!("| full-text \"编号 777\" (a trigram and a bigram term) | {:.2} ms median |", ms(median(rare_times)));
        println!("| full-text \"户口\" (2 characters: bigram index) | {:.2} ms median |", ms(median(short_times)));
        println!(
            "| full-text \"绿卡\" (2 characters, no match: bigram index) | {:.2} ms median |",
            ms(median(absent_times))
        );
        println!(
            "| statistics 2025 (registered {}, closed {}, close rate {:.3}, satisfaction {:.3}) | {:.2} ms median |",
            stats.counts.registered,
            stats.counts.closed,
            stats.close_rate,
            stats.satisfaction_rate,
            ms(median(stats_times))
        );
        println!("| overdue list, 50 rows | {:.2} ms median |", ms(median(overdue_times)));
        println!("| RSS after queries | {:.1} MB |", rss_mb());
        // Fill the document LRU: memory is bounded by its capacity, whatever the number of cases.
        let page = store.register_page(RegisterQuery { limit: 500, ..RegisterQuery::default() }).await.unwrap();
        let mut cursor = page.next.clone();
        let mut loaded = 0;
        let started = Instant::now();
        for row in &page.rows {
            store.case_view(&row.case_id).await.unwrap();
            loaded += 1;
        }
        while loaded < 2 * zhaowo_node::store::CACHE_DOCS_MAX {
            let Some(after) = cursor.take() else { break };
            let page = store
                .register_page(RegisterQuery { limit: 500, after: Some(after), ..RegisterQuery::default() })
                .await
                .unwrap();
            for row in &page.rows {
                store.case_view(&row.case_id).await.unwrap();
                loaded += 1;
            }
            cursor = page.next;
        }
        let counts = store.counts().await.unwrap();
        println!(
            "| case view, cold (load + fold), {loaded} cases | {:.3} ms mean; {} documents cached; RSS {:.1} MB |",
            ms(started.elapsed()) / loaded.max(1) as f64,
            counts.cached_docs,
            rss_mb()
        );
    });
}

/// A local acknowledged write (register through the store thread, COMMIT with FULL) against a bare INSERT+COMMIT of
/// the same change bytes with the same pragmas, interleaved in the same run.
fn compare_writes(dir: &Path) {
    let db = dir.join("writes.db");
    let bare_path = dir.join("bare.db");
    for path in [&db, &bare_path] {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            drop(std::fs::remove_file(name));
        }
    }
    let store = Store::open(StoreOptions::recommended(db.clone(), actor(1))).expect("open");
    // The same store without projections (schema version 1): what the register book, search and statistics cost.
    let docs_only_path = dir.join("docs-only.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut name = docs_only_path.as_os_str().to_owned();
        name.push(suffix);
        drop(std::fs::remove_file(name));
    }
    let mut docs_only_options = StoreOptions::recommended(docs_only_path, actor(1));
    docs_only_options.schema_version_target = 1;
    let docs_only = Store::open(docs_only_options).expect("open");
    let bare = rusqlite::Connection::open(&bare_path).unwrap();
    let _: String = bare.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).unwrap();
    bare.execute_batch(
        "PRAGMA synchronous = FULL; CREATE TABLE changes (doc_id TEXT PRIMARY KEY, bytes BLOB NOT NULL)",
    )
    .unwrap();
    let mut factory = CaseFactory::new(7, actor(1), CaseFactory::start_2026());
    let mut cases = Vec::new();
    for _ in 0..WRITE_RUNS {
        let mut case = factory.register();
        let bytes: Vec<u8> =
            case.automerge_mut().get_changes(&[]).iter().flat_map(|change| change.raw_bytes().to_vec()).collect();
        cases.push((case, bytes));
    }
    let runtime = runtime();
    let (mut store_times, mut bare_times, mut docs_only_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes_total = 0;
    runtime.block_on(async {
        for (case, bytes) in cases {
            let doc_id = case.case_id().as_str().to_owned();
            bytes_total += bytes.len();
            let copy = zhaowo_crdt::CaseDoc::load(&case.automerge().clone().save(), actor(1)).unwrap();
            let started = Instant::now();
            store.register(case).await.unwrap();
            store_times.push(started.elapsed());
            let started = Instant::now();
            docs_only.register(copy).await.unwrap();
            docs_only_times.push(started.elapsed());
            let started = Instant::now();
            bare.execute("INSERT INTO changes (doc_id, bytes) VALUES (?1, ?2)", rusqlite::params![doc_id, bytes])
                .unwrap();
            bare_times.push(started.elapsed());
        }
    });
    let mean = |times: &[Duration]| times.iter().sum::<Duration>() / times.len() as u32;
    let (store_mean, bare_mean) = (mean(&store_times), mean(&bare_times));
    println!(
        "| acknowledged register ({} B change) vs bare INSERT+COMMIT, {WRITE_RUNS} each | {:.3} ms vs {:.3} ms mean, median {:.3} vs {:.3} = {:.2}× |",
        bytes_total / WRITE_RUNS,
        ms(store_mean),
        ms(bare_mean),
        ms(median(store_times.clone())),
        ms(median(bare_times.clone())),
        store_mean.as_secs_f64() / bare_mean.as_secs_f64()
    );
    println!(
        "| the same register without projections (schema 1) | {:.3} ms mean, median {:.3} ms = {:.2}× bare |",
        ms(mean(&docs_only_times)),
        ms(median(docs_only_times.clone())),
        mean(&docs_only_times).as_secs_f64() / bare_mean.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|arg| arg == "--measure-open") {
        measure_open(Path::new(&args[position + 1]));
        return;
    }
    let value = |flag: &str| args.iter().position(|arg| arg == flag).and_then(|i| args.get(i + 1)).cloned();
    let n_cases: usize = value("--cases").map_or(1_000_000, |text| text.parse().expect("--cases N"));
    let dir = PathBuf::from(value("--dir").unwrap_or_else(|| "/tmp/zhaowo-bench".to_owned()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let given = value("--db").map(PathBuf::from);
    if let Some(db) = &given
        && !db.exists()
    {
        eprintln!("--db {}: no such store", db.display());
        std::process::exit(2);
    }
    let db = given.clone().unwrap_or_else(|| dir.join(format!("cases-{n_cases}.db")));
    if given.is_none() && (!db.exists() || args.iter().any(|arg| arg == "--regenerate")) {
        drop(std::fs::remove_file(&db));
        let started = Instant::now();
        generate(&db, n_cases);
        eprintln!("generated {n_cases} cases in {:.0} s", started.elapsed().as_secs_f64());
    }
    println!("| measure | value |");
    println!("| --- | --- |");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--measure-open", db.to_str().unwrap()])
        .status()
        .expect("run the open measurement");
    assert!(status.success());
    compare_writes(&dir);
}
