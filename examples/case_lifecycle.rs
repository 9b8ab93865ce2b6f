//! Walks one case through its life on two offline window PCs, then merges them: registration, dispatch, a
//! conflicting sign-in and reassignment made offline, the merge, the conflict listed and resolved, the reply, the
//! callback and the close. Prints the register-book card at each step.
//!
//! Run: `cargo run -p zhaowo-examples --example case_lifecycle`
#![allow(clippy::print_stdout)] // An example prints what it does.

use automerge::ActorId;
use std::collections::BTreeSet;
use zhaowo_crdt::model::{CallbackMethod, CallbackOutcome, CaseResult, Channel, Mode, Nature, Priority, Role};
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::{Date, format_local_minute};
use zhaowo_crdt::view::ConflictDetail;
use zhaowo_crdt::{Author, CaseDoc, CaseView, Command, ConflictDecision, Ctx, Hall, QueryCode, RegNo, Registration};

/// A window PC of the demo: its author identity and a clock that moves ten minutes per action.
struct Desk {
    author: Author,
    actor: ActorId,
    now_ms: i64,
    entropy: u128,
}

impl Desk {
    fn new(window: &str, staff: &str, role: Role, seed: u8) -> Desk {
        let author = Author { node: format!("demo-{window}"), staff: staff.into(), role, window: window.into() };
        let now_ms = Date::new(2026, 3, 2).expect("valid date").at_minute_ms(9 * 60);
        Desk { author, actor: ActorId::from(vec![seed; 16]), now_ms, entropy: u128::from(seed) * 0x0123_4567_89ab_cdef }
    }

    fn ctx(&mut self) -> Ctx {
        self.now_ms += 10 * 60_000;
        // splitmix64 twice: the low 80 bits become the random part of the event's ULID.
        let mix = |x: &mut u128| {
            *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *x as u64;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            u128::from(z ^ (z >> 31))
        };
        let (high, low) = (mix(&mut self.entropy), mix(&mut self.entropy));
        let entropy = (high << 64) | low;
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(&entropy.to_le_bytes());
        secret[16..].copy_from_slice(&(!entropy).to_le_bytes());
        Ctx { now_ms: self.now_ms, entropy, secret, author: self.author.clone() }
    }

    fn run(&mut self, doc: &mut CaseDoc, hall: &Hall, command: Command) {
        let name = command.name();
        let ctx = self.ctx();
        match doc.apply(&ctx, hall, command) {
            Ok(_) => println!(
                "  {} {} ({}) {name}",
                format_local_minute(ctx.now_ms),
                self.author.staff,
                self.author.role.label()
            ),
            Err(error) => println!("  {} refused: {error}", self.author.staff),
        }
    }
}

fn card(title: &str, view: &CaseView) {
    println!("\n== {title}");
    println!(
        "{}  status {} ({})  lead {}  due {}  conflicts {}",
        view.reg_no,
        view.status.label(),
        view.status.code(),
        view.lead_unit.as_deref().unwrap_or("-"),
        format_local_minute(view.due_ms),
        view.conflicts.len()
    );
}

fn main() {
    let hall = Hall::jiangan_default();
    let mut window = Desk::new("BBC01", "张敏", Role::Window, 1);
    let mut unit = Desk::new("2F03", "王工", Role::Window, 2);
    let mut supervision = Desk::new("DC01", "刘督查", Role::Supervision, 3);

    let registration = Registration {
        channel: Channel::Window,
        nature: Nature::Help,
        category: "BDC".into(),
        modes: BTreeSet::from([Mode::Consultation]),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: "老房登记为一套，实为两套，材料缺失无法分证".into(),
        detail: "李先生名下房改房当年登记为一套，实际为两套独立住房。".into(),
        expectation: "办理两本不动产权证书".into(),
        location: String::new(),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: PersonalData {
            name: Some("李建国".into()),
            phone: Some("13812341234".into()),
            callback_ok: true,
            ..Default::default()
        },
    };
    let ctx = window.ctx();
    let reg_no = RegNo::next_after("BBC01", 2026, None).expect("first number");
    let code = QueryCode::from_entropy(ctx.entropy as u64);
    let (mut doc, _) =
        CaseDoc::register(&ctx, &hall, window.actor.clone(), reg_no, &code, registration).expect("registered");
    println!("registered {} — the citizen's receipt code is {}", doc.view().reg_no, code.as_str());
    window.run(&mut doc, &hall, Command::Dispatch { lead_unit: None, co_units: None, due_ms: None });
    card("dispatched by the routing table", &doc.view());

    // The network is down: the unit's PC and the 督查科 PC each act on their own copy.
    let mut unit_copy = CaseDoc::load(&doc.save(), unit.actor.clone()).expect("copy loads");
    let mut supervision_copy = CaseDoc::load(&doc.save(), supervision.actor.clone()).expect("copy loads");
    unit.now_ms = window.now_ms;
    supervision.now_ms = window.now_ms;
    println!("\n-- offline");
    unit.run(&mut unit_copy, &hall, Command::SignIn { assignee: "王工".into() });
    supervision.run(
        &mut supervision_copy,
        &hall,
        Command::Reassign {
            lead_unit: "FG".into(),
            co_units: vec!["BDC".into()],
            reason: "分户须先由房管出具方案".into(),
        },
    );
    unit_copy.merge(&mut supervision_copy).expect("same case");
    let view = unit_copy.view();
    card("after the network is back (改派 beats 签收)", &view);
    for conflict in &view.conflicts {
        if let ConflictDetail::Transition { loser_label, loser_staff, winner_label, .. } = &conflict.detail {
            println!(
                "  conflict {}: {loser_label} by {loser_staff} lost to {}",
                conflict.id,
                winner_label.unwrap_or("-")
            );
        }
    }
    let conflict = view.conflicts.first().expect("the merge lists the superseded sign-in").id.clone();
    supervision.run(
        &mut unit_copy,
        &hall,
        Command::ResolveConflict { conflict, decision: ConflictDecision::Keep, note: "已告知不动产".into() },
    );
    unit.run(&mut unit_copy, &hall, Command::SignIn { assignee: "房管 赵工".into() });
    unit.run(
        &mut unit_copy,
        &hall,
        Command::Resolve { result: CaseResult::Done, reply: "两本不动产权证书已办好".into() },
    );
    window.now_ms = unit.now_ms;
    window.run(
        &mut unit_copy,
        &hall,
        Command::RecordCallback {
            method: CallbackMethod::Phone,
            reached: true,
            outcome: Some(CallbackOutcome::Resolved),
            rating: Some(5),
            comment: "非常满意".into(),
        },
    );
    window.run(&mut unit_copy, &hall, Command::Close { reviewer: "陈科长".into(), forced: false });
    let view = unit_copy.view();
    card("closed", &view);
    println!("\ntimeline:");
    for entry in &view.timeline {
        let mark = if entry.superseded { " (superseded)" } else { "" };
        println!("  {} {:<6} {}：{}{mark}", format_local_minute(entry.at_ms), entry.staff, entry.label, entry.text);
    }
    let public = view.public();
    println!("\nwhat the citizen sees with {} + {}:", public.reg_no, code.as_str());
    for reply in &public.replies {
        println!("  {} {}", format_local_minute(reply.at_ms), reply.text);
    }
    println!(
        "personal data on every page: {} {}",
        view.personal.name.unwrap_or_default(),
        view.personal.phone.unwrap_or_default()
    );
    println!("document: {} bytes, {} events", unit_copy.save().len(), view.event_ids.len());
}
