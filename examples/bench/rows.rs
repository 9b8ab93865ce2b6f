//! Rows P1–P6: each runs its measure and its same-run baseline and returns table rows (see `bench.rs` for the
//! table). Sizes come from the mode; nothing here knows whether it runs `--quick` or `--full`.

use crate::harness::{
    self, BenchNode, Fixture, Hall, Summary, busiest_thread, copy_db, cpu_by_name, median_f64, median_u64, process_cpu,
    remove_db, summarize, thread_cpu, wait_until,
};
use crate::{Met, Row};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zhaowo_crdt::{CaseDoc, Command};
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::identity::NodeIdentity;
use zhaowo_node::transport::{Authorizer, NodeKey, PeerConnection, Transport, TransportConfig, WIRE_VERSION};

fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ms * 1e3)
    }
}

fn fmt_bytes(bytes: f64) -> String {
    if bytes >= 10e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else if bytes >= 10e3 {
        format!("{:.1} KB", bytes / 1e3)
    } else {
        format!("{bytes:.0} B")
    }
}

fn met(ok: bool) -> Met {
    if ok { Met::Yes } else { Met::No }
}

// ---- P1 ----

/// P1: a local registration acknowledged after COMMIT (signed, projections, `synchronous = FULL`) against a bare
/// rusqlite INSERT+COMMIT of the same change bytes with the same pragmas; interleaved. The same two again with
/// `synchronous = OFF` split the time into the fsync and the CPU part.
pub async fn p1_register(dir: &Path, runs: usize) -> Vec<Row> {
    let paths: Vec<_> = ["p1-store.db", "p1-store-nosync.db", "p1-bare.db", "p1-bare-nosync.db"]
        .iter()
        .map(|name| dir.join(name))
        .collect();
    for path in &paths {
        remove_db(path);
    }
    let identity = Arc::new(NodeIdentity::generate().expect("a key"));
    let store = harness::open_store(&paths[0], &identity);
    let store_nosync = harness::open_store(&paths[1], &identity);
    store_nosync.execute_raw("PRAGMA synchronous = OFF").await.expect("pragma");
    let bare = |path: &Path, synchronous: &str| {
        let conn = rusqlite::Connection::open(path).expect("open");
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).expect("wal");
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = OFF;
             CREATE TABLE changes (doc_id TEXT PRIMARY KEY, bytes BLOB NOT NULL)"
        ))
        .expect("bare schema");
        conn
    };
    let (bare_full, bare_off) = (bare(&paths[2], "FULL"), bare(&paths[3], "OFF"));
    let mut factory = CaseFactory::new(7, identity.new_actor().expect("actor"), CaseFactory::start_2026());
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut change_bytes = Vec::new();
    for _ in 0..runs {
        let mut case = factory.register();
        let bytes: Vec<u8> =
            case.automerge_mut().get_changes(&[]).iter().flat_map(|change| change.raw_bytes().to_vec()).collect();
        change_bytes.push(bytes.len() as u64);
        let copy = CaseDoc::load(&case.automerge().clone().save(), identity.new_actor().expect("actor")).expect("load");
        let doc_id = case.case_id().as_str().to_owned();
        let started = Instant::now();
        store.register(case).await.expect("register");
        times[0].push(started.elapsed());
        let started = Instant::now();
        bare_full
            .execute("INSERT INTO changes (doc_id, bytes) VALUES (?1, ?2)", rusqlite::params![doc_id, bytes])
            .expect("insert");
        times[1].push(started.elapsed());
        let started = Instant::now();
        store_nosync.register(copy).await.expect("register");
        times[2].push(started.elapsed());
        let started = Instant::now();
        bare_off
            .execute("INSERT INTO changes (doc_id, bytes) VALUES (?1, ?2)", rusqlite::params![doc_id, bytes])
            .expect("insert");
        times[3].push(started.elapsed());
    }
    drop(store);
    drop(store_nosync);
    for path in &paths {
        remove_db(path);
    }
    let [ours, bare, ours_off, bare_off] = times.map(|samples| summarize(&samples));
    let ratio = ours.median_ms / bare.median_ms;
    let bytes = median_u64(&change_bytes);
    vec![Row {
        id: "P1",
        measure: "register a case until acknowledged (signed, projections, WAL + FULL)".to_owned(),
        size: format!("{runs} writes, {bytes} B change"),
        median: fmt_ms(ours.median_ms),
        p99: fmt_ms(ours.p99_ms),
        baseline: format!(
            "bare INSERT+COMMIT of the same bytes, same pragmas: {} (p99 {})",
            fmt_ms(bare.median_ms),
            fmt_ms(bare.p99_ms)
        ),
        ratio: format!("{ratio:.2}×"),
        goal: "≤ 1.5×".to_owned(),
        met: met(ratio <= 1.5),
        note: format!(
            "P1 with synchronous = OFF on both sides: ours {} vs bare {} (median): the CPU part of an acknowledged \
             register is {}, the fsync part {}.",
            fmt_ms(ours_off.median_ms),
            fmt_ms(bare_off.median_ms),
            fmt_ms(ours_off.median_ms - bare_off.median_ms),
            fmt_ms(bare.median_ms - bare_off.median_ms),
        ),
        figures: json!({
            "writes": runs, "change_bytes_median": bytes,
            "ours_ms": summary_json(&ours), "bare_ms": summary_json(&bare),
            "ours_nosync_ms": summary_json(&ours_off), "bare_nosync_ms": summary_json(&bare_off),
            "ratio_median": ratio,
        }),
    }]
}

