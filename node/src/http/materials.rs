//! Materials over HTTP (issue 16 §4), the parts both listeners share: published materials for the citizen lookup
//! and Open311 (`/m/{case}/{material}` and its thumbnail, no session: the material must be one the case publishes,
//! [`zhaowo_crdt::PublicCaseView::materials`], which is empty once the personal data is purged), the upload
//! progress script (`/static/upload.js`), and the file answers the desk's thumbnail and download routes use too.
//!
//! Every file answer carries its type from the case's record (judged by content when it was attached, never by the
//! name), `X-Content-Type-Options: nosniff`, and a `Content-Disposition` whose file name is RFC 5987-encoded.

use super::App;
use super::page::error_page;
use crate::blobs::{AttachError, BlobError};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use zhaowo_crdt::materials::{BlobRole, MaterialType};
use zhaowo_crdt::{CaseId, Ctx, EventId, Hall};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/m/{case}/{material}", get(public_material))
        .route("/m/{case}/{material}/thumb", get(public_thumbnail))
        .route("/static/upload.js", get(upload_script))
}

/// The upload progress script: XHR upload progress on forms marked `data-progress`. A file of its own because the
/// CSP allows scripts from this origin only (`script-src 'self'`), never inline; the forms work without it.
const UPLOAD_JS: &str = include_str!("upload.js");

async fn upload_script() -> Response {
    let mut response = UPLOAD_JS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// The link of a published material on the citizen listener (absolute: Open311 `media_url`, QR-scanned pages).
pub(crate) fn public_url(app: &App, case_id: &str, material: &EventId) -> String {
    format!("{}/m/{case_id}/{}", app.options.public_base_url, material.as_str())
}

/// A file name for a `Content-Disposition`: an ASCII fallback in `filename` and the UTF-8 name in `filename*`
/// (RFC 6266 §4.3 with RFC 5987's encoding), so 身份证.jpg arrives as 身份证.jpg and no byte of the name can break
/// the header.
pub(crate) fn content_disposition(disposition: &str, name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '(' | ')') { c } else { '_' })
        .collect();
    let fallback = if fallback.trim_matches(['_', '.']).is_empty() { "material".to_owned() } else { fallback };
    let mut encoded = String::new();
    for byte in name.bytes() {
        // RFC 5987 attr-char: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~".
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A file answer: the type the case recorded, nosniff, a disposition, and how it may be cached.
pub(crate) fn file_response(bytes: Vec<u8>, mime: &'static str, disposition: String, cache: &'static str) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The extension a material's type is saved under when the name is not shown (public files).
pub(crate) fn extension(media: MaterialType) -> &'static str {
    match media {
        MaterialType::Jpeg => "jpg",
        MaterialType::Png => "png",
        MaterialType::Webp => "webp",
        MaterialType::Pdf => "pdf",
    }
}

/// The page for a material that cannot be read here (not synced yet, damaged, no key, unavailable).
pub(crate) fn unreadable(error: &AttachError, back: &str) -> Response {
    let status = match error {
        AttachError::Blob(BlobError::Missing(_) | BlobError::Corrupt(_)) | AttachError::NoKey => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    if !matches!(error, AttachError::Blob(BlobError::Missing(_)) | AttachError::NoKey) {
        tracing::warn!(%error, "a material could not be read");
    }
    let message = match error {
        AttachError::Blob(BlobError::Missing(_)) => "该材料尚未同步到本机，请稍后重试。".to_owned(),
        other => other.zh(),
    };
    error_page(status, "无法打开材料", &message, Some((back, "返回")))
}

fn no_material() -> Response {
    error_page(StatusCode::NOT_FOUND, "材料不存在", "没有找到该材料，或该材料未公开。", Some(("/q", "查询办理进度")))
}

async fn public_material(State(app): State<App>, Path((case, material)): Path<(String, String)>) -> Response {
    public_file(&app, &case, &material, BlobRole::Material).await
}

async fn public_thumbnail(State(app): State<App>, Path((case, material)): Path<(String, String)>) -> Response {
    public_file(&app, &case, &material, BlobRole::Thumbnail).await
}

/// A published material (or its thumbnail) of a case, for anyone: only while the case publishes it (a clerk's
/// 公开, not withdrawn, not removed, personal data not purged: `PublicCaseView::materials`). Every other case, id or
/// material gets the same 404, so the route tells nothing about materials that are not public.
async fn public_file(app: &App, case: &str, material: &str, role: BlobRole) -> Response {
    let (Some(_), Some(material_id)) = (CaseId::parse(case), EventId::parse(material)) else { return no_material() };
    let view = match app.store.case_view(case).await {
        Ok(view) => view,
        Err(crate::store::ReadError::UnknownCase(_)) => return no_material(),
        Err(error) => return super::citizen::store_unavailable(&error),
    };
    if !view.public().materials.iter().any(|public| public.id == material_id) {
        return no_material();
    }
    let Some(found) = view.material(material_id.as_str()) else { return no_material() };
    let (hash, mime) = match role {
        BlobRole::Material => (found.hash.clone(), found.media.mime()),
        BlobRole::Thumbnail => match &found.thumb {
            Some(thumb) => (thumb.clone(), "image/jpeg"),
            None => return no_material(),
        },
    };
    let Some(blobs) = &app.blobs else { return unreadable(&AttachError::Blob(BlobError::Missing(hash)), "/q") };
    match crate::blobs::open_file(&app.store, blobs, case, &hash, role).await {
        Ok(bytes) => {
            // No name (a published material shows no file name, which may be personal): the id and the type.
            let name = format!("{}.{}", material_id.as_str(), extension(found.media));
            let disposition = if found.media == MaterialType::Pdf { "attachment" } else { "inline" };
            // A clerk may withdraw the publication: never kept by a shared cache, revalidated by the phone.
            file_response(bytes, mime, content_disposition(disposition, &name), "no-cache")
        }
        Err(error) => unreadable(&error, "/q"),
    }
}

/// Why an upload body was not read. Nothing is stored.
#[derive(Debug)]
pub(crate) enum UploadRead {
    /// Over the route's limit (413).
    TooLarge { max: usize },
    /// Not received within [`super::limits::UPLOAD_READ_TIMEOUT_MS`] (408).
    TooSlow,
    /// The connection broke off (400).
    Broken,
}

/// Reads an upload's body whole: at most `max` bytes (a `Content-Length` above it is refused before a byte is read)
/// within [`super::limits::UPLOAD_READ_TIMEOUT_MS`]. The route's own limit replaces the small default
/// (`BODY_BYTES_MAX`) that every other route keeps.
pub(crate) async fn read_upload(request: axum::extract::Request, max: usize) -> Result<Vec<u8>, UploadRead> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(UploadRead::TooLarge { max });
    }
    let timeout = std::time::Duration::from_millis(super::limits::UPLOAD_READ_TIMEOUT_MS);
    match tokio::time::timeout(timeout, axum::body::to_bytes(request.into_body(), max)).await {
        Err(_) => Err(UploadRead::TooSlow),
        Ok(Ok(bytes)) => Ok(bytes.to_vec()),
        Ok(Err(error)) => {
            let over = error.into_inner().downcast_ref::<http_body_util::LengthLimitError>().is_some();
            Err(if over { UploadRead::TooLarge { max } } else { UploadRead::Broken })
        }
    }
}

