//! Every row of the concurrency table of DOMAIN.md §6.3: two replicas fork from the same prior state, each applies its
//! command offline, they merge both ways, both show the same state, and the loser (if any) is listed as a conflict.
use crate::support;
use support::*;
use zhaowo_crdt::model::*;
use zhaowo_crdt::view::ConflictDetail;
use zhaowo_crdt::*;

struct Pair {
    hall: Hall,
    a: Node,
    b: Node,
    doc_a: CaseDoc,
    doc_b: CaseDoc,
}

/// A case registered at BBC01, dispatched to BDC and (if `sign`) signed in; then forked to a second node.
fn fork_case(b: Node, sign: bool) -> Pair {
    let hall = Hall::jiangan_default();
    let mut a = Node::window(0);
    let (mut doc_a, _, _) = a.register(&hall, registration("BDC", Nature::Help, "房屋登记信息有误"));
    a.apply(&mut doc_a, &hall, Command::Dispatch { lead_unit: None, co_units: None, due_ms: None }).unwrap();
    if sign {
        a.apply(&mut doc_a, &hall, Command::SignIn { assignee: "王工".into() }).unwrap();
    }
    let doc_b = b.fork(&mut doc_a);
    let mut pair = Pair { hall, a, b, doc_a, doc_b };
    // Both nodes' clocks start after the fork.
    let now = pair.a.now_ms.max(pair.b.now_ms);
    pair.a.now_ms = now;
    pair.b.now_ms = now;
    pair
}

fn supervision(index: u8) -> Node {
    Node::new("DC01", "刘督查", Role::Supervision, index)
}

fn transition_losers(view: &CaseView) -> Vec<&'static str> {
    view.conflicts
        .iter()
        .filter_map(|conflict| match &conflict.detail {
            ConflictDetail::Transition { loser_label, .. } => Some(*loser_label),
            ConflictDetail::Field { .. } => None,
        })
        .collect()
}

impl Pair {
    fn on_a(&mut self, command: Command) -> EventId {
        self.a.apply(&mut self.doc_a, &self.hall, command).unwrap()
    }
    fn on_b(&mut self, command: Command) -> EventId {
        self.b.apply(&mut self.doc_b, &self.hall, command).unwrap()
    }
    fn merge(&mut self) -> CaseView {
        merge_both(&mut self.doc_a, &mut self.doc_b);
        self.doc_a.view()
    }
}

#[test]
fn notes_replies_visits_consultations_supervision_commute() {
    let mut p = fork_case(supervision(1), true);
    let ids = [
        p.on_a(Command::AddNote { text: "已联系原房改单位".into() }),
        p.on_a(Command::PublishReply { text: "正在调取档案".into() }),
        p.on_a(Command::LogVisit {
            volunteers: vec!["帮帮哥小周".into()],
            outcome: "现场核实两套房".into(),
            visited_at_ms: p.a.now_ms,
            duration_minutes: 90,
        }),
        p.on_b(Command::HoldConsultation {
            units: vec!["BDC".into(), "FG".into(), "GA".into()],
            minutes: "三方会诊".into(),
            site_visit: true,
            held_at_ms: p.b.now_ms,
        }),
        p.on_b(Command::Supervise { level: SupervisionLevel::Supervise, comment: "半月内办结".into() }),
        p.on_b(Command::AddNote { text: "督查科已关注".into() }),
    ];
    let view = p.merge();
    assert_eq!(view.status, Status::InProgress);
    assert!(view.conflicts.is_empty(), "{:?}", view.conflicts);
    assert!(ids.iter().all(|id| view.event_ids.contains(id)));
    assert_eq!((view.notes.len(), view.public_replies.len(), view.site_visits, view.consultations), (2, 1, 1, 1));
    assert_eq!(view.supervision, SupervisionLevel::Supervise);
}

#[test]
fn supervision_after_reply_is_recorded_without_a_state_change() {
    let mut p = fork_case(supervision(1), true);
    p.on_a(Command::Resolve { result: CaseResult::Done, reply: "已办理".into() });
    p.on_b(Command::Supervise { level: SupervisionLevel::Urge, comment: "请尽快答复".into() });
    let view = p.merge();
    assert_eq!(view.status, Status::Replied);
    assert_eq!(view.supervision, SupervisionLevel::Urge);
    assert!(view.conflicts.is_empty());
}

