//! T0: random command sequences on 3-5 replicas of a case, with random pairwise syncs over Automerge's sync protocol
//! that drop and duplicate messages, and restarts from the last persisted bytes, converge after heal to identical case
//! views, with no acknowledged command lost.
//!
//! A replica acknowledges a command only after persisting (saving) the document, like the node acknowledges after
//! COMMIT; received changes are persisted before the next message is generated. `PROPTEST_CASES` sets the number of
//! cases (256 by default, as in CI).
#![allow(clippy::print_stdout)] // The test prints its figures (TESTING.md).
use crate::support;
use automerge::sync::{Message, State, SyncDoc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeSet;
use support::*;
use zhaowo_crdt::model::*;
use zhaowo_crdt::*;

/// Rounds of one sync session before it is cut off (a settled session needs 2-4 messages; loss needs more).
const SYNC_ROUNDS_MAX: usize = 12;
/// Rounds of the final full-mesh heal: without loss every pair settles in a few rounds.
const HEAL_PASSES_MAX: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Command { replica: usize, choice: u8, arg: u8 },
    Sync { a: usize, b: usize, faults: u64 },
    Restart { replica: usize },
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..replicas, any::<u8>(), any::<u8>()).prop_map(|(replica, choice, arg)| Op::Command { replica, choice, arg }),
        3 => (0..replicas, 0..replicas, any::<u64>()).prop_map(|(a, b, faults)| Op::Sync { a, b, faults }),
        1 => (0..replicas).prop_map(|replica| Op::Restart { replica }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (3usize..=5).prop_flat_map(|replicas| (Just(replicas), prop::collection::vec(op(replicas), 1..48)))
}

struct Replica {
    node: Node,
    doc: CaseDoc,
    persisted: Vec<u8>,
}

impl Replica {
    fn persist(&mut self) {
        self.persisted = self.doc.save();
    }
}

#[derive(Default, Debug)]
struct Totals {
    cases: usize,
    acked: usize,
    refused: usize,
    syncs: usize,
    dropped: usize,
    duplicated: usize,
    restarts: usize,
    conflicts: usize,
}

/// The cast of replicas: windows of two desks, the 督查科, a volunteer laptop and an admin.
fn cast(replicas: usize) -> Vec<Node> {
    let all = [
        ("BBC01", "张敏", Role::Window),
        ("2F03", "王工", Role::Window),
        ("DC01", "刘督查", Role::Supervision),
        ("V01", "帮帮哥小周", Role::Volunteer),
        ("1F02", "系统管理员", Role::Admin),
    ];
    all.iter()
        .take(replicas)
        .enumerate()
        .map(|(i, (window, staff, role))| Node::new(window, staff, *role, i as u8))
        .collect()
}