pub fn summary_json(summary: &Summary) -> serde_json::Value {
    json!({ "n": summary.n, "median": summary.median_ms, "p99": summary.p99_ms, "max": summary.max_ms })
}

// ---- P3 (and the pair kept for P4 and P2) ----

/// One initial sync of a fresh node from a node holding the fixture.
#[derive(Debug, Clone)]
pub struct InitialSync {
    pub secs: f64,
    pub frame_bytes: u64,
    /// CPU seconds by thread name during the sync (both nodes live in this process; threads alive at the end).
    pub cpu: Vec<(String, f64)>,
    /// CPU seconds of the whole process during the sync, ended threads included.
    pub process_cpu: f64,
    pub busiest: (String, f64),
}

/// Two nodes that finished an initial sync: A holds the fixture, B synced it. Kept for P4 and P2.
pub struct Pair {
    pub hall: Hall,
    pub a: BenchNode,
    pub b: BenchNode,
    pub case_ids: Vec<String>,
}

/// P3: `runs` fresh nodes each sync the fixture from a node holding it (a copy, so the fixture stays reusable).
/// Returns the runs and the last pair, still running.
pub async fn p3_initial_sync(fixture: &Fixture, dir: &Path, runs: usize) -> (Vec<InitialSync>, Pair) {
    let mut results = Vec::new();
    let mut kept = None;
    for run in 0..runs {
        let a_path = dir.join(format!("p3-a-{}.db", fixture.cases));
        let b_path = dir.join(format!("p3-b-{}.db", fixture.cases));
        copy_db(&fixture.db, &a_path);
        remove_db(&b_path);
        let mut hall = Hall::new();
        let a_identity = fixture.identity();
        let b_identity = Arc::new(NodeIdentity::generate().expect("a key"));
        hall.enroll(&a_identity);
        hall.enroll(&b_identity);
        let mut a = BenchNode::open(&a_path, a_identity);
        let mut b = BenchNode::open(&b_path, b_identity);
        let a_addr = a.start(&hall.roster, vec![]);
        let cpu_before = thread_cpu();
        let process_before = process_cpu();
        let started = Instant::now();
        b.start(&hall.roster, vec![a_addr]);
        wait_until("the initial sync settles", Duration::from_millis(5), || b.settled()).await;
        let secs = started.elapsed().as_secs_f64();
        let cpu_after = thread_cpu();
        let process_after = process_cpu();
        let (sent, received) = b.frame_bytes();
        let (a_catalog, b_catalog) = (a.catalog().await, b.catalog().await);
        assert_eq!(a_catalog.len(), fixture.cases, "the source holds the fixture");
        assert!(
            a_catalog == b_catalog,
            "B settled but differs from A ({} of {} cases)",
            b_catalog.len(),
            a_catalog.len()
        );
        let result = InitialSync {
            secs,
            frame_bytes: sent + received,
            cpu: cpu_by_name(&cpu_before, &cpu_after),
            process_cpu: process_after - process_before,
            busiest: busiest_thread(&cpu_before, &cpu_after),
        };
        eprintln!(
            "  P3 run {}/{runs}: {} cases in {:.2} s, {} in frames; busiest thread {} {:.1} s CPU",
            run + 1,
            fixture.cases,
            secs,
            fmt_bytes(result.frame_bytes as f64),
            result.busiest.0,
            result.busiest.1
        );
        results.push(result);
        if run + 1 == runs {
            kept = Some(Pair { hall, a, b, case_ids: a_catalog.into_keys().collect() });
        } else {
            a.stop().await;
            b.stop().await;
        }
    }
    (results, kept.expect("at least one run"))
}

