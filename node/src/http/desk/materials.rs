//! 材料 on the desk's case page (issue 16 §4): the list of live materials (thumbnail or a PDF label, type, size, who
//! added it when, public or not), 下载 (a POST with the session's CSRF token, recorded as 查看材料 before the file is
//! decrypted, like the reveal of personal data), 删除 with a reason and 公开/取消公开 (case commands through the
//! `/act` route), and the upload form (several files at once, multipart, the CSRF token inside the body).
//!
//! Which forms show is the crdt's permission table (`CaseView::allowed`); thumbnails are served to a signed-in role
//! the table lets view materials. A node without the case key (a laptop with no visit) says so instead of listing.

use super::case_page::{load_view, refused};
use super::{ctx, desk_csrf, session, to_login};
use crate::http::App;
use crate::http::citizen::form_rejection;
use crate::http::guard::Session;
use crate::http::materials::{
    attach_file, content_disposition, content_type, file_label, file_response, read_upload, unreadable,
    upload_read_refused,
};
use crate::http::page::minute;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use zhaowo_crdt::limits::REASON_CHARS_MAX;
use zhaowo_crdt::materials::{BlobRole, MaterialType, size_zh};
use zhaowo_crdt::model::{CommandKind as K, Role};
use zhaowo_crdt::upload::{Part, UploadLimits};
use zhaowo_crdt::{CaseView, EventId};

/// What this node holds of a case's materials: the key (without it nothing opens) and which files are here (the
/// others have not been transferred yet).
#[derive(Debug, Default)]
pub(super) struct MaterialsHere {
    pub keyed: bool,
    pub present: HashSet<String>,
}

pub(super) async fn materials_here(app: &App, view: &CaseView) -> MaterialsHere {
    let keyed = matches!(app.store.case_key(view.case_id.as_str()).await, Ok(Some(_)));
    // A laptop fetches on demand (issue 16 §3): opening the case asks the peers for the thumbnails it lacks, in the
    // background, so the next view shows them; a hall PC's fetcher brings every file anyway.
    if let (true, Some(sync), Some(blobs)) = (keyed, &app.options.sync, &app.blobs) {
        for thumb in view.live_materials().filter_map(|material| material.thumb.clone()) {
            if !blobs.has(&thumb) {
                let sync = sync.clone();
                tokio::spawn(async move { drop(sync.fetch_material(&thumb).await) });
            }
        }
    }
    let present = match &app.blobs {
        Some(blobs) => view
            .live_materials()
            .flat_map(|material| std::iter::once(&material.hash).chain(material.thumb.as_ref()))
            .filter(|hash| blobs.has(hash))
            .cloned()
            .collect(),
        None => HashSet::new(),
    };
    MaterialsHere { keyed, present }
}

/// Whether a role may see a case's materials at all (thumbnails, the list): the table's 查看材料 row.
fn may_view(role: Role, view: &CaseView) -> bool {
    K::ViewMaterial.permitted(role, view.status).is_ok()
}

