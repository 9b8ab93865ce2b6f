//! HTTP tests with a real node directory and SQLite store in a temp dir: the citizen report → receipt → lookup path and
//! its hardening (escaping, CSRF, limits, rate limits, nothing stored on error), every Open311 endpoint and error path,
//! the desk sign-in and case actions, and `/metrics`.
//!
//! Most tests call the router in process (tower `oneshot`); the desk-action tests of issue 6 (conflict resolution,
//! editing, extension, site visits, 并案, reveal) go over real sockets to a served node ([`served_node`]), as a browser
//! on the window PC does.
#![allow(clippy::print_stdout)] // tests print their figures (TESTING.md)

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;
use zhaowo_crdt::model::{CommandKind, Role, Status};
use zhaowo_node::home::{Home, InitOptions, now_ms};
use zhaowo_node::http::{CitizenRouting, HttpOptions};
use zhaowo_node::store::Store;

struct Node {
    _dir: tempfile::TempDir,
    router: Router,
    public: Router,
    store: Arc<Store>,
    /// The desk listener of a served node: requests go over TCP to it instead of to `router`.
    desk_addr: Option<SocketAddr>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

pub(crate) const PASSWORD: &str = "window-pass-2026";

/// A node directory with the test accounts: 王敏 (window clerk) and 督查员 (supervision), on the Jiang'an hall (its
/// categories and units: `init --hall` alone starts from a neutral template). `http_edges` uses it too.
pub(crate) fn home_in(dir: &std::path::Path) -> Home {
    let options = InitOptions {
        hall_name: Some("测试政务服务中心".to_owned()),
        window: "BBC01".to_owned(),
        role: Role::Window,
        display_name: "办不成事窗口".to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
    };
    let mut home = Home::init_with_hall(dir, options, zhaowo_crdt::Hall::jiangan_default(), now_ms()).unwrap();
    home.set_account("wangmin", "王敏", Role::Window, PASSWORD, now_ms()).unwrap();
    home.set_account("dc", "督查员", Role::Supervision, PASSWORD, now_ms()).unwrap();
    home
}

fn node_with(configure: impl FnOnce(&mut HttpOptions)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let home = home_in(dir.path());
    let store = Arc::new(home.open_store().unwrap());
    let mut http = HttpOptions::recommended("127.0.0.1:0".parse().unwrap(), "http://192.168.1.20:8080".to_owned());
    configure(&mut http);
    let (router, public) = zhaowo_node::http::routers(home, store.clone(), http);
    Node { _dir: dir, router, public, store, desk_addr: None }
}

fn node() -> Node {
    node_with(|_| {})
}

/// A node served as `zhaowo run` serves it (the desk on a loopback socket, the citizen pages on another), with a
/// volunteer account (志愿者小张) besides the clerk and the supervisor. Every request of the test goes over TCP.
async fn served_node(configure: impl FnOnce(&mut HttpOptions)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut home = home_in(dir.path());
    home.set_account("zy", "志愿者小张", Role::Volunteer, PASSWORD, now_ms()).unwrap();
    let home = Arc::new(home);
    let store = Arc::new(home.open_store().unwrap());
    let desk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (desk_addr, public_addr) = (desk.local_addr().unwrap(), public.local_addr().unwrap());
    let mut http = HttpOptions::recommended(desk_addr, format!("http://{public_addr}"));
    configure(&mut http);
    // The in-process routers are not used by a served node's requests; the struct keeps them for `send`.
    let (router, public_router) = zhaowo_node::http::routers(home.clone(), store.clone(), http.clone());
    tokio::spawn(zhaowo_node::http::serve_on(home, store.clone(), desk, public, http));
    Node { _dir: dir, router, public: public_router, store, desk_addr: Some(desk_addr) }
}

/// One HTTP/1.1 request over a fresh TCP connection (`Connection: close`), read to the end.
async fn over_tcp(addr: SocketAddr, method: &str, path: &str, cookie: &str, form: Option<String>) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = form.unwrap_or_default();
    if method == "POST" {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    let (status, headers, body) = parse_answer(&raw);
    Answer { status, headers, body: String::from_utf8(body).unwrap() }
}

/// An HTTP/1.1 answer read to the end of its connection: status, headers and the body (chunked or not), as bytes.
pub(crate) fn parse_answer(raw: &[u8]) -> (StatusCode, HeaderMap, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse::<u16>().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            header::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let mut rest = &raw[split + 4..];
    let body = if headers.get(header::TRANSFER_ENCODING).is_some_and(|v| v == "chunked") {
        let mut body = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break body;
            }
            body.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
    } else {
        rest.to_vec()
    };
    (StatusCode::from_u16(status).unwrap(), headers, body)
}

fn client(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 168, 1, n], 40000))
}

impl Node {
    async fn send(&self, router: &Router, request: Request<Body>) -> Answer {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Answer { status, headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    async fn get(&self, path: &str, cookie: &str) -> Answer {
        self.get_from(path, cookie, client(10)).await
    }

    async fn get_from(&self, path: &str, cookie: &str, from: SocketAddr) -> Answer {
        if let Some(addr) = self.desk_addr {
            return over_tcp(addr, "GET", path, cookie, None).await;
        }
        let mut request = Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(from));
        self.send(&self.router, request).await
    }

    async fn post(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Answer {
        self.post_from(path, cookie, fields, client(10)).await
    }

    async fn post_from(&self, path: &str, cookie: &str, fields: &[(&str, &str)], from: SocketAddr) -> Answer {
        self.post_raw(path, cookie, encode(fields), from).await
    }

    async fn post_raw(&self, path: &str, cookie: &str, body: String, from: SocketAddr) -> Answer {
        if let Some(addr) = self.desk_addr {
            return over_tcp(addr, "POST", path, cookie, Some(body)).await;
        }
        let mut request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookie)
            .body(Body::from(body))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(from));
        self.send(&self.router, request).await
    }

    async fn case_count(&self) -> usize {
        self.store.counts().await.unwrap().docs as usize
    }

    /// How many events the case holds (a refused action adds none).
    async fn events(&self, case_id: &str) -> usize {
        self.store.case_view(case_id).await.unwrap().event_ids.len()
    }

    /// The case id behind a 登记编号, read from the register book's link.
    async fn case_id_of(&self, session: &str, reg_no: &str) -> String {
        let book = self.get("/desk", session).await.body;
        let end = book.find(&format!("\">{reg_no}</a>")).unwrap_or_else(|| panic!("{reg_no} not in the book"));
        let start = book[..end].rfind("/desk/case/").unwrap() + "/desk/case/".len();
        book[start..end].to_owned()
    }

    async fn case_page(&self, session: &str, case_id: &str) -> String {
        let page = self.get(&format!("/desk/case/{case_id}"), session).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.body
    }

    /// Posts a case-page form: `action` and `fields`, with the CSRF token when one is given.
    async fn act(&self, session: &str, csrf: Option<&str>, case_id: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = Vec::new();
        if let Some(csrf) = csrf {
            all.push(("csrf", csrf));
        }
        all.extend_from_slice(fields);
        self.post(&format!("/desk/case/{case_id}/act"), session, &all).await
    }

    /// Opens the report form and returns the CSRF cookie and token.
    async fn citizen_csrf(&self) -> (String, String) {
        let form = self.get("/r/BBC01", "").await;
        assert_eq!(form.status, StatusCode::OK);
        let cookie = form.set_cookies().into_iter().find(|c| c.starts_with("zw_csrf=")).expect("csrf cookie");
        let cookie = cookie.split(';').next().unwrap().to_owned();
        (cookie, hidden(&form.body, "csrf"))
    }

    async fn report(&self, fields: &[(&str, &str)]) -> Answer {
        self.report_from(fields, client(10)).await
    }

    async fn report_from(&self, fields: &[(&str, &str)], from: SocketAddr) -> Answer {
        let (cookie, csrf) = self.citizen_csrf().await;
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_from("/r/BBC01", &cookie, &all, from).await
    }

