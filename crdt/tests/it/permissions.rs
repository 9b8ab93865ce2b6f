//! The permission table and the case rules agree. For every role, every state and every kind of command, a command the
//! table (`CommandKind::permitted`) allows is not refused for its role or state, and a command it refuses is refused
//! for exactly that reason (`CommandError::Role` / `State`, naming the kind). `CaseView::allowed` lists only kinds the
//! table allows, and each of them is accepted or refused for something the case holds, never for role or state.
use crate::support::*;
use zhaowo_crdt::command::Refusal;
use zhaowo_crdt::model::*;
use zhaowo_crdt::*;

/// The node that builds the cases: an admin may take every step.
fn admin_node() -> Node {
    Node::new("BBC01", "管理员", Role::Admin, 9)
}

fn run(node: &mut Node, doc: &mut CaseDoc, hall: &Hall, command: Command) {
    node.apply(doc, hall, command.clone()).unwrap_or_else(|error| panic!("building a case: {command:?}: {error}"));
}

/// A case in `status`, with the builder node at its clock, and (for a duplicate) the master it was merged into.
fn case_in(hall: &Hall, status: Status) -> (CaseDoc, Node) {
    let mut admin = admin_node();
    if status == Status::Submitted {
        let mut citizen = Node::new("BBC01", "citizen", Role::Citizen, 8);
        let mut form = registration("BDC", Nature::Help, "房屋登记信息有误");
        form.channel = Channel::MiniProgram;
        let (doc, _, _) = citizen.register(hall, form);
        admin.now_ms = citizen.now_ms;
        return (doc, admin);
    }
    let (mut doc, _, _) = admin.register(hall, registration("BDC", Nature::Help, "房屋登记信息有误"));
    let reason = || "群众申请".to_owned();
    let reply = Command::Resolve { result: CaseResult::Done, reply: "已更正登记信息".into() };
    let steps: Vec<Command> = match status {
        Status::Submitted | Status::Registered => vec![],
        Status::Dispatched => vec![Command::Dispatch { lead_unit: None, co_units: None, due_ms: None }],
        Status::InProgress | Status::OnHold | Status::Replied | Status::Closed | Status::Archived => {
            let mut steps = vec![
                Command::Dispatch { lead_unit: None, co_units: None, due_ms: None },
                Command::SignIn { assignee: "王工".into() },
            ];
            if status == Status::OnHold {
                steps.push(Command::Suspend { reason: reason() });
            }
            if matches!(status, Status::Replied | Status::Closed | Status::Archived) {
                steps.push(reply);
            }
            if matches!(status, Status::Closed | Status::Archived) {
                steps.push(Command::RecordCallback {
                    method: CallbackMethod::Phone,
                    reached: true,
                    outcome: Some(CallbackOutcome::Resolved),
                    rating: Some(5),
                    comment: String::new(),
                });
                steps.push(Command::Close { reviewer: "李科长".into(), forced: false });
            }
            if status == Status::Archived {
                steps.push(Command::Archive);
            }
            steps
        }
        Status::Rejected => vec![Command::Reject { reason: reason(), basis: "《条例》第十条".into() }],
        Status::Withdrawn => vec![Command::Withdraw { reason: reason() }],
        Status::Duplicate => {
            let (mut master, _, _) = admin.register(hall, registration("BDC", Nature::Help, "同一套房屋"));
            let ctx = admin.ctx();
            CaseDoc::mark_duplicate(&mut doc, &mut master, &ctx).expect("mark duplicate");
            vec![]
        }
    };
    for step in steps {
        run(&mut admin, &mut doc, hall, step);
    }
    assert_eq!(doc.view().status, status, "the builder did not reach {status:?}");
    (doc, admin)
}

