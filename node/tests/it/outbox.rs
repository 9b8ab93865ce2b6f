//! The SMS outbox (issue 15 §4) against a real HTTP server standing in for the hall's SMS platform (axum on
//! 127.0.0.1): two syncing nodes (an admin PC and a window PC) both see every event; the platform is down (nothing
//! listens), then answers 500, then answers too slowly (after taking the message: the retry carries the same
//! idempotency key and is deduped), then recovers. Each event's message is delivered exactly once, by the node that
//! authored the event, with the 查询码 in the registration's text. The figures are printed.

#![allow(clippy::print_stdout)]

use crate::hall_sync::init;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zhaowo_crdt::model::{Channel, Nature, Priority, Role};
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{CaseDoc, Command, QueryCode, Registration};
use zhaowo_node::config::SmsEndpoint;
use zhaowo_node::home::{Home, now_ms};
use zhaowo_node::outbox::OutboxTiming;
use zhaowo_node::store::{OutboxRow, OutboxState};
use zhaowo_node::{Node, NodeOptions};

const CONVERGE: Duration = Duration::from_secs(30);
const TOKEN: &str = "platform-token-1";

const UP: u8 = 0;
const ERROR_500: u8 = 1;
const SLOW: u8 = 2;
/// The platform refuses the message (a bad phone number, say): no retry.
const REJECT: u8 = 3;
/// How long the slow platform takes to answer: past the senders' request timeout below.
const SLOW_ANSWER: Duration = Duration::from_millis(1500);

/// One message the platform took: who posted it, to which phone, what text.
#[derive(Debug, Clone)]
struct Delivered {
    node: String,
    phone: String,
    text: String,
}

#[derive(Debug, Default)]
struct PlatformLog {
    /// Every POST: (node path, idempotency key, mode).
    posts: Vec<(String, String, u8)>,
    /// Messages sent to phones, by idempotency key (the platform dedupes on it).
    delivered: BTreeMap<String, Delivered>,
    deduped: usize,
}

#[derive(Debug, Default)]
struct Platform {
    mode: AtomicU8,
    log: Mutex<PlatformLog>,
}

async fn receive(
    State(platform): State<Arc<Platform>>,
    UrlPath(node): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return StatusCode::UNAUTHORIZED;
    }
    let json: serde_json::Value = serde_json::from_slice(&body).expect("the outbox posts JSON");
    let key = json["idempotency_key"].as_str().expect("an idempotency key").to_owned();
    assert_eq!(headers.get("idempotency-key").and_then(|v| v.to_str().ok()), Some(key.as_str()));
    let mode = platform.mode.load(Ordering::SeqCst);
    {
        let mut log = platform.log.lock().unwrap();
        log.posts.push((node.clone(), key.clone(), mode));
        if mode == ERROR_500 {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        if mode == REJECT {
            return StatusCode::UNPROCESSABLE_ENTITY;
        }
        // The platform sends the SMS (once per key), then answers — slowly in the slow phase.
        if log.delivered.contains_key(&key) {
            log.deduped += 1;
        } else {
            let delivered = Delivered {
                node,
                phone: json["phone"].as_str().unwrap_or_default().to_owned(),
                text: json["text"].as_str().unwrap_or_default().to_owned(),
            };
            log.delivered.insert(key, delivered);
        }
    }
    if mode == SLOW {
        tokio::time::sleep(SLOW_ANSWER).await;
    }
    StatusCode::OK
}

async fn serve_platform(addr: SocketAddr, platform: Arc<Platform>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("the reserved port is free again");
    let router = axum::Router::new().route("/sms/{node}", axum::routing::post(receive)).with_state(platform);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
}

