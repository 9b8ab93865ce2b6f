//! The benchmark of issue 7 (not a test): one run prints one table, rows P1–P7, each with its median, p99 where it
//! applies, a baseline measured in the same run, the ratio, the goal and whether it is met; `--json PATH` writes the
//! same table as JSON. Machines are shared and noisy: quote the medians and the ratios, never a lone figure.
//!
//! ```text
//! cargo run --release -p zhaowo-examples --example bench -- --quick              # < 5 min on 2 cores
//! cargo run --release -p zhaowo-examples --example bench -- --full --json bench.json
//! ```
//!
//! Case stores are generated once into `--dir` (default `/tmp/zhaowo-bench`) with the node's own signed
//! registration path and reused by later runs; BENCHMARKS.md holds the latest table and where the time goes.

#![allow(clippy::print_stdout)] // The table is the benchmark's output.

#[path = "bench/harness.rs"]
mod harness;
#[path = "bench/materials_row.rs"]
mod materials_row;
#[path = "bench/rows.rs"]
mod rows;
#[path = "bench/samod_row.rs"]
mod samod_row;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Whether a row met its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// One of two goals met (the text says which).
    Partly(&'static str),
    NotMeasured,
}

impl Met {
    fn text(self) -> String {
        match self {
            Met::Yes => "yes".to_owned(),
            Met::No => "**no**".to_owned(),
            Met::Partly(which) => format!("**partly** ({which})"),
            Met::NotMeasured => "not measured".to_owned(),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: &'static str,
    pub measure: String,
    pub size: String,
    pub median: String,
    pub p99: String,
    pub baseline: String,
    pub ratio: String,
    pub goal: String,
    pub met: Met,
    /// A measured breakdown printed under the table (empty for none).
    pub note: String,
    /// The row's raw figures for the JSON file.
    pub figures: serde_json::Value,
}

/// Sizes and repetitions of one mode.
#[derive(Debug, Clone)]
struct Plan {
    mode: &'static str,
    p1_writes: usize,
    /// `(cases, runs)` per size of the initial sync; the last size's pair serves P4 and P2.
    p3_sizes: Vec<(usize, usize)>,
    p4_runs: usize,
    p2_samples: usize,
    p5_cases_per_node: usize,
    p5_runs: usize,
    p6_runs: usize,
    p7_runs: usize,
    /// The size P7 compares at (one of the P3 sizes): samod needs ~6 minutes for 10k documents here, so the quick
    /// mode compares at 2k.
    p7_cases: usize,
}

impl Plan {
    fn quick() -> Plan {
        Plan {
            mode: "quick",
            p1_writes: 200,
            p3_sizes: vec![(2_000, 3), (10_000, 3)],
            p4_runs: 5,
            p2_samples: 200,
            p5_cases_per_node: 200,
            p5_runs: 3,
            p6_runs: 5,
            p7_runs: 1,
            p7_cases: 2_000,
        }
    }

    fn full(million: bool) -> Plan {
        let mut p3_sizes = vec![(10_000, 3), (100_000, 1)];
        if million {
            p3_sizes.push((1_000_000, 1));
        }
        Plan {
            mode: "full",
            p1_writes: 400,
            p3_sizes,
            p4_runs: 5,
            p2_samples: 500,
            p5_cases_per_node: 1000,
            p5_runs: 5,
            p6_runs: 5,
            p7_runs: 1,
            p7_cases: 10_000,
        }
    }

    fn describe(&self) -> String {
        let sizes: Vec<String> = self.p3_sizes.iter().map(|(n, runs)| format!("{n} ×{runs}")).collect();
        let largest = self.p3_sizes.last().map_or(0, |(n, _)| *n);
        format!(
            "mode {}: P1 {} writes; P3 {}; P4 {} reconnects at {largest}; P2 {} changes at {largest}; P5 {} cases/node ×{}; \
             P6 {} processes at {largest}; P7 samod at {} ×{}",
            self.mode,
            self.p1_writes,
            sizes.join(", "),
            self.p4_runs,
            self.p2_samples,
            self.p5_cases_per_node,
            self.p5_runs,
            self.p6_runs,
            self.p7_cases,
            self.p7_runs
        )
    }
}

fn wants(only: &Option<Vec<String>>, id: &str) -> bool {
    only.as_ref().is_none_or(|ids| ids.iter().any(|wanted| wanted.eq_ignore_ascii_case(id)))
}

fn machine() -> (usize, f64) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cores, mem_kb / 1024.0 / 1024.0)
}