/// The 材料 section of the case page.
pub(super) fn material_section(session: &Session, view: &CaseView, here: &MaterialsHere) -> Markup {
    let actions = view.allowed(session.role);
    let (may_add, may_remove, may_publish) = (
        actions.contains(&K::AddMaterial),
        actions.contains(&K::RemoveMaterial),
        actions.contains(&K::PublishMaterial),
    );
    if !may_view(session.role, view) && !may_add {
        return html! {};
    }
    let id = view.case_id.as_str();
    let live: Vec<_> = view.live_materials().collect();
    let csrf = session.csrf.as_str();
    html! {
        h2 id="materials" { "材料" @if !live.is_empty() { "（" (live.len()) " 份）" } }
        @if view.personal.purged {
            p.hint id="materials-purged" { "个人信息已清除，材料随之清除。" }
        } @else if !here.keyed {
            p.hint id="materials-no-key" { "本机无权查看此案件的材料" @if !live.is_empty() { "（共 " (live.len()) " 份）" } "。" }
        } @else {
            @if live.is_empty() { p.hint { "暂无材料" } }
            @if !live.is_empty() {
                div.scroll { table id="material-list" {
                    thead { tr { th { "预览" } th { "文件" } th { "上传" } th { "公开" } th.noprint { "操作" } } }
                    tbody { @for material in &live {
                        @let synced = here.present.contains(&material.hash);
                        tr.material id={ "material-" (material.id.as_str()) } {
                            td {
                                @if material.media == MaterialType::Pdf {
                                    span.tag.pdf { "PDF" }
                                } @else if material.thumb.as_ref().is_some_and(|thumb| here.present.contains(thumb)) {
                                    img.thumb src={ "/desk/case/" (id) "/material/" (material.id.as_str()) "/thumb" }
                                        alt={ "预览：" (material.name) } width="120" loading="lazy";
                                } @else {
                                    span.tag { "图片" }
                                }
                            }
                            td {
                                span.material-name { (material.name) } br;
                                span.hint { (material.media.zh()) " · " (size_zh(material.bytes)) }
                                @if material.views > 0 { br; span.hint { "已下载 " (material.views) " 次" } }
                            }
                            td {
                                (if material.added_role == Role::Citizen { "群众" } else { material.added_by.as_str() }) br;
                                span.hint { (minute(material.added_at_ms)) }
                            }
                            td.material-public { @if material.public { span.tag { "公开" } } @else { "不公开" } }
                            td.noprint {
                                @if !synced {
                                    p.hint.not-synced { "该材料尚未同步到本机。" a href={ "/desk/case/" (id) "#materials" } { "重试" } }
                                } @else if actions.contains(&K::ViewMaterial) {
                                    form method="post" action={ "/desk/case/" (id) "/material/" (material.id.as_str()) "/download" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="action" value=(K::ViewMaterial.code());
                                        button.secondary type="submit" { "下载" }
                                    }
                                }
                                @if may_publish {
                                    form method="post" action={ "/desk/case/" (id) "/act" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="action" value=(K::PublishMaterial.code());
                                        input type="hidden" name="choice" value=(material.id.as_str());
                                        @if material.public {
                                            button.secondary type="submit" { "取消公开" }
                                        } @else {
                                            input type="hidden" name="flag" value="yes";
                                            button.secondary type="submit" title="公开后群众凭查询码可见，并在公开列表中显示" { "公开" }
                                        }
                                    }
                                }
                                @if may_remove {
                                    details {
                                        summary { "删除" }
                                        form method="post" action={ "/desk/case/" (id) "/act" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="action" value=(K::RemoveMaterial.code());
                                            input type="hidden" name="choice" value=(material.id.as_str());
                                            label { "删除原因" }
                                            input type="text" name="text" required maxlength=(REASON_CHARS_MAX);
                                            button.secondary type="submit" { "删除" }
                                        }
                                    }
                                }
                            }
                        }
                    } }
                } }
                p.hint { "下载将被记录（时间、人员），与查看完整个人信息相同。" }
            }
            @if may_add { (upload_form(id, csrf)) }
        }
    }
}

fn upload_form(case_id: &str, csrf: &str) -> Markup {
    html! {
        form.card.noprint id="upload" method="post" action={ "/desk/case/" (case_id) "/materials" }
            enctype="multipart/form-data" data-progress {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value=(K::AddMaterial.code());
            strong { "上传材料" }
            label for="material-files" { "文件（可多选）" }
            input type="file" id="material-files" name="files" multiple required
                accept="image/jpeg,image/png,image/webp,application/pdf";
            p {
                input type="checkbox" id="material-public" name="public" value="yes";
                " " label.inline for="material-public" { "公开（群众凭查询码可见；请勿公开含个人信息的材料）" }
            }
            p.hint {
                "接受 JPEG、PNG、WebP 图片和 PDF 文件，每个不超过 "
                (zhaowo_crdt::materials::MATERIAL_BYTES_MAX / (1024 * 1024)) " MB，一次最多 "
                (crate::http::limits::DESK_UPLOAD_FILES_MAX) " 个；照片的位置等信息会被去除。"
            }
            progress hidden max="100" value="0" {} " " span.progress-text.hint {}
            button type="submit" id="do-upload" { "上传" }
        }
        script src="/static/upload.js" defer {}
    }
}

/// A material's thumbnail, decrypted, for a signed-in role that may view the case's materials.
pub(super) async fn thumbnail(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, material)): Path<(String, String)>,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let view = match load_view(&app, &id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let back = format!("/desk/case/{id}");
    if !may_view(session.role, &view) {
        return crate::http::page::error_page(
            StatusCode::FORBIDDEN,
            "无权查看",
            "您的角色不能查看本案材料。",
            Some((&back, "返回案件")),
        );
    }
    let Some(thumb) = view.material(&material).and_then(|found| found.thumb.clone()) else {
        return crate::http::page::error_page(
            StatusCode::NOT_FOUND,
            "材料不存在",
            "没有这份材料的预览。",
            Some((&back, "返回案件")),
        );
    };
    let Some(blobs) = &app.blobs else { return unavailable(&back) };
    match crate::blobs::open_file(&app.store, blobs, &id, &thumb, BlobRole::Thumbnail).await {
        Ok(bytes) => file_response(bytes, "image/jpeg", "inline".to_owned(), "private, no-store"),
        Err(error) => unreadable(&error, &back),
    }
}

