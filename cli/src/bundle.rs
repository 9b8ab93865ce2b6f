//! `zhaowo bundle export|import`: sneakernet for laptops that cannot reach the hall LAN. A bundle is a file of signed
//! changes (`zhaowo_crdt::bundle`); importing verifies every signature against the roster like sync does, is
//! idempotent, and reports what changed.

use crate::maintenance::{import_error, print_merge};
use crate::{Cli, expected, out, print_json, say, setup};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use zhaowo_crdt::bundle::{self, BUNDLE_BYTES_MAX, Bundle, BundleDoc, BundleMaterial};
use zhaowo_node::home::{now_ms, parse_node_id};
use zhaowo_node::store::CATALOG_PAGE_MAX;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write this node's cases as a file of signed changes (all cases, or those changed since a peer last synced).
    Export {
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Only cases changed since this peer (node id) last acknowledged a sync with this node.
        #[arg(long)]
        since_peer: Option<String>,
        /// Leave the cases' material files (photos, scans) out: a small bundle; the hall fetches them by sync later.
        #[arg(long)]
        no_materials: bool,
    },
    /// Verify a bundle's every signature and merge it into this node (importing the same bundle twice changes nothing).
    Import {
        /// The bundle file.
        file: PathBuf,
    },
}

pub async fn run(cli: &Cli, command: &BundleCommand) -> anyhow::Result<()> {
    match command {
        BundleCommand::Export { out, since_peer, no_materials } => {
            export(cli, out, since_peer.as_deref(), !no_materials).await
        }
        BundleCommand::Import { file } => import(cli, file).await,
    }
}

fn progress(cli: &Cli, length: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if cli.no_progress || cli.quiet > 0 || cli.json {
        return None;
    }
    let bar = indicatif::ProgressBar::new(length);
    let style = indicatif::ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} cases {{eta}}"));
    bar.set_style(style.ok()?);
    Some(bar)
}

async fn export(cli: &Cli, out: &PathBuf, since_peer: Option<&str>, with_materials: bool) -> anyhow::Result<()> {
    let home = setup::open(cli)?;
    let roster = home.roster().ok_or(zhaowo_node::home::HomeError::NoHall)?;
    let store = home.open_store()?;
    let since = match since_peer {
        Some(node_id) => {
            let key = parse_node_id(node_id).map_err(|error| expected(error.to_string()))?;
            store.checkpoint(key).await?.0
        }
        None => 0,
    };
    let mut entries = Vec::new();
    let mut after = i64::try_from(since).unwrap_or(i64::MAX);
    loop {
        let page = store.catalog_since(after, CATALOG_PAGE_MAX).await?;
        let Some(last) = page.last() else { break };
        after = last.local_seq;
        entries.extend(page);
    }
    let bar = progress(cli, entries.len() as u64, "exporting");
    let mut docs = Vec::with_capacity(entries.len());
    let mut changes = 0;
    for entry in entries {
        let case_changes = store.changes_since(&entry.case_id, Vec::new()).await?;
        let signatures = store.signatures(&entry.case_id).await?;
        changes += case_changes.len();
        docs.push(BundleDoc { doc_id: entry.case_id, changes: case_changes, signatures });
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let cases = docs.len();
    let keys = store.case_keys(docs.iter().map(|doc| doc.doc_id.clone()).collect()).await?;
    let key_count = keys.len();
    // The material files of the exported cases this node holds (sealed as stored), unless left out.
    let mut materials = Vec::new();
    let (mut materials_missing, mut material_bytes) = (0usize, 0usize);
    if with_materials {
        let blobs = home.blobs()?;
        let exported: std::collections::HashSet<&str> = docs.iter().map(|doc| doc.doc_id.as_str()).collect();
        let mut after = String::new();
        loop {
            let page = store.blob_refs(&after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.hash.clone();
            for named in page.into_iter().filter(|named| exported.contains(named.doc_id.as_str())) {
                match blobs.get(&named.hash) {
                    Ok(bytes) => {
                        material_bytes += bytes.len();
                        if material_bytes > BUNDLE_BYTES_MAX {
                            return Err(expected(format!(
                                "the material files exceed the bundle limit of {BUNDLE_BYTES_MAX} bytes: use \
                                 --no-materials (the hall fetches them by sync) or --since-peer to export less"
                            )));
                        }
                        materials.push(BundleMaterial { hash: named.hash, bytes });
                    }
                    Err(_) => materials_missing += 1,
                }
            }
        }
    }
    let material_count = materials.len();
    let inner = bundle::encode(&Bundle {
        hall: *roster.hall(),
        from: home.identity.verifying_key().to_bytes(),
        created_ms: now_ms(),
        docs,
        keys,
        materials,
    });
    // On disk, encrypted to the hall's PCs: a lost stick shows nothing, a laptop cannot read another's bundle.
    let recipients = zhaowo_node::import::bundle_recipients(roster);
    let bytes = zhaowo_node::import::encrypt_bundle(&inner, &recipients).map_err(expected)?;
    if bytes.len() > BUNDLE_BYTES_MAX {
        return Err(expected(format!(
            "the bundle would be {} bytes, over the limit of {BUNDLE_BYTES_MAX}: use --since-peer to export less",
            bytes.len()
        )));
    }
    let temporary = out.with_extension("partial");
    std::fs::write(&temporary, &bytes).with_context(|| format!("failed to write `{}`", temporary.display()))?;
    std::fs::rename(&temporary, out).with_context(|| format!("failed to write `{}`", out.display()))?;
    if cli.json {
        print_json(&serde_json::json!({
            "file": out, "cases": cases, "changes": changes, "bytes": bytes.len(), "since_seq": since,
            "keys": key_count, "recipients": recipients.len(), "materials": material_count,
            "material_bytes": material_bytes, "materials_not_on_this_node": materials_missing,
        }));
    } else {
        out!(
            "exported {cases} cases ({changes} changes, {key_count} case keys, {material_count} material files, {} bytes) to {}, encrypted to the hall's {} PCs",
            bytes.len(),
            out.display(),
            recipients.len()
        );
        if materials_missing > 0 {
            say(cli, &format!("{materials_missing} material files are not on this node yet and were left out"));
        }
    }
    Ok(())
}

async fn import(cli: &Cli, file: &PathBuf) -> anyhow::Result<()> {
    let home = setup::open(cli)?;
    let roster = home.roster().ok_or(zhaowo_node::home::HomeError::NoHall)?;
    // A file that is not a bundle, or a damaged one, is corrupt data (exit 2); nothing was stored.
    let bundle = zhaowo_node::import::read_bundle(file, &home.identity).map_err(import_error)?;
    let from = zhaowo_node::home::hex(&bundle.from);
    say(cli, &format!("importing {} cases from node {}", bundle.docs.len(), &from[..16]));
    let store = home.open_store()?;
    let blobs = home.blobs()?;
    let report = zhaowo_node::import::bundle(&store, &blobs, roster, file, bundle).await.map_err(import_error)?;
    print_merge(cli, &report);
    Ok(())
}