fn today() -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    let date = zhaowo_crdt::time::Date::of_ms(now_ms);
    format!("{:04}-{:02}-{:02}", date.year, date.month, date.day)
}

fn print_table(rows: &[Row]) {
    println!("| row | measure | size | median | p99 | baseline (same run) | ratio | goal | met |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.id,
            row.measure,
            row.size,
            row.median,
            row.p99,
            row.baseline,
            row.ratio,
            row.goal,
            row.met.text()
        );
    }
    println!();
    for row in rows.iter().filter(|row| !row.note.is_empty()) {
        println!("- {}", row.note);
    }
}

async fn run(plan: &Plan, dir: &Path, only: &Option<Vec<String>>) -> Vec<Row> {
    let mut rows = Vec::new();
    if wants(only, "P1") {
        eprintln!("P1: acknowledged register vs bare INSERT+COMMIT ({} each)", plan.p1_writes);
        rows.extend(rows::p1_register(dir, plan.p1_writes).await);
    }
    let needs_pair = ["P2", "P3", "P4", "P6", "P7"].iter().any(|id| wants(only, id));
    if !needs_pair {
        return with_p5(plan, dir, only, rows).await;
    }
    let fixtures: Vec<(harness::Fixture, usize)> = plan
        .p3_sizes
        .iter()
        .map(|&(cases, runs)| {
            eprintln!("store of {cases} signed cases: generating on first use, then reused from {}", dir.display());
            let fixture = harness::signed_store(dir, cases);
            if let Some(secs) = fixture.generated_secs {
                eprintln!("  generated in {secs:.0} s");
            }
            (fixture, runs)
        })
        .collect();
    let mut pair: Option<rows::Pair> = None;
    let mut ours_p7 = None;
    for (fixture, runs) in &fixtures {
        if let Some(mut old) = pair.take() {
            old.a.stop().await;
            old.b.stop().await;
        }
        eprintln!("P3: initial sync of {} cases ×{runs}", fixture.cases);
        let (results, kept) = rows::p3_initial_sync(fixture, dir, *runs).await;
        if wants(only, "P3") {
            rows.extend(rows::p3_rows(fixture, &results));
        }
        if fixture.cases == plan.p7_cases {
            ours_p7 = Some((fixture.clone(), results));
        }
        pair = Some(kept);
    }
    let mut pair = pair.expect("P3 ran at least once");
    if wants(only, "P4") {
        eprintln!("P4: reconnect with nothing changed ×{}", plan.p4_runs);
        rows.extend(rows::p4_reconnect(&mut pair, plan.p4_runs).await);
    }
    if wants(only, "P2") {
        eprintln!("P2: live change A → B ×{}", plan.p2_samples);
        rows.extend(rows::p2_live(&pair, plan.p2_samples).await);
    }
    pair.a.stop().await;
    pair.b.stop().await;
    drop(pair);
    if wants(only, "P6") {
        let (fixture, _) = fixtures.last().expect("a fixture");
        eprintln!("P6: startup and RSS of a node holding {} cases ×{}", fixture.cases, plan.p6_runs);
        rows.extend(rows::p6_startup(fixture, plan.p6_runs));
    }
    if wants(only, "P7") {
        match &ours_p7 {
            Some((fixture, ours)) => {
                eprintln!("P7: samod initial sync of {} cases ×{}", fixture.cases, plan.p7_runs);
                rows.extend(samod_row::p7_samod(fixture, dir, plan.p7_runs, ours).await);
            }
            None => eprintln!("P7 needs its size ({}) among the P3 sizes of the plan", plan.p7_cases),
        }
    }
    with_p5(plan, dir, only, rows).await
}