/// A command of `kind` whose payload is valid for a case of the Jiang'an hall.
fn command_of(kind: CommandKind, now_ms: i64) -> Option<Command> {
    use CommandKind as K;
    let text = |t: &str| t.to_owned();
    Some(match kind {
        K::Accept => Command::Accept,
        K::Reject => Command::Reject { reason: text("不属于受理范围"), basis: text("《条例》第十条") },
        K::Dispatch => Command::Dispatch { lead_unit: None, co_units: None, due_ms: None },
        K::SignIn => Command::SignIn { assignee: text("王工") },
        K::Return => Command::Return { reason: text("非本单位职责"), basis: text("三定方案") },
        K::Reassign => Command::Reassign { lead_unit: text("FG"), co_units: vec![], reason: text("职责调整") },
        K::AddNote => Command::AddNote { text: text("已电话联系") },
        K::PublishReply => Command::PublishReply { text: text("正在办理") },
        K::HoldConsultation => Command::HoldConsultation {
            units: vec![text("FG")],
            minutes: text("会商意见"),
            site_visit: false,
            held_at_ms: now_ms,
        },
        K::LogVisit => Command::LogVisit {
            volunteers: vec![text("小周")],
            outcome: text("已上门"),
            visited_at_ms: now_ms,
            duration_minutes: 30,
        },
        K::AssignVisit => Command::AssignVisit { laptop: "ab".repeat(32) },
        K::RequestExtension => Command::RequestExtension { working_days: 5, reason: text("需外单位协查") },
        // No pending request on the built cases: a permitted approval is refused as `UnknownExtension`.
        K::ApproveExtension => Command::ApproveExtension { request: EventId::parse("01J0000000000000000000000A")? },
        K::Supervise => Command::Supervise { level: SupervisionLevel::Urge, comment: String::new() },
        K::ChangePriority => Command::ChangePriority { priority: Priority::Urgent },
        K::ChangeCategory => Command::ChangeCategory { category: text("FANGGUAN") },
        K::EditField => Command::EditField { field: EditableField::Location, value: text("江岸区某小区") },
        K::AddTags => Command::AddTags { tags: vec![text("回访")] },
        K::AddCoUnits => Command::AddCoUnits { units: vec![text("SW")] },
        K::Suspend => Command::Suspend { reason: text("缺少材料") },
        K::Resume => Command::Resume,
        K::Resolve => Command::Resolve { result: CaseResult::Done, reply: text("已办结") },
        K::RecordCallback => Command::RecordCallback {
            method: CallbackMethod::Phone,
            reached: true,
            outcome: Some(CallbackOutcome::Resolved),
            rating: Some(5),
            comment: String::new(),
        },
        K::Close => Command::Close { reviewer: text("李科长"), forced: false },
        K::ForceClose => Command::Close { reviewer: text("李科长"), forced: true },
        K::Reopen => Command::Reopen { reason: text("群众不满意") },
        K::Unmerge => Command::Unmerge,
        K::Withdraw => Command::Withdraw { reason: text("群众申请撤回") },
        K::Archive => Command::Archive,
        K::PurgePersonalData => Command::PurgePersonalData,
        K::ResolveConflict => Command::ResolveConflict {
            conflict: text("f-summary"),
            decision: ConflictDecision::Keep,
            note: String::new(),
        },
        K::Rate => Command::Rate {
            level: Satisfaction::Dissatisfied,
            reasons: vec![BadReviewReason::Unresolved],
            comment: text("还没解决"),
        },
        // No 差评 on the built cases: a permitted step, appeal or decision is refused for the case's content.
        K::BadReviewStep => Command::BadReviewStep { step: ReviewStep::Verify, text: text("已核实") },
        K::AppealRating => Command::AppealRating { reason: text("评价与事实不符") },
        K::DecideAppeal => Command::DecideAppeal { upheld: false, note: text("维持评价") },
        K::AddMaterial => Command::AddMaterial {
            hash: "ab".repeat(32),
            bytes: 2048,
            media: zhaowo_crdt::materials::MaterialType::Jpeg,
            name: text("申请表.jpg"),
            public: false,
            thumbnail: None,
        },
        // No material on the built cases: a permitted removal or publication is refused for the case's content.
        K::RemoveMaterial => {
            Command::RemoveMaterial { material: EventId::parse("01J0000000000000000000000B")?, reason: text("重复") }
        }
        K::PublishMaterial => {
            Command::PublishMaterial { material: EventId::parse("01J0000000000000000000000B")?, public: true }
        }
        // Not `Command`s: 并案 spans two documents, 查看 and 查看材料 are audit events.
        K::MarkDuplicate | K::RevealPersonalData | K::ViewMaterial => return None,
    })
}