fn command(choice: u8, arg: u8, view: &CaseView, now_ms: i64) -> Command {
    let text = |prefix: &str| format!("{prefix}{arg}");
    let units = ["BDC", "FG", "GA", "SW"];
    let unit = units[usize::from(arg) % units.len()].to_owned();
    match choice % 26 {
        0 => Command::Dispatch { lead_unit: Some(unit), co_units: None, due_ms: None },
        1 => Command::SignIn { assignee: text("承办人") },
        2 => Command::Return { reason: text("退单原因"), basis: "职责清单".into() },
        3 => Command::Reassign { lead_unit: unit, co_units: vec!["GA".into()], reason: text("改派") },
        4 | 5 => Command::AddNote { text: text("备注") },
        6 => Command::PublishReply { text: text("答复") },
        7 => Command::HoldConsultation {
            units: vec![unit, "FG".into()],
            minutes: text("会诊"),
            site_visit: arg.is_multiple_of(2),
            held_at_ms: now_ms,
        },
        8 => Command::LogVisit {
            volunteers: vec![text("志愿者")],
            outcome: text("上门"),
            visited_at_ms: now_ms,
            duration_minutes: u32::from(arg),
        },
        9 => Command::RequestExtension { working_days: u16::from(arg % 5) + 1, reason: text("延期") },
        10 => match view.extensions.iter().find(|e| e.approved_due_ms.is_none()) {
            Some(extension) => Command::ApproveExtension { request: extension.request.clone() },
            None => Command::AddNote { text: text("无待批延期") },
        },
        11 => Command::Supervise { level: SupervisionLevel::ALL[usize::from(arg) % 5], comment: text("督办") },
        12 => Command::ChangePriority { priority: Priority::ALL[usize::from(arg) % 3] },
        13 => Command::EditField { field: EditableField::Summary, value: text("摘要") },
        14 => Command::AddTags { tags: vec![text("标签")] },
        15 => Command::AddCoUnits { units: vec![unit] },
        16 => Command::Suspend { reason: text("补材料") },
        17 => Command::Resume,
        18 => Command::Resolve { result: CaseResult::ALL[usize::from(arg) % 5], reply: text("办理结果") },
        19 => Command::RecordCallback {
            method: CallbackMethod::Phone,
            reached: !arg.is_multiple_of(3),
            outcome: (!arg.is_multiple_of(3)).then(|| CallbackOutcome::ALL[usize::from(arg) % 3]),
            rating: (!arg.is_multiple_of(3)).then_some(arg % 5 + 1),
            comment: String::new(),
        },
        20 => Command::Close { reviewer: "陈科长".into(), forced: arg.is_multiple_of(4) },
        21 => Command::Reopen { reason: text("重办") },
        22 => Command::Withdraw { reason: text("撤回") },
        23 => match view.conflicts.first() {
            Some(conflict) => Command::ResolveConflict {
                conflict: conflict.id.clone(),
                decision: ConflictDecision::Keep,
                note: text("核定"),
            },
            None => Command::AddNote { text: text("无冲突") },
        },
        24 => Command::ChangeCategory { category: ["BDC", "FANGGUAN", "HUZHENG"][usize::from(arg) % 3].into() },
        _ => Command::Reject { reason: text("不予受理"), basis: "受理范围".into() },
    }
}