async fn start(mut home: Home, peers: Vec<SocketAddr>, platform: SocketAddr, name: &str) -> Node {
    let url = format!("http://{platform}/sms/{name}");
    home.config.sms = Some(SmsEndpoint::parse(&url, Some(TOKEN.to_owned())).unwrap());
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut options = NodeOptions::recommended(loopback, loopback);
    options.listen = Some(loopback);
    options.config_peers = false;
    options.peers = peers;
    options.redial_min = Duration::from_millis(50);
    options.redial_max = Duration::from_millis(500);
    options.poll_interval = Duration::from_millis(100);
    options.outbox = OutboxTiming {
        request_timeout: Duration::from_millis(300),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        give_up_after_ms: 60_000,
        poll_interval: Duration::from_millis(50),
    };
    Node::spawn(home, options).await.unwrap()
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < CONVERGE, "{what}: not within {CONVERGE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Registers a case on `node` as its desk does (the receipt's code kept for the SMS); returns case id and code.
async fn register(node: &Node, phone: &str, sms_ok: bool) -> (String, QueryCode) {
    let home = node.home();
    let hall = node.live().hall().hall.clone();
    let ctx = home.ctx("张三").unwrap();
    let year = Date::of_ms(ctx.now_ms).year;
    let code = QueryCode::from_entropy(zhaowo_node::home::entropy().unwrap() as u64);
    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Help,
        category: "HUZHENG".to_owned(),
        modes: BTreeSet::new(),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: "户口迁移需要哪些材料".to_owned(),
        detail: "想把户口从外区迁入，需要准备哪些材料。".to_owned(),
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: PersonalData {
            name: Some("王小明".to_owned()),
            phone: Some(phone.to_owned()),
            callback_ok: true,
            sms_ok,
            ..PersonalData::default()
        },
    };
    let actor = home.identity.new_actor().unwrap();
    let receipt = code.clone();
    let build: zhaowo_node::store::RegisterFn = Box::new(move |reg_no| {
        CaseDoc::register(&ctx, &hall, actor, reg_no, &receipt, registration).map(|(doc, _)| doc)
    });
    let registered = node.store().register_new_with_receipt(&home.config.window, year, &code, build).await.unwrap();
    (registered.ack.case_id, code)
}

async fn rows(node: &Node, case_id: &str) -> Vec<OutboxRow> {
    node.store().outbox_for_case(case_id).await.unwrap()
}