fn unavailable(back: &str) -> Response {
    crate::http::page::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "材料暂不可用",
        "本机的材料文件目录无法打开，请联系管理员。",
        Some((back, "返回案件")),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DownloadForm {
    csrf: String,
}

/// 下载: records 查看材料 (who, when) and only then decrypts the file (`blobs::download`), answered as an attachment
/// under its own name. A refusal (role, no key, not synced yet) shows the case page with the reason.
pub(super) async fn download(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, material)): Path<(String, String)>,
    form: Result<Form<DownloadForm>, FormRejection>,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let back = format!("/desk/case/{id}");
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return form_rejection(&app, &rejection, &back),
    };
    if let Err(response) = desk_csrf(&app, &session, &form.csrf) {
        return response;
    }
    let view = match load_view(&app, &id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let Some(material_id) = EventId::parse(&material) else {
        return refused(&app, &session, &view, "本案没有这份材料（可能已被删除）", None).await;
    };
    let Some(blobs) = &app.blobs else { return unavailable(&back) };
    // Not here yet (a laptop fetches on demand; a hall PC's background fetch may not have reached it): ask the peers
    // now, within the fetch's own timeout, before anything is recorded.
    if let (Some(material), Some(sync)) = (view.material(material_id.as_str()), &app.options.sync)
        && !blobs.has(&material.hash)
        && let Err(error) = sync.fetch_material(&material.hash).await
    {
        return refused(&app, &session, &view, error.zh(), None).await;
    }
    let ctx = match ctx(&app, &session) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    match crate::blobs::download(&app.store, blobs, &id, ctx, &material_id).await {
        Ok(opened) => {
            tracing::info!(target: "zhaowo::_events::pi", case_id = id, material = material_id.as_str(), staff = %session.staff(), "material downloaded");
            let disposition = content_disposition("attachment", &opened.material.name);
            file_response(opened.bytes, opened.material.media.mime(), disposition, "private, no-store")
        }
        Err(error) => refused(&app, &session, &view, &error.zh(), None).await,
    }
}

/// 上传材料: a multipart body (read within `DESK_UPLOAD_BODY_BYTES_MAX`, parsed strictly by `crdt::upload` with the
/// desk's limits), its CSRF token checked from the body, then each file attached on its own (`attach_file`): a
/// refused file is named with the reason (and the limit) and stores nothing; the others are stored.
pub(super) async fn upload(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let Some((_, session)) = session(&app, &headers) else { return to_login() };
    let back = format!("/desk/case/{id}");
    let body = match read_upload(request, crate::http::limits::DESK_UPLOAD_BODY_BYTES_MAX).await {
        Ok(body) => body,
        Err(refusal) => return upload_read_refused(&app, &refusal, &back),
    };
    let view = match load_view(&app, &id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let parts = match zhaowo_crdt::upload::parse(&content_type(&headers), &body, &UploadLimits::desk()) {
        Ok(parts) => parts,
        Err(error) => {
            app.counters.bad_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return refused(&app, &session, &view, &format!("上传未完成：{}", error.zh()), None).await;
        }
    };
    drop(body);
    // One token, in the body (a multipart form cannot carry it elsewhere); two tokens are a crafted body.
    let tokens: Vec<&str> = parts.iter().filter(|part| part.name == "csrf").filter_map(|part| part.text()).collect();
    let token = if tokens.len() == 1 { tokens[0] } else { "" };
    if let Err(response) = desk_csrf(&app, &session, token) {
        return response;
    }
    let public = parts.iter().any(|part| part.name == "public" && part.text() == Some("yes"));
    let files: Vec<Part> = parts.into_iter().filter(|part| part.is_file() && part.name == "files").collect();
    if files.is_empty() {
        return refused(&app, &session, &view, "请选择要上传的文件", None).await;
    }
    let hall = Arc::new(super::hall(&app));
    let (mut stored, mut refusals) = (0usize, Vec::new());
    for (index, file) in files.into_iter().enumerate() {
        let name = file.file_name.unwrap_or_default();
        let label = file_label(&name, index);
        // Each file its own context: fresh entropy for its event id, a fresh secret for its sealing.
        let ctx = match ctx(&app, &session) {
            Ok(ctx) => ctx,
            Err(response) => return response,
        };
        match attach_file(&app, &id, ctx, hall.clone(), name, file.data, public).await {
            Ok(()) => stored += 1,
            Err(error) => refusals.push(format!("{label}未上传：{}", error.zh())),
        }
    }
    if refusals.is_empty() {
        return super::case_page::done(&view, K::AddMaterial);
    }
    let view = match load_view(&app, &id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let message = if stored > 0 {
        format!("已上传 {stored} 个文件；{}", refusals.join("；"))
    } else {
        refusals.join("；")
    };
    refused(&app, &session, &view, &message, None).await
}
