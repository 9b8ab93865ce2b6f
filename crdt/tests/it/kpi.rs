//! Issue 15 §6: the 督查科's figures checked against values computed by hand on a fixed year of 154 cases (the
//! article's hall registers about that many a year). Each case's life is chosen by its index; the comments beside
//! the expected values count them by hand from those rules, independently of `kpi.rs`.

use crate::support::{Node, registration};
use zhaowo_crdt::kpi::{CaseFacts, GroupBy, Kpi, KpiSettings, Tally};
use zhaowo_crdt::model::{CallbackMethod, CallbackOutcome, CaseResult, Nature, Priority, Role};
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::{CaseView, Command, Hall};

const CASES: usize = 154;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The rating of a case closed with a 回访 (i < 120), by `i % 10`.
fn rating(i: usize) -> u8 {
    [5, 5, 5, 5, 4, 4, 3, 2, 1, 5][i % 10]
}

fn year_of_cases() -> Vec<CaseView> {
    let hall = Hall::jiangan_default();
    let mut node = Node::new("BBC01", "刘督查", Role::Admin, 0);
    let mut views = Vec::with_capacity(CASES);
    for i in 0..CASES {
        let mut registration = registration("BDC", Nature::Help, "老房登记问题");
        // The last 14 are anonymous and never dispatched.
        if i >= 140 {
            registration.personal = PersonalData { anonymous: true, ..PersonalData::default() };
        }
        // 加急: i % 9 == 4.
        if i % 9 == 4 {
            registration.priority = Priority::Urgent;
        }
        let (mut doc, _, _) = node.register(&hall, registration);
        let run = |node: &mut Node, doc: &mut zhaowo_crdt::CaseDoc, command: Command| {
            node.apply(doc, &hall, command).unwrap_or_else(|error| panic!("case {i}: {error}"))
        };
        let dispatch = || Command::Dispatch { lead_unit: Some("BDC".into()), co_units: None, due_ms: None };
        if i < 140 {
            run(&mut node, &mut doc, dispatch());
            // 退单 then 派单 again: i < 10.
            if i < 10 {
                run(&mut node, &mut doc, Command::Return { reason: "非本单位职责".into(), basis: "三定方案".into() });
                run(&mut node, &mut doc, dispatch());
            }
            run(&mut node, &mut doc, Command::SignIn { assignee: "王工".into() });
            // 会诊: i % 30 == 5; 上门: i % 25 == 7.
            if i % 30 == 5 {
                let held_at_ms = node.now_ms;
                run(
                    &mut node,
                    &mut doc,
                    Command::HoldConsultation {
                        units: vec!["BDC".into(), "FG".into()],
                        minutes: "两单位会诊".into(),
                        site_visit: false,
                        held_at_ms,
                    },
                );
            }
            if i % 25 == 7 {
                let visited_at_ms = node.now_ms;
                run(
                    &mut node,
                    &mut doc,
                    Command::LogVisit {
                        volunteers: vec!["小周".into()],
                        outcome: "上门收集材料".into(),
                        visited_at_ms,
                        duration_minutes: 60,
                    },
                );
            }
        }
        // 延期 approved: i < 120 and i % 12 == 1.
        if i < 120 && i % 12 == 1 {
            let request =
                run(&mut node, &mut doc, Command::RequestExtension { working_days: 5, reason: "需补充测绘".into() });
            run(&mut node, &mut doc, Command::ApproveExtension { request });
        }
        // Answered (答复): i < 130; late (60 days after the due date): i < 120 and i % 8 == 0.
        if i < 130 {
            if i < 120 && i % 8 == 0 {
                node.now_ms += 60 * DAY_MS;
            }
            run(&mut node, &mut doc, Command::Resolve { result: CaseResult::Done, reply: "已办理".into() });
        }
        // Closed after a 回访 that reached the citizen: i < 120; 重办 and closed again: i % 20 == 3.
        if i < 120 {
            let callback = |i: usize| Command::RecordCallback {
                method: CallbackMethod::Phone,
                reached: true,
                outcome: Some(if rating(i) >= 3 { CallbackOutcome::Resolved } else { CallbackOutcome::Partly }),
                rating: Some(rating(i)),
                comment: String::new(),
            };
            run(&mut node, &mut doc, callback(i));
            run(&mut node, &mut doc, Command::Close { reviewer: "陈科长".into(), forced: false });
            if i % 20 == 3 {
                run(&mut node, &mut doc, Command::Reopen { reason: "群众反映未办好".into() });
                run(&mut node, &mut doc, Command::Resolve { result: CaseResult::Done, reply: "重新办理".into() });
                run(&mut node, &mut doc, callback(i));
                run(&mut node, &mut doc, Command::Close { reviewer: "陈科长".into(), forced: false });
            }
        }
        views.push(doc.view());
    }
    views
}