/// A tiny deterministic generator for the fault bits of one sync session.
fn next_bits(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One sync session between two replicas, each starting from a fresh `sync::State` (NOTES.md). With `lossy`, each
/// message may be dropped (1 in 8) or delivered twice (1 in 8). Received changes are persisted before replying.
fn sync_pair(replicas: &mut [Replica], a: usize, b: usize, mut faults: u64, lossy: bool, totals: &mut Totals) -> bool {
    let mut states = [State::new(), State::new()];
    faults |= 1;
    for _ in 0..SYNC_ROUNDS_MAX {
        let mut quiet = true;
        for (from, to, side) in [(a, b, 0), (b, a, 1)] {
            let Some(message) = replicas[from].doc.automerge_mut().sync().generate_sync_message(&mut states[side])
            else {
                continue;
            };
            quiet = false;
            let bytes = message.encode();
            let bits = next_bits(&mut faults);
            let copies = if !lossy {
                1
            } else if bits.is_multiple_of(8) {
                0
            } else if bits % 8 == 1 {
                2
            } else {
                1
            };
            totals.dropped += usize::from(copies == 0);
            totals.duplicated += usize::from(copies == 2);
            for _ in 0..copies {
                let message = Message::decode(&bytes).expect("our own message decodes");
                replicas[to]
                    .doc
                    .automerge_mut()
                    .sync()
                    .receive_sync_message(&mut states[1 - side], message)
                    .expect("sync message applies");
            }
            replicas[to].persist();
        }
        if quiet {
            return true;
        }
    }
    false
}

fn run(replica_count: usize, ops: &[Op], totals: &mut Totals) -> Result<(), TestCaseError> {
    let hall = Hall::jiangan_default();
    let mut nodes = cast(replica_count);
    let (mut doc, first_event, _) = nodes[0].register(&hall, registration("BDC", Nature::Help, "房屋登记信息有误"));
    let bytes = doc.save();
    let mut replicas: Vec<Replica> = nodes
        .drain(..)
        .map(|node| {
            let doc = CaseDoc::load(&bytes, node.actor.clone()).expect("load");
            Replica { node, doc, persisted: bytes.clone() }
        })
        .collect();
    let mut acked = BTreeSet::from([first_event]);
    for (step, op) in ops.iter().enumerate() {
        // Every node's clock moves on; nodes drift a little from each other.
        for (i, replica) in replicas.iter_mut().enumerate() {
            replica.node.now_ms += 60_000 + (i as i64) * 7_000;
        }
        match *op {
            Op::Command { replica, choice, arg } => {
                let r = &mut replicas[replica];
                let view = r.doc.view();
                let command = command(choice, arg, &view, r.node.now_ms);
                let ctx = r.node.ctx();
                match r.doc.apply(&ctx, &hall, command) {
                    Ok(event) => {
                        r.persist();
                        acked.insert(event);
                        totals.acked += 1;
                    }
                    Err(_) => totals.refused += 1,
                }
            }
            Op::Sync { a, b, faults } if a != b => {
                totals.syncs += 1;
                sync_pair(&mut replicas, a, b, faults ^ step as u64, true, totals);
            }
            Op::Sync { .. } => {}
            Op::Restart { replica } => {
                totals.restarts += 1;
                let r = &mut replicas[replica];
                r.doc = CaseDoc::load(&r.persisted, r.node.actor.clone()).expect("persisted bytes load");
            }
        }
    }
    // Heal: full mesh without loss until every pair settles.
    for _ in 0..HEAL_PASSES_MAX {
        let mut settled = true;
        for a in 0..replica_count {
            for b in a + 1..replica_count {
                settled &= sync_pair(&mut replicas, a, b, 1, false, totals);
            }
        }
        let heads: BTreeSet<_> = replicas.iter_mut().map(|r| r.doc.automerge_mut().get_heads()).collect();
        if settled && heads.len() == 1 {
            break;
        }
    }
    let views: Vec<CaseView> = replicas.iter().map(|r| r.doc.view()).collect();
    let heads: BTreeSet<_> = replicas.iter_mut().map(|r| r.doc.automerge_mut().get_heads()).collect();
    prop_assert_eq!(heads.len(), 1, "replicas did not converge to the same heads");
    for view in &views[1..] {
        prop_assert_eq!(view, &views[0], "replicas show different cases after heal");
    }
    let lost: Vec<_> = acked.iter().filter(|id| !views[0].event_ids.contains(*id)).collect();
    prop_assert!(lost.is_empty(), "acknowledged events lost: {:?}", lost);
    // Restarting any replica from its persisted bytes gives the same case.
    for r in &replicas {
        let reloaded = CaseDoc::load(&r.persisted, automerge::ActorId::from(vec![99; 16])).expect("reload");
        prop_assert_eq!(&reloaded.view(), &views[0]);
    }
    totals.conflicts += views[0].conflicts.len();
    totals.cases += 1;
    Ok(())
}

#[test]
fn any_interleaving_of_commands_syncs_and_restarts_converges() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let totals = std::cell::RefCell::new(Totals::default());
    let result = runner.run(&scenario(), |(replicas, ops)| run(replicas, &ops, &mut totals.borrow_mut()));
    let t = totals.into_inner();
    // lost=0 and divergent=0 are what every passed case asserted; a failed run says FAILED instead.
    let verdict = if result.is_ok() { "lost=0 divergent=0" } else { "FAILED" };
    println!(
        "convergence cases={cases} passed={} acked={} refused={} syncs={} dropped={} duplicated={} restarts={} conflicts_listed={} {verdict}",
        t.cases, t.acked, t.refused, t.syncs, t.dropped, t.duplicated, t.restarts, t.conflicts
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(t.cases >= cases as usize, "only {} of {cases} cases ran", t.cases);
}