/// Rows for P3 at one size: time (against the goal's rate) and bytes (against the stored document bytes).
pub fn p3_rows(fixture: &Fixture, runs: &[InitialSync]) -> Vec<Row> {
    let n = fixture.cases;
    let secs: Vec<f64> = runs.iter().map(|run| run.secs).collect();
    let median_secs = median_f64(&secs);
    let rate = n as f64 / median_secs;
    let stored = fixture.document_bytes();
    let signatures = fixture.signature_bytes();
    let file = harness::file_bytes(&fixture.db);
    let bytes = median_u64(&runs.iter().map(|run| run.frame_bytes).collect::<Vec<_>>());
    // The goals: 100k ≤ 10 s and 1M ≤ 100 s, i.e. 10,000 cases/s; a 10k row is held to the same rate.
    let goal_secs = n as f64 / 10_000.0;
    let last = runs.last().expect("a run");
    let cpu: Vec<String> = last.cpu.iter().take(4).map(|(name, secs)| format!("{name} {secs:.1} s")).collect();
    let size = format!("{n} cases, {} run{}", runs.len(), if runs.len() == 1 { "" } else { "s" });
    vec![
        Row {
            id: "P3",
            measure: "fresh node's initial sync: time to settled (cases/s)".to_owned(),
            size: size.clone(),
            median: format!("{median_secs:.2} s ({rate:.0} cases/s)"),
            p99: "—".to_owned(),
            baseline: "— (goal is absolute)".to_owned(),
            ratio: format!("{:.1}× the goal", median_secs / goal_secs),
            goal: format!(
                "≤ {} (10,000 cases/s{})",
                fmt_ms(goal_secs * 1e3),
                if n == 100_000 || n == 1_000_000 { "" } else { ", the 100k goal's rate" }
            ),
            met: met(median_secs <= goal_secs),
            note: format!(
                "P3 {n}: the last run ({:.1} s wall) took {:.1} s of CPU in all (both nodes, {:.1} cores busy); by thread \
                 alive at its end: {}; busiest single thread {} at {:.0}% of the wall time.",
                last.secs,
                last.process_cpu,
                last.process_cpu / last.secs,
                cpu.join(", "),
                last.busiest.0,
                100.0 * last.busiest.1 / last.secs
            ),
            figures: json!({
                "cases": n, "runs_secs": secs, "median_secs": median_secs, "cases_per_sec": rate,
                "cpu_by_thread_last_run": last.cpu, "busiest_thread_last_run": last.busiest,
                "process_cpu_last_run": last.process_cpu,
                "generated_secs": fixture.generated_secs,
            }),
        },
        Row {
            id: "P3",
            measure: "fresh node's initial sync: frame bytes, both directions".to_owned(),
            size,
            median: format!("{} ({:.0} B/case)", fmt_bytes(bytes as f64), bytes as f64 / n as f64),
            p99: "—".to_owned(),
            baseline: format!(
                "stored bytes of the same cases (snapshots + change rows): {} ({:.0} B/case); SQLite file {}",
                fmt_bytes(stored as f64),
                stored as f64 / n as f64,
                fmt_bytes(file as f64)
            ),
            ratio: format!("{:.2}×", bytes as f64 / stored as f64),
            goal: "≤ 1.2×".to_owned(),
            met: met(bytes as f64 <= 1.2 * stored as f64),
            note: format!(
                "P3 {n} bytes: against the stored documents plus their change signatures ({} of 64-byte signatures, \
                 {:.0} B/case), which a fresh node must receive too: {:.2}×.",
                fmt_bytes(signatures as f64),
                signatures as f64 / n as f64,
                bytes as f64 / (stored + signatures) as f64
            ),
            figures: json!({
                "cases": n, "frame_bytes_median": bytes, "stored_document_bytes": stored, "sqlite_file_bytes": file,
                "ratio": bytes as f64 / stored as f64, "stored_signature_bytes": signatures,
                "ratio_with_signatures": bytes as f64 / (stored + signatures) as f64,
            }),
        },
    ]
}