#[test]
fn concurrent_callbacks_and_ratings_are_all_kept() {
    let mut p = fork_case(Node::window(1), true);
    p.on_a(Command::Resolve { result: CaseResult::Done, reply: "已办理".into() });
    p.doc_b.merge(&mut p.doc_a).unwrap();
    p.on_a(Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: false,
        outcome: None,
        rating: None,
        comment: String::new(),
    });
    p.on_b(Command::RecordCallback {
        method: CallbackMethod::Sms,
        reached: true,
        outcome: Some(CallbackOutcome::Resolved),
        rating: Some(4),
        comment: "满意".into(),
    });
    let view = p.merge();
    assert_eq!(view.callbacks.len(), 2);
    assert!(view.conflicts.is_empty());
}

#[test]
fn co_units_and_tags_are_a_union() {
    let mut p = fork_case(Node::window(1), true);
    p.on_a(Command::AddCoUnits { units: vec!["GA".into()] });
    p.on_a(Command::AddTags { tags: vec!["历史遗留".into()] });
    p.on_b(Command::AddCoUnits { units: vec!["SW".into()] });
    p.on_b(Command::AddTags { tags: vec!["会诊".into(), "历史遗留".into()] });
    let view = p.merge();
    // BDC's routing brings FG and SW; the additions bring GA (and SW again).
    assert_eq!(view.co_units.iter().map(String::as_str).collect::<Vec<_>>(), ["FG", "GA", "SW"]);
    assert_eq!(view.tags.iter().map(String::as_str).collect::<Vec<_>>(), ["会诊", "历史遗留"]);
    assert!(view.conflicts.is_empty());
}

#[test]
fn two_extension_approvals_keep_the_later_due_date() {
    let mut p = fork_case(supervision(1), true);
    let short = p.on_a(Command::RequestExtension { working_days: 3, reason: "等待档案".into() });
    let long = p.on_a(Command::RequestExtension { working_days: 10, reason: "需要测绘".into() });
    p.doc_b.merge(&mut p.doc_a).unwrap();
    let due_before = p.doc_b.view().due_ms;
    let mut sup2 = supervision(2);
    sup2.now_ms = p.b.now_ms;
    let mut doc_c = sup2.fork(&mut p.doc_b);
    p.on_b(Command::ApproveExtension { request: short });
    sup2.apply(&mut doc_c, &p.hall, Command::ApproveExtension { request: long }).unwrap();
    merge_both(&mut p.doc_b, &mut doc_c);
    let view = p.doc_b.view();
    let ten_days = p.hall.calendar.add(due_before, zhaowo_crdt::hall::Span::WorkingDays(10));
    assert_eq!(view.due_ms, ten_days);
    assert!(view.flags.extended);
    assert!(view.conflicts.is_empty());
}

#[test]
fn concurrent_priority_changes_keep_the_most_urgent() {
    let mut p = fork_case(Node::window(1), true);
    p.on_a(Command::ChangePriority { priority: Priority::Critical });
    p.on_b(Command::ChangePriority { priority: Priority::Urgent });
    assert_eq!(p.merge().priority, Priority::Critical);
    // In causal order a later change may lower it again.
    p.on_b(Command::ChangePriority { priority: Priority::Normal });
    assert_eq!(p.merge().priority, Priority::Normal);
}

#[test]
fn concurrent_field_edits_are_listed_with_author_and_time_and_resolved_by_an_event() {
    let mut p = fork_case(supervision(1), false);
    p.b.author.role = Role::Window;
    p.on_a(Command::EditField {
        field: EditableField::Summary, value: "一套房登记为一套，实为两套".into()
    });
    p.on_b(Command::EditField { field: EditableField::Summary, value: "房屋分户登记".into() });
    p.on_b(Command::ChangeCategory { category: "FANGGUAN".into() });
    let view = p.merge();
    let conflict = view.conflicts.iter().find(|c| c.id == "f-summary").expect("summary conflict listed");
    let ConflictDetail::Field { candidates, .. } = &conflict.detail else { panic!("field conflict expected") };
    assert_eq!(candidates.len(), 2);
    assert!(candidates.iter().all(|c| !c.node.is_empty() && c.at_ms > 0));
    assert!(view.flags.category_changed_after_dispatch, "a category change after 派单 is flagged");
    let mut sup = supervision(3);
    sup.now_ms = p.a.now_ms;
    let chosen = candidates[1].value.clone();
    let err = sup.apply(
        &mut p.doc_a,
        &p.hall,
        Command::ResolveConflict {
            conflict: "f-summary".into(),
            decision: ConflictDecision::Choose("别的".into()),
            note: String::new(),
        },
    );
    assert_eq!(err, Err(CommandError::NotACandidate("别的".into())));
    sup.apply(
        &mut p.doc_a,
        &p.hall,
        Command::ResolveConflict {
            conflict: "f-summary".into(),
            decision: ConflictDecision::Choose(chosen.clone()),
            note: "以窗口记录为准".into(),
        },
    )
    .unwrap();
    let view = p.merge();
    assert_eq!(view.summary, chosen);
    assert!(view.conflicts.is_empty(), "{:?}", view.conflicts);
    assert!(view.timeline.iter().any(|entry| entry.label == "冲突核定"));
}

