//! Issue 16 §2: where materials (photos, scans) should live — SQLite blobs or files in the data directory — measured,
//! not guessed. Each row has its baseline measured in the same run and the ratio.
//!
//! `cargo run --release -p zhaowo-examples --example blob_bench [-- FILES MIB]` (default 100 files of 1 MiB).
//!
//! Rows:
//! - write N blobs durably: files (temp file, fsync, rename, directory fsync) against SQLite (a blob per transaction,
//!   WAL, `synchronous = FULL`, in a database of its own);
//! - read and verify every blob against its SHA-256: the same two;
//! - a case-sized commit (1 KB row, `synchronous = FULL`) in the case database: baseline an empty database, then the
//!   same database after the blobs were written into it (what storing materials beside the cases costs every
//!   acknowledged case write, P1/P2);
//! - sealing a blob under a case key (XChaCha20-Poly1305) against hashing it (SHA-256), per MiB.

#![allow(clippy::print_stdout)]

use chacha20poly1305::aead::{Aead, KeyInit};
use sha2::Digest;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn fsync_dir(dir: &Path) {
    std::fs::File::open(dir).and_then(|dir| dir.sync_all()).expect("fsync dir");
}

fn blob(index: usize, bytes: usize) -> Vec<u8> {
    // Incompressible and distinct per index (a photo is already compressed).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ index as u64;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn open_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS cases (id INTEGER PRIMARY KEY, row BLOB NOT NULL);",
    )
    .expect("schema");
    conn
}

/// p50 of `runs` case-sized commits.
fn case_commit_p50(conn: &rusqlite::Connection, runs: usize) -> Duration {
    let row = vec![7u8; 1024];
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            conn.execute("INSERT INTO cases (row) VALUES (?1)", [&row]).expect("insert");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn row(name: &str, baseline: (&str, Duration), measured: (&str, Duration), unit: f64, per: &str) {
    let b = baseline.1.as_secs_f64() / unit;
    let m = measured.1.as_secs_f64() / unit;
    println!(
        "| {name} | {} {:.3} ms{per} | {} {:.3} ms{per} | {:.2}× |",
        baseline.0,
        b * 1e3,
        measured.0,
        m * 1e3,
        m / b
    );
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let files = args.first().copied().unwrap_or(100);
    let mib = args.get(1).copied().unwrap_or(1);
    let size = mib * 1024 * 1024;
    let dir = tempfile_dir();
    let blobs: Vec<Vec<u8>> = (0..files).map(|i| blob(i, size)).collect();
    let hashes: Vec<String> = blobs.iter().map(|b| hex(&sha2::Sha256::digest(b))).collect();

    // Files: content-addressed, written durably.
    let store = dir.join("materials");
    std::fs::create_dir_all(&store).unwrap();
    let started = Instant::now();
    for (bytes, hash) in blobs.iter().zip(&hashes) {
        let temporary = store.join(format!("{hash}.tmp"));
        let mut file = std::fs::File::create(&temporary).unwrap();
        file.write_all(bytes).unwrap();
        file.sync_all().unwrap();
        std::fs::rename(&temporary, store.join(hash)).unwrap();
        fsync_dir(&store);
    }
    let files_write = started.elapsed();
    let started = Instant::now();
    for hash in &hashes {
        let bytes = std::fs::read(store.join(hash)).unwrap();
        assert_eq!(&hex(&sha2::Sha256::digest(&bytes)), hash);
    }
    let files_read = started.elapsed();

    // SQLite blobs in a database of their own.
    let blob_db = open_db(&dir.join("materials.db"));
    let started = Instant::now();
    for (bytes, hash) in blobs.iter().zip(&hashes) {
        blob_db.execute("INSERT INTO blobs (hash, bytes) VALUES (?1, ?2)", rusqlite::params![hash, bytes]).unwrap();
    }
    let sqlite_write = started.elapsed();
    let started = Instant::now();
    for hash in &hashes {
        let bytes: Vec<u8> =
            blob_db.query_row("SELECT bytes FROM blobs WHERE hash = ?1", [hash], |r| r.get(0)).unwrap();
        assert_eq!(&hex(&sha2::Sha256::digest(&bytes)), hash);
    }
    let sqlite_read = started.elapsed();
    drop(blob_db);

    // A case-sized commit, before and after the blobs share the case database.
    let cases = open_db(&dir.join("cases.db"));
    let empty_p50 = case_commit_p50(&cases, 200);
    for (bytes, hash) in blobs.iter().zip(&hashes) {
        cases.execute("INSERT INTO blobs (hash, bytes) VALUES (?1, ?2)", rusqlite::params![hash, bytes]).unwrap();
    }
    let with_blobs_p50 = case_commit_p50(&cases, 200);
    let cases_bytes = std::fs::metadata(dir.join("cases.db")).unwrap().len()
        + std::fs::metadata(dir.join("cases.db-wal")).map(|m| m.len()).unwrap_or(0);

    // Sealing under a case key against hashing.
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = chacha20poly1305::XNonce::from([3u8; 24]);
    let started = Instant::now();
    for bytes in &blobs {
        std::hint::black_box(sha2::Sha256::digest(bytes));
    }
    let hashing = started.elapsed();
    let started = Instant::now();
    for bytes in &blobs {
        std::hint::black_box(cipher.encrypt(&nonce, bytes.as_slice()).unwrap());
    }
    let sealing = started.elapsed();

    let total_mib = (files * mib) as f64;
    println!("blob store, {files} blobs of {mib} MiB ({total_mib} MiB), 2-core machine");
    println!("| row | baseline | measured | ratio |");
    println!("| --- | --- | --- | --- |");
    row("durable write", ("files", files_write), ("SQLite", sqlite_write), total_mib, "/MiB");
    row("read + verify", ("files", files_read), ("SQLite", sqlite_read), total_mib, "/MiB");
    row("case commit p50", ("cases only", empty_p50), ("cases + blobs in one file", with_blobs_p50), 1.0, "");
    row("per MiB", ("SHA-256", hashing), ("XChaCha20-Poly1305", sealing), total_mib, "/MiB");
    println!("case database with the blobs in it: {:.1} MiB", cases_bytes as f64 / 1048576.0);
    drop(std::fs::remove_dir_all(&dir));
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zhaowo-blob-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