#[test]
fn the_table_and_the_case_rules_agree_for_every_role_state_and_kind() {
    let hall = Hall::jiangan_default();
    let (mut accepted, mut refused_other, mut refused_role, mut refused_state, mut allowed_listed) = (0, 0, 0, 0, 0);
    for &status in Status::ALL {
        let (mut template, builder) = case_in(&hall, status);
        for (index, &role) in Role::ALL.iter().enumerate() {
            let allowed = template.view().allowed(role);
            for &kind in CommandKind::ALL {
                let mut node = Node::new("BBC01", "测试", role, 20 + index as u8);
                node.now_ms = builder.now_ms;
                let mut doc = node.fork(&mut template);
                let result = match kind {
                    CommandKind::MarkDuplicate => {
                        let mut other = admin_node();
                        other.now_ms = builder.now_ms;
                        let (master, _, _) = other.register(&hall, registration("BDC", Nature::Help, "另一件"));
                        let ctx = node.ctx();
                        doc.mark_duplicate_of(&master.view(), &ctx)
                    }
                    CommandKind::RevealPersonalData => {
                        let ctx = node.ctx();
                        doc.reveal_personal_data_event(&ctx, "电话回访").map(|(_, event)| event)
                    }
                    CommandKind::ViewMaterial => {
                        let ctx = node.ctx();
                        let material = EventId::parse("01J0000000000000000000000B").expect("an event id");
                        doc.view_material_event(&ctx, &material).map(|(_, event)| event)
                    }
                    _ => {
                        let command = command_of(kind, node.now_ms + 60_000).expect("a command for every other kind");
                        assert_eq!(command.kind(), kind);
                        node.apply(&mut doc, &hall, command)
                    }
                };
                let what = format!("{kind:?} by {role:?} on {status:?}");
                match (kind.permitted(role, status), &result) {
                    (Ok(()), Ok(_)) => accepted += 1,
                    (Ok(()), Err(CommandError::Role { .. } | CommandError::State { .. })) => {
                        panic!("{what}: the table allows it, the case rules refused it: {result:?}")
                    }
                    (Ok(()), Err(_)) => refused_other += 1,
                    (Err(Refusal::Role), Err(CommandError::Role { command, role: r })) => {
                        assert_eq!((*command, *r), (kind, role), "{what}");
                        refused_role += 1;
                    }
                    (Err(Refusal::State), Err(CommandError::State { command, status: s })) => {
                        assert_eq!((*command, *s), (kind, status), "{what}");
                        refused_state += 1;
                    }
                    (Err(refusal), _) => {
                        panic!("{what}: the table refuses it ({refusal:?}), the case rules said {result:?}")
                    }
                }
                if allowed.contains(&kind) {
                    allowed_listed += 1;
                    assert!(kind.permitted(role, status).is_ok(), "{what}: listed as allowed but refused by the table");
                }
            }
        }
    }
    let total = Status::ALL.len() * Role::ALL.len() * CommandKind::ALL.len();
    println!(
        "permission table vs case rules: {total} (state, role, kind) triples: {accepted} accepted, {refused_other} \
         refused for the payload or the case's content, {refused_role} refused for the role, {refused_state} for the \
         state; CaseView::allowed listed {allowed_listed}"
    );
    assert_eq!(accepted + refused_other + refused_role + refused_state, total);
    assert!(accepted > 100 && refused_role > 100 && refused_state > 100, "a degenerate table");
}

#[test]
fn allowed_leaves_out_what_the_case_does_not_hold() {
    let hall = Hall::jiangan_default();
    let (doc, _) = case_in(&hall, Status::InProgress);
    let view = doc.view();
    let supervision = view.allowed(Role::Supervision);
    // No pending extension request, no conflict: nothing to approve or settle, though the role and state would allow it.
    for kind in [CommandKind::ApproveExtension, CommandKind::ResolveConflict, CommandKind::Unmerge] {
        assert!(!supervision.contains(&kind), "{kind:?} listed on a case without its subject");
    }
    assert!(supervision.contains(&CommandKind::Reassign) && supervision.contains(&CommandKind::ForceClose));
    let window = view.allowed(Role::Window);
    assert!(!window.contains(&CommandKind::Reassign) && window.contains(&CommandKind::Suspend));
    assert!(view.allowed(Role::Citizen).iter().all(|kind| *kind == CommandKind::Withdraw));
    println!(
        "an in-progress case: 督查科 may {} kinds, a window {}, a volunteer {}, a citizen {}",
        supervision.len(),
        window.len(),
        view.allowed(Role::Volunteer).len(),
        view.allowed(Role::Citizen).len()
    );
}
