//! The article's three stories (DOMAIN.md), start to end, as data-driven tests: each story is a list of steps, and the
//! case it leaves is printed as a register-book card and compared with the expected text.
use crate::support;
use expect_test::{Expect, expect};
use std::collections::BTreeSet;
use support::*;
use zhaowo_crdt::model::*;
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::{Date, format_local_minute};
use zhaowo_crdt::view::Matter;
use zhaowo_crdt::*;

/// Who acts in the stories.
fn cast() -> Vec<Node> {
    vec![
        Node::new("BBC01", "张敏", Role::Window, 0),
        Node::new("2F03", "王工", Role::Window, 1),
        Node::new("DC01", "刘督查", Role::Supervision, 2),
        Node::new("V01", "帮帮哥小周", Role::Volunteer, 3),
        Node::new("3F01", "孙倩", Role::Window, 4),
    ]
}

/// A step: who (index into the cast), at which time (minutes after the previous step), doing what.
struct Step(usize, i64, Command);

/// A command that names the event of an earlier step (e.g. approving the extension requested in step 3).
fn approve_extension_of(step: usize) -> Command {
    Command::ApproveExtension { request: EventId::new(0, step as u128) }
}

/// Runs a story and prints the card.
fn check(registrar: usize, registration: Registration, steps: Vec<Step>, now: Option<i64>, expect: Expect) {
    let hall = Hall::jiangan_default();
    let mut cast = cast();
    let (mut doc, _, code) = cast[registrar].register(&hall, registration);
    let mut clock = cast[registrar].now_ms;
    let mut done: Vec<EventId> = Vec::new();
    for Step(who, minutes, mut command) in steps {
        clock += minutes * 60_000;
        cast[who].now_ms = clock - 60_000;
        match &mut command {
            Command::ApproveExtension { request } if request.as_str().starts_with("0000000000") => {
                let step = usize::try_from(ulid::Ulid::from_string(request.as_str()).unwrap().random()).unwrap();
                *request = done[step].clone();
            }
            Command::LogVisit { visited_at_ms: at, .. } | Command::HoldConsultation { held_at_ms: at, .. }
                if *at == 0 =>
            {
                *at = clock
            }
            _ => {}
        }
        let name = command.name();
        let id = cast[who]
            .apply(&mut doc, &hall, command)
            .unwrap_or_else(|error| panic!("step `{name}` by {}: {error}", cast[who].author.staff));
        done.push(id);
        clock = cast[who].now_ms;
    }
    assert!(doc.query_code_matches(code.as_str()));
    // Every replica that loads the saved bytes prints the same card.
    let mut reloaded = CaseDoc::load(&doc.save(), automerge::ActorId::from(vec![42; 16])).unwrap();
    reloaded.set_key(doc.key().cloned());
    assert_eq!(reloaded.view(), doc.view());
    expect.assert_eq(&card(&doc.view(), now.unwrap_or(clock)));
}

fn card(view: &CaseView, now_ms: i64) -> String {
    let mut out = format!(
        "{} {} [{}] {} / {} / {}\n",
        view.reg_no,
        view.status.label(),
        view.priority.label(),
        view.nature.label(),
        view.category,
        view.modes.iter().map(|m| m.label()).collect::<Vec<_>>().join("+"),
    );
    out += &format!(
        "主办 {} 协办 {} 时限 {} 超期 {} 结果 {} 督办 {}\n",
        view.lead_unit.as_deref().unwrap_or("-"),
        view.co_units.iter().cloned().collect::<Vec<_>>().join(","),
        format_local_minute(view.due_ms),
        if view.overdue(now_ms) { "是" } else { "否" },
        view.result.map_or("-", |r| r.label()),
        view.supervision.label(),
    );
    out += &format!(
        "诉求人 {} {}\n",
        view.personal.name.as_deref().unwrap_or("-"),
        view.personal.phone.as_deref().unwrap_or("-")
    );
    for entry in &view.timeline {
        out += &format!("  {} {} {}：{}\n", format_local_minute(entry.at_ms), entry.staff, entry.label, entry.text);
    }
    let public = view.public();
    out += &format!(
        "公开：{} 条答复，{} 个节点，预计办结 {}\n",
        public.replies.len(),
        public.milestones.len(),
        public.expected_ms.map_or("-".into(), format_local_minute)
    );
    assert!(view.conflicts.is_empty(), "a story has no conflicts: {:?}", view.conflicts);
    out
}

fn person(name: &str, phone: &str) -> PersonalData {
    PersonalData { name: Some(name.into()), phone: Some(phone.into()), callback_ok: true, ..PersonalData::default() }
}

fn satisfied() -> Command {
    Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: true,
        outcome: Some(CallbackOutcome::Resolved),
        rating: Some(5),
        comment: "非常满意".into(),
    }
}

