//! Materials on the web (issue 16 §4) over real sockets to a served node: the desk's multipart upload (several files,
//! GPS EXIF gone, thumbnails served to staff only, downloads recorded as 查看材料), refusals that change nothing,
//! citizen photos on the report form, and published materials on the lookup and as Open311 `media_url` (none after a
//! purge).

use axum::http::{HeaderMap, StatusCode, header};
use std::net::SocketAddr;
use std::sync::Arc;
use zhaowo_crdt::Command;
use zhaowo_crdt::materials::{MATERIAL_BYTES_MAX, MaterialType};
use zhaowo_crdt::model::{CommandKind, Role};
use zhaowo_node::http::HttpOptions;
use zhaowo_node::store::Store;

const GPS_JPEG: &[u8] = include_bytes!("../../../crdt/fuzz/seeds/material_file/gps-photo.jpg");
const PNG: &[u8] = include_bytes!("../../../crdt/fuzz/seeds/material_file/text.png");
const PDF: &[u8] = include_bytes!("../../../crdt/fuzz/seeds/material_file/scan.pdf");
const PASSWORD: &str = crate::http::PASSWORD;

struct Served {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    desk: SocketAddr,
    public: SocketAddr,
    materials_dir: std::path::PathBuf,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: header::HeaderName) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }
    fn cookie(&self, prefix: &str) -> String {
        let all = self.headers.get_all(header::SET_COOKIE);
        let found = all.iter().map(|v| v.to_str().unwrap()).find(|c| c.starts_with(prefix)).expect("cookie");
        found.split(';').next().unwrap().to_owned()
    }
}

async fn served() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let home = Arc::new(crate::http::home_in(dir.path()));
    let store = Arc::new(home.open_store().unwrap());
    let desk_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (desk, public) = (desk_listener.local_addr().unwrap(), public_listener.local_addr().unwrap());
    let mut http = HttpOptions::recommended(desk, format!("http://{public}"));
    http.blobs = Some(home.blobs().unwrap());
    let materials_dir = dir.path().join(zhaowo_node::blobs::MATERIALS_DIR);
    tokio::spawn(zhaowo_node::http::serve_on(home, store.clone(), desk_listener, public_listener, http));
    Served { _dir: dir, store, desk, public, materials_dir }
}

/// One HTTP/1.1 request over a fresh connection, body as bytes both ways.
async fn send(addr: SocketAddr, method: &str, path: &str, cookie: &str, body: Option<(String, Vec<u8>)>) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    if !cookie.is_empty() {
        request.extend_from_slice(format!("Cookie: {cookie}\r\n").as_bytes());
    }
    if let Some((content_type, body)) = &body {
        request.extend_from_slice(
            format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()).as_bytes(),
        );
    }
    request.extend_from_slice(b"\r\n");
    if let Some((_, body)) = body {
        request.extend_from_slice(&body);
    }
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        // The server may answer (413) before reading the whole body: a failed write is fine, the answer is read.
        let _ = stream.write_all(&request);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    })
    .await
    .unwrap();
    let (status, headers, body) = crate::http::parse_answer(&raw);
    Answer { status, headers, body }
}