async fn with_p5(plan: &Plan, dir: &Path, only: &Option<Vec<String>>, mut rows: Vec<Row>) -> Vec<Row> {
    if wants(only, "P8") || wants(only, "P9") {
        eprintln!("P8, P9: a fresh hall PC receiving 1,000 cases with 100 MB of materials; P2 while 100 MB move");
        rows.extend(materials_row::p8_p9(dir).await);
    }
    if wants(only, "P5") {
        eprintln!("P5: 5 nodes × {} cases, partitioned then healed ×{}", plan.p5_cases_per_node, plan.p5_runs);
        rows.extend(rows::p5_heal(dir, plan.p5_cases_per_node, plan.p5_runs).await);
    }
    rows.sort_by_key(|row| row.id);
    rows
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|arg| arg == flag).and_then(|i| args.get(i + 1)).cloned();
    if let Some(position) = args.iter().position(|arg| arg == "--measure-node") {
        rows::measure_node(Path::new(&args[position + 1]), Path::new(&args[position + 2]));
        return;
    }
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!(
            "bench: the issue-7 benchmark table (P1–P7) with same-run baselines\n\n\
             --quick          small sizes, under 5 minutes on 2 cores (the default)\n\
             --full           the issue's sizes (10k and 100k initial syncs, P5 at 1,000 cases per node)\n\
             --million        with --full: also the 1M-case initial sync (build its store first with --generate 1000000)\n\
             --json PATH      also write the table as JSON\n\
             --dir DIR        where generated stores live and are reused (default /tmp/zhaowo-bench)\n\
             --only P1,P5     run only these rows (P2 and P4 run P3 first; P8 and P9 run together)\n\
             --generate N     only generate (or find) the store of N signed cases in --dir, for a later run"
        );
        return;
    }
    let plan = if args.iter().any(|arg| arg == "--full") {
        Plan::full(args.iter().any(|arg| arg == "--million"))
    } else {
        Plan::quick()
    };
    let dir = PathBuf::from(value("--dir").unwrap_or_else(|| "/tmp/zhaowo-bench".to_owned()));
    std::fs::create_dir_all(&dir).expect("the bench directory");
    if let Some(cases) = value("--generate") {
        let Ok(cases) = cases.parse::<usize>() else {
            eprintln!("--generate takes a number of cases, not {cases:?}");
            std::process::exit(2);
        };
        let fixture = harness::signed_store(&dir, cases);
        match fixture.generated_secs {
            Some(secs) => eprintln!("generated {cases} signed cases in {secs:.0} s: {}", fixture.db.display()),
            None => eprintln!("{} already holds {cases} signed cases", fixture.db.display()),
        }
        return;
    }
    let only: Option<Vec<String>> = value("--only").map(|ids| ids.split(',').map(|id| id.trim().to_owned()).collect());
    let (cores, mem_gib) = machine();
    let started = Instant::now();
    eprintln!("{}", plan.describe());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let rows = runtime.block_on(run(&plan, &dir, &only));
    let wall_secs = started.elapsed().as_secs_f64();
    println!(
        "zhaowo bench, {} ({} cores, {mem_gib:.0} GiB), {} UTC+8, {wall_secs:.0} s wall",
        plan.mode,
        cores,
        today()
    );
    println!("{}", plan.describe());
    println!();
    print_table(&rows);
    if let Some(path) = value("--json") {
        let document = json!({
            "date": today(),
            "mode": plan.mode,
            "plan": plan.describe(),
            "machine": { "cores": cores, "memory_gib": mem_gib },
            "command": args[1..].join(" "),
            "wall_secs": wall_secs,
            "rows": rows.iter().map(|row| json!({
                "row": row.id, "measure": row.measure, "size": row.size, "median": row.median, "p99": row.p99,
                "baseline": row.baseline, "ratio": row.ratio, "goal": row.goal, "met": row.met.text().replace("**", ""),
                "note": row.note, "figures": row.figures,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&document).expect("json") + "\n").expect("write the JSON");
        eprintln!("wrote {path}");
    }
}