/// Every row of `case_id` on `node` is queued with at least `attempts` attempts and a reason containing `reason`.
async fn retrying(node: &Node, case_id: &str, attempts: u32, reason: &str) -> bool {
    let rows = rows(node, case_id).await;
    !rows.is_empty()
        && rows
            .iter()
            .all(|row| row.state == OutboxState::Queued && row.attempts >= attempts && row.reason.contains(reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_s_sms_is_delivered_once_by_its_author_through_down_500_slow_and_recovery() {
    let dirs = tempfile::tempdir().unwrap();
    let (admin_dir, window_dir) = (dirs.path().join("admin"), dirs.path().join("window"));
    let mut admin = init(&admin_dir, Some("测试大厅"), "BBC01", Role::Admin);
    let mut window = init(&window_dir, None, "1F02", Role::Window);
    let file = admin.enroll(&window.identity.node_id(), "1F02", Role::Window, "综合受理窗口", now_ms()).unwrap();
    window.join(&serde_json::to_vec(&file).unwrap()).unwrap();

    // The platform's address, reserved and released: nothing listens there until the platform comes up.
    let platform_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let platform = Arc::new(Platform::default());
    let admin = start(admin, vec![], platform_addr, "admin").await;
    let window = start(window, vec![admin.sync_addr().unwrap()], platform_addr, "window").await;
    let status = window.status();
    wait_until("the window node settles with the admin", || {
        let settled = status.peers().iter().any(|p| p.connected && p.settled);
        async move { settled }
    })
    .await;

    // Down: the platform does not listen. A case on each node (SMS agreed), one without SMS consent.
    let (case_a, code_a) = register(&admin, "13812345678", true).await;
    let (case_b, code_b) = register(&window, "13987654321", true).await;
    let (case_c, _) = register(&admin, "13700001111", false).await;
    assert!(rows(&admin, &case_c).await.is_empty(), "no consent, no message");
    let down = wait_until("both nodes retry while the platform is down", || async {
        retrying(&admin, &case_a, 2, "无法连接").await && retrying(&window, &case_b, 2, "无法连接").await
    })
    .await;
    wait_until("each node holds the other's case", || async {
        window.store().case_view(&case_a).await.is_ok() && admin.store().case_view(&case_b).await.is_ok()
    })
    .await;
    assert!(rows(&window, &case_a).await.is_empty(), "the window node saw the admin's event and queued nothing");
    assert!(rows(&admin, &case_b).await.is_empty(), "the admin node saw the window's event and queued nothing");

    // 500: the platform answers but fails.
    platform.mode.store(ERROR_500, Ordering::SeqCst);
    serve_platform(platform_addr, platform.clone()).await;
    let failing = wait_until("both nodes retry after HTTP 500", || async {
        retrying(&admin, &case_a, 3, "HTTP 500").await && retrying(&window, &case_b, 3, "HTTP 500").await
    })
    .await;

    // Slow: the platform takes the message, then answers after the senders gave up waiting; they retry with the same
    // idempotency key and the platform dedupes.
    platform.mode.store(SLOW, Ordering::SeqCst);
    let slow = wait_until("both nodes time out on the slow platform", || async {
        retrying(&admin, &case_a, 4, "未应答").await && retrying(&window, &case_b, 4, "未应答").await
    })
    .await;

    // Recovery.
    platform.mode.store(UP, Ordering::SeqCst);
    let recovered = wait_until("both messages are sent", || async {
        rows(&admin, &case_a).await.iter().all(|row| row.state == OutboxState::Sent)
            && rows(&window, &case_b).await.iter().all(|row| row.state == OutboxState::Sent)
    })
    .await;

    // A later event by the window node on the admin's case: the window node sends it.
    let hall = Arc::new(window.live().hall().hall.clone());
    let ctx = window.home().ctx("李四").unwrap();
    let reply =
        Command::PublishReply { text: "请携带户口簿和身份证原件到二楼窗口办理。".to_owned() };
    let ack = window.store().apply(&case_a, ctx, hall, reply).await.unwrap();
    let reply_event = ack.event_id.unwrap().to_string();
    wait_until("the reply's message is sent", || async {
        rows(&window, &case_a).await.iter().any(|row| row.event_id == reply_event && row.state == OutboxState::Sent)
    })
    .await;
    // Let every sender run a few more rounds: nothing else may be posted.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut events = BTreeSet::new();
    let mut attempts = 0;
    for node in [&admin, &window] {
        for case in [&case_a, &case_b, &case_c] {
            for row in rows(node, case).await {
                assert_eq!(row.state, OutboxState::Sent, "{row:?}");
                attempts += row.attempts;
                events.insert(row.event_id);
            }
        }
    }
    let log = platform.log.lock().unwrap();
    assert_eq!(events.len(), 3, "three events asked for a message: two registrations and a reply");
    assert_eq!(log.delivered.len(), 3, "each delivered once: {:?}", log.delivered.keys());
    for key in &events {
        let senders: BTreeSet<&str> =
            log.posts.iter().filter(|(_, k, _)| k == key).map(|(node, _, _)| node.as_str()).collect();
        assert_eq!(senders.len(), 1, "only the author posts {key}: {senders:?}");
        assert!(log.delivered.contains_key(key));
    }
    let by_case = |code: &QueryCode| log.delivered.values().find(|d| d.text.contains(code.as_str())).cloned();
    let a = by_case(&code_a).expect("the admin's registration SMS carries its 查询码");
    let b = by_case(&code_b).expect("the window's registration SMS carries its 查询码");
    assert_eq!((a.node.as_str(), a.phone.as_str()), ("admin", "13812345678"));
    assert_eq!((b.node.as_str(), b.phone.as_str()), ("window", "13987654321"));
    let reply_sms = &log.delivered[&reply_event];
    assert_eq!(reply_sms.node, "window");
    assert!(reply_sms.text.contains("请携带户口簿"), "the reply's text is in the SMS");
    let posts_in = |mode: u8| log.posts.iter().filter(|(_, _, m)| *m == mode).count();
    println!(
        "sms outbox events=3 delivered={} attempts={} (refused while down: {}) posts={} (500: {}, slow: {}, up: {}) deduped_by_key={} \
         down_ms={} failing_ms={} slow_ms={} recover_ms={} per_node admin={} window={}",
        log.delivered.len(),
        attempts,
        attempts as usize - log.posts.len(),
        log.posts.len(),
        posts_in(ERROR_500),
        posts_in(SLOW),
        posts_in(UP),
        log.deduped,
        down.as_millis(),
        failing.as_millis(),
        slow.as_millis(),
        recovered.as_millis(),
        log.posts.iter().filter(|(node, _, _)| node == "admin").count(),
        log.posts.iter().filter(|(node, _, _)| node == "window").count(),
    );
    let delivered_before = log.delivered.len();
    drop(log);

    // The platform refuses a message: failed at once with the status, shown as 发送失败, never retried.
    platform.mode.store(REJECT, Ordering::SeqCst);
    let (case_d, _) = register(&admin, "13600002222", true).await;
    wait_until("the refused message fails", || async {
        rows(&admin, &case_d).await.iter().any(|row| row.state == OutboxState::Failed)
    })
    .await;
    let refused = rows(&admin, &case_d).await;
    assert_eq!((refused[0].attempts, refused[0].reason.as_str()), (1, "短信平台拒收（HTTP 422）"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = platform.log.lock().unwrap();
    let posts_d = log.posts.iter().filter(|(_, key, _)| *key == refused[0].event_id).count();
    assert_eq!((posts_d, log.delivered.len()), (1, delivered_before), "posted once, not retried, not delivered");
    println!("sms outbox refused: attempts=1 reason={}", refused[0].reason);
    drop(log);
    admin.shutdown().await;
    window.shutdown().await;
}
