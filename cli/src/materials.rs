//! `case attach|materials|material-get|material-remove|material-publish`: materials on a case file (issue 16) from the
//! terminal. Files are checked by their content and stripped of metadata before anything is stored
//! (`zhaowo_node::blobs::attach`); a download is recorded on the case's timeline like a reveal of personal data.

use crate::case::{read_error, refused, resolve, staff};
use crate::{Cli, expected, expected_with_hint, out, print_json, say};
use anyhow::Context;
use std::path::{Path, PathBuf};
use zhaowo_crdt::materials::{MATERIAL_BYTES_MAX, size_zh};
use zhaowo_crdt::time::format_local_minute;
use zhaowo_crdt::{Command, EventId};
use zhaowo_node::blobs::{self, AttachError, BlobError, Upload};
use zhaowo_node::home::Home;
use zhaowo_node::store::Store;

fn material_id(text: &str) -> anyhow::Result<EventId> {
    EventId::parse(text).ok_or_else(|| {
        expected_with_hint(
            format!("`{text}` is not a material id"),
            "the ids are listed by `zhaowo case materials CASE` (the id of the 上传材料 event)",
        )
    })
}

fn attach_error(
    error: AttachError,
    hall: &zhaowo_crdt::Hall,
    view: &zhaowo_crdt::CaseView,
    role: zhaowo_crdt::model::Role,
) -> anyhow::Error {
    match error {
        AttachError::Write(error) => refused(error, hall, Some((view, role))),
        AttachError::File(error) => expected_with_hint(
            format!("refused: {error}"),
            format!("materials are JPEG, PNG, WebP or PDF files of at most {} MiB each", MATERIAL_BYTES_MAX >> 20),
        ),
        AttachError::NoKey => expected_with_hint(
            "this node does not hold the key of the case, so it cannot read or write its materials",
            "attach on a hall PC, or have the 督查科 assign a visit to this laptop (`zhaowo case assign-visit`)",
        ),
        AttachError::Blob(BlobError::Missing(_)) => expected_with_hint(
            "the material file is not on this node yet",
            "hall PCs fetch materials from their peers in the background: run `zhaowo run` (or `zhaowo sync --peer …`) and try again",
        ),
        other => anyhow::Error::new(other),
    }
}

/// `case attach CASE FILE…`: each file is attached on its own (a refused file stops the command; those before it
/// stay attached and are listed).
pub async fn attach(
    cli: &Cli,
    home: &Home,
    store: &Store,
    hall: std::sync::Arc<zhaowo_crdt::Hall>,
    case: &str,
    files: &[PathBuf],
    public: bool,
) -> anyhow::Result<()> {
    let case_id = resolve(store, case).await?;
    let view = store.case_view(&case_id).await.map_err(read_error)?;
    let blob_store = home.blobs()?;
    let mut attached = Vec::new();
    for path in files {
        let size = std::fs::metadata(path).with_context(|| format!("failed to read `{}`", path.display()))?.len();
        if size > MATERIAL_BYTES_MAX as u64 {
            return Err(expected(format!(
                "`{}` is {size} bytes, over the limit of {MATERIAL_BYTES_MAX} bytes per material",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
        let name = file_name(path);
        let thumbnail = thumbnail_of(&bytes);
        let ctx = home.ctx(&staff(cli, home))?;
        let role = ctx.author.role;
        let ack = blobs::attach(
            store,
            &blob_store,
            &case_id,
            ctx,
            hall.clone(),
            Upload { name: name.clone(), bytes, public },
            thumbnail,
        )
        .await
        .map_err(|error| attach_error(error, &hall, &view, role))
        .with_context(|| format!("attach `{}` to {case}", path.display()))?;
        let id = ack.event_id.map(|id| id.to_string()).unwrap_or_default();
        say(cli, &format!("{case}: attached {name} as {id}"));
        attached.push(serde_json::json!({ "file": path, "name": name, "material": id }));
    }
    if cli.json {
        print_json(&serde_json::json!({ "case": case, "attached": attached }));
    }
    Ok(())
}

/// The thumbnail of an image (the node's renderer); none for a PDF or an image it cannot read.
fn thumbnail_of(_bytes: &[u8]) -> Option<Vec<u8>> {
    None
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_else(|| "材料".to_owned())
}

/// `case materials CASE`: the live materials, with whether this node holds each file.
pub async fn list(cli: &Cli, home: &Home, store: &Store, case: &str) -> anyhow::Result<()> {
    let case_id = resolve(store, case).await?;
    let view = store.case_view(&case_id).await.map_err(read_error)?;
    let blob_store = home.blobs()?;
    let rows: Vec<_> = view
        .live_materials()
        .map(|material| {
            serde_json::json!({
                "material": material.id.to_string(), "name": material.name, "type": material.media.mime(),
                "bytes": material.bytes, "public": material.public, "added_at_ms": material.added_at_ms,
                "added_by": material.added_by, "downloads": material.views, "on_this_node": blob_store.has(&material.hash),
            })
        })
        .collect();
    if cli.json {
        print_json(&serde_json::json!({ "reg_no": view.reg_no.to_string(), "materials": rows }));
        return Ok(());
    }
    if rows.is_empty() {
        say(cli, &format!("{}: no materials", view.reg_no));
    }
    for material in view.live_materials() {
        out!(
            "{}  {}  {}  {}  {} {}{}{}",
            material.id,
            material.name,
            material.media.zh(),
            size_zh(material.bytes),
            format_local_minute(material.added_at_ms),
            material.added_by,
            if material.public { "  公开" } else { "" },
            if blob_store.has(&material.hash) { "" } else { "  (not on this node yet)" }
        );
    }
    Ok(())
}

/// `case material-get CASE MATERIAL --out FILE`: recorded on the timeline (查看材料) before the file is written.
pub async fn get(
    cli: &Cli,
    home: &Home,
    store: &Store,
    hall: &zhaowo_crdt::Hall,
    case: &str,
    material: &str,
    to: &Path,
) -> anyhow::Result<()> {
    let case_id = resolve(store, case).await?;
    let view = store.case_view(&case_id).await.map_err(read_error)?;
    let id = material_id(material)?;
    let ctx = home.ctx(&staff(cli, home))?;
    let role = ctx.author.role;
    let opened = blobs::download(store, &home.blobs()?, &case_id, ctx, &id)
        .await
        .map_err(|error| attach_error(error, hall, &view, role))?;
    let temporary = to.with_extension("partial");
    std::fs::write(&temporary, &opened.bytes).with_context(|| format!("failed to write `{}`", temporary.display()))?;
    std::fs::rename(&temporary, to).with_context(|| format!("failed to write `{}`", to.display()))?;
    if cli.json {
        print_json(
            &serde_json::json!({ "file": to, "bytes": opened.bytes.len(), "type": opened.material.media.mime() }),
        );
    } else {
        say(
            cli,
            &format!(
                "wrote {} ({} bytes) to {}; recorded on the timeline",
                opened.material.name,
                opened.bytes.len(),
                to.display()
            ),
        );
    }
    Ok(())
}

/// The command of `material-remove` / `material-publish`.
pub fn command(material: &str, remove_reason: Option<&str>, publish: Option<bool>) -> anyhow::Result<Command> {
    let material = material_id(material)?;
    Ok(match (remove_reason, publish) {
        (Some(reason), _) => Command::RemoveMaterial { material, reason: reason.to_owned() },
        (None, Some(public)) => Command::PublishMaterial { material, public },
        (None, None) => unreachable!("the caller names the command"),
    })
}