#[test]
fn story_one_flat_split_into_two() {
    let visit = |minutes_later: i64, who: &str, outcome: &str| {
        Step(
            3,
            minutes_later,
            Command::LogVisit {
                volunteers: vec![who.into()],
                outcome: outcome.into(),
                visited_at_ms: 0,
                duration_minutes: 120,
            },
        )
    };
    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Help,
        category: "BDC".into(),
        modes: BTreeSet::from([Mode::Consultation, Mode::HomeVisit]),
        priority: Priority::Normal,
        matter: Some(Matter { name: "不动产首次登记".into(), code: "BDC-001".into(), window: "2F03".into() }),
        not_done_reason: Some(NotDoneReason::Historical),
        summary: "老房登记为一套，实为两套，材料缺失无法分证".into(),
        detail: "李先生名下房改房当年登记为一套，实际为两套独立住房，原始材料缺失。".into(),
        expectation: "分别办理两本不动产权证书".into(),
        location: "江岸区某小区".into(),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: person("李建国", "13812341234"),
    };
    let steps = vec![
        Step(
            0,
            10,
            Command::Dispatch {
                lead_unit: Some("BDC".into()),
                co_units: Some(vec!["FG".into(), "GA".into()]),
                due_ms: None,
            },
        ),
        Step(1, 30, Command::SignIn { assignee: "王工".into() }),
        Step(
            0,
            60 * 24,
            Command::HoldConsultation {
                units: vec!["BDC".into(), "FG".into(), "GA".into()],
                minutes: "不动产、房管、公安三方会诊；联系原房改单位和辖区派出所；房管测绘队现场勘查".into(),
                site_visit: true,
                held_at_ms: 0,
            },
        ),
        Step(1, 30, Command::RequestExtension { working_days: 10, reason: "需重新测绘并出具分户方案".into() }),
        Step(2, 60, approve_extension_of(3)),
        visit(60 * 24, "测绘队", "现场测绘，确认为两套独立住房"),
        visit(60 * 24 * 3, "帮帮哥小周", "上门收集补充材料"),
        visit(60 * 24 * 4, "房管所", "核对原房改档案"),
        visit(60 * 24 * 4, "帮帮哥小周", "送达分户方案"),
        Step(1, 60, Command::PublishReply { text: "分户方案已出具，正在办理登记".into() }),
        Step(
            1,
            60 * 24,
            Command::Resolve {
                result: CaseResult::Done, reply: "已为您办理两本不动产权证书，请到二楼领取".into()
            },
        ),
        Step(0, 60 * 3, satisfied()),
        Step(0, 10, Command::Close { reviewer: "陈科长".into(), forced: false }),
    ];
    check(
        0,
        registration,
        steps,
        None,
        expect![[r#"
        BBC01-2026-0001 已办结 [一般] 求助 / BDC / 上门+会诊
        主办 BDC 协办 FG,GA 时限 2026-03-23 17:30 超期 否 结果 已办成 督办 无
        诉求人 李** 138****1234
          2026-03-02 09:01 张敏 登记：登记诉求（一般）
          2026-03-02 09:11 张敏 派单：派单至 BDC，协办：FG、GA，办结时限 2026-03-09 17:30
          2026-03-02 09:41 王工 签收：签收，承办人 王工
          2026-03-03 09:41 张敏 会诊：会诊（BDC、FG、GA），含现场勘查：不动产、房管、公安三方会诊；联系原房改单位和辖区派出所；房管测绘队现场勘查
          2026-03-03 10:11 王工 申请延期：申请延期：需重新测绘并出具分户方案
          2026-03-03 11:11 刘督查 批准延期：批准延期至 2026-03-23 17:30
          2026-03-04 11:11 帮帮哥小周 上门/现场勘查：上门（测绘队，120 分钟）：现场测绘，确认为两套独立住房
          2026-03-07 11:11 帮帮哥小周 上门/现场勘查：上门（帮帮哥小周，120 分钟）：上门收集补充材料
          2026-03-11 11:11 帮帮哥小周 上门/现场勘查：上门（房管所，120 分钟）：核对原房改档案
          2026-03-15 11:11 帮帮哥小周 上门/现场勘查：上门（帮帮哥小周，120 分钟）：送达分户方案
          2026-03-15 12:11 王工 对外答复：分户方案已出具，正在办理登记
          2026-03-16 12:11 王工 办理完毕/答复：已办成：已为您办理两本不动产权证书，请到二楼领取
          2026-03-16 15:11 张敏 回访：电话回访：已解决，评价 5 分；非常满意
          2026-03-16 15:21 张敏 办结：办结，审核人 陈科长
        公开：2 条答复，5 个节点，预计办结 -
    "#]],
    );
}

#[test]
fn story_two_expedited_business_licence() {
    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Help,
        category: "QIYE".into(),
        modes: BTreeSet::from([Mode::Expedited, Mode::Proxy]),
        priority: Priority::Normal,
        matter: Some(Matter {
            name: "营业执照经营范围变更".into(), code: "SCJG-BG-02".into(), window: "3F01".into()
        }),
        not_done_reason: Some(NotDoneReason::CrossDepartment),
        summary: "网上已提交经营范围变更，投标需次日中午前取得新执照".into(),
        detail: "李女士为企业股东，线上提交变更申请，正常时限3个工作日，投标截止为次日中午。".into(),
        expectation: "次日12:00前取得新营业执照".into(),
        location: String::new(),
        sensitive: false,
        tags: BTreeSet::from(["企业专区".to_owned()]),
        personal: PersonalData {
            enterprise_name: Some("武汉某某科技有限公司".into()),
            subject_type: Some(SubjectType::Enterprise),
            ..person("李娜", "027-85551234")
        },
    };
    let next_noon = Date::new(2026, 3, 3).unwrap().at_minute_ms(12 * 60);
    let steps = vec![
        Step(
            4,
            5,
            Command::AddNote {
                text: "已报告业务分管领导，同意加急；调取档案并分送各部门".into()
            },
        ),
        Step(
            4,
            5,
            Command::Dispatch {
                lead_unit: Some("SCJG".into()),
                co_units: Some(vec!["SW".into()]),
                due_ms: Some(next_noon),
            },
        ),
        Step(4, 20, Command::SignIn { assignee: "孙倩".into() }),
        Step(4, 60, Command::PublishReply { text: "已加急受理，预计明日上午领取".into() }),
        Step(
            4,
            60 * 24,
            Command::Resolve {
                result: CaseResult::Done, reply: "新营业执照已打印，请到三楼企业专区领取".into()
            },
        ),
        Step(4, 30, satisfied()),
        Step(4, 5, Command::Close { reviewer: "企业专区负责人".into(), forced: false }),
    ];
    check(
        4,
        registration,
        steps,
        None,
        expect![[r#"
        3F01-2026-0001 已办结 [紧急] 求助 / QIYE / 加急+帮办代办
        主办 SCJG 协办 SW 时限 2026-03-03 12:00 超期 否 结果 已办成 督办 无
        诉求人 李* 0278***1234
          2026-03-02 09:01 孙倩 登记：登记诉求（紧急）
          2026-03-02 09:06 孙倩 内部备注：已报告业务分管领导，同意加急；调取档案并分送各部门
          2026-03-02 09:11 孙倩 派单：派单至 SCJG，协办：SW，办结时限 2026-03-03 12:00
          2026-03-02 09:31 孙倩 签收：签收，承办人 孙倩
          2026-03-02 10:31 孙倩 对外答复：已加急受理，预计明日上午领取
          2026-03-03 10:31 孙倩 办理完毕/答复：已办成：新营业执照已打印，请到三楼企业专区领取
          2026-03-03 11:01 孙倩 回访：电话回访：已解决，评价 5 分；非常满意
          2026-03-03 11:06 孙倩 办结：办结，审核人 企业专区负责人
        公开：2 条答复，5 个节点，预计办结 -
    "#]],
    );
}

#[test]
fn story_three_senior_card_answered_on_the_spot() {
    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Consultation,
        category: "MINZHENG".into(),
        modes: BTreeSet::from([Mode::Immediate]),
        priority: Priority::Normal,
        matter: Some(Matter { name: "老年人优待证办理".into(), code: String::new(), window: "1F02".into() }),
        not_done_reason: Some(NotDoneReason::Ineligible),
        summary: "65岁外地户籍随子女居住，咨询如何办理老年优待证".into(),
        detail: "胡先生户籍在外地，随子女居住武汉，不清楚办理条件。".into(),
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: person("胡德明", "13907001234"),
    };
    let steps = vec![
        Step(0, 10, Command::AddNote { text: "缺少武汉居住证；已联系所在社区网格员".into() }),
        Step(
            0,
            5,
            Command::Resolve {
                result: CaseResult::Explained,
                reply: "请携带身份证、居住证明到社区办理居住证后申请优待证，网格员可协助".into(),
            },
        ),
        Step(0, 60 * 4, satisfied()),
        Step(0, 5, Command::Close { reviewer: "陈科长".into(), forced: false }),
    ];
    check(
        0,
        registration,
        steps,
        None,
        expect![[r#"
        BBC01-2026-0001 已办结 [一般] 咨询 / MINZHENG / 即办
        主办 - 协办  时限 2026-03-03 17:30 超期 否 结果 解释说明 督办 无
        诉求人 胡** 139****1234
          2026-03-02 09:01 张敏 登记：登记诉求（一般）
          2026-03-02 09:11 张敏 内部备注：缺少武汉居住证；已联系所在社区网格员
          2026-03-02 09:16 张敏 办理完毕/答复：解释说明：请携带身份证、居住证明到社区办理居住证后申请优待证，网格员可协助
          2026-03-02 13:16 张敏 回访：电话回访：已解决，评价 5 分；非常满意
          2026-03-02 13:21 张敏 办结：办结，审核人 陈科长
        公开：1 条答复，3 个节点，预计办结 -
    "#]],
    );
}
