//! `verify`, `doc export|import`, `merge`: checking the store, moving one case's Automerge document, and merging
//! another node's store into this one.

use crate::case::{read_error, resolve};
use crate::setup::open;
use crate::{Cli, expected, out, print_json, say};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use zhaowo_crdt::model::*;
use zhaowo_node::home::now_ms;

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

/// An import's refusal is an expected failure (exit 1); an unreadable file or a failing store is an error (exit 2).
pub fn import_error(error: zhaowo_node::import::ImportError) -> anyhow::Error {
    if error.is_refusal() { expected(error.to_string()) } else { anyhow::Error::new(error) }
}

pub fn print_merge(cli: &Cli, report: &zhaowo_node::import::ImportReport) {
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
            "refused": refused, "unsigned_changes": report.unsigned, "keys_taken": report.keys_taken,
            "materials_taken": report.materials_taken, "material_bytes": report.material_bytes,
            "materials_skipped": report.materials_skipped,
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
                "{} added, {} changed, {} unchanged, {} new conflicts (review them with `zhaowo conflicts list`), {} case keys taken, {} material files taken ({} bytes, {} skipped)",
                report.added.len(),
                report.changed.len(),
                report.unchanged,
                report.new_conflicts.len(),
                report.keys_taken,
                report.materials_taken,
                report.material_bytes,
                report.materials_skipped
            ),
        );
    }
}

pub async fn merge(cli: &Cli, args: &MergeArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    if home.config.role != Role::Admin {
        return Err(expected(format!("merge needs an admin node; this node is a {} node", home.config.role.code())));
    }
    let roster = home.roster().ok_or(zhaowo_node::home::HomeError::NoHall)?;
    let store = home.open_store()?;
    let scratch = std::env::temp_dir().join(format!("zhaowo-merge-{}-{}", std::process::id(), now_ms()));
    let report = zhaowo_node::import::store_file(&store, &home.config.store_path(), roster, &args.path, &scratch)
        .await
        .map_err(import_error)?;
    print_merge(cli, &report);
    Ok(())
}

pub async fn verify(cli: &Cli) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    // Every change signature is checked against this node's roster (a node without one checks the rest).
    let report = store.verify(home.roster().cloned()).await.context("verify failed")?;
    let mut problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    problems.extend(crate::setup::node_problems(&home));
    // Material files (issue 16): every file a case names that is here is read and checked against its name.
    let materials = zhaowo_node::blobs::check_all(&store, &home.blobs()?).await.context("checking material files")?;
    problems.extend(materials.damaged.iter().map(|hash| {
        format!("material file {hash} was damaged on disk: deleted, it is fetched again from a peer by sync")
    }));
    if cli.json {
        print_json(&serde_json::json!({
            "docs": report.docs,
            "signatures_checked": report.signatures_checked,
            "unsigned_changes": report.unsigned_changes,
            "materials": materials,
            "problems": problems,
        }));
    } else {
        for problem in &problems {
            out!("{problem}");
        }
        say(
            cli,
            &format!(
                "checked {} documents and {} change signatures ({} changes unsigned, kept local), {} of {} material files ({} not fetched yet): {} problems",
                report.docs,
                report.signatures_checked,
                report.unsigned_changes,
                materials.held,
                materials.named,
                materials.missing,
                problems.len()
            ),
        );
    }
    if problems.is_empty() { Ok(()) } else { Err(expected(format!("{} problems found", problems.len()))) }
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
            let report = zhaowo_node::import::automerge_doc(&store, file).await.map_err(import_error)?;
            print_merge(cli, &report);
        }
    }

    Ok(())
}