fn urlencoded(fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let body = fields.iter().map(|(k, v)| format!("{}={}", percent(k), percent(v))).collect::<Vec<_>>().join("&");
    ("application/x-www-form-urlencoded".to_owned(), body.into_bytes())
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `multipart/form-data` body as a browser writes it.
fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----zhaowoTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (name, file_name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

fn by_id(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id}")) + marker.len();
    let start = start + html[start..].find('>').unwrap() + 1;
    html[start..start + html[start..].find('<').unwrap()].to_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const REPORT: &[(&str, &str)] = &[
    ("nature", "QZ"),
    ("category", "BDC"),
    ("summary", "小区门口路灯不亮"),
    ("detail", "晚上路过很黑，已经一周了。"),
    ("name", "李建国"),
    ("phone", "13812345678"),
    ("consent", "yes"),
    ("publish", "yes"),
];

impl Served {
    /// The report form's CSRF cookie and token.
    async fn citizen_csrf(&self) -> (String, String) {
        let form = send(self.public, "GET", "/r/BBC01", "", None).await;
        (form.cookie("zw_csrf="), hidden(&form.text(), "csrf"))
    }

    /// A citizen report (url-encoded, no photos): (case id, 登记编号, 查询码).
    async fn report(&self) -> (String, String, String) {
        let (cookie, csrf) = self.citizen_csrf().await;
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(REPORT);
        let receipt = send(self.public, "POST", "/r/BBC01", &cookie, Some(urlencoded(&fields))).await;
        assert_eq!(receipt.status, StatusCode::OK, "{}", receipt.text());
        let (reg_no, code) = (by_id(&receipt.text(), "reg-no"), by_id(&receipt.text(), "query-code"));
        let case_id = self
            .store
            .case_id_by_reg_no(&zhaowo_crdt::RegNo::parse(&reg_no).unwrap())
            .await
            .unwrap()
            .expect("the case is stored");
        (case_id, reg_no, code)
    }

    /// Signs in: (session cookie, the session's CSRF token).
    async fn sign_in(&self, username: &str) -> (String, String) {
        let form = send(self.desk, "GET", "/desk/login", "", None).await;
        let cookie = form.cookie("zw_csrf=");
        let fields =
            [("csrf", hidden(&form.text(), "csrf")), ("username", username.into()), ("password", PASSWORD.into())];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = send(self.desk, "POST", "/desk/login", &cookie, Some(urlencoded(&fields))).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        let session = answer.cookie("zw_session=");
        let book = send(self.desk, "GET", "/desk", &session, None).await;
        (session.clone(), hidden(&book.text(), "csrf"))
    }

    async fn upload(
        &self,
        session: &str,
        case_id: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> Answer {
        let path = format!("/desk/case/{case_id}/materials");
        send(self.desk, "POST", &path, session, Some(multipart(fields, files))).await
    }

    /// What a refusal must leave as it was: the case's events and the files on disk.
    async fn footprint(&self, case_id: &str) -> (usize, usize) {
        let events = self.store.case_view(case_id).await.unwrap().event_ids.len();
        let files = walk(&self.materials_dir);
        (events, files)
    }
}

/// Files under the material store, temporary ones included.
fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.map(|entry| entry.unwrap().path()).map(|path| if path.is_dir() { walk(&path) } else { 1 }).sum()
}

#[tokio::test]
async fn a_clerk_uploads_a_photo_and_a_scan_sees_a_thumbnail_and_downloads_the_photo_without_its_gps() {
    let node = served().await;
    let (case_id, _, _) = node.report().await;
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let page = send(node.desk, "GET", &format!("/desk/case/{case_id}"), &clerk, None).await.text();
    assert!(page.contains("enctype=\"multipart/form-data\"") && page.contains("name=\"files\" multiple"), "{page}");
    assert!(page.contains("accept=\"image/jpeg,image/png,image/webp,application/pdf\""));

    // Two files in one upload: a phone photo with GPS in its EXIF and a PDF scan.
    let answer = node
        .upload(
            &clerk,
            &case_id,
            &[("csrf", &csrf)],
            &[("files", "门口照片.jpg", GPS_JPEG), ("files", "身份证扫描.pdf", PDF)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    assert!(answer.header(header::LOCATION).ends_with("?done=attach"));
    let view = node.store.case_view(&case_id).await.unwrap();
    let live: Vec<_> = view.live_materials().cloned().collect();
    assert_eq!(live.len(), 2);
    let (photo, scan) = (&live[0], &live[1]);
    assert_eq!((photo.media, photo.name.as_str(), photo.public), (MaterialType::Jpeg, "门口照片.jpg", false));
    assert_eq!((scan.media, scan.thumb.is_none()), (MaterialType::Pdf, true));
    assert!(photo.thumb.is_some(), "a thumbnail was made for the photo");
    assert_eq!(photo.added_role, Role::Window);
    // `/metrics` counts the uploads and what the cases name (two files and a thumbnail).
    let metrics = send(node.desk, "GET", "/metrics", "", None).await.text();
    assert!(metrics.contains("zhaowo_http_material_uploads_total 2"), "{metrics}");
    assert!(metrics.contains("zhaowo_materials_named_files 3"), "{metrics}");

    // Listed on the case page: thumbnail for the photo, a PDF label for the scan, who added them.
    let page = send(node.desk, "GET", &format!("/desk/case/{case_id}"), &clerk, None).await.text();
    let thumb_path = format!("/desk/case/{case_id}/material/{}/thumb", photo.id.as_str());
    assert!(page.contains(&thumb_path), "{page}");
    assert!(page.contains("门口照片.jpg") && page.contains("身份证扫描.pdf") && page.contains(">PDF<"));
    assert!(page.contains("王敏(wangmin)") && page.contains("不公开") && page.contains(">下载<"));

    // The thumbnail: a JPEG, to a signed-in session only, never cached, never sniffed.
    let thumb = send(node.desk, "GET", &thumb_path, &clerk, None).await;
    assert_eq!(thumb.status, StatusCode::OK);
    assert_eq!(thumb.header(header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(thumb.header(header::CACHE_CONTROL), "private, no-store");
    assert_eq!(thumb.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(thumb.body.starts_with(&[0xFF, 0xD8]) && !contains(&thumb.body, b"Exif"));
    let anonymous = send(node.desk, "GET", &thumb_path, "", None).await;
    assert!(anonymous.status.is_redirection() && !anonymous.body.starts_with(&[0xFF, 0xD8]));

    // A download is recorded (查看材料) and gives the photo without its EXIF (GPS), named in RFC 5987.
    let download = format!("/desk/case/{case_id}/material/{}/download", photo.id.as_str());
    let forged = send(node.desk, "POST", &download, &clerk, Some(urlencoded(&[("csrf", "forged")]))).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(node.store.case_view(&case_id).await.unwrap().material(photo.id.as_str()).unwrap().views, 0);
    let file = send(node.desk, "POST", &download, &clerk, Some(urlencoded(&[("csrf", &csrf)]))).await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.text());
    assert_eq!(file.header(header::CONTENT_TYPE), "image/jpeg");
    let disposition = file.header(header::CONTENT_DISPOSITION);
    assert!(
        disposition.starts_with("attachment;") && disposition.contains("filename*=UTF-8''%E9%97%A8"),
        "{disposition}"
    );
    assert!(GPS_JPEG.windows(4).any(|w| w == b"Exif"), "the original has EXIF");
    assert!(!contains(&file.body, b"Exif") && !contains(&file.body, b"GPS"), "no EXIF (GPS) in the download");
    assert_eq!(file.body, zhaowo_crdt::materials::clean(GPS_JPEG).unwrap().1);
    let view = node.store.case_view(&case_id).await.unwrap();
    assert_eq!(view.material(photo.id.as_str()).unwrap().views, 1);
    assert!(view.timeline.iter().any(|entry| entry.label == "查看材料" && entry.staff == "王敏(wangmin)"));
    let pdf = send(
        node.desk,
        "POST",
        &format!("/desk/case/{case_id}/material/{}/download", scan.id.as_str()),
        &clerk,
        Some(urlencoded(&[("csrf", &csrf)])),
    )
    .await;
    assert_eq!((pdf.header(header::CONTENT_TYPE).as_str(), pdf.body.as_slice()), ("application/pdf", PDF));
    println!(
        "desk upload: photo {} B → {} B stored clean, thumbnail {} B; scan {} B; {} files on disk",
        GPS_JPEG.len(),
        file.body.len(),
        thumb.body.len(),
        PDF.len(),
        walk(&node.materials_dir)
    );
}

#[tokio::test]
async fn refused_uploads_change_nothing_and_name_the_file_and_the_limit() {
    let node = served().await;
    let (case_id, _, _) = node.report().await;
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let before = node.footprint(&case_id).await;

    // An executable renamed .jpg: judged by its content.
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xFF\xFF\x00\x00 This program cannot be run in DOS mode";
    let answer = node.upload(&clerk, &case_id, &[("csrf", &csrf)], &[("files", "发票.jpg", exe)]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.text().contains("「发票.jpg」未上传")
            && answer.text().contains("只接受 JPEG、PNG、WebP 图片和 PDF 文件")
    );
    assert_eq!(node.footprint(&case_id).await, before);

    // A file over the limit, named with the limit.
    let mut big = GPS_JPEG.to_vec();
    big.resize(MATERIAL_BYTES_MAX + 1, 0);
    let answer = node.upload(&clerk, &case_id, &[("csrf", &csrf)], &[("files", "大图.jpg", &big)]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("10 MB"), "{}", answer.text());
    assert_eq!(node.footprint(&case_id).await, before);

    // No CSRF token, or a wrong one: 403, nothing stored.
    let answer = node.upload(&clerk, &case_id, &[], &[("files", "a.png", PNG)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = node.upload(&clerk, &case_id, &[("csrf", "x")], &[("files", "a.png", PNG)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(node.footprint(&case_id).await, before);

    // More files than one upload takes.
    let max = zhaowo_node::http::limits::DESK_UPLOAD_FILES_MAX;
    let files: Vec<(&str, &str, &[u8])> = (0..=max).map(|_| ("files", "page.png", PNG)).collect();
    let answer = node.upload(&clerk, &case_id, &[("csrf", &csrf)], &files).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains(&format!("最多上传 {max} 个文件")), "{}", answer.text());
    assert_eq!(node.footprint(&case_id).await, before);

    // A body over the route's limit is refused from its Content-Length, before it is read.
    let answer = send(
        node.desk,
        "POST",
        &format!("/desk/case/{case_id}/materials"),
        &clerk,
        Some(("multipart/form-data; boundary=x".to_owned(), Vec::new())),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "an empty body is no upload");
    // Without a session: the sign-in page, nothing stored.
    let answer = node.upload("", &case_id, &[("csrf", &csrf)], &[("files", "a.png", PNG)]).await;
    assert!(answer.status.is_redirection());
    assert_eq!(node.footprint(&case_id).await, before);
    // Other routes keep the small default limit.
    let long = "很".repeat(30_000);
    let answer = send(
        node.desk,
        "POST",
        &format!("/desk/case/{case_id}/act"),
        &clerk,
        Some(urlencoded(&[("csrf", &csrf), ("action", CommandKind::AddNote.code()), ("text", &long)])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_citizen_attaches_photos_to_a_report_and_a_refused_photo_keeps_what_was_typed() {
    let node = served().await;
    let (cookie, csrf) = node.citizen_csrf().await;
    let page = send(node.public, "GET", "/r/BBC01", "", None).await.text();
    assert!(page.contains("accept=\"image/*\" multiple") && page.contains("src=\"/static/upload.js\""));
    let script = send(node.public, "GET", "/static/upload.js", "", None).await;
    assert!(
        script.header(header::CONTENT_TYPE).starts_with("text/javascript")
            && script.text().contains("upload.onprogress")
    );

    // A photo that is not one: the form again with every field as typed, nothing stored.
    let mut fields = vec![("csrf", csrf.as_str())];
    fields.extend_from_slice(REPORT);
    let answer = send(
        node.public,
        "POST",
        "/r/BBC01",
        &cookie,
        Some(multipart(&fields, &[("photos", "路灯.jpg", b"MZ not a photo")])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let text = answer.text();
    assert!(
        text.contains("照片「路灯.jpg」无法接收")
            && text.contains("value=\"小区门口路灯不亮\"")
            && text.contains("已经一周了"),
        "{text}"
    );
    assert_eq!(node.store.counts().await.unwrap().docs, 0);
    // Four photos: over the citizen limit.
    let four: Vec<(&str, &str, &[u8])> = (0..4).map(|_| ("photos", "p.png", PNG)).collect();
    let answer = send(node.public, "POST", "/r/BBC01", &cookie, Some(multipart(&fields, &four))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("最多上传 3 个文件"));
    assert_eq!(node.store.counts().await.unwrap().docs, 0);

    // Two photos: the case is registered, the photos attached by the citizen (群众) before the routing dispatched it.
    let answer = send(
        node.public,
        "POST",
        "/r/BBC01",
        &cookie,
        Some(multipart(&fields, &[("photos", "路灯.jpg", GPS_JPEG), ("photos", "路口.png", PNG)])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.text().contains("已收到照片 2 张"));
    let reg_no = by_id(&answer.text(), "reg-no");
    let case_id = node.store.case_id_by_reg_no(&zhaowo_crdt::RegNo::parse(&reg_no).unwrap()).await.unwrap().unwrap();
    let view = node.store.case_view(&case_id).await.unwrap();
    let live: Vec<_> = view.live_materials().collect();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|m| m.added_role == Role::Citizen && !m.public));
    assert!(live[0].thumb.is_some(), "the photo has a thumbnail");
    assert_eq!(view.status, zhaowo_crdt::model::Status::Dispatched, "routed after the photos");
    let (clerk, _) = node.sign_in("wangmin").await;
    let page = send(node.desk, "GET", &format!("/desk/case/{case_id}"), &clerk, None).await.text();
    assert!(page.contains("路灯.jpg") && page.contains("<td>群众<br>"), "{page}");
}

#[tokio::test]
async fn published_materials_show_on_the_lookup_and_in_open311_and_none_after_a_purge() {
    let node = served().await;
    let (case_id, reg_no, code) = node.report().await;
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let answer = node
        .upload(&clerk, &case_id, &[("csrf", &csrf)], &[("files", "现场.jpg", GPS_JPEG), ("files", "说明.pdf", PDF)])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let view = node.store.case_view(&case_id).await.unwrap();
    let ids: Vec<String> = view.live_materials().map(|m| m.id.to_string()).collect();
    let (photo, scan) = (&ids[0], &ids[1]);
    let lookup = format!("/q?no={reg_no}&code={code}");
    let open311 = format!("/open311/v2/requests/{reg_no}.json");
    let public_file = format!("/m/{case_id}/{photo}");

    // Not published: nothing on the lookup, no media_url, the file's route says 404.
    assert!(!send(node.public, "GET", &lookup, "", None).await.text().contains("public-materials"));
    let json: serde_json::Value =
        serde_json::from_slice(&send(node.public, "GET", &open311, "", None).await.body).unwrap();
    assert_eq!(json[0]["media_url"], serde_json::Value::Null);
    assert_eq!(send(node.public, "GET", &public_file, "", None).await.status, StatusCode::NOT_FOUND);

    // Published (公开) — the photo and the scan: the lookup shows both, media_url is the photo (the first image).
    for id in [photo, scan] {
        let fields =
            [("csrf", csrf.as_str()), ("action", CommandKind::PublishMaterial.code()), ("choice", id), ("flag", "yes")];
        let answer =
            send(node.desk, "POST", &format!("/desk/case/{case_id}/act"), &clerk, Some(urlencoded(&fields))).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    }
    let page = send(node.public, "GET", &lookup, "", None).await.text();
    assert!(page.contains(&format!("{public_file}/thumb")) && page.contains(&format!("/m/{case_id}/{scan}")), "{page}");
    assert!(!page.contains("现场.jpg"), "a published material shows no file name");
    let json: serde_json::Value =
        serde_json::from_slice(&send(node.public, "GET", &open311, "", None).await.body).unwrap();
    assert_eq!(json[0]["media_url"], format!("http://{}{public_file}", node.public));
    let file = send(node.public, "GET", &public_file, "", None).await;
    assert_eq!((file.status, file.header(header::CONTENT_TYPE).as_str()), (StatusCode::OK, "image/jpeg"));
    assert!(!contains(&file.body, b"Exif") && !contains(&file.body, b"GPS"));
    let thumb = send(node.public, "GET", &format!("{public_file}/thumb"), "", None).await;
    assert_eq!((thumb.status, thumb.header(header::CONTENT_TYPE).as_str()), (StatusCode::OK, "image/jpeg"));
    let pdf = send(node.public, "GET", &format!("/m/{case_id}/{scan}"), "", None).await;
    assert!(pdf.header(header::CONTENT_DISPOSITION).starts_with("attachment;") && pdf.body == PDF);
    // Downloads by citizens are not recorded (the material is public); the desk's are.
    assert_eq!(node.store.case_view(&case_id).await.unwrap().material(photo).unwrap().views, 0);

    // Withdrawn (取消公开): gone again.
    let fields = [("csrf", csrf.as_str()), ("action", CommandKind::PublishMaterial.code()), ("choice", scan.as_str())];
    send(node.desk, "POST", &format!("/desk/case/{case_id}/act"), &clerk, Some(urlencoded(&fields))).await;
    assert_eq!(send(node.public, "GET", &format!("/m/{case_id}/{scan}"), "", None).await.status, StatusCode::NOT_FOUND);

    // Purged personal data: no material on the lookup, no media_url, the route says 404.
    let (dc, dc_csrf) = node.sign_in("dc").await;
    let fields = [("csrf", dc_csrf.as_str()), ("action", CommandKind::PurgePersonalData.code()), ("flag", "yes")];
    let answer = send(node.desk, "POST", &format!("/desk/case/{case_id}/act"), &dc, Some(urlencoded(&fields))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    assert!(!send(node.public, "GET", &lookup, "", None).await.text().contains("public-materials"));
    let json: serde_json::Value =
        serde_json::from_slice(&send(node.public, "GET", &open311, "", None).await.body).unwrap();
    assert_eq!(json[0]["media_url"], serde_json::Value::Null);
    assert_eq!(send(node.public, "GET", &public_file, "", None).await.status, StatusCode::NOT_FOUND);
    let page = send(node.desk, "GET", &format!("/desk/case/{case_id}"), &dc, None).await.text();
    assert!(page.contains("materials-purged"), "{page}");
}

/// 补充材料 from the lookup page (a 待补充 case asks the citizen for papers): behind the 登记编号 and 查询码, only while
/// 待补充, each file checked before anything is stored; the clerk sees it as the citizen's.
#[tokio::test]
async fn a_citizen_uploads_the_missing_papers_from_the_lookup_while_the_case_waits_for_them() {
    let node = served().await;
    let (case_id, reg_no, code) = node.report().await;
    let lookup = format!("/q?no={reg_no}&code={code}");
    let ctx = |n: u8| zhaowo_crdt::Ctx {
        now_ms: zhaowo_node::home::now_ms(),
        entropy: u128::from(n) << 64 | 7,
        secret: [n; 32],
        author: zhaowo_crdt::Author {
            node: "ab".repeat(32),
            staff: "王敏".into(),
            role: Role::Window,
            window: "BBC01".into(),
        },
    };
    let hall = Arc::new(zhaowo_crdt::Hall::jiangan_default());
    let (cookie, csrf) = node.citizen_csrf().await;
    let fields = |code: &str| vec![("csrf", csrf.clone()), ("no", reg_no.clone()), ("code", code.to_owned())];
    let post = |fields: Vec<(&'static str, String)>, files: Vec<(&'static str, &'static str, &'static [u8])>| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        multipart(&fields, &files)
    };
    // Not waiting for anything: no form, and an upload is refused by the case rules.
    assert!(!send(node.public, "GET", &lookup, "", None).await.text().contains("/q/materials"));
    let answer = send(
        node.public,
        "POST",
        "/q/materials",
        &cookie,
        Some(post(fields(&code), vec![("photos", "证明.png", PNG)])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(node.store.case_view(&case_id).await.unwrap().live_materials().count(), 0);

    node.store.apply(&case_id, ctx(1), hall.clone(), Command::SignIn { assignee: "王工".into() }).await.unwrap();
    node.store
        .apply(&case_id, ctx(2), hall.clone(), Command::Suspend { reason: "请补充原单位出具的住房证明".into() })
        .await
        .unwrap();
    let page = send(node.public, "GET", &lookup, "", None).await.text();
    assert!(page.contains("action=\"/q/materials\"") && page.contains("请补充原单位出具的住房证明"), "{page}");
    // A wrong 查询码, a file that is not a material, no file: refused, nothing stored.
    let answer = send(
        node.public,
        "POST",
        "/q/materials",
        &cookie,
        Some(post(fields("WRONG123"), vec![("photos", "证明.png", PNG)])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer =
        send(node.public, "POST", "/q/materials", &cookie, Some(post(fields(&code), vec![("photos", "a.jpg", b"MZ")])))
            .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("「a.jpg」无法接收"), "{}", answer.text());
    let answer = send(node.public, "POST", "/q/materials", &cookie, Some(post(fields(&code), vec![]))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(node.store.case_view(&case_id).await.unwrap().live_materials().count(), 0);
    // The papers: a photo and a PDF, stored as the citizen's.
    let answer = send(
        node.public,
        "POST",
        "/q/materials",
        &cookie,
        Some(post(fields(&code), vec![("photos", "住房证明.jpg", GPS_JPEG), ("photos", "证明.pdf", PDF)])),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.text().contains("已收到补充材料 2 个"), "{}", answer.text());
    let view = node.store.case_view(&case_id).await.unwrap();
    let live: Vec<_> = view.live_materials().collect();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|m| m.added_role == Role::Citizen && !m.public));
    assert!(!answer.text().contains("住房证明.jpg"), "the lookup shows no file name");
}

/// Signs in at a desk: (session cookie, the session's CSRF token).
async fn sign_in_at(desk: SocketAddr, username: &str) -> (String, String) {
    let form = send(desk, "GET", "/desk/login", "", None).await;
    let cookie = form.cookie("zw_csrf=");
    let fields = [("csrf", hidden(&form.text(), "csrf")), ("username", username.into()), ("password", PASSWORD.into())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = send(desk, "POST", "/desk/login", &cookie, Some(urlencoded(&fields))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let session = answer.cookie("zw_session=");
    let book = send(desk, "GET", "/desk", &session, None).await;
    (session.clone(), hidden(&book.text(), "csrf"))
}

/// A hall PC (admin, desk accounts 王敏 and the volunteer 小周) and a volunteer laptop enrolled by it, both running as
/// `zhaowo run` starts them, with a citizen's report registered on the hall PC and the clerk signed in there.
struct HallAndLaptop {
    _dirs: tempfile::TempDir,
    hall_dir: std::path::PathBuf,
    laptop_dir: std::path::PathBuf,
    laptop_id: String,
    hall: zhaowo_node::Node,
    laptop: zhaowo_node::Node,
    case_id: String,
    clerk: String,
    clerk_csrf: String,
}

async fn hall_and_laptop() -> HallAndLaptop {
    use zhaowo_node::home::now_ms;
    let dirs = tempfile::tempdir().unwrap();
    let (hall_dir, laptop_dir) = (dirs.path().join("hall"), dirs.path().join("laptop"));
    let mut hall = crate::hall_sync::init(&hall_dir, Some("测试大厅"), "BBC01", Role::Admin);
    hall.set_account("wangmin", "王敏", Role::Window, PASSWORD, now_ms()).unwrap();
    hall.set_account("xiaozhou", "小周", Role::Volunteer, PASSWORD, now_ms()).unwrap();
    let mut laptop = crate::hall_sync::init(&laptop_dir, None, "V01", Role::Volunteer);
    let laptop_id = laptop.identity.node_id();
    let file = hall.enroll(&laptop_id, "V01", Role::Volunteer, "志愿者笔记本", now_ms()).unwrap();
    laptop.join(&serde_json::to_vec(&file).unwrap()).unwrap();
    let hall = crate::hall_sync::start(hall, vec![]).await;
    let laptop = crate::hall_sync::start(laptop, vec![hall.sync_addr().unwrap()]).await;
    let form = send(hall.public_addr(), "GET", "/r/BBC01", "", None).await;
    let (cookie, csrf) = (form.cookie("zw_csrf="), hidden(&form.text(), "csrf"));
    let mut fields = vec![("csrf", csrf.as_str())];
    fields.extend_from_slice(REPORT);
    let receipt = send(hall.public_addr(), "POST", "/r/BBC01", &cookie, Some(urlencoded(&fields))).await;
    let reg_no = zhaowo_crdt::RegNo::parse(&by_id(&receipt.text(), "reg-no")).unwrap();
    let case_id = hall.store().case_id_by_reg_no(&reg_no).await.unwrap().unwrap();
    let (clerk, clerk_csrf) = sign_in_at(hall.desk_addr(), "wangmin").await;
    HallAndLaptop { _dirs: dirs, hall_dir, laptop_dir, laptop_id, hall, laptop, case_id, clerk, clerk_csrf }
}

/// The volunteer's laptop fetches on demand, through its desk (issue 16 §3 with §4): two nodes as `zhaowo run` starts
/// them; a clerk attaches a photo on the hall PC and assigns the home visit to the laptop; the laptop (no background
/// fetching) gets the case and its key by sync but not the file; the volunteer's 下载 on the laptop's desk asks the
/// peers for it, verifies it and answers the photo without its GPS, recorded as 查看材料.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_laptop_fetches_a_material_on_demand_when_its_desk_downloads_it() {
    let HallAndLaptop { _dirs, laptop_dir, laptop_id, hall, laptop, case_id, clerk, clerk_csrf, .. } =
        hall_and_laptop().await;
    // The clerk attaches a photo and assigns the visit to the laptop.
    let path = format!("/desk/case/{case_id}/materials");
    let upload = multipart(&[("csrf", &clerk_csrf)], &[("files", "现场.jpg", GPS_JPEG)]);
    assert_eq!(send(hall.desk_addr(), "POST", &path, &clerk, Some(upload)).await.status, StatusCode::SEE_OTHER);
    let fields = [("csrf", clerk_csrf.as_str()), ("action", CommandKind::AssignVisit.code()), ("laptop", &laptop_id)];
    let act = format!("/desk/case/{case_id}/act");
    let answer = send(hall.desk_addr(), "POST", &act, &clerk, Some(urlencoded(&fields))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let material = hall.store().case_view(&case_id).await.unwrap().live_materials().next().unwrap().clone();

    // The laptop gets the case and its key, not the file (it fetches only on demand).
    let started = std::time::Instant::now();
    loop {
        let keyed = matches!(laptop.store().case_key(&case_id).await, Ok(Some(_)));
        let assigned = laptop.store().case_view(&case_id).await.is_ok_and(|view| view.visit_assignment.is_some());
        if keyed && assigned {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the laptop never got the case and its key");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let laptop_blobs =
        zhaowo_node::blobs::BlobStore::open(&laptop_dir.join(zhaowo_node::blobs::MATERIALS_DIR)).unwrap();
    assert!(!laptop_blobs.has(&material.hash), "a laptop does not fetch in the background");

    // The volunteer downloads it on the laptop's desk: fetched from the hall PC, verified, opened, recorded.
    let (volunteer, volunteer_csrf) = sign_in_at(laptop.desk_addr(), "xiaozhou").await;
    let page = send(laptop.desk_addr(), "GET", &format!("/desk/case/{case_id}"), &volunteer, None).await.text();
    assert!(page.contains("现场.jpg"), "the laptop's desk lists the material: {page}");
    let download = format!("/desk/case/{case_id}/material/{}/download", material.id);
    let fetch_started = std::time::Instant::now();
    let answer =
        send(laptop.desk_addr(), "POST", &download, &volunteer, Some(urlencoded(&[("csrf", &volunteer_csrf)]))).await;
    let fetch_ms = fetch_started.elapsed().as_millis();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header(header::CONTENT_TYPE), "image/jpeg");
    assert!(
        answer.body.starts_with(&[0xFF, 0xD8]) && !contains(&answer.body, b"Exif") && !contains(&answer.body, b"GPS")
    );
    assert!(laptop_blobs.has(&material.hash), "the fetched file is kept, verified");
    let view = laptop.store().case_view(&case_id).await.unwrap();
    assert_eq!(view.material(material.id.as_str()).unwrap().views, 1, "the download is recorded on the laptop");
    println!(
        "laptop on demand through its desk: {} B sealed fetched and opened in {fetch_ms} ms (download request to answer)",
        material.bytes
    );
    laptop.shutdown().await;
    hall.shutdown().await;
}

/// Nothing acknowledged is lost when a laptop's key goes: the volunteer photographs papers on a visit while the hall
/// PC is down, logs the visit (the laptop destroys the case key at once), and the hall PC, back up, fetches the photo
/// from the laptop, which serves the sealed file it can no longer read itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_taken_on_a_visit_reaches_the_hall_after_the_laptop_lost_the_key() {
    use zhaowo_node::home::{Home, now_ms};
    let HallAndLaptop { _dirs, hall_dir, laptop_dir, laptop_id, hall, laptop, case_id, clerk, clerk_csrf } =
        hall_and_laptop().await;
    let fields = [("csrf", clerk_csrf.as_str()), ("action", CommandKind::AssignVisit.code()), ("laptop", &laptop_id)];
    let act = format!("/desk/case/{case_id}/act");
    assert_eq!(
        send(hall.desk_addr(), "POST", &act, &clerk, Some(urlencoded(&fields))).await.status,
        StatusCode::SEE_OTHER
    );
    let started = std::time::Instant::now();
    while !matches!(laptop.store().case_key(&case_id).await, Ok(Some(_))) {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the laptop never got the key");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The hall PC goes down; on the visit the volunteer attaches a photo, then logs the visit: the key goes.
    hall.shutdown().await;
    let (volunteer, volunteer_csrf) = sign_in_at(laptop.desk_addr(), "xiaozhou").await;
    let upload = multipart(&[("csrf", &volunteer_csrf)], &[("files", "住房证明.jpg", GPS_JPEG)]);
    let path = format!("/desk/case/{case_id}/materials");
    let answer = send(laptop.desk_addr(), "POST", &path, &volunteer, Some(upload)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let material = laptop.store().case_view(&case_id).await.unwrap().live_materials().next().unwrap().clone();
    let now = now_ms();
    let ctx = zhaowo_crdt::Ctx {
        now_ms: now,
        entropy: 0x5eed_u128 << 64 | 1,
        secret: [9; 32],
        author: zhaowo_crdt::Author {
            node: laptop_id.clone(),
            staff: "小周".into(),
            role: Role::Volunteer,
            window: "V01".into(),
        },
    };
    let visit = Command::LogVisit {
        volunteers: vec!["小周".into()],
        outcome: "已上门，拍下原单位住房证明".into(),
        visited_at_ms: now - 60_000,
        duration_minutes: 40,
    };
    laptop.store().apply(&case_id, ctx, Arc::new(zhaowo_crdt::Hall::jiangan_default()), visit).await.unwrap();
    assert!(matches!(laptop.store().case_key(&case_id).await, Ok(None)), "the laptop destroyed the key");
    let laptop_blobs =
        zhaowo_node::blobs::BlobStore::open(&laptop_dir.join(zhaowo_node::blobs::MATERIALS_DIR)).unwrap();
    assert!(laptop_blobs.has(&material.hash) && laptop_blobs.has(material.thumb.as_ref().unwrap()));

    // The hall PC is back (dialing the laptop): it takes the events and fetches both files from the laptop.
    let hall = crate::hall_sync::start(Home::open(&hall_dir).unwrap(), vec![laptop.sync_addr().unwrap()]).await;
    let hall_blobs = zhaowo_node::blobs::BlobStore::open(&hall_dir.join(zhaowo_node::blobs::MATERIALS_DIR)).unwrap();
    let started = std::time::Instant::now();
    while !(hall_blobs.has(&material.hash) && hall_blobs.has(material.thumb.as_ref().unwrap())) {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the hall PC never got the visit's photo");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let fetched_ms = started.elapsed().as_millis();
    let opened = zhaowo_node::blobs::open_file(
        hall.store(),
        &hall_blobs,
        &case_id,
        &material.hash,
        zhaowo_crdt::materials::BlobRole::Material,
    )
    .await
    .unwrap();
    assert!(opened.starts_with(&[0xFF, 0xD8]) && !contains(&opened, b"GPS"));
    assert!(laptop.store().case_view(&case_id).await.unwrap().visit_assignment.is_none());
    println!("a visit's photo reached the restarted hall PC from the keyless laptop in {fetched_ms} ms");
    laptop.shutdown().await;
    hall.shutdown().await;
}
