//! `zhaowo demo`: a working hall on this one machine, on embedded defaults.
//!
//! It creates a fresh hall in a temporary directory (or `--dir` when given and empty), adds staff accounts, registers
//! the article's cases in the states a real week leaves them in, serves the staff desk and the citizen pages, prints
//! their addresses, the accounts and a QR code of the citizen page, and runs until Ctrl-C.
//!
//! The demo hall has four nodes in one process, each with its own data directory, key, store and desk, syncing over
//! QUIC on loopback exactly as separate PCs would: the 办不成事 window (the admin node, which also serves the citizen
//! pages), a second window (2F03), the 督查科's PC and a volunteer's laptop.

use crate::{Cli, out, say};
use anyhow::Context;
use clap::Args;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use zhaowo_crdt::model::*;
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::{CaseDoc, Command, QueryCode, Registration};
use zhaowo_node::home::{Home, InitOptions, entropy, now_ms};
use zhaowo_node::store::Store;
use zhaowo_node::{Node, NodeOptions};

/// The demo's staff password: printed on screen, for a demo on one machine only.
const DEMO_PASSWORD: &str = "zhaowo-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The staff desk (loopback).
    #[arg(long, default_value = "127.0.0.1:7421")]
    pub desk: SocketAddr,
    /// The citizen pages and Open311 (use the hall LAN address to reach them from phones on the Wi-Fi).
    #[arg(long, default_value = "127.0.0.1:7422")]
    pub http: SocketAddr,
    /// Stop after this many seconds instead of waiting for Ctrl-C (for scripts and tests).
    #[arg(long, hide = true)]
    pub serve_secs: Option<u64>,
}

