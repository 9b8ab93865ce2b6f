//! The hall document over real QUIC and real SQLite: an admin node and a window node set up through `Home` (init,
//! enroll, join) as `zhaowo demo` does. An account the admin adds after the window joined reaches the window node's
//! `hall.automerge` (what the desk's sign-in reads); a hall change the window node forges with its own key is refused
//! and changes nothing. Figures are printed, never asserted against a clock.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zhaowo_crdt::model::Role;
use zhaowo_crdt::wire::{self, ChangeSignature, Frame};
use zhaowo_node::home::{Home, InitOptions, now_ms};
use zhaowo_node::identity::NodeIdentity;
use zhaowo_node::transport::{Transport, TransportConfig};
use zhaowo_node::{Node, NodeOptions};

/// Bound on waiting for convergence: a hall push on loopback takes milliseconds plus one poll of the files.
const CONVERGE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "wangwu-password-1";

/// A data directory on loopback ports with the demo's Jiang'an hall (a new hall with `hall_name`, else a node waiting
/// to join); shared by the modules of this binary that start real nodes.
pub(crate) fn init(dir: &Path, hall_name: Option<&str>, window: &str, role: Role) -> Home {
    let options = InitOptions {
        hall_name: hall_name.map(str::to_owned),
        window: window.to_owned(),
        role,
        display_name: format!("{window} 窗口"),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
    };
    Home::init_with_hall(dir, options, zhaowo_crdt::Hall::jiangan_default(), now_ms()).unwrap()
}