    async fn sign_in(&self, username: &str) -> (String, String) {
        let form = self.get("/desk/login", "").await;
        let cookie = form.set_cookies().into_iter().find(|c| c.starts_with("zw_csrf=")).unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let csrf = hidden(&form.body, "csrf");
        let answer =
            self.post("/desk/login", &cookie, &[("csrf", &csrf), ("username", username), ("password", PASSWORD)]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let session = answer.set_cookies().into_iter().find(|c| c.starts_with("zw_session=")).unwrap();
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
        let session = session.split(';').next().unwrap().to_owned();
        let book = self.get("/desk", &session).await;
        assert_eq!(book.status, StatusCode::OK);
        (session, hidden(&book.body, "csrf"))
    }
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", percent(k), percent(v))).collect::<Vec<_>>().join("&")
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first hidden input `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The text of the element with `id` (up to its first `<`).
fn by_id(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id}")) + marker.len();
    let start = start + html[start..].find('>').unwrap() + 1;
    html[start..start + html[start..].find('<').unwrap()].to_owned()
}

const REPORT: &[(&str, &str)] = &[
    ("nature", "QZ"),
    ("category", "BDC"),
    ("summary", "老房子登记成一套，实际是两套"),
    ("detail", "房改房当年登记为一套，\r\n实际上是两套独立住房，材料缺失。"),
    ("name", "李建国"),
    ("phone", "13812345678"),
    ("consent", "yes"),
    ("publish", "yes"),
];

#[tokio::test]
async fn a_citizen_reports_gets_a_receipt_and_looks_up_public_fields_only() {
    let node = node();
    let receipt = node.report(REPORT).await;
    assert_eq!(receipt.status, StatusCode::OK, "{}", receipt.body);
    assert!(receipt.body.contains("提交成功") && receipt.body.contains("<svg"), "receipt with a QR code");
    let reg_no = by_id(&receipt.body, "reg-no");
    let code = by_id(&receipt.body, "query-code");
    assert!(reg_no.starts_with("BBC01-") && code.len() == 8, "{reg_no} {code}");
    assert_eq!(node.case_count().await, 1);

    let lookup = node.get(&format!("/q?no={reg_no}&code={}", code.to_lowercase()), "").await;
    assert_eq!(lookup.status, StatusCode::OK, "{}", lookup.body);
    // The recommended routing dispatches by the routing table (BDC → 不动产登记中心).
    assert!(lookup.body.contains("已派单") && lookup.body.contains("不动产登记中心"), "{}", lookup.body);
    assert!(lookup.body.contains("老房子登记成一套"));
    for private in ["李建国", "13812345678", "1381", "材料缺失", "系统（路由表）"] {
        assert!(!lookup.body.contains(private), "lookup shows `{private}`");
    }
    assert!(lookup.body.contains("预计办结"));

    // A wrong code and an unknown number get the same page, and a lookup changes nothing.
    let wrong = node.get(&format!("/q?no={reg_no}&code=ABCDEFGH"), "").await;
    let unknown = node.get("/q?no=BBC01-2026-9999&code=ABCDEFGH", "").await;
    let garbage = node.get("/q?no=%3Cscript%3E&code=x", "").await;
    for answer in [&wrong, &unknown, &garbage] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert!(answer.body.contains("登记编号或查询码不正确"));
        assert!(!answer.body.contains("<script>"));
    }
    assert_eq!(node.case_count().await, 1);
    println!("citizen path: receipt {reg_no}, lookup ok, 3 wrong lookups refused, cases=1");
}

#[tokio::test]
async fn script_injection_in_every_citizen_field_renders_inert() {
    let node = node();
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x onerror=alert(2)>";
    let answer = node
        .report(&[
            ("nature", "QZ"),
            ("category", "ZONGHE"),
            ("summary", &format!("摘要{script}")),
            ("detail", &format!("内容{img}{script}")),
            ("name", &format!("名{script}")),
            ("phone", ""),
        ])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let reg_no = by_id(&answer.body, "reg-no");
    let code = by_id(&answer.body, "query-code");
    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await;
    assert!(lookup.body.contains("摘要&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", lookup.body);
    let (session, _) = node.sign_in("wangmin").await;
    let book = node.get("/desk", &session).await;
    let case_id = book.body.split("/desk/case/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let page = node.get(&format!("/desk/case/{case_id}"), &session).await;
    // A refused form echoes the typed values back: escaped too.
    let refused = node
        .report(&[
            ("nature", "QZ"),
            ("category", "ZONGHE"),
            ("summary", ""),
            ("detail", img),
            ("name", script),
            ("phone", script),
        ])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let mut checked = 0;
    for (what, html) in
        [("lookup", &lookup.body), ("book", &book.body), ("case", &page.body), ("refused", &refused.body)]
    {
        assert!(!html.contains("<script>alert"), "{what}: raw script");
        assert!(!html.contains("<img src=x"), "{what}: raw img");
        checked += 1;
    }
    assert!(page.body.contains("&lt;img src=x onerror=alert(2)&gt;"), "detail escaped on the case page");
    assert!(page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("default-src 'none'"));
    println!("injection: {checked} pages checked, no raw markup, CSP forbids scripts");
}

#[tokio::test]
async fn bad_citizen_input_gets_a_clear_page_and_stores_nothing() {
    let node = node_with(|o| o.body_bytes_max = 16 * 1024);
    let (cookie, csrf) = node.citizen_csrf().await;
    let huge = "很".repeat(20_000);
    let oversized = node
        .post(
            "/r/BBC01",
            &cookie,
            &[("csrf", &csrf), ("nature", "QZ"), ("category", "BDC"), ("summary", "x"), ("detail", &huge)],
        )
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(oversized.body.contains("提交内容过长") && oversized.body.contains("未保存"), "{}", oversized.body);

    let long_summary = "长".repeat(101);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("no csrf", vec![("nature", "QZ"), ("category", "BDC"), ("summary", "s"), ("detail", "d")], "页面已过期"),
        (
            "empty summary",
            vec![("csrf", &csrf), ("nature", "QZ"), ("category", "BDC"), ("summary", " "), ("detail", "d")],
            "请填写诉求摘要",
        ),
        (
            "long summary",
            vec![("csrf", &csrf), ("nature", "QZ"), ("category", "BDC"), ("summary", &long_summary), ("detail", "d")],
            "最多 100 个字",
        ),
        (
            "phone in summary",
            vec![
                ("csrf", &csrf),
                ("nature", "QZ"),
                ("category", "BDC"),
                ("summary", "电话13812345678"),
                ("detail", "d"),
            ],
            "请不要填写电话号码",
        ),
        (
            "bad phone",
            vec![
                ("csrf", &csrf),
                ("nature", "QZ"),
                ("category", "BDC"),
                ("summary", "s"),
                ("detail", "d"),
                ("phone", "12"),
            ],
            "联系电话格式不正确",
        ),
        (
            "consent without phone",
            vec![
                ("csrf", &csrf),
                ("nature", "QZ"),
                ("category", "BDC"),
                ("summary", "s"),
                ("detail", "d"),
                ("consent", "yes"),
            ],
            "同意回访时请填写联系电话",
        ),
        (
            "unknown category",
            vec![("csrf", &csrf), ("nature", "QZ"), ("category", "NOPE"), ("summary", "s"), ("detail", "d")],
            "请选择诉求类别",
        ),
        (
            "unknown nature",
            vec![("csrf", &csrf), ("nature", "XX"), ("category", "BDC"), ("summary", "s"), ("detail", "d")],
            "请选择诉求性质",
        ),
        (
            "control character",
            vec![("csrf", &csrf), ("nature", "QZ"), ("category", "BDC"), ("summary", "s\u{7}"), ("detail", "d")],
            "控制字符",
        ),
    ];
    let n = cases.len();
    for (what, fields, message) in cases {
        let answer = node.post("/r/BBC01", &cookie, &fields).await;
        assert!(answer.status.is_client_error(), "{what}: {}", answer.status);
        assert!(answer.body.contains(message), "{what}: expected `{message}` in {}", answer.body);
    }
    let malformed = node.post_raw("/r/BBC01", &cookie, "%zz=%%%".to_owned(), client(10)).await;
    assert!(malformed.status.is_client_error());
    let wrong_method = node.post("/q", "", &[]).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.body.contains("请求方式不正确"));
    let unknown_page = node.get("/nothing-here", "").await;
    assert_eq!(unknown_page.status, StatusCode::NOT_FOUND);
    assert!(unknown_page.body.contains("页面不存在"));
    let unknown_window = node.get("/r/NOWHERE", "").await;
    assert_eq!(unknown_window.status, StatusCode::NOT_FOUND);
    assert!(unknown_window.body.contains("窗口不存在"));
    assert_eq!(node.case_count().await, 0, "nothing stored");
    println!("bad input: oversized + {n} refused forms + malformed + unknown window, cases=0");
}

#[tokio::test]
async fn rate_limits_trigger_per_client() {
    let node = node_with(|o| {
        o.citizen_reports_per_period = 2;
        o.citizen_lookups_per_period = 3;
    });
    let fields = &REPORT[..5];
    for _ in 0..2 {
        assert_eq!(node.report_from(fields, client(1)).await.status, StatusCode::OK);
    }
    let limited = node.report_from(fields, client(1)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.body.contains("操作过于频繁") && limited.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(node.report_from(fields, client(2)).await.status, StatusCode::OK, "another phone is not limited");
    assert_eq!(node.case_count().await, 3);
    for _ in 0..3 {
        assert_eq!(
            node.get_from("/q?no=BBC01-2026-0001&code=AAAAAAAA", "", client(1)).await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        node.get_from("/q?no=BBC01-2026-0001&code=AAAAAAAA", "", client(1)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let metrics = node.get("/metrics", "").await.body;
    assert!(metrics.contains("zhaowo_http_rate_limited_total 2"), "{metrics}");
    println!("rate limits: report 3rd refused, lookup 4th refused, other client allowed");
}

#[tokio::test]
async fn open311_endpoints_and_error_paths() {
    let node = node();
    let mut checks = 0;
    let mut check = |ok: bool, what: &str| {
        assert!(ok, "{what}");
        checks += 1;
    };
    let services = node.get("/open311/v2/services.json", "").await;
    check(services.status == StatusCode::OK, "services 200");
    let list = services.json();
    check(list.as_array().is_some_and(|l| l.len() == 12), "12 services");
    let bdc = list.as_array().unwrap().iter().find(|s| s["service_code"] == "BDC").unwrap();
    check(
        bdc["service_name"] == "不动产登记" && bdc["metadata"] == false && bdc["type"] == "realtime",
        "service fields",
    );
    let definition = node.get("/open311/v2/services/BDC.json", "").await;
    check(definition.status == StatusCode::OK && definition.json()["attributes"].is_array(), "definition");

    let error_of = |answer: &Answer, status: StatusCode| {
        let body = answer.json();
        answer.status == status
            && body
                .as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["code"] == status.as_u16() && a[0]["description"].is_string())
    };
    check(error_of(&node.get("/open311/v2/services/NOPE.json", "").await, StatusCode::NOT_FOUND), "unknown service");
    check(error_of(&node.get("/open311/v2/services/BDC.xml", "").await, StatusCode::BAD_REQUEST), "xml refused");
    check(error_of(&node.get("/open311/v2/nothing.json", "").await, StatusCode::NOT_FOUND), "unknown endpoint");

    let post = node
        .post(
            "/open311/v2/requests.json",
            "",
            &[
                ("service_code", "BDC"),
                ("description", "房产证分割<script>x</script>"),
                ("first_name", "建国"),
                ("last_name", "李"),
                ("phone", "13812345678"),
                ("address_string", "江岸区某路1号"),
                ("attribute[publish]", "true"),
            ],
        )
        .await;
    check(post.status == StatusCode::OK, &post.body);
    let created = post.json();
    let id = created[0]["service_request_id"].as_str().unwrap().to_owned();
    let token = created[0]["token"].as_str().unwrap().to_owned();
    check(id.starts_with("BBC01-") && created[0]["service_notice"].as_str().unwrap().contains("查询码"), "post answer");

    for (fields, status, what) in [
        (vec![("description", "x")], StatusCode::BAD_REQUEST, "no service_code"),
        (vec![("service_code", "NOPE"), ("description", "x")], StatusCode::BAD_REQUEST, "unknown service_code"),
        (vec![("service_code", "BDC"), ("description", " ")], StatusCode::BAD_REQUEST, "empty description"),
        (vec![("service_code", "BDC"), ("description", "x"), ("phone", "abc")], StatusCode::BAD_REQUEST, "bad phone"),
        (
            vec![("service_code", "BDC"), ("description", "x"), ("attribute[nature]", "XX")],
            StatusCode::BAD_REQUEST,
            "bad nature",
        ),
    ] {
        check(error_of(&node.post("/open311/v2/requests.json", "", &fields).await, status), what);
    }
    let huge = format!("service_code=BDC&description={}", "x".repeat(70 * 1024));
    check(
        error_of(
            &node.post_raw("/open311/v2/requests.json", "", huge, client(10)).await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        "oversized",
    );
    check(node.case_count().await == 1, "refused posts stored nothing");

    let all = node.get("/open311/v2/requests.json", "").await;
    check(all.status == StatusCode::OK, "requests 200");
    let all = all.json();
    let request = &all[0];
    check(all.as_array().unwrap().len() == 1 && request["service_request_id"] == id.as_str(), "listed");
    check(
        request["status"] == "open"
            && request["service_code"] == "BDC"
            && request["agency_responsible"] == "不动产登记中心",
        "fields",
    );
    check(request["requested_datetime"].as_str().unwrap().ends_with("+08:00"), "+08:00 datetimes");
    check(request["expected_datetime"].as_str().unwrap().ends_with("+08:00"), "expected datetime");
    let text = all.to_string();
    for private in ["13812345678", "李", "建国", "江岸区某路", "<script>"] {
        check(!text.contains(private), &format!("no `{private}` in requests.json"));
    }
    check(
        node.get("/open311/v2/requests.json?status=closed", "").await.json().as_array().unwrap().is_empty(),
        "closed filter",
    );
    check(
        node.get("/open311/v2/requests.json?status=open&service_code=BDC", "").await.json().as_array().unwrap().len()
            == 1,
        "open filter",
    );
    check(
        node.get(&format!("/open311/v2/requests.json?service_request_id={id},NOPE-2026-0001"), "")
            .await
            .json()
            .as_array()
            .unwrap()
            .len()
            == 1,
        "by ids",
    );
    check(
        node.get(
            "/open311/v2/requests.json?start_date=2020-01-01T00:00:00%2B08:00&end_date=2020-12-31T00:00:00%2B08:00",
            "",
        )
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty(),
        "date window",
    );
    check(
        error_of(&node.get("/open311/v2/requests.json?status=bogus", "").await, StatusCode::BAD_REQUEST),
        "bad status",
    );
    check(
        error_of(&node.get("/open311/v2/requests.json?start_date=yesterday", "").await, StatusCode::BAD_REQUEST),
        "bad date",
    );
    check(
        error_of(&node.get("/open311/v2/requests.json?service_code=NOPE", "").await, StatusCode::BAD_REQUEST),
        "bad service filter",
    );

    let one = node.get(&format!("/open311/v2/requests/{id}.json"), "").await;
    check(one.status == StatusCode::OK && one.json()[0]["service_request_id"] == id.as_str(), "one request");
    check(
        error_of(&node.get("/open311/v2/requests/BBC01-2026-9999.json", "").await, StatusCode::NOT_FOUND),
        "unknown request",
    );
    check(error_of(&node.get("/open311/v2/requests/garbage.json", "").await, StatusCode::NOT_FOUND), "garbage id");
    let by_token = node.get(&format!("/open311/v2/tokens/{token}.json"), "").await;
    check(by_token.status == StatusCode::OK && by_token.json()[0]["service_request_id"] == id.as_str(), "token");
    check(
        error_of(&node.get("/open311/v2/tokens/01KAAAAAAAAAAAAAAAAAAAAAAA.json", "").await, StatusCode::NOT_FOUND),
        "unknown token",
    );
    check(error_of(&node.get("/open311/v2/tokens/nope.json", "").await, StatusCode::NOT_FOUND), "bad token");

    // Issue 13 §5: a request without consent to publication, a 举报 and a 倾诉 (both with consent) are stored but
    // never public: absent from the list, 404 by number (as if they did not exist).
    let mut hidden = Vec::new();
    for (nature, publish) in [("TS", "true"), ("QZ", ""), ("JB", "true"), ("QS", "true")] {
        let post = node
            .post(
                "/open311/v2/requests.json",
                "",
                &[
                    ("service_code", "BDC"),
                    ("description", "不公开的诉求"),
                    ("phone", "13812345678"),
                    ("attribute[nature]", nature),
                    ("attribute[publish]", publish),
                ],
            )
            .await;
        check(post.status == StatusCode::OK, &post.body);
        hidden.push(post.json()[0]["service_request_id"].as_str().unwrap().to_owned());
    }
    let listed = node.get("/open311/v2/requests.json", "").await.json().to_string();
    for number in &hidden {
        check(!listed.contains(number.as_str()), &format!("{number} not listed"));
        check(
            error_of(&node.get(&format!("/open311/v2/requests/{number}.json"), "").await, StatusCode::NOT_FOUND),
            &format!("{number} is 404 by id"),
        );
    }
    let by_ids = node.get(&format!("/open311/v2/requests.json?service_request_id={}", hidden.join(",")), "").await;
    check(by_ids.json().as_array().unwrap().is_empty(), "not public by ids either");
    check(node.case_count().await == 1 + hidden.len(), "the hidden requests are stored");
    println!("open311: {checks} checks passed; not public: 投诉, no consent, 举报, 倾诉 ({} cases)", hidden.len());
}

#[tokio::test]
async fn a_clerk_signs_in_dispatches_and_replies_and_the_citizen_sees_the_reply() {
    let node = node_with(|o| o.citizen_routing = CitizenRouting::Accept);
    let receipt = node.report(REPORT).await;
    let (reg_no, code) = (by_id(&receipt.body, "reg-no"), by_id(&receipt.body, "query-code"));

    // Not signed in: the desk sends to the sign-in page; a wrong password is refused.
    let anonymous = node.get("/desk", "").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    let login = node.get("/desk/login", "").await;
    let cookie = login.set_cookies()[0].split(';').next().unwrap().to_owned();
    let wrong = node
        .post(
            "/desk/login",
            &cookie,
            &[("csrf", &hidden(&login.body, "csrf")), ("username", "wangmin"), ("password", "wrong-password")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("账号或密码不正确"));

    let (session, csrf) = node.sign_in("wangmin").await;
    let found = node.get(&format!("/desk?q={}", percent("两套")), &session).await;
    assert!(found.body.contains(&reg_no), "full-text search finds the case");
    let case_id = found.body.split("/desk/case/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let page = node.get(&format!("/desk/case/{case_id}"), &session).await;
    assert!(
        page.body.contains("路由表建议") && page.body.contains("138****5678") && !page.body.contains("13812345678")
    );

    let act = format!("/desk/case/{case_id}/act");
    let forged = node.post(&act, &session, &[("csrf", "forged"), ("action", "reply"), ("text", "x")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let dispatched = node
        .post(&act, &session, &[("csrf", &csrf), ("action", "dispatch"), ("lead_unit", "BDC"), ("co_units", "FG,SW")])
        .await;
    assert_eq!(dispatched.status, StatusCode::SEE_OTHER, "{}", dispatched.body);
    let refused = node.post(&act, &session, &[("csrf", &csrf), ("action", "dispatch"), ("lead_unit", "BDC")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("不能执行此操作"), "{}", refused.body);
    let reply = "已联系不动产登记中心，测绘队将于本周上门。";
    let replied = node.post(&act, &session, &[("csrf", &csrf), ("action", "reply"), ("text", reply)]).await;
    assert_eq!(replied.status, StatusCode::SEE_OTHER);
    let noted = node
        .post(&act, &session, &[("csrf", &csrf), ("action", "note"), ("text", "内部：原房改单位联系人张科长")])
        .await;
    assert_eq!(noted.status, StatusCode::SEE_OTHER);

    let consulted = node
        .post(
            &act,
            &session,
            &[
                ("csrf", &csrf),
                ("action", "consult"),
                ("co_units", "BDC,FG,GA"),
                ("text", "三方会诊：测绘队上门"),
                ("flag", "yes"),
            ],
        )
        .await;
    assert_eq!(consulted.status, StatusCode::SEE_OTHER, "{}", consulted.body);
    let empty_reply = node.post(&act, &session, &[("csrf", &csrf), ("action", "reply"), ("text", " ")]).await;
    assert_eq!(empty_reply.status, StatusCode::BAD_REQUEST);
    assert!(empty_reply.body.contains("请填写答复内容"));

    let view = node.store.case_view(&case_id).await.unwrap();
    assert_eq!(view.status.code(), "DISPATCHED");
    assert_eq!(view.consultations, 1);
    assert_eq!(view.public_replies.len(), 1, "the refused empty reply stored nothing");
    assert!(
        view.timeline.iter().any(|e| e.staff == "王敏(wangmin)" && e.label.contains("派单")),
        "the action records the staff member"
    );

    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await;
    assert!(lookup.body.contains(reply) && lookup.body.contains("已派单"));
    assert!(!lookup.body.contains("张科长"), "internal notes never reach the citizen");

    let revealed = node.post(&act, &session, &[("csrf", &csrf), ("action", "reveal"), ("text", "电话回访")]).await;
    assert_eq!(revealed.status, StatusCode::OK);
    assert!(revealed.body.contains("13812345678"));
    assert_eq!(node.store.case_view(&case_id).await.unwrap().pi_reveals, 1, "the reveal is recorded");

    for path in ["/desk/overdue", "/desk/stats", "/desk/conflicts", "/desk/peers", "/desk/qr", "/desk/new"] {
        let answer = node.get(path, &session).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    let stats = node.get("/desk/stats", &session).await.body;
    assert!(stats.contains("<svg") && stats.contains("受理量"));
    // Issue 15 §6: every figure with its formula, a grouping, the monthly report as a page and a workbook.
    assert!(stats.contains("回应率") && stats.contains("差评整改率") && stats.contains("÷"), "formulas on the page");
    let by_unit = node.get("/desk/stats?by=unit", &session).await;
    assert!(by_unit.status == StatusCode::OK && by_unit.body.contains("按承办单位"), "{}", by_unit.body);
    for bad in ["/desk/stats?by=weekday", "/desk/stats?from=2026-13-01", "/desk/report?month=2026-13"] {
        let answer = node.get(bad, &session).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let report = node.get("/desk/report", &session).await;
    assert!(report.status == StatusCode::OK && report.body.contains("督查统计") && report.body.contains("按窗口"));
    let mut request =
        Request::get("/desk/report.xlsx").header(header::COOKIE, session.as_str()).body(Body::empty()).unwrap();
    request.extensions_mut().insert(ConnectInfo(client(10)));
    let response = node.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
    let workbook: calamine::Xlsx<_> =
        calamine::Reader::new(std::io::Cursor::new(bytes)).expect("the monthly report is a workbook");
    assert!(calamine::Reader::sheet_names(&workbook).contains(&"按服务方式".to_owned()));
    let qr = node.get("/desk/qr", &session).await.body;
    assert!(qr.matches("<svg").count() >= 6, "a QR code per window");
    let peers = node.get("/desk/peers", &session).await.body;
    assert!(peers.contains("大厅配置") && peers.contains("个工作人员账户"), "the hall document's state is shown");

    // The LAN listener serves no desk and no metrics.
    let request = Request::get("/desk/login").body(Body::empty()).unwrap();
    assert_eq!(node.send(&node.public, request).await.status, StatusCode::NOT_FOUND);
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    assert_eq!(node.send(&node.public, request).await.status, StatusCode::NOT_FOUND);
    println!("desk: sign-in, search, dispatch, reply, note, reveal, 6 pages; public listener has no desk");
}

#[tokio::test]
async fn the_desk_registers_a_case_and_metrics_count_it() {
    let node = node();
    let (session, csrf) = node.sign_in("dc").await;
    let created = node
        .post(
            "/desk/new",
            &session,
            &[
                ("csrf", &csrf),
                ("channel", "WINDOW"),
                ("nature", "ZX"),
                ("category", "MINZHENG"),
                ("priority", "NORMAL"),
                ("summary", "老年优待证咨询"),
                ("detail", "户籍外地，随子女居住"),
                ("name", "胡"),
                ("phone", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(created.body.contains("登记成功"));
    // The printable 回执 (issue 15 §3): number, code, the lookup QR code, the 告知; the code opens the lookup.
    let (reg_no, code) = (by_id(&created.body, "reg-no"), by_id(&created.body, "query-code"));
    assert!(created.body.contains("诉求登记回执") && created.body.contains("<svg"), "{}", created.body);
    for notice in ["个人信息告知", "用途：", "保存期限：办结后 365 天", "接收方："] {
        assert!(created.body.contains(notice), "the receipt lacks `{notice}`");
    }
    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await;
    assert_eq!(lookup.status, StatusCode::OK, "{}", lookup.body);
    let metrics = node.get("/metrics", "").await;
    assert!(metrics.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(metrics.body.contains("zhaowo_cases{status=\"REGISTERED\"} 1"), "{}", metrics.body);
    assert!(metrics.body.contains("zhaowo_cases_overdue 0"));
    println!("desk new case + metrics ok");
}

#[tokio::test]
async fn an_account_an_admin_adds_while_the_node_runs_signs_in() {
    let node = node();
    let mut home = Home::open(node._dir.path()).unwrap();
    home.set_account("newclerk", "新来的", Role::Window, PASSWORD, now_ms()).unwrap();
    let (session, _) = node.sign_in("newclerk").await;
    assert!(node.get("/desk", &session).await.body.contains("新来的"));
    let refused = home.set_account("bad name", "x", Role::Window, PASSWORD, now_ms());
    assert!(refused.is_err(), "usernames are ASCII handles");
    assert!(home.set_account("short", "x", Role::Window, "1234", now_ms()).is_err(), "passwords have a minimum length");
    let hall = home.hall().unwrap();
    assert!(hall.accounts["newclerk"].password_hash.starts_with("$argon2id$"), "stored as an argon2id PHC string");
    println!("accounts: added while running, signed in; bad username and short password refused");
}

/// One GET over a real socket: the status code.
async fn status_over_tcp(addr: SocketAddr, path: &str) -> u16 {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).split(' ').nth(1).unwrap().parse().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn serve_puts_the_desk_on_loopback_and_the_citizen_pages_on_the_lan_listener() {
    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        hall_name: Some("测试".to_owned()),
        window: "BBC01".to_owned(),
        role: Role::Window,
        display_name: "窗口".to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
    };
    let home = Home::init_with_hall(dir.path(), options, zhaowo_crdt::Hall::jiangan_default(), now_ms()).unwrap();
    let store = Arc::new(home.open_store().unwrap());
    let desk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (desk_addr, public_addr) = (desk.local_addr().unwrap(), public.local_addr().unwrap());
    let http = HttpOptions::recommended(desk_addr, format!("http://{public_addr}"));
    tokio::spawn(zhaowo_node::http::serve_on(home, store, desk, public, http));
    let mut rows = Vec::new();
    for (addr, path, expected) in [
        (desk_addr, "/desk/login", 200),
        (desk_addr, "/metrics", 200),
        (desk_addr, "/r/BBC01", 200),
        (public_addr, "/r/BBC01", 200),
        (public_addr, "/open311/v2/services.json", 200),
        (public_addr, "/desk/login", 404),
        (public_addr, "/metrics", 404),
    ] {
        assert_eq!(status_over_tcp(addr, path).await, expected, "{addr}{path}");
        rows.push(format!("{path}={expected}"));
    }
    println!("serve: {} routes checked over TCP ({})", rows.len(), rows.join(", "));
}

#[tokio::test]
async fn secure_cookies_use_the_host_prefix_and_logout_ends_the_session() {
    let node = node_with(|o| o.secure_cookies = true);
    let form = node.get("/r/BBC01", "").await;
    let cookie = form.set_cookies().into_iter().next().unwrap();
    assert!(
        cookie.starts_with("__Host-zw_csrf=") && cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let plain = node_with(|_| {});
    let (session, csrf) = plain.sign_in("wangmin").await;
    let out = plain.post("/desk/logout", &session, &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        plain.get("/desk", &session).await.status,
        StatusCode::SEE_OTHER,
        "the old session no longer opens the desk"
    );
    println!("cookies: __Host- + Secure when configured; logout ends the session");
}

#[tokio::test]
async fn the_supervision_desk_lists_an_offline_conflict_and_settles_it() {
    use zhaowo_crdt::model::{Channel, Nature, Priority};
    use zhaowo_crdt::{Author, CaseDoc, Command, Ctx, Hall, QueryCode, RegNo, Registration};
    let node = node();
    let hall = Hall::jiangan_default();
    let ctx = |n: i64, staff: &str| Ctx {
        now_ms: now_ms() + n,
        entropy: 0x5eed_0000_0000_0000_0000_0000_0000_u128 + n as u128,
        secret: [n as u8; 32],
        author: Author {
            node: format!("node{n}"),
            staff: staff.to_owned(),
            role: Role::Window,
            window: "BBC01".to_owned(),
        },
    };
    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Help,
        category: "GJJ".to_owned(),
        modes: Default::default(),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: "公积金提取".to_owned(),
        detail: "两台离线电脑同时处理".to_owned(),
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags: Default::default(),
        personal: Default::default(),
    };
    let reg_no = RegNo::parse("BBC01-2026-0500").unwrap();
    let (mut first, _) = CaseDoc::register(
        &ctx(1, "甲"),
        &hall,
        automerge::ActorId::from(vec![1; 16]),
        reg_no,
        &QueryCode::from_entropy(7),
        registration,
    )
    .unwrap();
    let mut second = CaseDoc::load(&first.save(), automerge::ActorId::from(vec![2; 16])).unwrap();
    first.apply(&ctx(2, "甲"), &hall, Command::Dispatch { lead_unit: None, co_units: None, due_ms: None }).unwrap();
    second.apply(&ctx(3, "乙"), &hall, Command::Withdraw { reason: "群众电话撤回".to_owned() }).unwrap();
    first.merge(&mut second).unwrap();
    let conflict = first.view().conflicts[0].id.clone();
    let ack = node.store.register(first).await.unwrap();

    let (session, csrf) = node.sign_in("dc").await;
    let page = node.get("/desk/conflicts", &session).await;
    assert!(page.body.contains("冲突待核（1 件）") && page.body.contains("未生效"), "{}", page.body);
    assert!(page.body.contains("维持合并结果"));
    let settled = node
        .post(
            &format!("/desk/case/{}/act", ack.case_id),
            &session,
            &[("csrf", &csrf), ("action", "resolve_conflict"), ("choice", &conflict), ("text", "以撤回为准")],
        )
        .await;
    assert_eq!(settled.status, StatusCode::SEE_OTHER, "{}", settled.body);
    assert!(node.store.case_view(&ack.case_id).await.unwrap().conflicts.is_empty());
    assert!(node.get("/desk/conflicts", &session).await.body.contains("没有待核的冲突"));
    println!("conflicts: 1 listed ({conflict}), settled from the desk by the 督查科");
}

#[tokio::test]
async fn random_form_bodies_get_client_errors_and_store_nothing() {
    let node = node();
    let (cookie, csrf) = node.citizen_csrf().await;
    // A deterministic xorshift: the same bodies on every run (seed printed).
    let seed = 0x2026_1125_u64;
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces = [
        "%",
        "%zz",
        "%E4%BD",
        "&",
        "=",
        "csrf=",
        "summary=",
        "detail=",
        "service_code=",
        "BDC",
        "\u{0}",
        "很",
        "+",
        "%00",
        "a",
        "&&==",
        "phone=1",
    ];
    let mut statuses = std::collections::BTreeMap::new();
    let rounds = 200;
    for round in 0..rounds {
        let len = (next() % 40) as usize;
        let mut body: String = (0..len).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect();
        if round % 2 == 0 {
            // Half the citizen bodies carry a valid CSRF token, so they reach the field checks.
            body = format!("csrf={csrf}&{body}");
        }
        let path = if round % 3 == 0 { "/open311/v2/requests.json" } else { "/r/BBC01" };
        let answer = node.post_raw(path, &cookie, body.clone(), client(10 + (round % 200) as u8)).await;
        assert!(answer.status.is_client_error(), "seed {seed:#x} round {round}: {path} {body:?} → {}", answer.status);
        *statuses.entry(answer.status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(node.case_count().await, 0, "seed {seed:#x}: nothing stored");
    println!("random bodies: {rounds} posts, statuses {statuses:?}, cases=0");
}

#[tokio::test]
async fn a_case_goes_from_report_to_closed_through_the_desk() {
    let node = node();
    let receipt = node.report(REPORT).await;
    let (reg_no, code) = (by_id(&receipt.body, "reg-no"), by_id(&receipt.body, "query-code"));
    let (session, csrf) = node.sign_in("wangmin").await;
    let book = node.get("/desk?status=DISPATCHED", &session).await;
    assert!(book.body.contains(&reg_no), "auto-dispatched by the routing table");
    let case_id = book.body.split("/desk/case/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let act = format!("/desk/case/{case_id}/act");
    type Step<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let steps: &[Step<'_>] = &[
        ("sign_in", &[("text", "王敏")], "IN_PROGRESS"),
        ("resolve", &[("choice", "DONE"), ("text", "已出具两套分户图，请携带身份证到不动产窗口领证。")], "REPLIED"),
        ("callback", &[("method", "PHONE"), ("choice", "YES"), ("rating", "5"), ("text", "满意")], "REPLIED"),
        ("close", &[("text", "科长审核")], "CLOSED"),
    ];
    for (action, fields, status) in steps {
        let mut all = vec![("csrf", csrf.as_str()), ("action", *action)];
        all.extend_from_slice(fields);
        let answer = node.post(&act, &session, &all).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{action}: {}", answer.body);
        assert_eq!(node.store.case_view(&case_id).await.unwrap().status.code(), *status, "{action}");
    }
    let page = node.get(&format!("/desk/case/{case_id}"), &session).await.body;
    assert!(!page.contains("value=\"reply\""), "no reply form on a closed case");
    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await.body;
    assert!(lookup.contains("已办结") && lookup.contains("分户图") && !lookup.contains("预计办结"));
    let closed = node.get("/open311/v2/requests.json?status=closed", "").await.json();
    assert_eq!(closed[0]["service_request_id"], reg_no.as_str());
    assert_eq!(closed[0]["status"], "closed");
    assert!(closed[0]["expected_datetime"].is_null());
    println!(
        "lifecycle: report → 派单 (routing) → 签收 → 办理完毕 → 回访 → 办结, {} steps through the desk",
        steps.len()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Issue 6: the remaining staff-desk actions, over real sockets to a served node.

/// One bad form of a refusal test: what it tries, the session and CSRF token it posts with, its fields, and the status
/// and zh-CN message expected.
type BadForm<'a> = (&'a str, &'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, StatusCode, &'a str);

/// A refused desk form: its status, the zh-CN reason, and the page saying nothing was stored.
fn assert_refused(what: &str, answer: &Answer, status: StatusCode, message: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    assert!(answer.body.contains(message), "{what}: expected `{message}` in {}", answer.body);
    assert!(answer.body.contains("未保存") || answer.body.contains("未执行"), "{what}: says nothing was stored");
}

/// `datetime-local` form value of an instant (the hall's zone).
fn local_minute(ms: i64) -> String {
    zhaowo_crdt::time::format_local_minute(ms).replace(' ', "T")
}

/// The fields of a 上门/走访 form.
fn visit_form<'a>(people: &'a str, at: &'a str, minutes: &'a str, outcome: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("action", "visit"), ("volunteers", people), ("at", at), ("minutes", minutes), ("text", outcome)]
}

/// The fields of a 并案 form.
fn merge_form(master: &str) -> Vec<(&str, &str)> {
    vec![("action", "duplicate"), ("master", master)]
}

/// Stores a case whose summary two offline window PCs (甲 and 乙) edited at the same time, as their merge leaves it;
/// returns its id and the two summaries.
async fn offline_summary_conflict(node: &Node) -> (String, [String; 2]) {
    use zhaowo_crdt::model::{Channel, EditableField, Nature, Priority};
    use zhaowo_crdt::{Author, CaseDoc, Command, Ctx, Hall, QueryCode, RegNo, Registration};
    let hall = Hall::jiangan_default();
    let ctx = |n: i64, staff: &str| Ctx {
        now_ms: now_ms() + n,
        entropy: 0x0ff1_0000_0000_0000_0000_0000_0000_u128 + n as u128,
        secret: [0x40 + n as u8; 32],
        author: Author {
            node: format!("node{n}"),
            staff: staff.to_owned(),
            role: Role::Window,
            window: "BBC01".to_owned(),
        },
    };
    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Help,
        category: "GJJ".to_owned(),
        modes: Default::default(),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: "公积金提取".to_owned(),
        detail: "两台离线电脑同时修改了摘要".to_owned(),
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags: Default::default(),
        personal: Default::default(),
    };
    let (mut first, _) = CaseDoc::register(
        &ctx(1, "甲"),
        &hall,
        automerge::ActorId::from(vec![1; 16]),
        RegNo::parse("BBC01-2026-0600").unwrap(),
        &QueryCode::from_entropy(11),
        registration,
    )
    .unwrap();
    let mut second = CaseDoc::load(&first.save(), automerge::ActorId::from(vec![2; 16])).unwrap();
    let values = ["公积金提取（甲：租房提取）".to_owned(), "公积金提取（乙：购房提取）".to_owned()];
    let edit = |value: &str| Command::EditField { field: EditableField::Summary, value: value.to_owned() };
    first.apply(&ctx(2, "甲"), &hall, edit(&values[0])).unwrap();
    second.apply(&ctx(3, "乙"), &hall, edit(&values[1])).unwrap();
    first.merge(&mut second).unwrap();
    assert!(first.view().conflicts.iter().any(|c| c.id == "f-summary"), "the merge lists the summary conflict");
    let ack = node.store.register(first).await.unwrap();
    (ack.case_id, values)
}

#[tokio::test]
async fn the_supervisor_picks_the_winning_value_of_a_field_two_offline_pcs_wrote() {
    let node = served_node(|_| {}).await;
    let (case_id, values) = offline_summary_conflict(&node).await;
    let (session, csrf) = node.sign_in("dc").await;
    let page = node.case_page(&session, &case_id).await;
    assert!(page.contains("冲突待核（1 项）") && page.contains("诉求摘要 有 2 个并发取值"), "{page}");
    assert!(page.contains(&values[0]) && page.contains(&values[1]) && page.contains("采用所选取值"));
    let listed = node.get("/desk/conflicts", &session).await.body;
    assert!(listed.contains("冲突待核（1 件）") && listed.contains("采用所选取值"), "{listed}");

    // Pick the value the merge did not show, so the choice visibly changes the page.
    let shown = by_id(&page, "summary");
    let chosen = values.iter().find(|v| **v != shown).unwrap().clone();
    let reason = "电话核实：群众要办的是购房提取";
    let settled = node
        .act(
            &session,
            Some(&csrf),
            &case_id,
            &[("action", "resolve_conflict"), ("choice", "f-summary"), ("value", &chosen), ("text", reason)],
        )
        .await;
    assert_eq!(settled.status, StatusCode::SEE_OTHER, "{}", settled.body);
    let page = node.get(settled.headers[header::LOCATION].to_str().unwrap(), &session).await.body;
    assert!(page.contains("冲突已核定"), "the page confirms");
    assert_eq!(by_id(&page, "summary"), chosen, "the chosen value is the summary now");
    assert!(!page.contains("冲突待核（"), "no conflict left on the case page");
    assert!(page.contains("冲突核定") && page.contains(&format!("采用「{chosen}」")) && page.contains(reason));
    assert!(page.contains("督查员(dc)（督查科）"), "the timeline names who settled it");
    assert!(node.get("/desk/conflicts", &session).await.body.contains("没有待核的冲突"));
    println!("conflict: f-summary settled over TCP by picking `{chosen}` (the merge showed `{shown}`)");
}

#[tokio::test]
async fn conflict_resolution_refuses_a_clerk_a_stale_form_a_long_note_and_a_value_not_in_conflict() {
    let node = served_node(|_| {}).await;
    let (case_id, values) = offline_summary_conflict(&node).await;
    let (clerk, clerk_csrf) = node.sign_in("wangmin").await;
    let clerk_page = node.case_page(&clerk, &case_id).await;
    assert!(
        clerk_page.contains("冲突待核（1 项）") && !clerk_page.contains("采用所选取值"),
        "a clerk sees, cannot settle"
    );
    let (dc, csrf) = node.sign_in("dc").await;
    let (summary, events) = (by_id(&node.case_page(&dc, &case_id).await, "summary"), node.events(&case_id).await);
    let long_note = "核".repeat(501);
    let pick = |value: &'static str, note: &'static str| {
        [("action", "resolve_conflict"), ("choice", "f-summary"), ("value", value), ("text", note)]
    };
    let valid = values[1].as_str();
    let cases: Vec<BadForm<'_>> = vec![
        (
            "a clerk",
            &clerk,
            Some(&clerk_csrf),
            vec![("action", "resolve_conflict"), ("choice", "f-summary"), ("value", valid), ("text", "我来定")],
            StatusCode::BAD_REQUEST,
            "您的角色（窗口）不能执行此操作",
        ),
        (
            "no csrf",
            &dc,
            None,
            vec![("action", "resolve_conflict"), ("choice", "f-summary"), ("value", valid), ("text", "说明")],
            StatusCode::FORBIDDEN,
            "页面已过期",
        ),
        (
            "long note",
            &dc,
            Some(&csrf),
            vec![("action", "resolve_conflict"), ("choice", "f-summary"), ("value", valid), ("text", &long_note)],
            StatusCode::BAD_REQUEST,
            "核定说明最多 500 个字，现为 501 个字",
        ),
        ("no note", &dc, Some(&csrf), pick("公积金提取", " ").to_vec(), StatusCode::BAD_REQUEST, "请填写核定说明"),
        (
            "not a candidate",
            &dc,
            Some(&csrf),
            pick("第三种说法", "说明").to_vec(),
            StatusCode::BAD_REQUEST,
            "所选取值不是冲突中的取值之一",
        ),
        (
            "unknown conflict",
            &dc,
            Some(&csrf),
            vec![("action", "resolve_conflict"), ("choice", "f-location"), ("text", "说明")],
            StatusCode::BAD_REQUEST,
            "该冲突不存在或已经核定",
        ),
    ];
    let n = cases.len();
    for (what, session, token, fields, status, message) in cases {
        let answer = node.act(session, token, &case_id, &fields).await;
        assert_refused(what, &answer, status, message);
    }
    assert_eq!(node.events(&case_id).await, events, "no event added");
    let page = node.case_page(&dc, &case_id).await;
    assert_eq!(by_id(&page, "summary"), summary, "the summary is unchanged");
    assert!(page.contains("冲突待核（1 项）"), "the conflict is still listed");
    println!("conflict: {n} bad settlements refused, events={events} unchanged");
}

#[tokio::test]
async fn a_clerk_edits_the_case_fields_from_a_form_with_the_current_values() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (session, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&session, &reg_no).await;
    let page = node.case_page(&session, &case_id).await;
    assert!(
        page.contains("修改诉求信息") && page.contains("value=\"老房子登记成一套，实际是两套\""),
        "summary prefilled"
    );
    assert!(page.contains("实际上是两套独立住房，材料缺失。</textarea>"), "detail prefilled");
    assert!(page.contains("value=\"BDC\" selected") && page.contains("value=\"NORMAL\" selected"), "selects prefilled");
    let events = node.events(&case_id).await;

    let edited = node
        .act(
            &session,
            Some(&csrf),
            &case_id,
            &[
                ("action", "edit"),
                ("summary", "一套房实为两套，申请分别登记"),
                ("detail", "房改房登记为一套，实为两套独立住房。\r\n原房改单位已找到档案。"),
                ("expectation", "拿到两本不动产权证"),
                ("location", "江岸区某街道某号"),
                ("category", "FANGGUAN"),
                ("priority", "URGENT"),
            ],
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let page = node.get(edited.headers[header::LOCATION].to_str().unwrap(), &session).await.body;
    assert!(page.contains("诉求信息已修改"));
    assert_eq!(by_id(&page, "summary"), "一套房实为两套，申请分别登记");
    assert_eq!(by_id(&page, "detail"), "房改房登记为一套，实为两套独立住房。\n原房改单位已找到档案。");
    assert_eq!(by_id(&page, "expectation"), "拿到两本不动产权证");
    assert_eq!(by_id(&page, "location"), "江岸区某街道某号");
    assert_eq!(by_id(&page, "category"), "求助 / 房管");
    assert_eq!(by_id(&page, "priority"), "紧急");
    for line in
        ["修改诉求摘要", "修改诉求内容", "修改诉求人期望", "修改地点", "诉求类别调整为 FANGGUAN", "紧急程度调整为 紧急"]
    {
        assert!(page.contains(line), "timeline: {line}");
    }
    assert!(page.contains("王敏(wangmin)（窗口）"));
    assert_eq!(node.events(&case_id).await, events + 6, "one event per changed field");
    assert!(page.contains("value=\"一套房实为两套，申请分别登记\""), "the form shows the new values");
    println!("edit: 6 fields changed from one form, 6 events, page shows them");
}

#[tokio::test]
async fn a_refused_edit_stores_no_field_and_keeps_what_was_typed() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let (volunteer, volunteer_csrf) = node.sign_in("zy").await;
    assert!(!node.case_page(&volunteer, &case_id).await.contains("修改诉求信息"), "no edit form for a volunteer");
    let events = node.events(&case_id).await;
    let before = by_id(&node.case_page(&clerk, &case_id).await, "summary");
    let (long_summary, long_detail) = ("长".repeat(101), "详".repeat(4_001));
    let new_summary = "新的摘要：一套变两套";
    let cases: Vec<BadForm<'_>> = vec![
        (
            "no csrf",
            &clerk,
            None,
            vec![("action", "edit"), ("summary", new_summary)],
            StatusCode::FORBIDDEN,
            "页面已过期",
        ),
        (
            "long summary",
            &clerk,
            Some(&csrf),
            vec![("action", "edit"), ("summary", &long_summary)],
            StatusCode::BAD_REQUEST,
            "诉求摘要最多 100 个字，现为 101 个字",
        ),
        (
            "phone in summary",
            &clerk,
            Some(&csrf),
            vec![("action", "edit"), ("summary", "回电13812345678")],
            StatusCode::BAD_REQUEST,
            "不能包含电话号码",
        ),
        (
            // A good summary next to a too-long detail: neither is stored (one store edit).
            "long detail",
            &clerk,
            Some(&csrf),
            vec![("action", "edit"), ("summary", new_summary), ("detail", &long_detail)],
            StatusCode::BAD_REQUEST,
            "诉求内容最多 4000 个字，现为 4001 个字",
        ),
        (
            "unknown category",
            &clerk,
            Some(&csrf),
            vec![("action", "edit"), ("category", "NOPE")],
            StatusCode::BAD_REQUEST,
            "诉求类别 NOPE 不存在",
        ),
        (
            "unknown priority",
            &clerk,
            Some(&csrf),
            vec![("action", "edit"), ("priority", "VERY")],
            StatusCode::BAD_REQUEST,
            "请选择紧急程度",
        ),
        (
            "nothing changed",
            &clerk,
            Some(&csrf),
            vec![("action", "edit"), ("summary", &before)],
            StatusCode::BAD_REQUEST,
            "没有需要修改的内容",
        ),
        (
            "a volunteer",
            &volunteer,
            Some(&volunteer_csrf),
            vec![("action", "edit"), ("summary", new_summary)],
            StatusCode::BAD_REQUEST,
            "您的角色（志愿者）不能执行此操作",
        ),
    ];
    let n = cases.len();
    for (what, session, token, fields, status, message) in cases {
        let answer = node.act(session, token, &case_id, &fields).await;
        assert_refused(what, &answer, status, message);
        if what == "long detail" {
            assert!(answer.body.contains(&format!("value=\"{new_summary}\"")), "the typed summary is kept");
        }
    }
    assert_eq!(node.events(&case_id).await, events, "no event added");
    assert_eq!(by_id(&node.case_page(&clerk, &case_id).await, "summary"), before, "the summary is unchanged");
    println!("edit: {n} bad edits refused, events={events} unchanged");
}

#[tokio::test]
async fn a_clerk_requests_an_extension_and_the_supervisor_approves_it() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, clerk_csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let page = node.case_page(&clerk, &case_id).await;
    assert!(page.contains("申请延期") && !page.contains("批准延期"));
    let due_before = by_id(&page, "due").trim().to_owned();

    let reason = "需等待测绘队出具分户图";
    let requested =
        node.act(&clerk, Some(&clerk_csrf), &case_id, &[("action", "extend"), ("days", "5"), ("text", reason)]).await;
    assert_eq!(requested.status, StatusCode::SEE_OTHER, "{}", requested.body);
    let page = node.get(requested.headers[header::LOCATION].to_str().unwrap(), &clerk).await.body;
    assert!(page.contains("延期申请已提交，待督查科批准") && page.contains("待督查科批准"));
    assert!(page.contains(&format!("申请延期：{reason}")), "on the timeline");
    assert!(!page.contains("value=\"approve_extension\""), "a clerk cannot approve");
    assert_eq!(by_id(&page, "due").trim(), due_before, "not yet moved");

    let (dc, csrf) = node.sign_in("dc").await;
    let page = node.case_page(&dc, &case_id).await;
    assert!(!page.contains("value=\"extend\""), "the 督查科 approves, it does not request");
    let request = hidden(&page, "request");
    let approved =
        node.act(&dc, Some(&csrf), &case_id, &[("action", "approve_extension"), ("request", &request)]).await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    let page = node.get(approved.headers[header::LOCATION].to_str().unwrap(), &dc).await.body;
    let due_after = by_id(&page, "due").trim().to_owned();
    assert!(page.contains("已批准延期") && page.contains("已批准，办结时限延至") && page.contains("已延期"));
    assert!(due_after > due_before, "due {due_before} → {due_after}");
    assert!(page.contains(&format!("批准延期至 {due_after}")) && page.contains("督查员(dc)（督查科）"));
    println!(
        "extension: 5 working days requested by the clerk, approved by the 督查科: due {due_before} → {due_after}"
    );
}

#[tokio::test]
async fn extension_forms_refuse_bad_days_a_long_reason_and_the_wrong_role() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, clerk_csrf) = node.sign_in("wangmin").await;
    let (dc, csrf) = node.sign_in("dc").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let ok =
        node.act(&clerk, Some(&clerk_csrf), &case_id, &[("action", "extend"), ("days", "3"), ("text", "等材料")]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "one pending request to approve");
    let events = node.events(&case_id).await;
    let due = by_id(&node.case_page(&clerk, &case_id).await, "due");
    let long_reason = "因".repeat(501);
    let extend =
        |days: &'static str, reason: &'static str| vec![("action", "extend"), ("days", days), ("text", reason)];
    let cases: Vec<BadForm<'_>> = vec![
        ("no csrf", &clerk, None, extend("5", "等材料"), StatusCode::FORBIDDEN, "页面已过期"),
        (
            "zero days",
            &clerk,
            Some(&clerk_csrf),
            extend("0", "等材料"),
            StatusCode::BAD_REQUEST,
            "延期须为 1-22 个工作日",
        ),
        (
            "23 days",
            &clerk,
            Some(&clerk_csrf),
            extend("23", "等材料"),
            StatusCode::BAD_REQUEST,
            "延期须为 1-22 个工作日",
        ),
        (
            "days in words",
            &clerk,
            Some(&clerk_csrf),
            extend("五", "等材料"),
            StatusCode::BAD_REQUEST,
            "请填写延长的工作日数（1-22）",
        ),
        ("no reason", &clerk, Some(&clerk_csrf), extend("5", " "), StatusCode::BAD_REQUEST, "请填写延期原因"),
        (
            "long reason",
            &clerk,
            Some(&clerk_csrf),
            vec![("action", "extend"), ("days", "5"), ("text", &long_reason)],
            StatusCode::BAD_REQUEST,
            "原因最多 500 个字，现为 501 个字",
        ),
        (
            "the 督查科 requests",
            &dc,
            Some(&csrf),
            extend("5", "等材料"),
            StatusCode::BAD_REQUEST,
            "您的角色（督查科）不能执行此操作",
        ),
        (
            "a clerk approves",
            &clerk,
            Some(&clerk_csrf),
            vec![("action", "approve_extension"), ("request", "01KAAAAAAAAAAAAAAAAAAAAAAA")],
            StatusCode::BAD_REQUEST,
            "您的角色（窗口）不能执行此操作",
        ),
        (
            "unknown request",
            &dc,
            Some(&csrf),
            vec![("action", "approve_extension"), ("request", "01KAAAAAAAAAAAAAAAAAAAAAAA")],
            StatusCode::BAD_REQUEST,
            "没有这条待批准的延期申请",
        ),
        (
            "garbage request",
            &dc,
            Some(&csrf),
            vec![("action", "approve_extension"), ("request", "<script>")],
            StatusCode::BAD_REQUEST,
            "请选择要批准的延期申请",
        ),
    ];
    let n = cases.len();
    for (what, session, token, fields, status, message) in cases {
        let answer = node.act(session, token, &case_id, &fields).await;
        assert_refused(what, &answer, status, message);
    }
    assert_eq!(node.events(&case_id).await, events, "no event added");
    let page = node.case_page(&dc, &case_id).await;
    assert_eq!(by_id(&page, "due"), due, "the due date is unchanged");
    assert!(page.contains("待督查科批准"), "the valid request is still pending");
    println!("extension: {n} bad forms refused, events={events} unchanged");
}

#[tokio::test]
async fn a_volunteer_records_a_home_visit_and_a_clerk_a_joint_consultation() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (volunteer, volunteer_csrf) = node.sign_in("zy").await;
    let case_id = node.case_id_of(&volunteer, &reg_no).await;
    let page = node.case_page(&volunteer, &case_id).await;
    assert!(page.contains("上门 / 走访记录") && page.contains("value=\"志愿者小张\""), "the visit form, prefilled");
    assert!(!page.contains("联合会诊") && !page.contains("查看完整个人信息"), "a volunteer sees only what it may do");

    let outcome = "测绘队上门量房，两套独立入户门已拍照";
    let visited = node
        .act(
            &volunteer,
            Some(&volunteer_csrf),
            &case_id,
            &[
                ("action", "visit"),
                ("volunteers", "志愿者小张、测绘队老陈"),
                ("at", &local_minute(now_ms() - 3_600_000)),
                ("minutes", "90"),
                ("text", outcome),
            ],
        )
        .await;
    assert_eq!(visited.status, StatusCode::SEE_OTHER, "{}", visited.body);
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let consulted = node
        .act(
            &clerk,
            Some(&csrf),
            &case_id,
            &[("action", "consult"), ("co_units", "BDC、FG、GA"), ("text", "三方会诊：分户方案可行")],
        )
        .await;
    assert_eq!(consulted.status, StatusCode::SEE_OTHER, "{}", consulted.body);
    let page = node.case_page(&clerk, &case_id).await;
    assert_eq!(by_id(&page, "visits"), "会诊 1 次；上门/走访 1 次，共 90 分钟");
    assert!(page.contains(&format!("上门（志愿者小张、测绘队老陈，90 分钟）：{outcome}")), "{page}");
    assert!(page.contains("志愿者小张(zy)（志愿者）"), "the visit names who recorded it");
    assert!(page.contains("会诊（BDC、FG、GA）：三方会诊：分户方案可行"));
    println!("visit: 90 minutes by two volunteers, recorded by a volunteer; 会诊 of 3 units by the clerk");
}

#[tokio::test]
async fn visit_and_consultation_forms_refuse_bad_input_and_a_closed_state() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let hour_ago = local_minute(now_ms() - 3_600_000);
    let tomorrow = local_minute(now_ms() + 86_400_000);
    let seventeen = (1..=17).map(|i| format!("志愿者{i}")).collect::<Vec<_>>().join("，");
    let long_outcome = "况".repeat(4_001);
    let events = node.events(&case_id).await;
    // (what, CSRF token, fields, status, message): all posted by the clerk.
    type ClerkForm<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<ClerkForm<'_>> = vec![
        ("no csrf", None, visit_form("小张", &hour_ago, "60", "量房"), StatusCode::FORBIDDEN, "页面已过期"),
        ("nobody", Some(&csrf), visit_form(" ， ", &hour_ago, "60", "量房"), StatusCode::BAD_REQUEST, "请填写走访人员"),
        (
            "17 people",
            Some(&csrf),
            visit_form(&seventeen, &hour_ago, "60", "量房"),
            StatusCode::BAD_REQUEST,
            "走访人员最多 16 项，现为 17 项",
        ),
        (
            "long outcome",
            Some(&csrf),
            visit_form("小张", &hour_ago, "60", &long_outcome),
            StatusCode::BAD_REQUEST,
            "走访情况最多 4000 个字，现为 4001 个字",
        ),
        ("no outcome", Some(&csrf), visit_form("小张", &hour_ago, "60", ""), StatusCode::BAD_REQUEST, "请填写走访情况"),
        (
            "0 minutes",
            Some(&csrf),
            visit_form("小张", &hour_ago, "0", "量房"),
            StatusCode::BAD_REQUEST,
            "走访时长须为 1-1440 分钟",
        ),
        (
            "2000 minutes",
            Some(&csrf),
            visit_form("小张", &hour_ago, "2000", "量房"),
            StatusCode::BAD_REQUEST,
            "走访时长须为 1-1440 分钟",
        ),
        (
            "tomorrow",
            Some(&csrf),
            visit_form("小张", &tomorrow, "60", "量房"),
            StatusCode::BAD_REQUEST,
            "走访时间晚于现在",
        ),
        (
            "no time",
            Some(&csrf),
            visit_form("小张", "昨天下午", "60", "量房"),
            StatusCode::BAD_REQUEST,
            "请填写走访时间",
        ),
        (
            "unknown unit",
            Some(&csrf),
            vec![("action", "consult"), ("co_units", "BDC,NOPE"), ("text", "会诊")],
            StatusCode::BAD_REQUEST,
            "单位 NOPE 不存在",
        ),
        (
            "no unit",
            Some(&csrf),
            vec![("action", "consult"), ("co_units", ""), ("text", "会诊")],
            StatusCode::BAD_REQUEST,
            "请填写参会单位",
        ),
    ];
    let n = cases.len();
    for (what, token, fields, status, message) in cases {
        let answer = node.act(&clerk, token, &case_id, &fields).await;
        assert_refused(what, &answer, status, message);
    }
    assert_eq!(node.events(&case_id).await, events, "no event added");

    // A withdrawn case takes no visit: the form is gone and a forged post is refused by the case rules.
    let withdrawn = node.act(&clerk, Some(&csrf), &case_id, &[("action", "withdraw"), ("text", "群众来电撤回")]).await;
    assert_eq!(withdrawn.status, StatusCode::SEE_OTHER);
    let events = node.events(&case_id).await;
    assert!(!node.case_page(&clerk, &case_id).await.contains("上门 / 走访记录"));
    let late = node.act(&clerk, Some(&csrf), &case_id, &visit_form("小张", &hour_ago, "60", "量房")).await;
    assert_refused("withdrawn", &late, StatusCode::BAD_REQUEST, "案件当前状态为“已撤回”，不能执行此操作");
    assert_eq!(node.events(&case_id).await, events);
    let page = node.case_page(&clerk, &case_id).await;
    assert!(!page.contains("id=\"visits\""), "no visit or consultation counted");
    println!("visit/consult: {n} bad forms + 1 on a withdrawn case refused, nothing stored");
}

#[tokio::test]
async fn a_clerk_merges_a_repeat_case_and_the_supervisor_unmerges_it() {
    let node = served_node(|o| o.citizen_routing = CitizenRouting::Accept).await;
    let first = by_id(&node.report(REPORT).await.body, "reg-no");
    let second = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let (master_id, dup_id) = (node.case_id_of(&clerk, &first).await, node.case_id_of(&clerk, &second).await);
    let page = node.case_page(&clerk, &dup_id).await;
    assert!(page.contains("并案（标记为重复件）") && !page.contains("value=\"unmerge\""));

    let merged = node.act(&clerk, Some(&csrf), &dup_id, &[("action", "duplicate"), ("master", &first)]).await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    let page = node.get(merged.headers[header::LOCATION].to_str().unwrap(), &clerk).await.body;
    assert!(page.contains("已并案：本案为重复件") && page.contains("<span class=\"tag\">重复件</span>"));
    assert_eq!(by_id(&page, "merged-into"), "本案为重复件，已并入主案件 ");
    assert!(page.contains(&format!("href=\"/desk/case/{master_id}\">{first}</a>")), "links the master");
    assert!(page.contains("并案（重复件）") && !page.contains("value=\"unmerge\""), "a clerk cannot unmerge");
    let master = node.case_page(&clerk, &master_id).await;
    assert!(master.contains(&format!("href=\"/desk/case/{dup_id}\">{second}</a>")) && master.contains("已并入本案"));
    assert!(master.contains("关联重复件"));

    let (dc, dc_csrf) = node.sign_in("dc").await;
    let unmerged = node.act(&dc, Some(&dc_csrf), &dup_id, &[("action", "unmerge")]).await;
    assert_eq!(unmerged.status, StatusCode::SEE_OTHER, "{}", unmerged.body);
    let page = node.get(unmerged.headers[header::LOCATION].to_str().unwrap(), &dc).await.body;
    assert!(page.contains("已解除并案") && page.contains("<span class=\"tag\">已登记</span>"));
    assert!(!page.contains("id=\"merged-into\"") && page.contains("解除与"));
    let master = node.case_page(&dc, &master_id).await;
    assert!(!master.contains("id=\"duplicates\"") && master.contains("解除关联重复件"), "the master forgets it");

    // 并案 by case id works as well as by 登记编号.
    let again = node.act(&clerk, Some(&csrf), &dup_id, &[("action", "duplicate"), ("master", &master_id)]).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert_eq!(node.store.case_view(&dup_id).await.unwrap().status.code(), "DUPLICATE");
    println!("并案: {second} into {first} by 登记编号, unmerged by the 督查科, merged again by case id");
}

#[tokio::test]
async fn merge_forms_refuse_unknown_masters_itself_and_the_wrong_role() {
    let node = served_node(|o| o.citizen_routing = CitizenRouting::Accept).await;
    let first = by_id(&node.report(REPORT).await.body, "reg-no");
    let second = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let (dc, dc_csrf) = node.sign_in("dc").await;
    let (master_id, dup_id) = (node.case_id_of(&clerk, &first).await, node.case_id_of(&clerk, &second).await);
    let snapshot = || async {
        let (a, b) = (node.store.case_view(&master_id).await.unwrap(), node.store.case_view(&dup_id).await.unwrap());
        (a.event_ids.len(), b.event_ids.len(), a.status, b.status)
    };
    let before = snapshot().await;
    // (what, session, CSRF token, fields, message): 403 without a token, else 400.
    type MergeForm<'a> = (&'a str, &'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<MergeForm<'_>> = vec![
        ("no csrf", &clerk, None, merge_form(&first), "页面已过期"),
        (
            "unknown number",
            &clerk,
            Some(&csrf),
            merge_form("BBC01-2026-9999"),
            "没有找到登记编号为 BBC01-2026-9999 的案件",
        ),
        ("not a number", &clerk, Some(&csrf), merge_form("上一件"), "请填写主案件的登记编号"),
        ("itself", &clerk, Some(&csrf), merge_form(&second), "不能并入本案自身"),
        ("unmerge a case that is not merged", &dc, Some(&dc_csrf), vec![("action", "unmerge")], "本案不是重复件"),
    ];
    let n = cases.len();
    for (what, session, token, fields, message) in cases {
        let answer = node.act(session, token, &dup_id, &fields).await;
        let status = if token.is_none() { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
        assert_refused(what, &answer, status, message);
    }
    assert_eq!(snapshot().await, before, "nothing changed on either case");

    // Once dispatched, 并案 is the 督查科's: the clerk's form is gone and a forged post is refused.
    let dispatched = node.act(&clerk, Some(&csrf), &dup_id, &[("action", "dispatch"), ("lead_unit", "BDC")]).await;
    assert_eq!(dispatched.status, StatusCode::SEE_OTHER);
    let before = snapshot().await;
    assert!(!node.case_page(&clerk, &dup_id).await.contains("并案（标记为重复件）"));
    let answer = node.act(&clerk, Some(&csrf), &dup_id, &merge_form(&first)).await;
    assert_refused("a clerk on a dispatched case", &answer, StatusCode::BAD_REQUEST, "您的角色（窗口）不能执行此操作");
    assert_eq!(snapshot().await, before);

    // The 督查科 merges it; the clerk may not unmerge.
    let merged = node.act(&dc, Some(&dc_csrf), &dup_id, &merge_form(&first)).await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    let before = snapshot().await;
    let answer = node.act(&clerk, Some(&csrf), &dup_id, &[("action", "unmerge")]).await;
    assert_refused("a clerk unmerges", &answer, StatusCode::BAD_REQUEST, "您的角色（窗口）不能执行此操作");
    assert_eq!(snapshot().await, before, "still merged, the master still lists it");
    assert!(node.store.case_view(&master_id).await.unwrap().duplicates.len() == 1);
    println!("并案: {n} bad forms + a clerk on a dispatched case + a clerk's unmerge refused");
}

#[tokio::test]
async fn revealing_personal_data_shows_it_once_and_puts_who_and_why_on_the_timeline() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let page = node.case_page(&clerk, &case_id).await;
    assert!(page.contains("138****5678") && !page.contains("13812345678"), "masked");
    let purpose = "电话回访核实地址";
    let revealed = node.act(&clerk, Some(&csrf), &case_id, &[("action", "reveal"), ("text", purpose)]).await;
    assert_eq!(revealed.status, StatusCode::OK, "{}", revealed.body);
    assert!(revealed.body.contains("完整个人信息（已记录查看）") && revealed.body.contains("13812345678"));
    assert!(revealed.body.contains("李建国"));
    let page = node.case_page(&clerk, &case_id).await;
    assert!(!page.contains("13812345678"), "shown once: the page is masked again");
    assert_eq!(by_id(&page, "pi-reveals"), "已查看完整信息 1 次");
    assert!(page.contains(&format!("查看完整个人信息，用途：{purpose}")) && page.contains("王敏(wangmin)（窗口）"));
    println!("reveal: shown once, recorded with who and why");
}

#[tokio::test]
async fn reveal_refuses_a_stale_form_a_missing_or_long_purpose_and_a_volunteer() {
    let node = served_node(|_| {}).await;
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, csrf) = node.sign_in("wangmin").await;
    let (volunteer, volunteer_csrf) = node.sign_in("zy").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    assert!(!node.case_page(&volunteer, &case_id).await.contains("value=\"reveal\""), "no reveal form for a volunteer");
    let events = node.events(&case_id).await;
    let long_purpose = "用".repeat(501);
    // (what, session, CSRF token, purpose, status, message).
    type RevealForm<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, StatusCode, &'a str);
    let cases: Vec<RevealForm<'_>> = vec![
        ("no csrf", &clerk, None, "电话回访", StatusCode::FORBIDDEN, "页面已过期"),
        ("no purpose", &clerk, Some(&csrf), " ", StatusCode::BAD_REQUEST, "请填写用途"),
        (
            "long purpose",
            &clerk,
            Some(&csrf),
            &long_purpose,
            StatusCode::BAD_REQUEST,
            "用途最多 500 个字，现为 501 个字",
        ),
        (
            "a volunteer",
            &volunteer,
            Some(&volunteer_csrf),
            "上门",
            StatusCode::BAD_REQUEST,
            "您的角色（志愿者）不能执行此操作",
        ),
    ];
    let n = cases.len();
    for (what, session, token, purpose, status, message) in cases {
        let answer = node.act(session, token, &case_id, &[("action", "reveal"), ("text", purpose)]).await;
        assert_refused(what, &answer, status, message);
        assert!(!answer.body.contains("13812345678"), "{what}: the number stays masked");
    }
    let view = node.store.case_view(&case_id).await.unwrap();
    assert_eq!((view.event_ids.len(), view.pi_reveals), (events, 0), "nothing recorded");
    println!("reveal: {n} bad forms refused, no reveal recorded");
}

/// Issue 12 §1: the desk shows the hall's configuration read-only to every signed-in role; the calendar's coverage
/// reaches `/metrics`, and the desk header of 督查科 (not of a window clerk) carries its warning when there is one.
#[tokio::test]
async fn the_desk_shows_the_hall_configuration_and_the_calendar_coverage() {
    let node = node();
    let hall = zhaowo_crdt::Hall::jiangan_default();
    let coverage = hall.calendar.coverage(zhaowo_crdt::time::Date::of_ms(now_ms()));
    for user in ["wangmin", "dc"] {
        let (session, _) = node.sign_in(user).await;
        let page = node.get("/desk/hall", &session).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for shown in [
            "大厅配置",
            "不动产登记中心",
            "办不成事窗口",
            "调休上班",
            "2026 年",
            "2月15日—2月23日（9天）",
            "10月10日（周六）",
        ] {
            assert!(page.body.contains(shown), "{user}: {shown} missing");
        }
        assert!(!page.body.contains("method=\"post\" action=\"/desk/hall"), "read-only");
        let notice = if page.body.contains("id=\"calendar-notice\"") {
            by_id(&page.body, "calendar-notice")
        } else {
            String::new()
        };
        match (user, coverage.warning_zh()) {
            ("dc", Some(warning)) => assert!(notice.contains(&warning), "{notice}"),
            _ => assert!(notice.is_empty(), "{user}: {notice}"),
        }
    }
    assert_eq!(node.get("/desk/hall", "").await.status, StatusCode::SEE_OTHER, "signed-in roles only");
    let metrics = node.get("/metrics", "").await;
    let days_left = format!("zhaowo_calendar_days_left {}", coverage.days_left);
    assert!(metrics.body.contains(&days_left), "{}", metrics.body);
    assert!(metrics.body.contains(&format!("zhaowo_calendar_warning {}", u8::from(coverage.warn))));
    println!("hall page for window and supervision; metrics: {days_left}, warn {}", coverage.warn);
}

// ---------------------------------------------------------------------------------------------------------------
// Issue 12 §4: the steps only the CLI had (改派, 强制办结, 协办单位, 标签), offered by the crdt's table.

#[tokio::test]
async fn a_clerk_adds_co_units_and_tags_and_the_supervisor_reassigns_and_force_closes() {
    let node = node();
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, clerk_csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let page = node.case_page(&clerk, &case_id).await;
    assert!(page.contains("value=\"co_units\"") && page.contains("value=\"tags\""), "a clerk's forms");
    assert!(!page.contains("value=\"reassign\"") && !page.contains("value=\"force_close\""), "not a clerk's");

    let added = node.act(&clerk, Some(&clerk_csrf), &case_id, &[("action", "co_units"), ("co_units", "GJJ")]).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let tagged = node.act(&clerk, Some(&clerk_csrf), &case_id, &[("action", "tags"), ("text", "老旧小区，回访")]).await;
    assert_eq!(tagged.status, StatusCode::SEE_OTHER, "{}", tagged.body);
    let page = node.get(tagged.headers[header::LOCATION].to_str().unwrap(), &clerk).await.body;
    assert!(page.contains("标签已添加") && page.contains("增加协办单位：GJJ"), "{page}");
    let view = node.store.case_view(&case_id).await.unwrap();
    assert!(view.co_units.contains("GJJ"), "{:?}", view.co_units);
    assert!(view.tags.contains("老旧小区") && view.tags.contains("回访"), "{:?}", view.tags);

    let events = node.events(&case_id).await;
    let unknown = node.act(&clerk, Some(&clerk_csrf), &case_id, &[("action", "co_units"), ("co_units", "XYZ")]).await;
    assert_refused("an unknown unit", &unknown, StatusCode::BAD_REQUEST, "单位 XYZ 不存在");
    let reassign = [("action", "reassign"), ("lead_unit", "FG"), ("co_units", ""), ("text", "职责调整")];
    let by_clerk = node.act(&clerk, Some(&clerk_csrf), &case_id, &reassign).await;
    assert_refused("a clerk reassigns", &by_clerk, StatusCode::BAD_REQUEST, "您的角色（窗口）不能执行此操作（改派）");
    assert_eq!(node.events(&case_id).await, events, "refusals store nothing");

    let (dc, csrf) = node.sign_in("dc").await;
    let page = node.case_page(&dc, &case_id).await;
    assert!(page.contains("value=\"reassign\"") && page.contains("value=\"force_close\""), "the 督查科's forms");
    let reassigned = node.act(&dc, Some(&csrf), &case_id, &reassign).await;
    assert_eq!(reassigned.status, StatusCode::SEE_OTHER, "{}", reassigned.body);
    let view = node.store.case_view(&case_id).await.unwrap();
    assert_eq!((view.lead_unit.as_deref(), view.status), (Some("FG"), Status::Dispatched));
    let closed = node.act(&dc, Some(&csrf), &case_id, &[("action", "force_close"), ("text", "督查科长")]).await;
    assert_eq!(closed.status, StatusCode::SEE_OTHER, "{}", closed.body);
    let page = node.get(closed.headers[header::LOCATION].to_str().unwrap(), &dc).await.body;
    assert!(page.contains("已强制办结") && page.contains("强制办结，审核人 督查科长"), "{page}");
    assert!(!page.contains("value=\"reassign\"") && !page.contains("value=\"force_close\""), "nothing to force now");
    assert_eq!(node.store.case_view(&case_id).await.unwrap().status, Status::Closed);
    let again = node.act(&dc, Some(&csrf), &case_id, &reassign).await;
    assert_refused(
        "reassign a closed case",
        &again,
        StatusCode::BAD_REQUEST,
        "案件当前状态为“已办结”，不能执行此操作（改派）",
    );
    println!(
        "desk: co-units + tags by the clerk, 改派 → FG and 强制办结 by the 督查科: {} events; 3 refusals stored nothing",
        node.events(&case_id).await
    );
}

#[tokio::test]
async fn the_case_page_offers_exactly_the_kinds_the_crdt_table_allows() {
    let node = node();
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, _) = node.sign_in("wangmin").await;
    let (dc, _) = node.sign_in("dc").await;
    let case_id = node.case_id_of(&clerk, &reg_no).await;
    let view = node.store.case_view(&case_id).await.unwrap();
    let mut checked = 0;
    for (session, role) in [(&clerk, Role::Window), (&dc, Role::Supervision)] {
        let page = node.case_page(session, &case_id).await;
        let allowed = view.allowed(role);
        // Kinds with a form of their own on the case page (修改 covers category and priority; 归档/清除 are the
        // retention job's).
        for &kind in CommandKind::ALL {
            if matches!(
                kind,
                CommandKind::ChangeCategory
                    | CommandKind::ChangePriority
                    | CommandKind::Archive
                    | CommandKind::PurgePersonalData
            ) {
                continue;
            }
            let shown = page.contains(&format!("name=\"action\" value=\"{}\"", kind.code()));
            assert_eq!(shown, allowed.contains(&kind), "{kind:?} for {role:?} on a {:?} case", view.status);
            checked += 1;
        }
    }
    println!("case page forms vs CaseView::allowed: {checked} (role, kind) pairs agree on a {:?} case", view.status);
}

/// Issue 12 §4: the desk exports the register book as xlsx, personal data masked (the CLI's `export` shares the same
/// columns from `node::export`); a bad year is refused with a page, not a file.
#[tokio::test]
async fn the_desk_exports_the_register_as_a_masked_workbook() {
    use calamine::Reader;
    let node = node();
    let reg_no = by_id(&node.report(REPORT).await.body, "reg-no");
    let (clerk, _) = node.sign_in("wangmin").await;
    let book = node.get("/desk", &clerk).await;
    assert!(book.body.contains("/desk/export.xlsx"), "the register book links the export");
    let mut request =
        Request::get("/desk/export.xlsx").header(header::COOKIE, clerk.as_str()).body(Body::empty()).unwrap();
    request.extensions_mut().insert(ConnectInfo(client(10)));
    let response = node.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"register-"), "{disposition}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
    assert!(bytes.starts_with(b"PK"), "an xlsx file is a zip archive");
    let mut workbook = calamine::Xlsx::new(std::io::Cursor::new(bytes.clone())).unwrap();
    let sheet = workbook.worksheet_range("登记簿").unwrap();
    let rows: Vec<Vec<String>> = sheet.rows().map(|row| row.iter().map(|cell| cell.to_string()).collect()).collect();
    assert_eq!(rows[0][0], "登记编号");
    let row = rows.iter().find(|row| row[0] == reg_no).expect("the reported case is in the workbook");
    assert_eq!(row[8], "138****5678", "the phone is masked");
    assert!(
        !rows.iter().flatten().any(|cell| cell.contains("13812345678") || cell.contains("李建国")),
        "nothing in full"
    );
    let bad = node.get("/desk/export.xlsx?year=abc", &clerk).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let anonymous = node.get("/desk/export.xlsx", "").await;
    assert_ne!(anonymous.status, StatusCode::OK, "signed-in staff only");
    println!("desk export: {} rows, {} bytes, masked phone {}", rows.len() - 1, bytes.len(), row[8]);
}

/// Issue 13 §3: the hall's retention rule, as an oversight PC applies it. A case closed (办结) is purged once
/// `retention_days` have passed and not before; an open case never; a second run finds nothing; the purged case's key
/// is gone from this node and its personal data reads as purged, while the register book keeps the case.
#[tokio::test]
async fn the_retention_rule_purges_cases_closed_longer_ago_than_the_hall_keeps_personal_data() {
    use zhaowo_crdt::model::{CallbackMethod, CallbackOutcome, CaseResult};
    use zhaowo_crdt::{Command, QueryCode};
    let dir = tempfile::tempdir().unwrap();
    let mut home = home_in(dir.path());
    home.config.role = Role::Supervision;
    let store = home.open_store().unwrap();
    let mut hall = home.hall().unwrap();
    hall.retention_days = 30;
    let shared = Arc::new(hall.clone());
    let mut ids = Vec::new();
    for summary in ["将被清除的已办结案件", "仍在办理的案件"] {
        let ctx = home.ctx("王敏").unwrap();
        let (actor, build_hall) = (home.identity.new_actor().unwrap(), shared.clone());
        let mut registration = zhaowo_node::fixtures::CaseFactory::new(5, actor.clone(), now_ms()).registration();
        registration.summary = summary.to_owned();
        let build: zhaowo_node::store::RegisterFn = Box::new(move |reg_no| {
            zhaowo_crdt::CaseDoc::register(&ctx, &build_hall, actor, reg_no, &QueryCode::from_entropy(7), registration)
                .map(|(doc, _)| doc)
        });
        ids.push(store.register_new("BBC01", 2026, build).await.unwrap().ack.case_id);
    }
    let closing = [
        Command::Resolve { result: CaseResult::Done, reply: "已办结".into() },
        Command::RecordCallback {
            method: CallbackMethod::Phone,
            reached: true,
            outcome: Some(CallbackOutcome::Resolved),
            rating: Some(5),
            comment: String::new(),
        },
        Command::Close { reviewer: "陈科长".into(), forced: false },
    ];
    for command in closing {
        store.apply(&ids[0], home.ctx("王敏").unwrap(), shared.clone(), command).await.unwrap();
    }
    let closed_at = store.case_view(&ids[0]).await.unwrap().closed_at_ms.unwrap();
    let day = zhaowo_crdt::time::DAY_MS;
    let early = zhaowo_node::node::purge_expired(&store, &home, &hall, closed_at + 29 * day).await.unwrap();
    assert_eq!(early, 0, "nothing is purged before the retention period ends");
    let due = zhaowo_node::node::purge_expired(&store, &home, &hall, closed_at + 31 * day).await.unwrap();
    let again = zhaowo_node::node::purge_expired(&store, &home, &hall, closed_at + 31 * day).await.unwrap();
    assert_eq!((due, again), (1, 0));
    let purged = store.case_view(&ids[0]).await.unwrap();
    assert!(purged.personal.purged && purged.personal.name.is_none());
    assert_eq!(purged.summary, "将被清除的已办结案件", "the de-identified case stays");
    let open = store.case_view(&ids[1]).await.unwrap();
    assert!(!open.personal.purged && open.personal.name.is_some(), "an open case is never purged");
    assert_eq!(store.case_key_count().await.unwrap(), 1, "the purged case's key is gone");
    let last = purged.timeline.last().unwrap();
    assert_eq!((last.label, last.staff.as_str()), ("个人信息清除", zhaowo_node::node::RETENTION_STAFF));
    println!("retention: closed case purged after 31 days (retention 30), not after 29; open case kept; keys 2 → 1");
}

/// Issue 15 §4, §5 on the desk: a citizen who ticks 同意接收短信通知 gets a registration message queued on this node
/// (no SMS platform configured here, so it waits, and the page says so); the clerk picks a canned reply (a link that
/// fills the reply box, no script), publishes it and a second message is queued. Ticking the box without a phone is
/// refused. See: #15
#[tokio::test]
async fn sms_states_show_on_the_case_page_and_a_canned_reply_fills_the_reply_box() {
    let node = node_with(|o| o.citizen_routing = CitizenRouting::Accept);
    let mut without_phone: Vec<(&str, &str)> =
        REPORT.iter().copied().filter(|(key, _)| *key != "phone" && *key != "consent").collect();
    without_phone.push(("sms", "yes"));
    let refused = node.report(&without_phone).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("同意接收短信通知时请填写手机号码"), "{}", refused.body);
    assert_eq!(node.case_count().await, 0);

    let form = node.get("/r/BBC01", "").await;
    assert!(form.body.contains("同意接收短信通知"), "the citizen form offers the SMS box");
    let mut with_sms = REPORT.to_vec();
    with_sms.push(("sms", "yes"));
    let receipt = node.report(&with_sms).await;
    let reg_no = by_id(&receipt.body, "reg-no");
    let (session, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&session, &reg_no).await;
    let rows = node.store.outbox_for_case(&case_id).await.unwrap();
    assert_eq!(rows.len(), 1, "the registration asked for one message");
    let page = node.case_page(&session, &case_id).await;
    let sms_table = |html: &str| {
        let start = html.find("id=\"sms\"").expect("the 短信通知 table");
        html[start..start + html[start..].find("</table>").unwrap()].to_owned()
    };
    let sms = sms_table(&page);
    assert!(sms.contains("登记成功") && sms.contains("已排队"), "{sms}");
    assert!(page.contains("本机未配置短信平台"), "the page says why it waits");
    assert!(!page.contains("13812345678"), "the phone is never on the page");

    // The canned replies for this case (求助, 办理中 or not) are links; following one fills the reply box.
    assert!(page.contains("服务用语") && page.contains("?canned=0"), "{page}");
    let filled = node.get(&format!("/desk/case/{case_id}?canned=0"), &session).await.body;
    let hall = zhaowo_crdt::Hall::jiangan_default();
    let canned = &hall.messages.canned_replies[0].text;
    assert!(by_id(&filled, "reply-text").contains(canned.as_str()), "the reply box holds the canned text");
    let act = format!("/desk/case/{case_id}/act");
    let dispatched = node.post(&act, &session, &[("csrf", &csrf), ("action", "dispatch"), ("lead_unit", "BDC")]).await;
    assert_eq!(dispatched.status, StatusCode::SEE_OTHER);
    let replied = node.post(&act, &session, &[("csrf", &csrf), ("action", "reply"), ("text", canned)]).await;
    assert_eq!(replied.status, StatusCode::SEE_OTHER, "{}", replied.body);
    let rows = node.store.outbox_for_case(&case_id).await.unwrap();
    let kinds: Vec<&str> = rows.iter().map(|row| row.kind.code()).collect();
    assert_eq!(kinds, ["registered", "replied"], "the dispatch asked for none, the reply for one");
    let sms = sms_table(&node.case_page(&session, &case_id).await);
    assert!(sms.contains("已答复"), "{sms}");
    println!("desk sms rows={} canned_replies_offered={}", rows.len(), page.matches("?canned=").count());
}

// ---------------------------------------------------------------------------------------------------------------
// Issue 15: the citizen's voice (好差评 on the lookup page, the 差评 task, 待补充, 撤回, large text).

/// A reported case answered by the clerk: (登记编号, 查询码, case id, the clerk's session and CSRF token).
async fn answered_case(node: &Node, summary: &str) -> (String, String, String, (String, String)) {
    let mut report = REPORT.to_vec();
    report[2] = ("summary", summary);
    let receipt = node.report(&report).await;
    assert_eq!(receipt.status, StatusCode::OK, "{}", receipt.body);
    let (reg_no, code) = (by_id(&receipt.body, "reg-no"), by_id(&receipt.body, "query-code"));
    let (session, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&session, &reg_no).await;
    for fields in [
        vec![("action", "sign_in"), ("text", "王敏")],
        vec![("action", "resolve"), ("choice", "DONE"), ("text", "已出具分户图，请到不动产窗口领证。")],
    ] {
        let answer = node.act(&session, Some(&csrf), &case_id, &fields).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    }
    (reg_no, code, case_id, (session, csrf))
}

/// Every case's event ids: a refused citizen form must leave all of them as they were.
async fn store_snapshot(node: &Node, case_ids: &[&str]) -> Vec<std::collections::BTreeSet<zhaowo_crdt::EventId>> {
    let mut snapshot = Vec::new();
    for case_id in case_ids {
        snapshot.push(node.store.case_view(case_id).await.unwrap().event_ids);
    }
    snapshot
}

#[tokio::test]
async fn a_citizen_rates_a_reply_and_the_supervision_follows_the_bad_rating_through() {
    let node = node();
    let (reg_no, code, case_id, _) = answered_case(&node, "老房子登记成一套，实际是两套").await;
    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await;
    assert!(lookup.body.contains("评价本次服务") && lookup.body.contains("非常不满意"), "{}", lookup.body);
    assert!(!lookup.body.contains("checked"), "nothing pre-selected on the rating form");
    let (cookie, csrf) = node.citizen_csrf().await;
    let comment = "窗口说材料齐全，到了不动产中心又让补材料";
    let rated = node
        .post(
            "/q/rate",
            &cookie,
            &[
                ("csrf", &csrf),
                ("no", &reg_no),
                ("code", &code),
                ("level", "DISSATISFIED"),
                ("reason", "RUNS"),
                ("reason", "UNCLEAR"),
                ("comment", comment),
            ],
        )
        .await;
    assert_eq!(rated.status, StatusCode::OK, "{}", rated.body);
    assert!(rated.body.contains("评价已提交") && rated.body.contains("督查科正在核实处理"), "{}", rated.body);
    let view = node.store.case_view(&case_id).await.unwrap();
    assert_eq!(view.rating.as_ref().unwrap().level, zhaowo_crdt::model::Satisfaction::Dissatisfied);
    assert!(view.open_bad_review().is_some());

    // The 督查科 sees the task and follows it through; the window may not.
    let (dc_session, dc_csrf) = node.sign_in("dc").await;
    let page = node.case_page(&dc_session, &case_id).await;
    assert!(page.contains("差评整改任务") && page.contains("待核实") && page.contains(comment), "{page}");
    assert!(!page.contains("李建国") || page.contains("id=\"personal\""), "the rating names no rater");
    let (window_session, window_csrf) = node.sign_in("wangmin").await;
    let refused = node
        .act(
            &window_session,
            Some(&window_csrf),
            &case_id,
            &[("action", "bad_review"), ("choice", "VERIFY"), ("text", "x")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("您的角色（窗口）不能执行此操作"), "{}", refused.body);
    let feedback = "经核实窗口告知不完整，已修订告知单并向您致歉";
    for (step, text) in [("VERIFY", "已调取窗口记录核实"), ("RECTIFY", "已修订一次性告知单"), ("FEEDBACK", feedback)]
    {
        let answer = node
            .act(&dc_session, Some(&dc_csrf), &case_id, &[("action", "bad_review"), ("choice", step), ("text", text)])
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{step}: {}", answer.body);
    }
    let page = node.case_page(&dc_session, &case_id).await;
    assert!(page.contains("已反馈"), "{page}");
    // The citizen sees the feedback.
    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await;
    assert_eq!(by_id(&lookup.body, "feedback"), feedback);
    assert!(lookup.body.contains("已反馈") && lookup.body.contains("修改评价"));
    let statistics = node.get("/desk/stats", &dc_session).await;
    assert_eq!(statistics.status, StatusCode::OK);
    println!(
        "好差评 over HTTP: 不满意 with 2 reasons rated on the lookup page, the 督查科 recorded 核实/整改/反馈 (window refused), \
         the citizen reads the 反馈; score counted {:?}",
        node.store.case_view(&case_id).await.unwrap().rating_score()
    );
}

#[tokio::test]
async fn hostile_rating_and_withdrawal_input_gets_a_clear_refusal_and_stores_nothing() {
    let node = node();
    let (reg_a, code_a, case_a, _) = answered_case(&node, "甲案：老房子登记成一套").await;
    let (reg_b, code_b, case_b, _) = answered_case(&node, "乙案：社保转移办不了").await;
    let receipt = node.report(REPORT).await;
    let (reg_c, code_c) = (by_id(&receipt.body, "reg-no"), by_id(&receipt.body, "query-code"));
    let (session, _) = node.sign_in("wangmin").await;
    let case_c = node.case_id_of(&session, &reg_c).await;
    let cases = [case_a.as_str(), case_b.as_str(), case_c.as_str()];
    let (cookie, csrf) = node.citizen_csrf().await;
    let long_comment = "长".repeat(zhaowo_crdt::limits::RATING_COMMENT_CHARS_MAX + 1);
    let huge = "x".repeat(70 * 1024);
    let good = |no: &str, code: &str| {
        format!("csrf={csrf}&no={no}&code={code}&level=DISSATISFIED&reason=SLOW&comment=%E5%A4%AA%E6%85%A2")
    };
    // (what, path, cookie, body, status, message)
    let attempts: Vec<(&str, &str, &str, String, StatusCode, &str)> = vec![
        ("wrong 查询码", "/q/rate", &cookie, good(&reg_a, "ABCDEFGH"), StatusCode::NOT_FOUND, "登记编号或查询码不正确"),
        (
            "another case's 查询码",
            "/q/rate",
            &cookie,
            good(&reg_a, &code_b),
            StatusCode::NOT_FOUND,
            "登记编号或查询码不正确",
        ),
        (
            "another case's number",
            "/q/rate",
            &cookie,
            good(&reg_b, &code_a),
            StatusCode::NOT_FOUND,
            "登记编号或查询码不正确",
        ),
        (
            "unknown number",
            "/q/rate",
            &cookie,
            good("BBC01-2026-9999", &code_a),
            StatusCode::NOT_FOUND,
            "登记编号或查询码不正确",
        ),
        ("no CSRF cookie", "/q/rate", "", good(&reg_a, &code_a), StatusCode::FORBIDDEN, "页面已过期"),
        (
            "no level",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&reason=SLOW"),
            StatusCode::BAD_REQUEST,
            "请选择满意程度",
        ),
        (
            "unknown level",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=6"),
            StatusCode::BAD_REQUEST,
            "请选择满意程度",
        ),
        (
            "差评 without a reason",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=VERY_DISSATISFIED"),
            StatusCode::BAD_REQUEST,
            "请勾选至少一项原因",
        ),
        (
            "unknown reason",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=DISSATISFIED&reason=DROP%20TABLE"),
            StatusCode::BAD_REQUEST,
            "不满意原因不正确",
        ),
        (
            "a reason twice",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=DISSATISFIED&reason=SLOW&reason=SLOW"),
            StatusCode::BAD_REQUEST,
            "每项只勾选一次",
        ),
        (
            "oversized comment",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=BASIC&comment={}", percent(&long_comment)),
            StatusCode::BAD_REQUEST,
            "最多 500 个字",
        ),
        (
            "control character",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=BASIC&comment=a%00b"),
            StatusCode::BAD_REQUEST,
            "控制字符",
        ),
        (
            "body over the limit",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=BASIC&comment={huge}"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "提交内容过长",
        ),
        (
            "level twice",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=BASIC&level=VERY_SATISFIED"),
            StatusCode::BAD_REQUEST,
            "表单内容重复",
        ),
        (
            "invalid UTF-8",
            "/q/rate",
            &cookie,
            format!("csrf={csrf}&no={reg_a}&code={code_a}&level=%FF"),
            StatusCode::BAD_REQUEST,
            "提交内容无法识别",
        ),
        (
            "a case not answered yet",
            "/q/rate",
            &cookie,
            good(&reg_c, &code_c),
            StatusCode::BAD_REQUEST,
            "不能执行此操作",
        ),
        (
            "withdrawal without confirming",
            "/q/withdraw",
            &cookie,
            format!("csrf={csrf}&no={reg_c}&code={code_c}"),
            StatusCode::BAD_REQUEST,
            "请勾选确认后再撤回",
        ),
        (
            "withdrawal with another case's code",
            "/q/withdraw",
            &cookie,
            format!("csrf={csrf}&no={reg_c}&code={code_a}&confirm=yes"),
            StatusCode::NOT_FOUND,
            "登记编号或查询码不正确",
        ),
    ];
    let before = store_snapshot(&node, &cases).await;
    for (what, path, cookie, body, status, message) in &attempts {
        let answer = node.post_raw(path, cookie, body.clone(), client(30)).await;
        assert_eq!(answer.status, *status, "{what}: {}", answer.body);
        assert!(answer.body.contains(message), "{what}: expected `{message}` in {}", answer.body);
        assert!(answer.body.contains("未保存"), "{what}: says nothing was stored");
        assert_eq!(store_snapshot(&node, &cases).await, before, "{what}: the store changed");
    }
    // One valid rating is stored; its replay is refused and stores nothing more.
    let answer = node.post_raw("/q/rate", &cookie, good(&reg_a, &code_a), client(30)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let after_rating = store_snapshot(&node, &cases).await;
    assert_eq!(after_rating[0].len(), before[0].len() + 1);
    assert_eq!(after_rating[1..], before[1..]);
    let replay = node.post_raw("/q/rate", &cookie, good(&reg_a, &code_a), client(30)).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.body);
    assert!(replay.body.contains("没有需要修改的内容"), "{}", replay.body);
    assert_eq!(store_snapshot(&node, &cases).await, after_rating, "the replay changed the store");
    println!(
        "hostile rating input: {} refused with the store unchanged (wrong, other cases' and unknown codes, CSRF, \
         levels, reasons, sizes, duplicates, UTF-8, state, withdrawal), 1 rating stored, its replay refused",
        attempts.len()
    );
}

#[tokio::test]
async fn a_citizen_sees_what_a_held_case_waits_for_withdraws_it_and_large_text_is_remembered() {
    let node = node();
    let receipt = node.report(REPORT).await;
    let (reg_no, code) = (by_id(&receipt.body, "reg-no"), by_id(&receipt.body, "query-code"));
    let (session, csrf) = node.sign_in("wangmin").await;
    let case_id = node.case_id_of(&session, &reg_no).await;
    node.act(&session, Some(&csrf), &case_id, &[("action", "sign_in"), ("text", "王敏")]).await;
    // The 待补充 text is shown to the citizen: a phone number in it is refused.
    let refused =
        node.act(&session, Some(&csrf), &case_id, &[("action", "suspend"), ("text", "请致电13812345678补材料")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("会向群众显示"), "{}", refused.body);
    let waiting = "请补充1998年房改售房合同复印件";
    let held = node.act(&session, Some(&csrf), &case_id, &[("action", "suspend"), ("text", waiting)]).await;
    assert_eq!(held.status, StatusCode::SEE_OTHER, "{}", held.body);
    let lookup = node.get(&format!("/q?no={reg_no}&code={code}"), "").await;
    assert!(lookup.body.contains(waiting) && lookup.body.contains("暂停计时"), "{}", lookup.body);
    assert!(lookup.body.contains("撤回诉求") && !lookup.body.contains("评价本次服务"));

    let (cookie, citizen_csrf) = node.citizen_csrf().await;
    let withdrawn = node
        .post(
            "/q/withdraw",
            &cookie,
            &[("csrf", &citizen_csrf), ("no", &reg_no), ("code", &code), ("reason", "已自行解决"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(withdrawn.status, StatusCode::OK, "{}", withdrawn.body);
    assert!(withdrawn.body.contains("诉求已撤回") && withdrawn.body.contains("已撤回"));
    let view = node.store.case_view(&case_id).await.unwrap();
    assert_eq!(view.status, Status::Withdrawn);
    assert_eq!(view.timeline.last().unwrap().role, Role::Citizen);

    // 适老化: the switch sets a cookie for a year and returns to the page; only local paths are followed.
    let switch = node.get("/text-size?large=1&back=%2Fq%3Fno%3D1", "").await;
    assert_eq!(switch.status, StatusCode::SEE_OTHER);
    assert_eq!(switch.headers[header::LOCATION], "/q?no=1");
    assert!(switch.set_cookies().iter().any(|c| c.starts_with("zhaowo_text=large") && c.contains("Max-Age=31536000")));
    for back in ["%2F%2Fevil.example%2F", "%2F%0D%0ASet-Cookie%3A%20x%3Dy", "https%3A%2F%2Fevil.example", "%2F%5Cevil"]
    {
        let offsite = node.get(&format!("/text-size?large=1&back={back}"), "").await;
        assert_eq!(offsite.status, StatusCode::SEE_OTHER);
        assert_eq!(offsite.headers[header::LOCATION], "/", "{back}");
    }
    let large = node.get("/q", "zhaowo_text=large").await;
    assert!(large.body.contains("<body class=\"large\">") && large.body.contains("标准字号"), "{}", large.body);
    let normal = node.get("/q", "").await;
    assert!(normal.body.contains("<body>") && normal.body.contains("大字模式"));
    println!(
        "citizen follow-through: 待补充 text shown (a phone in it refused), 撤回 by the citizen, large text on and off"
    );
}