/// A seeded case: who registers it, and the steps it has been through.
struct Seed {
    registration: Registration,
    steps: Vec<(&'static str, Command)>,
}

fn person(name: &str, phone: &str) -> PersonalData {
    PersonalData {
        name: Some(name.into()),
        phone: Some(phone.into()),
        callback_ok: true,
        publish_ok: true,
        ..PersonalData::default()
    }
}

fn case(
    nature: Nature,
    category: &str,
    modes: &[Mode],
    summary: &str,
    detail: &str,
    who: PersonalData,
) -> Registration {
    Registration {
        channel: Channel::Window,
        nature,
        category: category.into(),
        modes: modes.iter().copied().collect::<BTreeSet<_>>(),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: summary.into(),
        detail: detail.into(),
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: who,
    }
}

fn seeds(now: i64) -> Vec<Seed> {
    let callback = || Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: true,
        outcome: Some(CallbackOutcome::Resolved),
        rating: Some(5),
        comment: "非常满意".into(),
    };
    vec![
        Seed {
            registration: Registration {
                not_done_reason: Some(NotDoneReason::Historical),
                ..case(
                    Nature::Help,
                    "BDC",
                    &[Mode::Consultation, Mode::HomeVisit],
                    "老房登记为一套，实为两套，材料缺失无法分证",
                    "李先生名下房改房当年登记为一套，实际为两套独立住房，原始材料缺失。",
                    person("李建国", "13812341234"),
                )
            },
            steps: vec![
                (
                    "王敏",
                    Command::Dispatch {
                        lead_unit: Some("BDC".into()),
                        co_units: Some(vec!["FG".into(), "GA".into()]),
                        due_ms: None,
                    },
                ),
                ("王敏", Command::SignIn { assignee: "王工".into() }),
                (
                    "王敏",
                    Command::HoldConsultation {
                        units: vec!["BDC".into(), "FG".into(), "GA".into()],
                        minutes: "不动产、房管、公安三方会诊；联系原房改单位和辖区派出所".into(),
                        site_visit: true,
                        held_at_ms: now,
                    },
                ),
                ("王敏", Command::PublishReply { text: "已组织三方会诊，房管测绘队将上门勘查".into() }),
            ],
        },
        Seed {
            registration: Registration {
                priority: Priority::Urgent,
                ..case(
                    Nature::Help,
                    "QIYE",
                    &[Mode::Expedited, Mode::Proxy],
                    "网上已提交经营范围变更，投标需次日中午前取得新执照",
                    "企业股东李女士，正常时限3个工作日，投标截止为次日中午。",
                    person("李娜", "13900001111"),
                )
            },
            steps: vec![
                ("王敏", Command::AddNote { text: "已报告业务分管领导，同意加急".into() }),
                (
                    "王敏",
                    Command::Dispatch {
                        lead_unit: Some("SCJG".into()),
                        co_units: Some(vec!["SW".into()]),
                        due_ms: None,
                    },
                ),
                ("王敏", Command::SignIn { assignee: "企业专区 孙倩".into() }),
                (
                    "王敏",
                    Command::Resolve {
                        result: CaseResult::Done,
                        reply: "新营业执照已打印，请到三楼企业专区领取".into(),
                    },
                ),
                ("王敏", callback()),
                ("王敏", Command::Close { reviewer: "陈科长".into(), forced: false }),
            ],
        },
        Seed {
            registration: case(
                Nature::Consultation,
                "MINZHENG",
                &[Mode::Immediate],
                "65岁外地户籍随子女居住，咨询如何办理老年优待证",
                "胡先生户籍在外地，随子女居住武汉，不清楚办理条件。",
                person("胡德明", "13907001234"),
            ),
            steps: vec![
                ("王敏", Command::AddNote { text: "缺少武汉居住证；已联系所在社区网格员".into() }),
                (
                    "王敏",
                    Command::Resolve {
                        result: CaseResult::Explained,
                        reply: "请携带身份证、居住证明到社区办理居住证后申请优待证".into(),
                    },
                ),
                ("王敏", callback()),
                ("王敏", Command::Close { reviewer: "陈科长".into(), forced: false }),
            ],
        },
        Seed {
            registration: case(
                Nature::Venting,
                "ZONGHE",
                &[],
                "老人倾诉子女不常探望，希望有人倾听",
                "老人情绪低落，窗口耐心倾听并告知社区志愿服务。",
                PersonalData::default(),
            ),
            steps: vec![("王敏", Command::AddNote { text: "已倾听约半小时，建议社区志愿者定期探访".into() })],
        },
        Seed {
            registration: case(
                Nature::Complaint,
                "SHEBAO",
                &[],
                "社保转移窗口说办不了，没说原因",
                "群众反映社保关系转移被告知办不了，未说明依据。",
                person("赵强", "13600002222"),
            ),
            steps: vec![("王敏", Command::Dispatch { lead_unit: None, co_units: None, due_ms: None })],
        },
    ]
}

/// The demo's material: a floor plan drawn for it (`cli/assets/demo-floor-plan.png`, 3 KB, no metadata).
const DEMO_FLOOR_PLAN: &[u8] = include_bytes!("../assets/demo-floor-plan.png");

