//! Every HTTP edge holds (issue 14 §2, §3): slow and hostile clients against real listeners on 127.0.0.x, rate-limit
//! tables flooded from distinct addresses, the per-account sign-in lockout, and public text that must stay
//! public-safe (phone and id numbers in any disguise, invalid UTF-8, bidi overrides and zero-width characters, bad
//! Open311 coordinates): each refused input gets a clear 4xx and leaves the store as it was.
//!
//! Helpers are this module's own (not shared with `http.rs`) so the two files change independently.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use zhaowo_node::http::HttpOptions;
use zhaowo_node::store::Store;

use crate::http::{PASSWORD, home_in};

/// A node's two routers in process (requests carry a faked `ConnectInfo`).
struct Routers {
    _dir: tempfile::TempDir,
    desk: Router,
    public: Router,
    store: Arc<Store>,
}

fn routers_with(configure: impl FnOnce(&mut HttpOptions)) -> Routers {
    let dir = tempfile::tempdir().unwrap();
    let home = home_in(dir.path());
    let store = Arc::new(home.open_store().unwrap());
    let mut http = HttpOptions::recommended("127.0.0.1:0".parse().unwrap(), "http://192.168.1.20:8080".to_owned());
    configure(&mut http);
    let (desk, public) = zhaowo_node::http::routers(home, store.clone(), http);
    Routers { _dir: dir, desk, public, store }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn cookie(&self, name: &str) -> String {
        let prefix = format!("{name}=");
        let set = self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned());
        let cookie = set.into_iter().find(|c| c.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} cookie"));
        cookie.split(';').next().unwrap().to_owned()
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

async fn call(router: &Router, mut request: Request<Body>, from: IpAddr) -> Answer {
    request.extensions_mut().insert(ConnectInfo(SocketAddr::new(from, 40000)));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Answer { status, headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
}

async fn get(router: &Router, path: &str, cookie: &str, from: IpAddr) -> Answer {
    call(router, Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap(), from).await
}

async fn post_raw(router: &Router, path: &str, cookie: &str, body: Vec<u8>, from: IpAddr) -> Answer {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .unwrap();
    call(router, request, from).await
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    fields.iter().map(|(k, v)| format!("{}={}", percent(k), percent(v))).collect::<Vec<_>>().join("&").into_bytes()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The report form's CSRF cookie and token.
async fn citizen_csrf(router: &Router, from: IpAddr) -> (String, String) {
    let form = get(router, "/r/BBC01", "", from).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    (form.cookie("zw_csrf"), hidden(&form.body, "csrf"))
}

const REPORT: &[(&str, &str)] =
    &[("nature", "QZ"), ("category", "BDC"), ("summary", "老房子登记成一套，实际是两套"), ("detail", "材料缺失。")];

/// A citizen report with `summary` (and `extra` fields) from `from`.
async fn report(router: &Router, from: IpAddr, summary: &str, extra: &[(&str, &str)]) -> Answer {
    let (cookie, csrf) = citizen_csrf(router, from).await;
    let mut fields = vec![("csrf", csrf.as_str())];
    fields.extend(REPORT.iter().filter(|(k, _)| *k != "summary" && !extra.iter().any(|(e, _)| e == k)));
    fields.push(("summary", summary));
    fields.extend_from_slice(extra);
    post_raw(router, "/r/BBC01", &cookie, encode(&fields), from).await
}

/// Signs in at the desk router from `from`: the answer of the login post.
async fn sign_in(desk: &Router, username: &str, password: &str, from: IpAddr) -> Answer {
    let form = get(desk, "/desk/login", "", from).await;
    let cookie = form.cookie("zw_csrf");
    let csrf = hidden(&form.body, "csrf");
    let fields = [("csrf", csrf.as_str()), ("username", username), ("password", password)];
    post_raw(desk, "/desk/login", &cookie, encode(&fields), from).await
}

// ---------------------------------------------------------------------------------------------------------------
// §2: slow clients against real listeners

/// A served node: the desk and the public listener on 127.0.0.1, ports read back.
async fn served(configure: impl FnOnce(&mut HttpOptions)) -> (tempfile::TempDir, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let home = Arc::new(home_in(dir.path()));
    let store = Arc::new(home.open_store().unwrap());
    let desk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (desk_addr, public_addr) = (desk.local_addr().unwrap(), public.local_addr().unwrap());
    let mut http = HttpOptions::recommended(desk_addr, format!("http://{public_addr}"));
    configure(&mut http);
    tokio::spawn(zhaowo_node::http::serve_on(home, store, desk, public, http));
    (dir, desk_addr, public_addr)
}

/// A connection from `source` (any 127.0.0.x: all of 127/8 is loopback on Linux) to `to`.
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// Writes all of `bytes` (tokio's `io-util` is not built for this workspace: readiness and `try_write`).
async fn write_all(stream: &tokio::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Reads what is there (0: the peer closed).
async fn read_some(stream: &tokio::net::TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
}

/// A whole GET over a fresh connection from `source`, bounded in time: the status, or `None` if no answer came.
async fn get_over_tcp(source: Ipv4Addr, to: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let stream = connect_from(source, to).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
        write_all(&stream, request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match read_some(&stream, &mut buf).await.ok()? {
                0 => break,
                n => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten()
}

/// Reads until the server closes the connection (EOF or reset) or `deadline`; returns when it closed, if it did.
async fn closed_by_server(stream: tokio::net::TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, read_some(&stream, &mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue, // a 408 answer before the close
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_the_desk_and_the_citizen_port_still_answer() {
    const HEADER_MS: u64 = 1_500;
    const PER_ADDRESS: usize = 16;
    const PUBLIC_MAX: usize = 256;
    let (_dir, desk, public) = served(|o| {
        o.header_read_timeout_ms = HEADER_MS;
        o.connections_per_address_max = PER_ADDRESS;
        o.public_connections_max = PUBLIC_MAX;
    })
    .await;
    // 300 slow clients from 20 addresses (15 each, under the per-address cap): each sends half a request head and
    // then nothing. Well under the process's file-descriptor limit (both ends count: 600 descriptors).
    let started = Instant::now();
    let mut slow = Vec::new();
    for n in 0..300u32 {
        let source = Ipv4Addr::new(127, 0, 1, 1 + (n % 20) as u8);
        let stream = connect_from(source, public).await.expect("connect");
        write_all(&stream, b"GET /r/BBC01 HTTP/1.1\r\nHost: hall\r\nX-Slow: ").await.unwrap();
        slow.push(stream);
    }
    // While they hang: the desk and the citizen port answer a normal request.
    let desk_status = get_over_tcp(Ipv4Addr::LOCALHOST, desk, "/desk/login").await;
    let public_status = get_over_tcp(Ipv4Addr::new(127, 0, 2, 1), public, "/r/BBC01").await;
    assert_eq!(desk_status, Some(200), "the desk answers while 300 slow clients hang on the public port");
    assert_eq!(public_status, Some(200), "the citizen port answers a normal client too");

    // One address over its cap: the connections beyond it are closed at once.
    let greedy = Ipv4Addr::new(127, 0, 3, 1);
    let mut greedy_streams = Vec::new();
    for _ in 0..PER_ADDRESS + 8 {
        let stream = connect_from(greedy, public).await.expect("connect");
        let _ = write_all(&stream, b"GET / HTTP/1.1\r\n").await;
        greedy_streams.push(stream);
    }
    let refused_deadline = Instant::now() + Duration::from_millis(HEADER_MS / 2);
    let mut greedy_refused = 0;
    for stream in greedy_streams.drain(PER_ADDRESS..) {
        greedy_refused += usize::from(closed_by_server(stream, refused_deadline).await.is_some());
    }
    assert_eq!(greedy_refused, 8, "connections beyond the per-address cap are refused at once");

    // Past the cap of the listener (256 held: 300 slow + 16 greedy were offered), new clients still get in: the
    // oldest connection still waiting for its head is closed to make room.
    let late_status = get_over_tcp(Ipv4Addr::new(127, 0, 2, 2), public, "/open311/v2/services.json").await;
    assert_eq!(late_status, Some(200), "a new citizen gets in with the listener full of slow clients");

    // Every slow connection is closed by the server within the header timeout (plus scheduling slack).
    let deadline = started + Duration::from_millis(HEADER_MS + 3_000);
    let mut closed = 0;
    let mut last_close = Duration::ZERO;
    let waits = slow.into_iter().chain(greedy_streams).map(|stream| closed_by_server(stream, deadline));
    for at in futures_join_all(waits).await {
        if let Some(at) = at {
            closed += 1;
            last_close = last_close.max(at - started);
        }
    }
    println!(
        "slow clients: 300 slow + {} greedy held, desk={desk_status:?} citizen={public_status:?} late={late_status:?}, \
         {greedy_refused} over the per-address cap refused at once, {closed}/{} closed by the server, the last \
         after {} ms (header timeout {HEADER_MS} ms)",
        PER_ADDRESS + 8,
        300 + PER_ADDRESS,
        last_close.as_millis()
    );
    assert_eq!(closed, 300 + PER_ADDRESS, "every slow connection closed within the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_and_an_idle_keep_alive_are_closed() {
    // As in production, the header timeout is the shorter: it also bounds the wait for a kept-alive connection's
    // next request, while the idle timeout catches a connection stalled in the middle of one.
    const IDLE_MS: u64 = 2_000;
    const HEADER_MS: u64 = 1_000;
    let (_dir, _desk, public) = served(|o| {
        o.idle_timeout_ms = IDLE_MS;
        o.header_read_timeout_ms = HEADER_MS;
        o.body_read_timeout_ms = 30_000;
    })
    .await;
    // A form whose head is whole but whose body never comes: no byte moves, the idle timeout closes it.
    let started = Instant::now();
    let stalled = connect_from(Ipv4Addr::new(127, 0, 4, 1), public).await.unwrap();
    let head = "POST /r/BBC01 HTTP/1.1\r\nHost: hall\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 100\r\n\r\nsummary=";
    write_all(&stalled, head.as_bytes()).await.unwrap();
    let stalled_closed = closed_by_server(stalled, started + Duration::from_millis(IDLE_MS + 3_000)).await;
    // A kept-alive connection after one answered request: closed when no next head comes within the header timeout.
    let kept = connect_from(Ipv4Addr::new(127, 0, 4, 2), public).await.unwrap();
    let asked = Instant::now();
    write_all(&kept, b"GET /open311/v2/services.json HTTP/1.1\r\nHost: hall\r\n\r\n").await.unwrap();
    let kept_closed = closed_by_server(kept, asked + Duration::from_millis(HEADER_MS + 3_000)).await;
    let stalled_ms = stalled_closed.map(|at| (at - started).as_millis());
    let kept_ms = kept_closed.map(|at| (at - asked).as_millis());
    println!(
        "idle: a stalled body closed after {stalled_ms:?} ms (idle timeout {IDLE_MS} ms), an idle keep-alive after \
         {kept_ms:?} ms (header timeout {HEADER_MS} ms)"
    );
    assert!(stalled_ms.is_some_and(|ms| ms >= u128::from(IDLE_MS)), "closed by the idle timeout, not before");
    assert!(
        kept_ms.is_some_and(|ms| ms >= u128::from(HEADER_MS) && ms < u128::from(IDLE_MS)),
        "kept alive until the header timeout, closed by it"
    );
}

/// Polls every future to completion concurrently (no futures crate in the tree).
async fn futures_join_all<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// §2: rate-limit tables and the account lockout

#[tokio::test]
async fn a_flooded_lookup_table_locks_out_neither_a_new_citizen_nor_the_staff_sign_in() {
    const TABLE: usize = 500;
    let node = routers_with(|o| o.rate_clients_max = TABLE);
    // 4 × the table's size of lookups, each from its own address, on the public port.
    let flood = 4 * TABLE as u32;
    let mut limited = 0;
    for n in 0..flood {
        let answer = get(&node.public, "/q?no=BBC01-2026-0001&code=AAAAAAAA", "", ip(n)).await;
        limited += usize::from(answer.status == StatusCode::TOO_MANY_REQUESTS);
    }
    let before = node.store.counts().await.unwrap().docs;
    let citizen = report(&node.public, ip(1_000_000), "路灯不亮", &[]).await;
    let lookup = get(&node.public, "/q?no=BBC01-2026-0001&code=AAAAAAAA", "", ip(1_000_001)).await;
    let staff = sign_in(&node.desk, "wangmin", PASSWORD, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let after = node.store.counts().await.unwrap().docs;
    println!(
        "flood: {flood} lookups from distinct addresses (table {TABLE}): {limited} limited; then new citizen report \
         {}, new lookup {}, staff sign-in {}, cases {before} → {after}",
        citizen.status, lookup.status, staff.status
    );
    assert_eq!(limited, 0, "no flooding address was over its own limit");
    assert_eq!(citizen.status, StatusCode::OK, "{}", citizen.body);
    assert_eq!(lookup.status, StatusCode::NOT_FOUND, "a wrong code, not a rate limit: {}", lookup.body);
    assert_eq!(staff.status, StatusCode::SEE_OTHER, "{}", staff.body);
    assert_eq!(after, before + 1);
}

#[tokio::test]
async fn an_account_is_locked_after_failed_sign_ins_from_many_addresses() {
    let node = routers_with(|_| {});
    // Password guessing spread over addresses, one try each: the per-address limit never triggers.
    let mut unauthorized = 0;
    let mut locked = 0;
    for n in 0..8 {
        let answer = sign_in(&node.desk, "wangmin", "wrong-password", ip(n)).await;
        match answer.status {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => locked += 1,
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    // Now even the right password is refused for this account, with a clear page and a Retry-After...
    let right = sign_in(&node.desk, "wangmin", PASSWORD, ip(100)).await;
    let retry = right.headers.get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    // ... while another account signs in from the same address.
    let other = sign_in(&node.desk, "dc", PASSWORD, ip(100)).await;
    println!(
        "account lockout: 8 wrong passwords from 8 addresses → {unauthorized} refused as wrong, {locked} as locked; \
         right password then {} (Retry-After {retry:?}); another account {}",
        right.status, other.status
    );
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS, "{}", right.body);
    assert!(right.body.contains("暂时锁定"), "{}", right.body);
    assert!(retry.is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    assert!(locked > 0, "the later wrong guesses were refused without a password check");
    assert_eq!(other.status, StatusCode::SEE_OTHER, "{}", other.body);
}

// ---------------------------------------------------------------------------------------------------------------
// §3: public text

/// Summaries that disguise a phone, an id number or an e-mail address: every one must be refused.
const DISGUISED: &[&str] = &[
    "电话138.1234.1234",
    "电话138/1234/1234",
    "电话１３８１２３４１２３４",
    "电话一三八一二三四一二三四",
    "电话幺三八幺二三四幺二三四",
    "电话①③⑧①②③④①②③④",
    "电话l38l234l234",
    "电话13812345O78",
    "电话 138 1234 1234",
    "电话(027)8555-1234",
    "身份证42010619900101123X",
    "身份证 420106 19900101 123x",
    "邮箱 li.jianguo@example.com",
    "邮箱 lijianguo＠qq．com",
];

#[tokio::test]
async fn disguised_numbers_and_addresses_in_the_public_summary_are_refused() {
    let node = routers_with(|o| o.citizen_reports_per_period = 1_000);
    let before = node.store.counts().await.unwrap().docs;
    let mut refused = 0;
    for (n, summary) in DISGUISED.iter().enumerate() {
        let answer = report(&node.public, ip(n as u32), summary, &[]).await;
        if answer.status == StatusCode::BAD_REQUEST && answer.body.contains("诉求摘要会公开显示") {
            refused += 1;
        } else {
            println!("NOT refused: {summary:?} → {}", answer.status);
        }
    }
    // Ordinary summaries with numbers still pass (a date, a house number, a count).
    let ordinary = ["2026年11月25日起漏水", "3号楼2单元502室", "等了45分钟"];
    let mut accepted = 0;
    for (n, summary) in ordinary.iter().enumerate() {
        let answer = report(&node.public, ip(100 + n as u32), summary, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{summary}: {}", answer.body);
        accepted += 1;
    }
    let after = node.store.counts().await.unwrap().docs;
    println!(
        "public summary: {refused}/{} disguised numbers refused, {accepted}/{} ordinary accepted, cases {before} → {after}",
        DISGUISED.len(),
        ordinary.len()
    );
    assert_eq!(refused, DISGUISED.len());
    assert_eq!(after, before + ordinary.len() as i64);
}

#[tokio::test]
async fn invalid_utf8_bidi_and_zero_width_text_get_a_400_and_store_nothing() {
    let node = routers_with(|o| o.citizen_reports_per_period = 1_000);
    let before = node.store.counts().await.unwrap().docs;
    let mut rows = Vec::new();
    // Invalid UTF-8, percent-encoded and raw, in the summary and in the detail.
    let (cookie, csrf) = citizen_csrf(&node.public, ip(1)).await;
    for (what, field, raw) in [
        ("percent-encoded FF FE", "summary", b"%FF%FE".to_vec()),
        ("truncated sequence", "detail", b"%E4%BD".to_vec()),
        ("raw byte 0xFF", "summary", vec![0xFF]),
    ] {
        let mut body = format!("csrf={csrf}&nature=QZ&category=BDC&").into_bytes();
        for (k, v) in REPORT.iter().filter(|(k, _)| *k != field && *k != "nature" && *k != "category") {
            body.extend_from_slice(format!("{k}={}&", percent(v)).as_bytes());
        }
        body.extend_from_slice(format!("{field}=abc").as_bytes());
        body.extend_from_slice(&raw);
        let answer = post_raw(&node.public, "/r/BBC01", &cookie, body, ip(1)).await;
        rows.push(format!("{what}={}", answer.status.as_u16()));
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {}", answer.body);
        assert!(answer.body.contains("无法识别的字符"), "{what}: {}", answer.body);
    }
    // Bidi overrides and zero-width characters, in the summary and in the other fields.
    for (what, field, text) in [
        ("RLO in summary", "summary", "路灯\u{202E}不亮"),
        ("LRI in summary", "summary", "路灯\u{2066}不亮"),
        ("ZWSP in summary", "summary", "路灯\u{200B}不亮"),
        ("ZWJ in summary", "summary", "路\u{200D}灯"),
        ("BOM in summary", "summary", "\u{FEFF}路灯不亮"),
        ("RLO in detail", "detail", "材料\u{202E}缺失"),
        ("ZWSP in name", "name", "李\u{200B}建国"),
    ] {
        let answer = if field == "summary" {
            report(&node.public, ip(2), text, &[]).await
        } else {
            report(&node.public, ip(2), "路灯不亮", &[(field, text)]).await
        };
        rows.push(format!("{what}={}", answer.status.as_u16()));
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {}", answer.body);
        assert!(answer.body.contains("不可见"), "{what}: {}", answer.body);
    }
    let after = node.store.counts().await.unwrap().docs;
    println!("hidden text: {} refused ({}), cases {before} → {after}", rows.len(), rows.join(", "));
    assert_eq!(after, before);
}

#[tokio::test]
async fn open311_refuses_bad_coordinates_and_hidden_text() {
    let node = routers_with(|o| o.citizen_reports_per_period = 1_000);
    let before = node.store.counts().await.unwrap().docs;
    let mut rows = Vec::new();
    for (lat, long) in
        [("abc", "114.3"), ("999", "114.3"), ("NaN", "114.3"), ("<script>", "114.3"), ("30.5", "inf"), ("30.5", "")]
    {
        let body = encode(&[("service_code", "BDC"), ("description", "路灯不亮"), ("lat", lat), ("long", long)]);
        let answer = post_raw(&node.public, "/open311/v2/requests.json", "", body, ip(3)).await;
        rows.push(format!("{lat}/{long}={}", answer.status.as_u16()));
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{lat}/{long}: {}", answer.body);
        assert!(answer.body.contains("lat") || answer.body.contains("long"), "{}", answer.body);
    }
    for (what, body) in [
        ("invalid UTF-8", b"service_code=BDC&description=%FF%FE".to_vec()),
        ("RLO", encode(&[("service_code", "BDC"), ("description", "路灯\u{202E}不亮")])),
    ] {
        let answer = post_raw(&node.public, "/open311/v2/requests.json", "", body, ip(3)).await;
        rows.push(format!("{what}={}", answer.status.as_u16()));
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {}", answer.body);
    }
    let good = encode(&[("service_code", "BDC"), ("description", "路灯不亮"), ("lat", "30.58"), ("long", "114.27")]);
    let accepted = post_raw(&node.public, "/open311/v2/requests.json", "", good, ip(3)).await;
    let after = node.store.counts().await.unwrap().docs;
    println!(
        "open311: {} refused ({}), good coordinates {}, cases {before} → {after}",
        rows.len(),
        rows.join(", "),
        accepted.status
    );
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(after, before + 1);
}
