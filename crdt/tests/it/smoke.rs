//! A first walk through a case, to see the pieces fit.
use crate::support;
use support::*;
use zhaowo_crdt::model::*;
use zhaowo_crdt::*;

#[test]
fn a_case_walks_through_its_life() {
    let hall = Hall::jiangan_default();
    hall.validate().unwrap();
    let mut window = Node::window(0);
    let mut sup = Node::new("DC01", "刘督查", Role::Supervision, 1);
    let (mut doc, _, code) = window.register(&hall, registration("BDC", Nature::Help, "房产证办理咨询"));
    assert_eq!(doc.view().status, Status::Registered);
    assert!(doc.query_code_matches(code.as_str()));
    window.apply(&mut doc, &hall, Command::Dispatch { lead_unit: None, co_units: None, due_ms: None }).unwrap();
    let view = doc.view();
    assert_eq!(view.status, Status::Dispatched);
    assert_eq!(view.lead_unit.as_deref(), Some("BDC"));
    window.apply(&mut doc, &hall, Command::SignIn { assignee: "王工".into() }).unwrap();
    sup.apply(&mut doc, &hall, Command::Supervise { level: SupervisionLevel::Urge, comment: "请加快".into() }).unwrap();
    window.apply(&mut doc, &hall, Command::Resolve { result: CaseResult::Done, reply: "已办结".into() }).unwrap();
    window
        .apply(
            &mut doc,
            &hall,
            Command::RecordCallback {
                method: CallbackMethod::Phone,
                reached: true,
                outcome: Some(CallbackOutcome::Resolved),
                rating: Some(5),
                comment: String::new(),
            },
        )
        .unwrap();
    window.apply(&mut doc, &hall, Command::Close { reviewer: "陈科长".into(), forced: false }).unwrap();
    let view = doc.view();
    assert_eq!(view.status, Status::Closed);
    assert_eq!(view.supervision, SupervisionLevel::Urge);
    assert!(view.conflicts.is_empty(), "{:?}", view.conflicts);
    assert_eq!(view.personal.phone.as_deref(), Some("138****1234"));
    let mut reloaded = CaseDoc::load(&doc.save(), automerge::ActorId::from(vec![9; 16])).unwrap();
    // Without the case key a replica reads the public layer only.
    let public = reloaded.view();
    assert_eq!(
        (public.status, public.reg_no.clone(), public.summary.clone()),
        (view.status, view.reg_no.clone(), view.summary.clone())
    );
    assert_eq!(public.detail, zhaowo_crdt::seal::SEALED_ZH);
    assert!(public.personal.sealed && public.personal.phone.is_none() && public.phone_tag.is_none());
    reloaded.set_key(doc.key().cloned());
    assert_eq!(reloaded.view(), view);
}