/// Seeds the demo cases and assigns the first open one's home visit to the laptop (`laptop`: its node id), which
/// then reads that case's private layer and no other. Returns the first case's receipt and the assigned number.
async fn seed(home: &Home, store: &Store, laptop: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let hall = Arc::new(home.hall()?);
    let mut first_receipt = None;
    let mut seeded = Vec::new();
    for (index, seed) in seeds(now_ms()).into_iter().enumerate() {
        let ctx = home.ctx("王敏")?;
        let year = zhaowo_crdt::time::Date::of_ms(ctx.now_ms).year;
        let code = QueryCode::from_entropy(entropy()? as u64);
        // The store allocates the number, as for every registration.
        let (actor, receipt_code, build_hall, registration) =
            (home.identity.new_actor()?, code.clone(), hall.clone(), seed.registration);
        let build: zhaowo_node::store::RegisterFn = Box::new(move |reg_no| {
            CaseDoc::register(&ctx, &build_hall, actor, reg_no, &receipt_code, registration).map(|(doc, _)| doc)
        });
        let registered = store
            .register_new(&home.config.window, year, build)
            .await
            .with_context(|| format!("seeding case {}", index + 1))?;
        let (ack, reg_no) = (registered.ack, registered.reg_no);
        for (staff, command) in seed.steps {
            let name = command.name();
            store
                .apply(&ack.case_id, home.ctx(staff)?, hall.clone(), command)
                .await
                .with_context(|| format!("seeding {reg_no}: {name}"))?;
        }
        if first_receipt.is_none() {
            // Issue 16: 李先生's case carries the surveyors' 分户图纸 (a drawing made for the demo), published so the
            // citizen's lookup shows it too.
            let upload = zhaowo_node::blobs::Upload {
                name: "分户图纸（房管测绘队）.png".to_owned(),
                bytes: DEMO_FLOOR_PLAN.to_vec(),
                public: true,
            };
            let thumbnail =
                zhaowo_node::thumbnail::thumbnail(zhaowo_crdt::materials::MaterialType::Png, DEMO_FLOOR_PLAN)
                    .ok()
                    .flatten();
            zhaowo_node::blobs::attach(
                store,
                &home.blobs()?,
                &ack.case_id,
                home.ctx("王敏")?,
                hall.clone(),
                upload,
                thumbnail,
            )
            .await
            .with_context(|| format!("seeding {reg_no}: the floor plan"))?;
        }
        first_receipt.get_or_insert((reg_no.to_string(), code.as_str().to_owned()));
        seeded.push((ack.case_id, reg_no.to_string()));
    }
    let mut assigned = None;
    for (case_id, reg_no) in seeded {
        let command = zhaowo_crdt::Command::AssignVisit { laptop: laptop.to_owned() };
        if store.apply(&case_id, home.ctx("王敏")?, hall.clone(), command).await.is_ok() {
            assigned = Some(reg_no);
            break;
        }
    }
    let (reg_no, code) = first_receipt.context("no seeded case")?;
    Ok((reg_no, code, assigned))
}

fn terminal_qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build(),
        Err(_) => String::new(),
    }
}

/// The other nodes of the demo hall: a second window's PC (the real-estate window on the second floor), the
/// supervision section's PC and a volunteer's laptop, each with its own store, key and desk, syncing with the 办不成事
/// window over QUIC on loopback.
const OTHER_NODES: [(&str, &str, Role, &str); 3] = [
    ("window-2f03", "2F03", Role::Window, "二楼3号窗口"),
    ("supervision", "DC01", Role::Supervision, "督查科"),
    ("laptop", "V01", Role::Volunteer, "帮帮哥笔记本"),
];

/// The desk address of the `index`-th other node: ten ports above the window's desk (or an OS port in tests).
fn other_desk(desk: SocketAddr, index: usize) -> SocketAddr {
    match desk.port() {
        0 => desk,
        port => SocketAddr::new(desk.ip(), port.saturating_add(10 * (index as u16 + 1))),
    }
}