#[test]
fn kpis_match_values_computed_by_hand_on_a_year_of_154_cases() {
    let views = year_of_cases();
    let facts: Vec<CaseFacts> = views.iter().map(CaseFacts::of).collect();
    let tally = Tally::of(&facts);
    let with_basic = KpiSettings { satisfaction_counts_basic: true };
    let without_basic = KpiSettings { satisfaction_counts_basic: false };
    let figure = |kpi: Kpi, settings| {
        let f = kpi.figure(&tally, settings);
        (f.numerator, f.denominator)
    };
    // Hand counts. Ratings of the 120 closed cases, by i % 10 → 5,5,5,5,4,4,3,2,1,5: per ten, five 5s, two 4s and one
    // each of 3, 2, 1; over 120: 60, 24, 12, 12, 12.
    assert_eq!(tally.0.rated_by_level, [12, 12, 12, 24, 60]);
    let expected = [
        (Kpi::Registered, (154, None)),
        // Answered: i < 130.
        (Kpi::AnswerRate, (130, Some(154))),
        // Closed: i < 120; late: i % 8 == 0 below 120 → 0, 8, …, 112: 15 cases.
        (Kpi::OnTimeCloseRate, (105, Some(120))),
        // Valid 回访: 120; 已解决 where the rating is 3 or more: 120 − 24.
        (Kpi::ResolveRate, (96, Some(120))),
        // 60 + 24 + 12 (基本满意 counted by default).
        (Kpi::SatisfactionRate, (96, Some(120))),
        (Kpi::GoodRate, (96, Some(120))),
        (Kpi::BadRate, (24, Some(120))),
        // No 差评 follow-through recorded in this set.
        (Kpi::BadRectifiedRate, (0, Some(24))),
        (Kpi::NamedBadContactRate, (0, Some(24))),
        // Eligible: named (i < 140), agreed to 回访, answered (i < 130): 130; reached: the 120 closed.
        (Kpi::CallbackRate, (120, Some(130))),
        // 派单: 140 + 10 again after 退单; 退单: i < 10.
        (Kpi::ReturnRate, (10, Some(150))),
        // 重办: i % 20 == 3 below 120 → 3, 23, 43, 63, 83, 103.
        (Kpi::ReopenRate, (6, Some(120))),
        // 延期: i % 12 == 1 below 120 → 1, 13, …, 109: 10 cases.
        (Kpi::ExtensionRate, (10, Some(154))),
        // 会诊: i % 30 == 5 below 140 → 5, 35, 65, 95, 125.
        (Kpi::Consultations, (5, None)),
        // 上门: i % 25 == 7 below 140 → 7, 32, 57, 82, 107, 132.
        (Kpi::SiteVisits, (6, None)),
        // 加急: i % 9 == 4 → 4, 13, …, 148: 17 cases.
        (Kpi::Expedited, (17, None)),
    ];
    for (kpi, want) in expected {
        assert_eq!(figure(kpi, with_basic), want, "{}", kpi.zh());
    }
    assert_eq!(expected.len(), Kpi::ALL.len(), "every figure is checked");
    // Without 基本满意: 60 + 24.
    assert_eq!(figure(Kpi::SatisfactionRate, without_basic), (84, Some(120)));
    let mean = tally.mean_rating().unwrap();
    // (12·1 + 12·2 + 12·3 + 24·4 + 60·5) / 120 = 468 / 120.
    assert!((mean - 3.9).abs() < 1e-9, "{mean}");
    assert_eq!(Kpi::AnswerRate.figure(&tally, with_basic).display(), "84.4%（130/154）");
    assert_eq!(Kpi::Consultations.figure(&Tally::default(), with_basic).display(), "0");
    assert_eq!(Kpi::BadRate.figure(&Tally::default(), with_basic).display(), "—（0/0）");

    // Groups add up to the whole, by every grouping but the service mode (a case counts under each of its modes).
    for group in GroupBy::ALL.iter().filter(|group| **group != GroupBy::Mode) {
        let mut by_key: std::collections::BTreeMap<String, Tally> = Default::default();
        for (view, one) in views.iter().zip(&facts) {
            for key in group.keys(view) {
                *by_key.entry(key).or_default() += one;
            }
        }
        let summed = Tally::of(by_key.values().map(|tally| &tally.0));
        assert_eq!(summed, tally, "groups by {} do not add up", group.code());
    }
    let anonymous = views.iter().filter(|view| view.personal.anonymous).count();
    println!(
        "KPI check, 154 cases (14 anonymous: {anonymous}): 回应率 84.4% (130/154), 按期办结率 87.5% (105/120), 解决率 80.0% \
         (96/120), 满意率 80.0% (96/120; 70.0% without 基本满意), 差评率 20.0% (24/120), 回访率 92.3% (120/130), 退单率 \
         6.7% (10/150), 重办率 5.0% (6/120), 延期率 6.5% (10/154), 会诊 5, 上门 6, 加急 17; mean rating {mean:.2}: all \
         {} figures equal the hand counts",
        Kpi::ALL.len()
    );
}