/// The page for an [`UploadRead`] refusal.
pub(crate) fn upload_read_refused(app: &App, refusal: &UploadRead, back: &str) -> Response {
    app.counters.bad_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match refusal {
        UploadRead::TooLarge { max } => error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "上传内容过大",
            &format!("一次上传的内容合计不能超过 {} MB，请分几次上传或压缩后再上传。", max / (1024 * 1024)),
            Some((back, "返回")),
        ),
        UploadRead::TooSlow => error_page(
            StatusCode::REQUEST_TIMEOUT,
            "上传超时",
            "文件未能在规定时间内传完，请检查网络后重新上传，或减少一次上传的文件数。",
            Some((back, "返回")),
        ),
        UploadRead::Broken => {
            error_page(StatusCode::BAD_REQUEST, "上传中断", "上传没有完成，请重新上传。", Some((back, "返回")))
        }
    }
}

/// The content type of a request (empty when absent or not text).
pub(crate) fn content_type(headers: &axum::http::HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
}

/// Attaches one uploaded file to a case: its thumbnail made off the async workers (`node::thumbnail`, images only;
/// a picture the thumbnailer cannot decode is still judged by `materials::clean`, and attached without one), then
/// `blobs::attach` (clean, seal, files, event; returns after COMMIT).
pub(crate) async fn attach_file(
    app: &App,
    case_id: &str,
    ctx: Ctx,
    hall: Arc<Hall>,
    name: String,
    bytes: Vec<u8>,
    public: bool,
) -> Result<(), AttachError> {
    let Some(blobs) = &app.blobs else { return Err(AttachError::Blob(BlobError::Missing(String::new()))) };
    let (bytes, thumbnail) = tokio::task::spawn_blocking(move || {
        let thumbnail = match zhaowo_crdt::materials::sniff(&bytes) {
            Some(kind) => crate::thumbnail::thumbnail(kind, &bytes).unwrap_or_else(|error| {
                tracing::info!(%error, "no thumbnail for an uploaded picture");
                None
            }),
            None => None,
        };
        (bytes, thumbnail)
    })
    .await
    .map_err(|_| AttachError::Blob(BlobError::Io(std::io::Error::other("the thumbnail task failed"))))?;
    let upload = crate::blobs::Upload { name, bytes, public };
    crate::blobs::attach(&app.store, blobs, case_id, ctx, hall, upload, thumbnail).await?;
    app.counters.material_uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// A file's name as a refusal names it: 「name」, or 第 N 个文件 when the browser sent none.
pub(crate) fn file_label(name: &str, index: usize) -> String {
    if name.trim().is_empty() { format!("第 {} 个文件", index + 1) } else { format!("「{name}」") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_rfc_5987_encoded_with_an_ascii_fallback() {
        assert_eq!(
            content_disposition("attachment", "张三 身份证.jpg"),
            "attachment; filename=\"______.jpg\"; filename*=UTF-8''%E5%BC%A0%E4%B8%89%20%E8%BA%AB%E4%BB%BD%E8%AF%81.jpg"
        );
        assert_eq!(
            content_disposition("inline", "a\"b\r\n.pdf"),
            "inline; filename=\"a_b__.pdf\"; filename*=UTF-8''a%22b%0D%0A.pdf"
        );
        assert_eq!(
            content_disposition("attachment", "身份证"),
            "attachment; filename=\"material\"; filename*=UTF-8''%E8%BA%AB%E4%BB%BD%E8%AF%81"
        );
    }
}