// ---- P4 ----

/// P4: both sync runtimes restart with nothing changed; time from B's start to both sides settled, and the bytes.
pub async fn p4_reconnect(pair: &mut Pair, runs: usize) -> Vec<Row> {
    let docs = pair.case_ids.len();
    let mut times = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..runs {
        pair.a.stop().await;
        pair.b.stop().await;
        let a_addr = pair.a.start(&pair.hall.roster, vec![]);
        let started = Instant::now();
        pair.b.start(&pair.hall.roster, vec![a_addr]);
        let (a, b) = (&pair.a, &pair.b);
        wait_until("the reconnect settles", Duration::from_micros(200), || a.settled() && b.settled()).await;
        times.push(started.elapsed());
        let (sent, received) = pair.b.frame_bytes();
        bytes.push(sent + received);
    }
    let summary = summarize(&times);
    let bytes_median = median_u64(&bytes);
    let bytes_max = bytes.iter().copied().max().unwrap_or(0);
    vec![Row {
        id: "P4",
        measure: "reconnect with nothing changed (both sync runtimes restarted): time to settled, bytes".to_owned(),
        size: format!("{docs} cases, {runs} runs"),
        median: format!("{} , {}", fmt_ms(summary.median_ms), fmt_bytes(bytes_median as f64)),
        p99: format!("max {} , {}", fmt_ms(summary.max_ms), fmt_bytes(bytes_max as f64)),
        baseline: "—".to_owned(),
        ratio: "—".to_owned(),
        goal: "≤ 50 ms, ≤ 64 KB".to_owned(),
        met: met(summary.median_ms <= 50.0 && bytes_median <= 64 * 1024),
        note: String::new(),
        figures: json!({ "cases": docs, "time_ms": summary_json(&summary), "frame_bytes": bytes }),
    }]
}

// ---- P2 ----

/// A roster that admits every key: the echo baseline needs a transport, not a hall.
struct AnyKey;

impl Authorizer for AnyKey {
    fn is_authorized(&self, _node_key: &NodeKey) -> bool {
        true
    }
}

