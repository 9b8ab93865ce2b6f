//! Rows P8 and P9 (issue 16 §3): material files between nodes. P8: a fresh hall PC receiving 1,000 cases with
//! 100 MB of materials (100 sealed PDFs of 1 MB on 100 of the cases), until every case and every file is there, with
//! the bandwidth share lifted. P9: P2 (a note added on A until committed on B) while another 100 MB move from A to B
//! at a stated share, against P2 on the same pair with nothing moving, measured in the same run.

use crate::harness::{Hall, Summary, summarize, wait_until};
use crate::{Met, Row};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zhaowo_crdt::Command;
use zhaowo_crdt::roster::Roster;
use zhaowo_node::blobs::{self, BlobStore, Upload};
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::identity::NodeIdentity;
use zhaowo_node::store::Store;
use zhaowo_node::sync::{MaterialsOptions, SyncNode, SyncOptions};

const CASES: usize = 1_000;
const FILES: usize = 100;
const FILE_BYTES: usize = 1_000_000;
/// The share of P9's transfer: 25 MiB/s moves the 100 MB in ~4 s, long enough to sample P2 a few hundred times.
const P9_SHARE_BYTES_PER_SEC: u64 = 25 * 1024 * 1024;
const P9_SAMPLES: usize = 100;

struct Side {
    identity: Arc<NodeIdentity>,
    store: Arc<Store>,
    blobs: BlobStore,
    sync: Option<SyncNode>,
}

impl Side {
    fn open(dir: &Path) -> Side {
        std::fs::create_dir_all(dir).expect("a node directory");
        let identity = Arc::new(NodeIdentity::generate().expect("a key"));
        let store = Arc::new(crate::harness::open_store(&dir.join("cases.db"), &identity));
        let blobs = BlobStore::open(&dir.join(blobs::MATERIALS_DIR)).expect("the material files");
        Side { identity, store, blobs, sync: None }
    }

    fn start(&mut self, roster: &Roster, peers: Vec<SocketAddr>, share: u64) -> SocketAddr {
        let mut options = SyncOptions::recommended("127.0.0.1:0".parse().expect("an address"), peers);
        let mut materials = MaterialsOptions::recommended(self.blobs.clone(), true);
        materials.fetch_bytes_per_sec = share;
        options.materials = Some(materials);
        let sync = SyncNode::start(self.store.clone(), self.identity.clone(), roster.clone(), options).expect("start");
        let addr = sync.local_addr().expect("bound");
        self.sync = Some(sync);
        addr
    }

    async fn stop(&mut self) {
        if let Some(sync) = self.sync.take() {
            sync.shutdown().await;
        }
    }
}

fn pdf(bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < bytes - 7 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(bytes - 7);
    out.extend_from_slice(b"\n%%EOF\n");
    out
}

async fn attach_files(a: &Side, factory: &mut CaseFactory, case_ids: &[String], seed: u64) -> Vec<String> {
    let mut hashes = Vec::new();
    for (n, case_id) in case_ids.iter().take(FILES).enumerate() {
        let upload =
            Upload { name: format!("扫描件{n}.pdf"), bytes: pdf(FILE_BYTES, seed + n as u64), public: false };
        let ack = blobs::attach(&a.store, &a.blobs, case_id, factory.ctx(), factory.hall(), upload, None)
            .await
            .expect("attach");
        let view = a.store.case_view(case_id).await.expect("view");
        hashes.push(view.material(ack.event_id.expect("an event").as_str()).expect("material").hash.clone());
    }
    hashes
}

/// One P2 sample: a note on A until B's catalog shows A's heads for the case.
async fn note_latency(a: &Side, b: &Side, factory: &mut CaseFactory, case_id: &str, n: usize) -> Duration {
    let mut watch = b.store.subscribe();
    let before = *watch.borrow_and_update();
    let started = Instant::now();
    let text = format!("已电话联系申请人 {n}");
    let ack = a.store.apply(case_id, factory.ctx(), factory.hall(), Command::AddNote { text }).await.expect("note");
    loop {
        tokio::time::timeout(crate::harness::WAIT_MAX, watch.changed()).await.expect("B commits").expect("B's store");
        // Page through what B committed since: while files move, B also takes the cases' `MaterialAdded` changes.
        let mut after = before;
        loop {
            let entries = b.store.catalog_since(after, 256).await.expect("catalog");
            if entries.iter().any(|entry| entry.case_id == case_id && entry.heads_hash == ack.heads_hash) {
                return started.elapsed();
            }
            let Some(last) = entries.last() else { break };
            after = last.local_seq;
        }
    }
}

fn ms(summary: &Summary) -> String {
    format!("{:.2} ms (p99 {:.2} ms)", summary.median_ms, summary.p99_ms)
}

