//! `verify`, `doc export|import`, `merge`: checking the store, moving one case's Automerge document, and merging
//! another node's store into this one.

use crate::case::{all_case_ids, read_error, resolve};
use crate::setup::open;
use crate::{Cli, expected, out, print_json, say};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::path::PathBuf;
use zhaowo_crdt::CaseDoc;
use zhaowo_crdt::model::*;
use zhaowo_node::home::now_ms;
use zhaowo_node::store::Store;

#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Write a case's Automerge document to a file (readable by any Automerge implementation).
    Export {
        case: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Merge an Automerge document of a case (from `doc export`, or any Automerge implementation) into this node.
    Import { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Another node's data directory (holding cases.db) or a database file.
    pub path: PathBuf,
}

/// A document file is at most this large: a case with the maximum events saves to a few hundred KB.
const DOC_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// What merging brought: cases new to this node, cases that gained changes, conflicts that appeared.
#[derive(Debug, Default)]
pub struct MergeReport {
    added: Vec<String>,
    changed: Vec<String>,
    unchanged: usize,
    new_conflicts: Vec<(String, String)>,
    /// Cases skipped because a revoked member changed them after its revocation (case id, why).
    refused: Vec<(String, String)>,
    /// Changes stored without a member's signature (a plain Automerge file): kept on this node, never relayed.
    unsigned: usize,
}

/// One case's changes to merge, with the signatures that came with them.
pub struct Incoming {
    pub case_id: String,
    pub changes: Vec<Vec<u8>>,
    pub signatures: Vec<zhaowo_crdt::wire::ChangeSignature>,
}

/// Applies the changes of several cases and reports what they did to this node. With `roster`, every change must be
/// signed by a member (a forged or unsigned change refuses everything before anything is stored); without it (a plain
/// Automerge file) the changes are stored unsigned and stay on this node.
pub async fn merge_cases(
    store: &Store,
    roster: Option<&zhaowo_crdt::roster::Roster>,
    cases: Vec<Incoming>,
) -> anyhow::Result<MergeReport> {
    let mut report = MergeReport::default();
    let mut accepted: Vec<Incoming> = Vec::new();
    match roster {
        Some(roster) => {
            // A change the source holds without a signature may be one this node holds signed (its own, or relayed
            // to it): lend those signatures before verifying.
            let mut cases = cases;
            for case in &mut cases {
                let known: BTreeSet<[u8; 32]> = case.signatures.iter().map(|s| s.hash).collect();
                if let Ok(ours) = store.signatures(&case.case_id).await {
                    case.signatures.extend(ours.into_iter().filter(|s| !known.contains(&s.hash)));
                }
            }
            let bundle = zhaowo_crdt::bundle::Bundle {
                hall: *roster.hall(),
                from: [0; 32],
                created_ms: 0,
                docs: cases
                    .into_iter()
                    .map(|case| zhaowo_crdt::bundle::BundleDoc {
                        doc_id: case.case_id,
                        changes: case.changes,
                        signatures: case.signatures,
                    })
                    .collect(),
            };
            let verified = zhaowo_crdt::bundle::verify(&bundle, roster).map_err(|error| {
                expected(format!("refused, nothing was stored: {error} (every change must be signed by a member)"))
            })?;
            report.refused = verified.refused;
            let mut docs: Vec<Option<zhaowo_crdt::bundle::BundleDoc>> = bundle.docs.into_iter().map(Some).collect();
            for index in verified.accepted {
                if let Some(doc) = docs[index].take() {
                    accepted.push(Incoming { case_id: doc.doc_id, changes: doc.changes, signatures: doc.signatures });
                }
            }
        }
        None => {
            for case in &cases {
                let signed: BTreeSet<[u8; 32]> = case.signatures.iter().map(|s| s.hash).collect();
                report.unsigned += case
                    .changes
                    .iter()
                    .filter(|bytes| {
                        automerge::Change::try_from(bytes.as_slice()).map_or(true, |c| !signed.contains(&c.hash().0))
                    })
                    .count();
            }
            accepted = cases;
        }
    }
    for case in accepted {
        let case_id = case.case_id;
        let before = store.case_view(&case_id).await.ok();
        let batch = vec![zhaowo_node::store::RemoteChanges { case_id: case_id.clone(), changes: case.changes }];
        let applied = store
            .apply_signed(batch, case.signatures)
            .await
            .with_context(|| format!("failed to store the changes of {case_id}"))?;
        if let Some(rejected) = applied.rejected.first() {
            return Err(expected(format!("case {} was refused: {}", rejected.case_id, rejected.reason)));
        }
        let after = store.case_view(&case_id).await.map_err(read_error)?;
        let old_conflicts: BTreeSet<String> =
            before.iter().flat_map(|b| b.conflicts.iter().map(|c| c.id.clone())).collect();
        for conflict in after.conflicts.iter().filter(|c| !old_conflicts.contains(&c.id)) {
            report.new_conflicts.push((after.reg_no.to_string(), conflict.id.clone()));
        }
        match before {
            None => report.added.push(after.reg_no.to_string()),
            Some(before) if before != after => report.changed.push(after.reg_no.to_string()),
            Some(_) => report.unchanged += 1,
        }
    }
    Ok(report)
}

pub fn print_merge(cli: &Cli, report: &MergeReport) {
    for (case_id, why) in &report.refused {
        say(cli, &format!("skipped {case_id}: {why}"));
    }
    if report.unsigned > 0 {
        say(
            cli,
            &format!(
                "{} changes carry no member's signature: they stay on this node and are not synced to peers",
                report.unsigned
            ),
        );
    }
    if cli.json {
        let conflicts: Vec<_> = report
            .new_conflicts
            .iter()
            .map(|(reg_no, id)| serde_json::json!({ "reg_no": reg_no, "conflict": id }))
            .collect();
        let refused: Vec<_> = report
            .refused
            .iter()
            .map(|(case_id, why)| serde_json::json!({ "case_id": case_id, "reason": why }))
            .collect();
        print_json(&serde_json::json!({
            "added": report.added, "changed": report.changed, "unchanged": report.unchanged, "new_conflicts": conflicts,
            "refused": refused, "unsigned_changes": report.unsigned,
        }));
    } else {
        for reg_no in &report.added {
            out!("added    {reg_no}");
        }
        for reg_no in &report.changed {
            out!("changed  {reg_no}");
        }
        for (reg_no, id) in &report.new_conflicts {
            out!("conflict {reg_no} {id}");
        }
        say(
            cli,
            &format!(
                "{} added, {} changed, {} unchanged, {} new conflicts (review them with `zhaowo conflicts list`)",
                report.added.len(),
                report.changed.len(),
                report.unchanged,
                report.new_conflicts.len()
            ),
        );
    }
}

pub async fn merge(cli: &Cli, args: &MergeArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    if home.config.role != Role::Admin {
        return Err(expected(format!("merge needs an admin node; this node is a {} node", home.config.role.code())));
    }
    let source = if args.path.is_dir() { args.path.join("cases.db") } else { args.path.clone() };
    if !source.is_file() {
        return Err(expected(format!(
            "`{}` is neither a node's data directory nor a database file",
            args.path.display()
        )));
    }
    if std::fs::canonicalize(&source).ok() == std::fs::canonicalize(home.config.store_path()).ok() {
        return Err(expected("that is this node's own store"));
    }
    // Read-only on the other side: open a copy (with its write-ahead log), never the original.
    let scratch = std::env::temp_dir().join(format!("zhaowo-merge-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("failed to create `{}`", scratch.display()))?;
    let copy = scratch.join("cases.db");
    std::fs::copy(&source, &copy).with_context(|| format!("failed to read `{}`", source.display()))?;
    let wal = source.with_extension("db-wal");
    if wal.is_file() {
        std::fs::copy(&wal, scratch.join("cases.db-wal"))
            .with_context(|| format!("failed to read `{}`", wal.display()))?;
    }
    let result = async {
        let other =
            Store::open(zhaowo_node::store::StoreOptions::recommended(copy, automerge::ActorId::from(vec![0; 16])))
                .map_err(|error| expected(format!("`{}` is not a zhaowo store: {error}", source.display())))?;
        let mut cases = Vec::new();
        for case_id in all_case_ids(&other).await? {
            let changes = other.changes_since(&case_id, Vec::new()).await.map_err(read_error)?;
            let signatures = other.signatures(&case_id).await.map_err(read_error)?;
            cases.push(Incoming { case_id, changes, signatures });
        }
        other.close();
        anyhow::Ok(cases)
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let store = home.open_store()?;
    let roster = home.roster().ok_or(zhaowo_node::home::HomeError::NoHall)?;
    let report = merge_cases(&store, Some(roster), result?).await?;
    print_merge(cli, &report);
    Ok(())
}

pub async fn verify(cli: &Cli) -> anyhow::Result<()> {
    let store = open(cli)?.open_store()?;
    let report = store.verify().await.context("verify failed")?;
    if cli.json {
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        print_json(&serde_json::json!({ "docs": report.docs, "problems": problems }));
    } else {
        for problem in &report.problems {
            out!("{problem}");
        }
        say(cli, &format!("checked {} documents: {} problems", report.docs, report.problems.len()));
    }
    if report.problems.is_empty() { Ok(()) } else { Err(expected(format!("{} problems found", report.problems.len()))) }
}

pub async fn doc(cli: &Cli, command: &DocCommand) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    match command {
        DocCommand::Export { case, out } => {
            let case_id = resolve(&store, case).await?;
            let changes = store.changes_since(&case_id, Vec::new()).await.map_err(read_error)?;
            let mut doc = automerge::AutoCommit::new();
            for change in changes {
                doc.load_incremental(&change).with_context(|| format!("the stored changes of {case} do not load"))?;
            }
            let bytes = doc.save();
            std::fs::write(out, &bytes).with_context(|| format!("failed to write `{}`", out.display()))?;
            say(cli, &format!("wrote {} ({} bytes)", out.display(), bytes.len()));
        }
        DocCommand::Import { file } => {
            let size = std::fs::metadata(file).with_context(|| format!("failed to read `{}`", file.display()))?.len();
            if size > DOC_FILE_BYTES_MAX {
                return Err(expected(format!(
                    "`{}` is {size} bytes, more than the limit of {DOC_FILE_BYTES_MAX}",
                    file.display()
                )));
            }
            let bytes = std::fs::read(file).with_context(|| format!("failed to read `{}`", file.display()))?;
            // Outside bytes: Automerge has panicked on crafted documents, so the load is isolated.
            let loaded = std::panic::catch_unwind(|| CaseDoc::load(&bytes, automerge::ActorId::from(vec![0; 16])))
                .map_err(|_| expected(format!("`{}` is not a readable Automerge document", file.display())))?;
            let mut case =
                loaded.map_err(|error| expected(format!("`{}` is not a case document: {error}", file.display())))?;
            let case_id = case.case_id().to_string();
            let changes: Vec<Vec<u8>> =
                case.automerge_mut().get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect();
            // A plain Automerge file carries no signatures: changes this node already holds keep theirs; new ones
            // are stored unsigned and stay on this node.
            let known = store.signatures(&case_id).await.unwrap_or_default();
            let report = merge_cases(&store, None, vec![Incoming { case_id, changes, signatures: known }]).await?;
            print_merge(cli, &report);
        }
    }

    Ok(())
}