/// P2: a note added on A (acknowledged after COMMIT there) until B has committed it, over the live session; the
/// baseline is a request/echo of the same number of bytes on an open QUIC connection (a new stream per request,
/// length-prefixed frames: the node's transport without the sync session and the stores).
pub async fn p2_live(pair: &Pair, samples: usize) -> Vec<Row> {
    let (a, b) = (&pair.a, &pair.b);
    let mut factory = CaseFactory::new(99, a.identity.new_actor().expect("actor"), CaseFactory::start_2026());
    // Let the pair settle into live mode after whatever ran before.
    wait_until("the pair is settled", Duration::from_millis(1), || a.settled() && b.settled()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    let mut acks = Vec::new();
    let mut bytes_a_to_b = Vec::new();
    let mut bytes_total = Vec::new();
    let mut watch = b.store.subscribe();
    let mut refused = 0;
    while latencies.len() < samples {
        let case_id = &pair.case_ids[factory.below(pair.case_ids.len() as u64) as usize];
        let b_seq_before = *watch.borrow_and_update();
        let (a_sent_before, a_received_before) = a.frame_bytes();
        let text = format!("已电话联系申请人 {}", latencies.len());
        let ctx = factory.ctx();
        let started = Instant::now();
        let Ok(ack) = a.store.apply(case_id, ctx, factory.hall(), Command::AddNote { text }).await else {
            refused += 1;
            assert!(refused < samples, "too many notes refused");
            continue;
        };
        acks.push(started.elapsed());
        loop {
            tokio::time::timeout(harness::WAIT_MAX, watch.changed()).await.expect("B commits").expect("B's store");
            let entries = b.store.catalog_since(b_seq_before, 64).await.expect("catalog");
            if entries.iter().any(|entry| entry.case_id == *case_id && entry.heads_hash == ack.heads_hash) {
                break;
            }
        }
        latencies.push(started.elapsed());
        // Let the acknowledgements of this change pass before the next one, and count them with it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (a_sent, a_received) = a.frame_bytes();
        bytes_a_to_b.push(a_sent - a_sent_before);
        bytes_total.push(a_sent - a_sent_before + a_received - a_received_before);
    }
    let ours = summarize(&latencies);
    let ack = summarize(&acks);
    let request_bytes = median_u64(&bytes_a_to_b) as usize;
    let echo = echo_baseline(request_bytes.max(1), samples).await;
    vec![Row {
        id: "P2",
        measure: "a note added on A until committed on B (live session, loopback QUIC)".to_owned(),
        size: format!("{samples} changes, {} cases held", pair.case_ids.len()),
        median: fmt_ms(ours.median_ms),
        p99: fmt_ms(ours.p99_ms),
        baseline: format!(
            "request/echo of {request_bytes} B on an open QUIC connection: {} (p99 {})",
            fmt_ms(echo.median_ms),
            fmt_ms(echo.p99_ms)
        ),
        ratio: format!("{:.1}×", ours.median_ms / echo.median_ms),
        goal: "p50 ≤ 5 ms, p99 ≤ 50 ms".to_owned(),
        met: met(ours.median_ms <= 5.0 && ours.p99_ms <= 50.0),
        note: format!(
            "P2 breakdown: A's own acknowledged write (COMMIT with fsync) {} median of the {}; frames per change A→B {} B, both ways {} B.",
            fmt_ms(ack.median_ms),
            fmt_ms(ours.median_ms),
            request_bytes,
            median_u64(&bytes_total)
        ),
        figures: json!({
            "samples": samples, "ours_ms": summary_json(&ours), "local_ack_ms": summary_json(&ack),
            "echo_ms": summary_json(&echo), "echo_bytes": request_bytes,
            "frame_bytes_per_change_both_ways": median_u64(&bytes_total),
        }),
    }]
}

async fn echo_baseline(bytes: usize, samples: usize) -> Summary {
    let bind = |identity: Arc<NodeIdentity>| {
        Arc::new(
            Transport::bind(
                "127.0.0.1:0".parse().expect("addr"),
                identity,
                Arc::new(AnyKey),
                TransportConfig::recommended(),
            )
            .expect("bind"),
        )
    };
    let server_identity = Arc::new(NodeIdentity::generate().expect("a key"));
    let server = bind(server_identity.clone());
    let client = bind(Arc::new(NodeIdentity::generate().expect("a key")));
    let accepting = server.clone();
    let echo_task = tokio::spawn(async move {
        while let Some(Ok(peer)) = accepting.accept().await {
            tokio::spawn(echo_peer(peer));
        }
    });
    let peer = client
        .dial(server.local_addr().expect("addr"), server_identity.verifying_key().to_bytes())
        .await
        .expect("dial");
    let mut payload = vec![WIRE_VERSION];
    payload.extend((1..bytes).map(|i| (i % 251) as u8));
    let mut times = Vec::new();
    for i in 0..samples + 20 {
        let started = Instant::now();
        let (mut writer, mut reader) = peer.open_bi().await.expect("stream");
        writer.send_frame(&payload).await.expect("send");
        writer.finish().expect("finish");
        let reply = reader.recv_frame().await.expect("echo").expect("a frame");
        let took = started.elapsed();
        assert_eq!(reply.len(), payload.len());
        // The first requests warm the connection up (congestion window, stream credit): not counted.
        if i >= 20 {
            times.push(took);
        }
    }
    echo_task.abort();
    summarize(&times)
}

async fn echo_peer(peer: PeerConnection) {
    while let Ok((mut writer, mut reader)) = peer.accept_bi().await {
        tokio::spawn(async move {
            while let Ok(Some(frame)) = reader.recv_frame().await {
                if writer.send_frame(&frame).await.is_err() {
                    return;
                }
            }
            drop(writer.finish());
        });
    }
}

// ---- P5 ----

/// P5: five nodes each register `per_node` cases while partitioned (sync not started), then all start at once in
/// a full mesh (each dials the ones started before it); time until every node holds the same `5 × per_node` cases.
pub async fn p5_heal(dir: &Path, per_node: usize, runs: usize) -> Vec<Row> {
    const NODES: usize = 5;
    let mut times = Vec::new();
    let mut bytes = Vec::new();
    let mut setup_secs = Vec::new();
    for run in 0..runs {
        let mut hall = Hall::new();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let path = dir.join(format!("p5-{i}.db"));
            remove_db(&path);
            let identity = Arc::new(NodeIdentity::generate().expect("a key"));
            hall.enroll(&identity);
            nodes.push(BenchNode::open(&path, identity));
        }
        let setup = Instant::now();
        let mut writers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let store = node.store.clone();
            let actor = node.identity.new_actor().expect("actor");
            writers.push(tokio::spawn(async move {
                let mut factory = CaseFactory::new(1000 * run as u64 + i as u64 + 1, actor, CaseFactory::start_2026());
                for _ in 0..per_node {
                    let mut case = factory.register();
                    let steps = factory.below(3) as usize;
                    factory.work(&mut case, steps);
                    store.register(case).await.expect("register");
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        setup_secs.push(setup.elapsed().as_secs_f64());
        let total = NODES * per_node;
        let started = Instant::now();
        let mut addrs = Vec::new();
        for node in &mut nodes {
            let addr = node.start(&hall.roster, addrs.clone());
            addrs.push(addr);
        }
        let took = loop {
            let mut counts = Vec::new();
            for node in &nodes {
                counts.push(node.store.counts().await.expect("counts").docs as usize);
            }
            if counts.iter().all(|&count| count == total) {
                let at = started.elapsed();
                let first = nodes[0].catalog().await;
                let mut same = true;
                for node in &nodes[1..] {
                    same &= node.catalog().await == first;
                }
                if same {
                    break at;
                }
            }
            assert!(started.elapsed() < harness::WAIT_MAX, "P5: no convergence");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        times.push(took);
        bytes.push(nodes.iter().map(|node| node.frame_bytes().0).sum::<u64>());
        eprintln!("  P5 run {}/{runs}: {total} cases on 5 nodes converged in {:.2} s", run + 1, took.as_secs_f64());
        for node in &mut nodes {
            node.stop().await;
        }
        drop(nodes);
        for i in 0..NODES {
            remove_db(&dir.join(format!("p5-{i}.db")));
        }
    }
    let summary = summarize(&times);
    vec![Row {
        id: "P5",
        measure: "5 nodes register while partitioned, then heal (full mesh): time to converge".to_owned(),
        size: format!("{per_node} cases/node ({} total), {runs} runs", NODES * per_node),
        median: fmt_ms(summary.median_ms),
        p99: format!("max {}", fmt_ms(summary.max_ms)),
        baseline: "—".to_owned(),
        ratio: "—".to_owned(),
        goal: "≤ 3 s".to_owned(),
        met: met(summary.median_ms <= 3000.0),
        note: format!(
            "P5: frame bytes sent by all five nodes per heal {} (median); registering the cases while partitioned took {:.1} s per run.",
            fmt_bytes(median_u64(&bytes) as f64),
            median_f64(&setup_secs)
        ),
        figures: json!({
            "nodes": NODES, "cases_per_node": per_node, "time_ms": summary_json(&summary),
            "frame_bytes_sent_all_nodes": bytes, "setup_secs": setup_secs,
        }),
    }]
}

// ---- P6 ----

/// What the child process reports (one JSON line on stdout).
#[derive(Debug, Clone, Copy)]
struct NodeStartup {
    open_ms: f64,
    start_ms: f64,
    rss_mb: f64,
    rss_before_mb: f64,
    process_ms: f64,
}

/// The child side of P6: opens the store and starts the sync runtime, then reports time and RSS.
pub fn measure_node(db: &Path, key: &Path) {
    let process_started = Instant::now();
    let rss_before = harness::rss_mb();
    let identity = Arc::new(NodeIdentity::load(key).expect("the node key"));
    let started = Instant::now();
    let store = Arc::new(harness::open_store(db, &identity));
    let open = started.elapsed();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let (start, rss) = runtime.block_on(async {
        let mut hall = Hall::new();
        hall.enroll(&identity);
        let mut node = BenchNode { identity, store, sync: None };
        let started = Instant::now();
        node.start(&hall.roster, vec![]);
        let start = started.elapsed();
        // What the desk shows first: the newest register page and the counts.
        node.store.counts().await.expect("counts");
        let rss = harness::rss_mb();
        node.stop().await;
        (start, rss)
    });
    let line = json!({
        "open_ms": open.as_secs_f64() * 1e3, "start_ms": start.as_secs_f64() * 1e3, "rss_mb": rss,
        "rss_before_mb": rss_before, "process_ms": process_started.elapsed().as_secs_f64() * 1e3,
    });
    #[allow(clippy::print_stdout)] // The parent reads this line.
    {
        println!("{line}");
    }
}

/// P6: a fresh process of this binary opens the fixture and starts its sync runtime, `runs` times.
pub fn p6_startup(fixture: &Fixture, runs: usize) -> Vec<Row> {
    let mut results = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = std::process::Command::new(std::env::current_exe().expect("this binary"))
            .args(["--measure-node", fixture.db.to_str().expect("utf-8 path"), fixture.key.to_str().expect("utf-8")])
            .output()
            .expect("run the child");
        let wall_ms = started.elapsed().as_secs_f64() * 1e3;
        assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
        let line: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the child's JSON line");
        let get = |key: &str| line[key].as_f64().expect("a number");
        results.push(NodeStartup {
            open_ms: get("open_ms"),
            start_ms: get("start_ms"),
            rss_mb: get("rss_mb"),
            rss_before_mb: get("rss_before_mb"),
            process_ms: wall_ms.max(get("process_ms")),
        });
    }
    let pick = |f: fn(&NodeStartup) -> f64| median_f64(&results.iter().map(f).collect::<Vec<_>>());
    let startup_ms = pick(|r| r.open_ms + r.start_ms);
    let rss = pick(|r| r.rss_mb);
    let rss_max = results.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    let startup_max = results.iter().map(|r| r.open_ms + r.start_ms).fold(0.0, f64::max);
    vec![Row {
        id: "P6",
        measure: "node holding the store: RSS and startup (open store + start sync), fresh process".to_owned(),
        size: format!("{} cases, {runs} processes", fixture.cases),
        median: format!("{rss:.1} MB, {}", fmt_ms(startup_ms)),
        p99: format!("max {rss_max:.1} MB, {}", fmt_ms(startup_max)),
        baseline: format!("empty process before opening: {:.1} MB", pick(|r| r.rss_before_mb)),
        ratio: "—".to_owned(),
        goal: "≤ 300 MB, ≤ 2 s".to_owned(),
        met: met(rss <= 300.0 && startup_ms <= 2000.0),
        note: format!(
            "P6 {}: open {} + start sync {} (medians); whole child process {} from exec to exit (page cache warm).",
            fixture.cases,
            fmt_ms(pick(|r| r.open_ms)),
            fmt_ms(pick(|r| r.start_ms)),
            fmt_ms(pick(|r| r.process_ms))
        ),
        figures: json!({
            "cases": fixture.cases,
            "runs": results.iter().map(|r| json!({"open_ms": r.open_ms, "start_ms": r.start_ms, "rss_mb": r.rss_mb, "rss_before_mb": r.rss_before_mb, "process_ms": r.process_ms})).collect::<Vec<_>>(),
        }),
    }]
}