pub async fn p8_p9(dir: &Path) -> Vec<Row> {
    let root = dir.join("materials-bench");
    drop(std::fs::remove_dir_all(&root));
    let mut hall = Hall::new();
    let mut a = Side::open(&root.join("a"));
    let mut b = Side::open(&root.join("b"));
    hall.enroll(&a.identity);
    hall.enroll(&b.identity);
    let mut factory = CaseFactory::new(1616, a.identity.new_actor().expect("actor"), CaseFactory::start_2026());
    let mut case_ids = Vec::new();
    for _ in 0..CASES {
        case_ids.push(a.store.register(factory.register()).await.expect("register").case_id);
    }
    let hashes = attach_files(&a, &mut factory, &case_ids, 1).await;
    let sealed: u64 = hashes.iter().map(|hash| a.blobs.size(hash).expect("a file")).sum();

    // P8: B is fresh; time until every case and every file is there.
    let addr = a.start(&hall.roster, vec![], zhaowo_node::sync::transfer::FETCH_BYTES_PER_SEC_MAX);
    let started = Instant::now();
    b.start(&hall.roster, vec![addr], zhaowo_node::sync::transfer::FETCH_BYTES_PER_SEC_MAX);
    let mut cases_at = None;
    loop {
        if cases_at.is_none() && crate::harness::catalog(&b.store).await.len() == CASES {
            cases_at = Some(started.elapsed());
        }
        if cases_at.is_some() && hashes.iter().all(|hash| b.blobs.has(hash)) {
            break;
        }
        assert!(started.elapsed() < crate::harness::WAIT_MAX, "P8 did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_at = started.elapsed();
    let cases_at = cases_at.expect("cases first");
    let mb_per_sec = sealed as f64 / 1e6 / all_at.as_secs_f64();
    // The counter moves just after a file is installed.
    wait_until("B counts every file", Duration::from_millis(1), || {
        b.sync.as_ref().expect("running").status().counts().transfers.files_received >= FILES as u64
    })
    .await;
    let counts = b.sync.as_ref().expect("running").status().counts().transfers;
    let p8 = Row {
        id: "P8",
        measure: "a fresh hall PC receiving 1,000 cases with 100 MB of materials, until every case and file is there"
            .to_owned(),
        size: format!("{CASES} cases, {FILES} files, {sealed} B sealed; share lifted (1 GiB/s)"),
        median: format!("{:.2} s", all_at.as_secs_f64()),
        p99: "one run".to_owned(),
        baseline: format!("the 1,000 cases alone arrived in {:.2} s", cases_at.as_secs_f64()),
        ratio: format!("{mb_per_sec:.0} MB/s"),
        goal: "files verified, none partial".to_owned(),
        met: if counts.rejected_transfers == 0 && counts.files_received == FILES as u64 { Met::Yes } else { Met::No },
        note: format!(
            "P8: {} files received, {} B read from streams, {} resumed; at the default share ({} B/s) the files would \
             take ≥ {:.0} s.",
            counts.files_received,
            counts.bytes_received,
            counts.resumed_transfers,
            zhaowo_node::sync::transfer::FETCH_BYTES_PER_SEC_DEFAULT,
            sealed as f64 / zhaowo_node::sync::transfer::FETCH_BYTES_PER_SEC_DEFAULT as f64
        ),
        figures: json!({ "cases_secs": cases_at.as_secs_f64(), "all_secs": all_at.as_secs_f64(), "sealed_bytes": sealed,
            "mb_per_sec": mb_per_sec }),
    };

    // P9: P2 on this pair with nothing moving, then while another 100 MB move at the stated share.
    wait_until("the pair is settled", Duration::from_millis(1), || {
        b.sync.as_ref().is_some_and(|sync| sync.status().peers().iter().any(|peer| peer.connected && peer.settled))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for n in 0..P9_SAMPLES {
        let case_id = case_ids[FILES + n % (CASES - FILES)].clone();
        idle.push(note_latency(&a, &b, &mut factory, &case_id, n).await);
    }
    b.stop().await;
    let more: Vec<String> = case_ids[FILES..2 * FILES].to_vec();
    let moving_hashes = attach_files(&a, &mut factory, &more, 1_000).await;
    b.start(&hall.roster, vec![addr], P9_SHARE_BYTES_PER_SEC);
    let moving_started = Instant::now();
    let mut loaded = Vec::new();
    let mut n = P9_SAMPLES;
    while !moving_hashes.iter().all(|hash| b.blobs.has(hash)) {
        let case_id = case_ids[2 * FILES + n % (CASES - 2 * FILES)].clone();
        let moving = b.sync.as_ref().expect("running").status().counts().transfers.bytes_received > 0;
        let latency = note_latency(&a, &b, &mut factory, &case_id, n).await;
        if moving && !moving_hashes.iter().all(|hash| b.blobs.has(hash)) {
            loaded.push(latency);
        }
        n += 1;
    }
    let moved = moving_started.elapsed();
    let idle_summary = summarize(&idle);
    let loaded_summary = summarize(&loaded);
    let ratio = loaded_summary.median_ms / idle_summary.median_ms;
    let p9 = Row {
        id: "P9",
        measure: "P2 while materials move: a note on A until committed on B, during a 100 MB transfer A → B".to_owned(),
        size: format!(
            "{} notes during the transfer ({} MB in {:.1} s at a share of {} MiB/s), {} without",
            loaded.len(),
            FILES * FILE_BYTES / 1_000_000,
            moved.as_secs_f64(),
            P9_SHARE_BYTES_PER_SEC / 1024 / 1024,
            idle.len()
        ),
        median: format!("{:.2} ms", loaded_summary.median_ms),
        p99: format!("{:.2} ms", loaded_summary.p99_ms),
        baseline: format!("P2 on the same pair with nothing moving, same run: {}", ms(&idle_summary)),
        ratio: format!("{ratio:.2}×"),
        goal: "P2 goal (p50 ≤ 5 ms, p99 ≤ 50 ms) still met".to_owned(),
        met: if loaded_summary.median_ms <= 5.0 && loaded_summary.p99_ms <= 50.0 { Met::Yes } else { Met::No },
        note: String::new(),
        figures: json!({ "idle_median_ms": idle_summary.median_ms, "idle_p99_ms": idle_summary.p99_ms,
            "loaded_median_ms": loaded_summary.median_ms, "loaded_p99_ms": loaded_summary.p99_ms,
            "loaded_samples": loaded.len(), "transfer_secs": moved.as_secs_f64() }),
    };
    a.stop().await;
    b.stop().await;
    drop(std::fs::remove_dir_all(&root));
    vec![p8, p9]
}