#[test]
fn reassign_beats_a_concurrent_sign_in() {
    let mut p = fork_case(supervision(1), false);
    // The unit signs first (earlier HLC), the 督查科 reassigns later: class 2 still wins.
    p.on_a(Command::SignIn { assignee: "王工".into() });
    p.on_b(Command::Reassign {
        lead_unit: "FG".into(), co_units: vec!["BDC".into()], reason: "属房管职责".into()
    });
    let view = p.merge();
    assert_eq!(view.status, Status::Dispatched);
    assert_eq!(view.lead_unit.as_deref(), Some("FG"));
    assert_eq!(view.assignee, None);
    assert_eq!(transition_losers(&view), ["签收"]);
}

#[test]
fn sign_in_against_return_earlier_wins() {
    for sign_first in [true, false] {
        let mut p = fork_case(Node::window(1), false);
        if sign_first {
            p.b.now_ms += 5 * 60_000;
        } else {
            p.a.now_ms += 5 * 60_000;
        }
        p.on_a(Command::SignIn { assignee: "王工".into() });
        p.on_b(Command::Return {
            reason: "非本单位职责".into(), basis: "《不动产登记暂行条例》第七条".into()
        });
        let view = p.merge();
        if sign_first {
            assert_eq!(view.status, Status::InProgress);
            assert_eq!(transition_losers(&view), ["退单"]);
        } else {
            assert_eq!(view.status, Status::Registered);
            assert_eq!(view.returns, 1);
            assert_eq!(transition_losers(&view), ["签收"]);
        }
    }
}

#[test]
fn return_against_reply_earlier_wins() {
    for return_first in [true, false] {
        let mut p = fork_case(Node::window(1), false);
        if return_first {
            p.b.now_ms += 5 * 60_000;
        } else {
            p.a.now_ms += 5 * 60_000;
        }
        p.on_a(Command::Return { reason: "材料不全".into(), basis: "办事指南".into() });
        p.on_b(Command::Resolve { result: CaseResult::Explained, reply: "已电话解释政策".into() });
        let view = p.merge();
        let expected =
            if return_first { (Status::Registered, "办理完毕/答复") } else { (Status::Replied, "退单") };
        assert_eq!((view.status, transition_losers(&view)[0]), expected);
    }
}

#[test]
fn reopen_beats_a_concurrent_close() {
    let mut p = fork_case(supervision(1), true);
    p.on_a(Command::Resolve { result: CaseResult::Done, reply: "已办理".into() });
    p.on_a(Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: true,
        outcome: Some(CallbackOutcome::Resolved),
        rating: Some(5),
        comment: String::new(),
    });
    p.doc_b.merge(&mut p.doc_a).unwrap();
    p.b.now_ms = p.a.now_ms + 60 * 60_000;
    // The window closes first; the 督查科, having heard of a 差评, reopens an hour later, concurrently.
    p.on_a(Command::Close { reviewer: "陈科长".into(), forced: false });
    p.on_b(Command::Reopen { reason: "群众反映未解决".into() });
    let view = p.merge();
    assert_eq!(view.status, Status::InProgress);
    assert_eq!(view.reopens, 1);
    assert_eq!(transition_losers(&view), ["办结"]);
}

#[test]
fn a_note_concurrent_with_close_keeps_the_case_closed_and_flags_it() {
    let mut p = fork_case(Node::window(1), true);
    p.on_a(Command::Resolve { result: CaseResult::Done, reply: "已办理".into() });
    p.on_a(Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: true,
        outcome: Some(CallbackOutcome::Resolved),
        rating: Some(5),
        comment: String::new(),
    });
    p.doc_b.merge(&mut p.doc_a).unwrap();
    p.on_a(Command::Close { reviewer: "陈科长".into(), forced: false });
    p.on_b(Command::PublishReply { text: "补充说明：证书可到二楼领取".into() });
    let view = p.merge();
    assert_eq!(view.status, Status::Closed);
    assert!(view.flags.content_after_close);
    assert!(view.conflicts.is_empty());
}