/// 差评整改率 and 实名差评回访率 from the citizen's own 差评 and the 督查科's task: two cases rated 不满意 by the
/// citizen, one followed through to 反馈, the other left at 核实; a third rated 满意. Hand counts: 差评 2, 整改 1,
/// named 差评 2, contacted 1; 满意率 1/3.
#[test]
fn bad_rating_follow_through_counts_in_the_figures() {
    use zhaowo_crdt::model::{BadReviewReason, ReviewStep, Satisfaction};
    let hall = Hall::jiangan_default();
    let mut window = Node::new("BBC01", "张敏", Role::Window, 0);
    let mut supervision = Node::new("DC01", "刘督查", Role::Supervision, 1);
    let mut citizen = Node::new("BBC01", "群众", Role::Citizen, 2);
    let mut views = Vec::new();
    for (level, steps) in [
        (Satisfaction::Dissatisfied, &[ReviewStep::Verify, ReviewStep::Rectify, ReviewStep::Feedback][..]),
        (Satisfaction::VeryDissatisfied, &[ReviewStep::Verify][..]),
        (Satisfaction::Satisfied, &[][..]),
    ] {
        let (mut doc, _, _) = window.register(&hall, registration("BDC", Nature::Help, "老房登记问题"));
        window.apply(&mut doc, &hall, Command::Resolve { result: CaseResult::Done, reply: "已办理".into() }).unwrap();
        citizen.now_ms = window.now_ms;
        let reasons = if level == Satisfaction::Satisfied { vec![] } else { vec![BadReviewReason::Unresolved] };
        citizen.apply(&mut doc, &hall, Command::Rate { level, reasons, comment: String::new() }).unwrap();
        supervision.now_ms = citizen.now_ms;
        for step in steps {
            supervision.apply(&mut doc, &hall, Command::BadReviewStep { step: *step, text: "已处理".into() }).unwrap();
        }
        window.now_ms = supervision.now_ms;
        views.push(doc.view());
    }
    let tally = Tally::of(&views.iter().map(CaseFacts::of).collect::<Vec<_>>());
    let settings = KpiSettings { satisfaction_counts_basic: true };
    let figure = |kpi: Kpi| {
        let f = kpi.figure(&tally, settings);
        (f.numerator, f.denominator)
    };
    assert_eq!(figure(Kpi::BadRate), (2, Some(3)));
    assert_eq!(figure(Kpi::BadRectifiedRate), (1, Some(2)));
    assert_eq!(figure(Kpi::NamedBadContactRate), (1, Some(2)));
    assert_eq!(figure(Kpi::SatisfactionRate), (1, Some(3)));
    println!(
        "差评 follow-through: 差评率 2/3, 差评整改率 1/2, 实名差评回访率 1/2, 满意率 1/3 (the citizen's own ratings)"
    );
}

/// Issue 15 §2: 不满意 said at a staff 回访 opens the 差评 task like the citizen's own rating, due by the hall's
/// limit; the 督查科 follows it through and it counts as rectified; a 回访 at 满意 opens none.
#[test]
fn a_bad_rating_said_at_a_callback_opens_the_task_too() {
    use zhaowo_crdt::model::ReviewStep;
    let hall = Hall::jiangan_default();
    let mut window = Node::new("BBC01", "张敏", Role::Window, 0);
    let mut supervision = Node::new("DC01", "刘督查", Role::Supervision, 1);
    let callback = |rating: u8| Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: true,
        outcome: Some(CallbackOutcome::Partly),
        rating: Some(rating),
        comment: "群众表示仍需跑两趟".into(),
    };
    let (mut good, _, _) = window.register(&hall, registration("BDC", Nature::Help, "老房登记问题"));
    window.apply(&mut good, &hall, Command::Resolve { result: CaseResult::Done, reply: "已办理".into() }).unwrap();
    window.apply(&mut good, &hall, callback(4)).unwrap();
    assert!(good.view().bad_reviews.is_empty(), "a 满意 回访 opened a task");

    let (mut doc, _, _) = window.register(&hall, registration("BDC", Nature::Help, "老房登记问题"));
    window.apply(&mut doc, &hall, Command::Resolve { result: CaseResult::Done, reply: "已办理".into() }).unwrap();
    window.apply(&mut doc, &hall, callback(2)).unwrap();
    let view = doc.view();
    let task = view.bad_reviews.last().expect("the 回访's 差评 opened a task");
    let limit = hall.calendar.add(window.now_ms, zhaowo_crdt::hall::Span::WorkingDays(hall.bad_review_working_days));
    assert_eq!((task.due_ms, task.is_open()), (limit, true));
    // A second bad 回访 in the same round opens no second task.
    window.apply(&mut doc, &hall, callback(1)).unwrap();
    assert_eq!(doc.view().bad_reviews.len(), 1);
    supervision.now_ms = window.now_ms;
    for step in [ReviewStep::Verify, ReviewStep::Rectify, ReviewStep::Feedback] {
        supervision.apply(&mut doc, &hall, Command::BadReviewStep { step, text: "已处理".into() }).unwrap();
    }
    let facts = CaseFacts::of(&doc.view());
    assert_eq!((facts.rated_by_level[0], facts.bad_rectified, facts.named_bad_contacted), (1, 1, 1));
    println!(
        "回访 差评: task opened due by the hall's limit, one per round, followed through and counted as rectified"
    );
}