/// A node as `zhaowo run` starts it ([`Node::spawn`]: store, live hall document, sync, HTTP), on loopback ports.
pub(crate) async fn start(home: Home, peers: Vec<SocketAddr>) -> Node {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut options = NodeOptions::recommended(loopback, loopback);
    options.listen = Some(loopback);
    options.config_peers = false;
    options.peers = peers;
    options.redial_min = Duration::from_millis(50);
    options.redial_max = Duration::from_millis(500);
    options.poll_interval = Duration::from_millis(100);
    Node::spawn(home, options).await.unwrap()
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < CONVERGE, "{what}: not within {CONVERGE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

fn accounts(dir: &Path) -> Vec<String> {
    Home::open(dir).unwrap().hall().unwrap().accounts.into_keys().collect()
}

struct TwoNodes {
    _dirs: tempfile::TempDir,
    admin_dir: std::path::PathBuf,
    window_dir: std::path::PathBuf,
    admin: Node,
    window: Node,
}

/// An admin node (with one account set before the window joined) and a window node joined through its enrollment
/// file, both syncing and settled.
async fn two_nodes() -> TwoNodes {
    let dirs = tempfile::tempdir().unwrap();
    let (admin_dir, window_dir) = (dirs.path().join("admin"), dirs.path().join("window"));
    let mut admin = init(&admin_dir, Some("测试大厅"), "BBC01", Role::Admin);
    admin.set_account("zhangsan", "张三", Role::Window, PASSWORD, now_ms()).unwrap();
    let mut window = init(&window_dir, None, "1F02", Role::Window);
    let file = admin.enroll(&window.identity.node_id(), "1F02", Role::Window, "综合受理窗口", now_ms()).unwrap();
    window.join(&serde_json::to_vec(&file).unwrap()).unwrap();
    let admin_sync = start(admin, vec![]).await;
    let admin_addr = admin_sync.sync_addr().unwrap();
    let window_sync = start(window, vec![admin_addr]).await;
    let status = window_sync.status();
    wait_for("the window node settles with the admin", || status.peers().iter().any(|p| p.connected && p.settled))
        .await;
    TwoNodes { _dirs: dirs, admin_dir, window_dir, admin: admin_sync, window: window_sync }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_admin_adds_after_join_reaches_the_window_node() {
    let nodes = two_nodes().await;
    assert_eq!(accounts(&nodes.window_dir), ["zhangsan"], "the enrollment file carried the first account");
    let peer_bytes = || nodes.window.status().peers().into_iter().find(|p| p.connected).map_or(0, |p| p.bytes_received);
    // Let the in-sync session go quiet (catalog polls send nothing), then measure what the push costs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received_before = peer_bytes();

    // The admin's CLI adds an account: a separate `Home` writes hall.automerge while the admin node runs.
    let mut admin = Home::open(&nodes.admin_dir).unwrap();
    admin.set_account("wangwu", "王五", Role::Window, PASSWORD, now_ms()).unwrap();
    let converge = wait_for("the window node's hall.automerge gets the account", || {
        accounts(&nodes.window_dir).contains(&"wangwu".to_owned())
    })
    .await;
    let window = Home::open(&nodes.window_dir).unwrap();
    let account = window.hall().unwrap().accounts["wangwu"].clone();
    assert_eq!((account.display_name.as_str(), account.role, account.disabled), ("王五", Role::Window, false));
    assert!(zhaowo_node::http::auth::verify_password(PASSWORD, &account.password_hash), "the desk can sign wangwu in");
    assert_eq!(accounts(&nodes.window_dir), ["wangwu", "zhangsan"]);
    // What the desk signs in against: the window node's live hall, published without re-reading any file.
    let live = nodes.window.live().hall();
    assert!(live.hall.accounts.contains_key("wangwu"), "the live hall has the account");
    let admin_live = wait_for("the admin node's live hall merges the CLI's write", || {
        nodes.admin.live().hall().hall.accounts.contains_key("wangwu")
    })
    .await;
    let push_bytes = peer_bytes() - received_before;
    let counts = nodes.window.status().counts();
    assert_eq!(counts.rejected_changes + counts.refused_changes, 0);
    assert!(Path::new(&nodes.window_dir).join("hall.signatures").exists(), "signatures kept for relaying");
    println!(
        "hall sync account_push converge_ms={} admin_live_ms={} window_live_version={} window_bytes_received={} (includes catalog polls)",
        converge.as_millis(),
        admin_live.as_millis(),
        live.version,
        push_bytes
    );
    nodes.admin.shutdown().await;
    nodes.window.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hall_change_forged_by_a_window_node_is_refused_and_changes_nothing() {
    let nodes = two_nodes().await;
    let admin_hall_before = std::fs::read(nodes.admin_dir.join("hall.automerge")).unwrap();

    // The window node edits its copy (adding itself an account) and signs the change with its own, genuine key.
    let window_identity = Arc::new(NodeIdentity::load(&nodes.window_dir.join("node.key")).unwrap());
    let mut forged =
        Home::read_signed_hall(&nodes.window_dir, window_identity.new_actor().unwrap()).unwrap().unwrap().doc;
    let mut config = forged.hall().unwrap();
    config.accounts.insert("evil".into(), config.accounts["zhangsan"].clone());
    forged.update(Role::Admin, "冒名", now_ms(), &config, "新增工作人员账号 evil").unwrap();
    let change = forged.automerge_mut().get_last_local_change().unwrap();
    let signature = (window_identity.change_signer().sign)(&change.hash());
    let frame = wire::encode(&Frame::HallChanges {
        changes: vec![change.raw_bytes().to_vec()],
        signatures: vec![ChangeSignature { hash: change.hash().0, signature }],
    });
    println!("hall sync forged_frame_bytes={}", frame.len());

    let roster = (*nodes.admin.live().roster()).clone();
    let authorizer = {
        let roster = roster.clone();
        Arc::new(move |key: &[u8; 32]| roster.authorized(key).is_some())
    };
    let transport = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        window_identity.clone(),
        authorizer,
        TransportConfig::recommended(),
    )
    .unwrap();
    let admin_addr = nodes.admin.sync_addr().unwrap();
    let peer =
        tokio::time::timeout(CONVERGE, transport.dial(admin_addr, nodes.admin.node_key())).await.unwrap().unwrap();
    let (mut writer, mut reader) = peer.open_bi().await.unwrap();
    writer
        .send_frame(&wire::encode(&Frame::Hello {
            hall: *roster.hall(),
            node_key: window_identity.verifying_key().to_bytes(),
            roster_digest: roster.digest(),
        }))
        .await
        .unwrap();
    writer.send_frame(&frame).await.unwrap();
    let mut admin_heads_seen = false;
    let ended = tokio::time::timeout(CONVERGE, async {
        loop {
            match reader.recv_frame().await {
                Ok(Some(bytes)) => admin_heads_seen |= matches!(wire::decode(&bytes), Ok(Frame::HallHeads { .. })),
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the admin node did not drop the forging peer");
    assert!(admin_heads_seen, "the admin announced its hall heads");
    assert_eq!(nodes.admin.status().counts().rejected_changes, 1, "the forged hall change is counted");
    // Give a wrongly accepted change every chance to be written, then check nothing moved.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read(nodes.admin_dir.join("hall.automerge")).unwrap(), admin_hall_before);
    assert_eq!(accounts(&nodes.admin_dir), ["zhangsan"]);
    assert_eq!(accounts(&nodes.window_dir), ["zhangsan"], "and it was not relayed back either");
    println!("hall sync forged_by_window rejected=1 admin_hall_unchanged=true");
    nodes.admin.shutdown().await;
    nodes.window.shutdown().await;
}