pub async fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let explicit = std::env::args().any(|a| a == "--dir" || a.starts_with("--dir="))
        || std::env::var_os(crate::env_vars::ZHAOWO_DIR).is_some();
    let dir: PathBuf = if explicit {
        cli.dir.clone()
    } else {
        std::env::temp_dir().join(format!("zhaowo-demo-{}", std::process::id()))
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let options = InitOptions {
        hall_name: Some("江岸区政务服务中心（演示）".into()),
        window: "BBC01".into(),
        role: Role::Admin,
        display_name: "办不成事窗口".into(),
        listen: loopback,
        http_listen: args.desk,
    };
    let mut home = Home::init_with_hall(&dir, options, zhaowo_crdt::Hall::jiangan_default(), now_ms())
        .with_context(|| format!("failed to create the demo hall in `{}`", dir.display()))?;
    for (user, name, role) in [
        ("wangmin", "王敏", Role::Window),
        ("liudc", "刘督查", Role::Supervision),
        ("xiaozhou", "帮帮哥小周", Role::Volunteer),
        ("admin", "管理员", Role::Admin),
    ] {
        home.set_account(user, name, role, DEMO_PASSWORD, now_ms()).with_context(|| format!("account {user}"))?;
    }
    // The other nodes are created and enrolled before anything runs, as an admin would with `zhaowo enroll`/`join`.
    let mut others = Vec::new();
    for (index, (sub, window, role, name)) in OTHER_NODES.into_iter().enumerate() {
        let other_dir = dir.join(sub);
        let init = InitOptions {
            hall_name: None,
            window: window.into(),
            role,
            display_name: name.into(),
            listen: loopback,
            http_listen: other_desk(args.desk, index),
        };
        let mut other = Home::init(&other_dir, init, now_ms())
            .with_context(|| format!("failed to create the {name} node in `{}`", other_dir.display()))?;
        let file = home.enroll(&other.identity.node_id(), window, role, name, now_ms())?;
        other.join(&serde_json::to_vec(&file)?).with_context(|| format!("the {name} node cannot join"))?;
        others.push(other);
    }
    let laptop_id = others.last().map(|laptop| laptop.identity.node_id()).unwrap_or_default();
    let (reg_no, code, assigned) = {
        let store = home.open_store()?;
        let seeded = seed(&home, &store, &laptop_id).await;
        store.close();
        seeded?
    };
    let citizen_path = format!("/r/{}", home.config.window);
    let mut options = NodeOptions::recommended(args.desk, args.http);
    options.config_peers = false;
    let mut window = Node::spawn(home, options)
        .await
        .context("cannot start the window node (is another demo running? pass --desk and --http)")?;
    let window_addr = window.sync_addr().context("the window node has no sync address")?;
    let desk_addr = window.desk_addr();
    let base = window.public_url().to_owned();
    let citizen_url = format!("{base}{citizen_path}");
    let mut nodes = Vec::new();
    let mut lines = Vec::new();
    for (index, other) in others.into_iter().enumerate() {
        let (name, role, code) =
            (other.config.display_name.clone(), other.config.role.label(), other.config.window.clone());
        let mut options = NodeOptions::recommended(other_desk(args.desk, index), loopback);
        options.public_url = Some(base.clone());
        options.config_peers = false;
        options.peers = vec![window_addr];
        let node =
            Node::spawn(other, options).await.with_context(|| format!("cannot start the {name} node (pass --desk)"))?;
        lines.push(format!("  {name:<12} http://{}/desk   ({role} {code})", node.desk_addr()));
        nodes.push(node);
    }
    out!("zhaowo demo: 江岸区政务服务中心（演示）, data in {}", dir.display());
    out!("");
    out!("staff desk   http://{desk_addr}/desk");
    out!(
        "  accounts   wangmin (窗口 王敏), liudc (督查科 刘督查), xiaozhou (志愿者), admin — password: {DEMO_PASSWORD}"
    );
    out!("other nodes of the hall (each its own store and key, syncing over QUIC with the window at {window_addr}):");
    for line in lines {
        out!("{line}");
    }
    if let Some(assigned) = &assigned {
        out!(
            "  the laptop reads the personal data of {assigned} only (its home visit is assigned to it); every other \
             case shows 本机无权查看 there"
        );
    }
    out!("citizen page {citizen_url}");
    out!("lookup       {base}/q?no={reg_no}&code={code}   (登记编号 {reg_no}, 查询码 {code})");
    out!("open311      {base}/open311/v2/services.json");
    out!("");
    out!("{}", terminal_qr(&citizen_url));
    say(
        cli,
        "seeded 5 cases (the article's three stories, a 倾诉 and a complaint) on the window node; they sync to the \
         second window, the 督查科 and the laptop within a second. Press Ctrl-C to stop",
    );
    let served = until_stopped(cli, &mut window, args.serve_secs).await;
    for node in nodes {
        node.shutdown().await;
    }
    window.shutdown().await;
    served
}

/// Runs until Ctrl-C (or `serve_secs`), or until the node's web server fails.
pub async fn until_stopped(cli: &Cli, node: &mut Node, serve_secs: Option<u64>) -> anyhow::Result<()> {
    let stop = async {
        match serve_secs {
            Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        error = node.failed() => Err(anyhow::Error::new(error).context("the web server stopped")),
        () = stop => {
            say(cli, "stopping");
            Ok(())
        }
    }
}
