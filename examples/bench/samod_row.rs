//! P7: the same initial sync done by samod 0.16 (the Rust automerge-repo, on automerge 0.12.0 like us) over loopback
//! TCP, against our P3 figure at the same size from the same run.
//!
//! Repo A holds the fixture's documents (each loaded from our store's change bytes, created in samod before the
//! clock starts) with samod's filesystem storage; a fresh repo B, also on filesystem storage, dials A and `find`s
//! every document id (samod has no catalog: the ids are handed over out of band, which favours samod). The clock
//! stops when every `find` resolved with A's heads. Bytes are counted on A's side of the TCP stream: samod's
//! length-delimited messages including their 4-byte prefixes.

use crate::harness::{self, Fixture, median_f64, median_u64};
use crate::rows::InitialSync;
use crate::{Met, Row};
use automerge::{Automerge, ChangeHash};
use serde_json::json;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP stream that counts the bytes read and written.
struct Counted {
    inner: tokio::net::TcpStream,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.bytes.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = &polled {
            self.bytes.fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy)]
struct SamodSync {
    secs: f64,
    bytes: u64,
}

/// Loads the fixture's documents into a samod repo, then syncs them to `runs` fresh repos.
async fn samod_runs(fixture: &Fixture, dir: &Path, runs: usize) -> Result<(Vec<SamodSync>, f64), String> {
    // The documents as our store holds them (every change of each case).
    let copy = dir.join("p7-source.db");
    harness::copy_db(&fixture.db, &copy);
    let source = harness::open_store(&copy, &fixture.identity());
    let ids: Vec<String> = harness::catalog(&source).await.into_keys().collect();
    let a_dir = dir.join("p7-samod-a");
    drop(std::fs::remove_dir_all(&a_dir));
    let repo_a =
        samod::Repo::build_tokio().with_storage(samod::storage::TokioFilesystemStorage::new(&a_dir)).load().await;
    let loading = Instant::now();
    let mut documents: Vec<(samod::DocumentId, Vec<ChangeHash>)> = Vec::with_capacity(ids.len());
    for id in &ids {
        let changes = source.changes_since(id, Vec::new()).await.map_err(|error| error.to_string())?;
        let mut doc = Automerge::new();
        for change in &changes {
            doc.load_incremental(change).map_err(|error| format!("loading {id}: {error}"))?;
        }
        let heads = doc.get_heads();
        let handle = repo_a.create(doc).await.map_err(|_| "samod stopped".to_owned())?;
        documents.push((handle.document_id().clone(), heads));
    }
    let load_secs = loading.elapsed().as_secs_f64();
    drop(source);
    harness::remove_db(&copy);
    eprintln!("  P7: {} documents created in samod repo A in {load_secs:.1} s", documents.len());

    let mut results = Vec::new();
    for run in 0..runs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|error| error.to_string())?;
        let port = listener.local_addr().map_err(|error| error.to_string())?.port();
        let url = samod::Url::parse(&format!("tcp://127.0.0.1:{port}")).map_err(|error| error.to_string())?;
        let acceptor = repo_a.make_acceptor(url.clone()).map_err(|_| "samod stopped".to_owned())?;
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let counted = Counted { inner: io, bytes: counter.clone() };
                if acceptor.accept(samod::Transport::from_tokio_io(counted)).is_err() {
                    return;
                }
            }
        });
        let b_dir = dir.join(format!("p7-samod-b-{run}"));
        drop(std::fs::remove_dir_all(&b_dir));
        let repo_b =
            samod::Repo::build_tokio().with_storage(samod::storage::TokioFilesystemStorage::new(&b_dir)).load().await;
        let started = Instant::now();
        let dialer = samod::tokio_io::TcpDialer::new(url).map_err(|error| error.to_string())?;
        let dialing = repo_b.dial(samod::BackoffConfig::default(), Arc::new(dialer)).map_err(|_| "samod stopped")?;
        dialing.established().await.map_err(|error| format!("samod dial: {error:?}"))?;
        let mut finds = tokio::task::JoinSet::new();
        for (id, heads) in &documents {
            let find = repo_b.find(id.clone());
            let heads = heads.clone();
            finds.spawn(async move {
                let handle = find.await.map_err(|_| "samod stopped".to_owned())?.ok_or("a document was not found")?;
                // `find` resolves once B synced with a peer holding the document; check it has A's heads.
                let got = handle.with_document(|doc| doc.get_heads());
                if got == heads { Ok(()) } else { Err("a document arrived with other heads".to_owned()) }
            });
        }
        while let Some(joined) = finds.join_next().await {
            joined.map_err(|error| error.to_string())??;
        }
        let secs = started.elapsed().as_secs_f64();
        let total = bytes.load(Ordering::Relaxed);
        eprintln!(
            "  P7 run {}/{runs}: samod synced {} documents in {secs:.2} s, {total} bytes",
            run + 1,
            documents.len()
        );
        results.push(SamodSync { secs, bytes: total });
        repo_b.stop().await;
        accepting.abort();
        drop(std::fs::remove_dir_all(&b_dir));
    }
    repo_a.stop().await;
    drop(std::fs::remove_dir_all(&a_dir));
    Ok((results, load_secs))
}