#[test]
fn withdraw_beats_any_concurrent_staff_transition_and_keeps_notes() {
    let mut citizen = Node::new("BBC01", "citizen", Role::Citizen, 1);
    citizen.author.window = "BBC01".into();
    let mut p = fork_case(citizen, false);
    p.on_a(Command::SignIn { assignee: "王工".into() });
    p.on_a(Command::AddNote { text: "已调档".into() });
    p.on_b(Command::Withdraw { reason: "问题已自行解决".into() });
    let view = p.merge();
    assert_eq!(view.status, Status::Withdrawn);
    assert_eq!(view.result, Some(CaseResult::Withdrawn));
    assert_eq!(view.notes, ["已调档"]);
    assert_eq!(transition_losers(&view), ["签收"]);
}

#[test]
fn duplicate_marked_both_ways_makes_the_older_case_the_master() {
    let hall = Hall::jiangan_default();
    let mut a = Node::window(0);
    let (mut x_a, _, _) = a.register(&hall, registration("HUZHENG", Nature::Consultation, "户口迁移咨询"));
    let (mut y_a, _, _) = a.register(&hall, registration("HUZHENG", Nature::Consultation, "户口迁移咨询（重复）"));
    assert!(x_a.case_id() < y_a.case_id());
    let mut b = supervision(1);
    b.now_ms = a.now_ms;
    let (mut x_b, mut y_b) = (b.fork(&mut x_a), b.fork(&mut y_a));
    // Node A says X duplicates Y; node B, offline, says Y duplicates X.
    CaseDoc::mark_duplicate(&mut x_a, &mut y_a, &a.ctx()).unwrap();
    CaseDoc::mark_duplicate(&mut y_b, &mut x_b, &b.ctx()).unwrap();
    merge_both(&mut x_a, &mut x_b);
    merge_both(&mut y_a, &mut y_b);
    let (x, y) = (x_a.view(), y_a.view());
    assert_eq!(x.status, Status::Registered, "the older case stays the master");
    assert_eq!(y.status, Status::Duplicate);
    assert_eq!(y.duplicate_of.as_ref(), Some(&x.case_id));
    assert!(x.duplicates.contains(&y.case_id) && y.duplicates.is_empty());
    assert_eq!(transition_losers(&x), ["并案（重复件）"]);
}

#[test]
fn the_same_citizen_at_two_windows_gives_two_cases_and_a_suggestion() {
    let hall = Hall::jiangan_default();
    let mut a = Node::window(0);
    let mut b = Node::new("1F02", "赵琳", Role::Window, 1);
    let (doc_a, _, _) = a.register(&hall, registration("SHEBAO", Nature::Help, "社保转移"));
    let (doc_b, _, _) = b.register(&hall, registration("SHEBAO", Nature::Help, "社保关系转移"));
    let (other, _, _) = b.register(&hall, registration("YIBAO", Nature::Help, "医保报销"));
    let views = [doc_a.view(), doc_b.view(), other.view()];
    assert_ne!(views[0].reg_no, views[1].reg_no);
    let suggestions = zhaowo_crdt::duplicates::suggestions(&views, zhaowo_crdt::duplicates::SUGGESTION_WINDOW_MS);
    assert_eq!(suggestions, [(views[0].case_id.clone(), views[1].case_id.clone())]);
    assert!(views.iter().all(|v| v.status == Status::Registered), "merging is never automatic");
}

#[test]
fn purge_wins_over_anything_concurrent() {
    let mut admin = Node::new("BBC01", "系统管理员", Role::Admin, 1);
    admin.author.window = "BBC01".into();
    let mut p = fork_case(admin, true);
    let ctx = p.a.ctx();
    assert_eq!(p.doc_a.reveal_personal_data(&ctx, "回访核对号码").unwrap().phone.as_deref(), Some("13812341234"));
    p.on_a(Command::AddNote { text: "已回访".into() });
    p.on_b(Command::PurgePersonalData);
    let view = p.merge();
    assert!(view.personal.purged);
    assert_eq!((view.personal.name.as_deref(), view.personal.phone.as_deref()), (None, None));
    assert_eq!(view.phone_tag, None);
    let ctx = p.a.ctx();
    assert_eq!(p.doc_a.reveal_personal_data(&ctx, "再看一次"), Err(CommandError::Purged));
    assert_eq!(view.pi_reveals, 1, "the reveal stays in the audit trail");
}

#[test]
fn registration_numbers_are_unique_across_offline_windows() {
    let hall = Hall::jiangan_default();
    let mut seen = std::collections::BTreeSet::new();
    for (index, window) in ["BBC01", "1F02", "2F03", "V01"].into_iter().enumerate() {
        let mut node = Node::new(window, "某某", Role::Window, index as u8);
        for _ in 0..30 {
            let (doc, _, _) = node.register(&hall, registration("ZONGHE", Nature::Consultation, "咨询"));
            assert!(seen.insert(doc.view().reg_no.to_string()));
        }
    }
    assert_eq!(seen.len(), 120);
}