/// P7 rows: samod's time and bytes for the fixture against ours (P3 at the same size, same run).
pub async fn p7_samod(fixture: &Fixture, dir: &Path, runs: usize, ours: &[InitialSync]) -> Vec<Row> {
    let n = fixture.cases;
    let our_secs = median_f64(&ours.iter().map(|run| run.secs).collect::<Vec<_>>());
    let our_bytes = median_u64(&ours.iter().map(|run| run.frame_bytes).collect::<Vec<_>>());
    let size = format!("{n} cases, {runs} samod run{}", if runs == 1 { "" } else { "s" });
    match samod_runs(fixture, dir, runs).await {
        Ok((results, load_secs)) => {
            let secs = median_f64(&results.iter().map(|r| r.secs).collect::<Vec<_>>());
            let bytes = median_u64(&results.iter().map(|r| r.bytes).collect::<Vec<_>>());
            let speedup = secs / our_secs;
            let byte_ratio = our_bytes as f64 / bytes as f64;
            vec![Row {
                id: "P7",
                measure: "initial sync, zhaowo (QUIC) vs samod 0.16 (TCP): time and bytes".to_owned(),
                size,
                median: format!("zhaowo {our_secs:.2} s, {:.1} MB", our_bytes as f64 / 1e6),
                p99: "—".to_owned(),
                baseline: format!("samod {secs:.2} s, {:.1} MB", bytes as f64 / 1e6),
                ratio: format!("{speedup:.2}× faster, {byte_ratio:.2}× the bytes"),
                goal: "≥ 5× faster, ≤ 0.33× the bytes".to_owned(),
                met: met(speedup >= 5.0, byte_ratio <= 1.0 / 3.0),
                note: format!(
                    "P7: samod repo A took {load_secs:.1} s to create the {n} documents (not timed); samod's filesystem storage does not fsync, ours commits with FULL."
                ),
                figures: json!({
                    "cases": n, "samod_secs": results.iter().map(|r| r.secs).collect::<Vec<_>>(),
                    "samod_bytes": results.iter().map(|r| r.bytes).collect::<Vec<_>>(),
                    "zhaowo_secs_median": our_secs, "zhaowo_frame_bytes_median": our_bytes,
                    "speedup": speedup, "byte_ratio": byte_ratio,
                }),
            }]
        }
        Err(reason) => vec![Row {
            id: "P7",
            measure: "initial sync, zhaowo (QUIC) vs samod 0.16 (TCP): time and bytes".to_owned(),
            size,
            median: format!("zhaowo {our_secs:.2} s, {:.1} MB", our_bytes as f64 / 1e6),
            p99: "—".to_owned(),
            baseline: format!("not measured: {reason}"),
            ratio: "—".to_owned(),
            goal: "≥ 5× faster, ≤ 0.33× the bytes".to_owned(),
            met: Met::NotMeasured,
            note: String::new(),
            figures: json!({ "cases": n, "not_measured": reason }),
        }],
    }
}

fn met(faster: bool, smaller: bool) -> Met {
    match (faster, smaller) {
        (true, true) => Met::Yes,
        (false, false) => Met::No,
        (true, false) => Met::Partly("time yes, bytes no"),
        (false, true) => Met::Partly("time no, bytes yes"),
    }
}
