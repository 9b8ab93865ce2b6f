//! Hall membership and signed changes: enrollments and revocations signed by the hall root, and changes that only
//! count when signed by an enrolled, unrevoked author.
use crate::support;
use automerge::ChangeHash;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use support::*;
use zhaowo_crdt::model::{Nature, Role};
use zhaowo_crdt::roster::{Enrollment, Record, Revocation, Roster, RosterError, SignedRecord};
use zhaowo_crdt::signing::{ChangeRejected, actor_id, sign_change, verify_change};
use zhaowo_crdt::{CaseDoc, Hall, QueryCode, RegNo};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn enroll(root: &SigningKey, node: &SigningKey, window: &str, role: Role, at: i64) -> SignedRecord {
    Record::Enrollment(Enrollment {
        hall: root.verifying_key().to_bytes(),
        node_key: node.verifying_key().to_bytes(),
        window: window.into(),
        role,
        display_name: format!("{window} 窗口"),
        issued_ms: at,
    })
    .sign(root)
}

fn revoke(root: &SigningKey, node: &SigningKey, at: i64) -> SignedRecord {
    Record::Revocation(Revocation {
        hall: root.verifying_key().to_bytes(),
        node_key: node.verifying_key().to_bytes(),
        revoked_ms: at,
        reason: "笔记本遗失".into(),
    })
    .sign(root)
}

#[test]
fn the_roster_accepts_only_what_the_hall_root_signed() {
    let (root, window, laptop, stranger) = (key(1), key(2), key(3), key(4));
    let hall = root.verifying_key().to_bytes();
    let mut roster = Roster::new(hall);
    assert_eq!(roster.insert(enroll(&root, &window, "BBC01", Role::Window, 1)), Ok(true));
    assert_eq!(roster.insert(enroll(&root, &window, "BBC01", Role::Window, 1)), Ok(false), "idempotent");
    assert_eq!(roster.insert(enroll(&root, &laptop, "V01", Role::Volunteer, 2)), Ok(true));
    assert_eq!(roster.authorized(&window.verifying_key().to_bytes()).map(|e| e.role), Some(Role::Window));
    // Signed by someone else, or for another hall.
    assert_eq!(roster.insert(enroll(&stranger, &stranger, "ZZ1", Role::Admin, 3)), Err(RosterError::OtherHall));
    let mut forged = enroll(&root, &stranger, "ZZ1", Role::Admin, 3);
    forged.signature = enroll(&stranger, &stranger, "ZZ1", Role::Admin, 3).signature;
    assert_eq!(roster.insert(forged), Err(RosterError::BadSignature));
    let mut tampered = enroll(&root, &stranger, "ZZ1", Role::Window, 3);
    if let Record::Enrollment(e) = &mut tampered.record {
        e.role = Role::Admin;
    }
    assert_eq!(roster.insert(tampered), Err(RosterError::BadSignature));
    // A window code belongs to one active node (it makes registration numbers unique).
    assert!(matches!(
        roster.insert(enroll(&root, &stranger, "BBC01", Role::Window, 4)),
        Err(RosterError::WindowTaken { .. })
    ));
    assert!(matches!(
        roster.insert(enroll(&root, &stranger, "bad code", Role::Window, 4)),
        Err(RosterError::Malformed(_))
    ));
    // Revocation is final, even against a later enrollment of the same key.
    assert_eq!(roster.insert(revoke(&root, &laptop, 5)), Ok(true));
    assert!(roster.authorized(&laptop.verifying_key().to_bytes()).is_none());
    roster.insert(enroll(&root, &laptop, "V01", Role::Volunteer, 6)).unwrap();
    assert!(roster.authorized(&laptop.verifying_key().to_bytes()).is_none());
    // The revoked laptop's window is free again.
    assert_eq!(roster.insert(enroll(&root, &stranger, "V01", Role::Volunteer, 7)), Ok(true));
    // Bytes round-trip; garbage is a typed error.
    let record = &roster.records()[0];
    assert_eq!(&SignedRecord::from_bytes(&record.to_bytes()).unwrap(), record);
    assert!(matches!(SignedRecord::from_bytes(&[0xff, 0x01]), Err(RosterError::Decode(_))));
}

#[test]
fn peers_that_learn_the_same_records_in_any_order_agree() {
    let root = key(1);
    let records: Vec<SignedRecord> = (2..8)
        .map(|seed| enroll(&root, &key(seed), &format!("W{seed}"), Role::Window, i64::from(seed)))
        .chain([revoke(&root, &key(3), 10)])
        .collect();
    let mut forward = Roster::new(root.verifying_key().to_bytes());
    let mut backward = Roster::new(root.verifying_key().to_bytes());
    records.iter().cloned().for_each(|r| drop(forward.insert(r)));
    records.iter().rev().cloned().for_each(|r| drop(backward.insert(r)));
    assert_eq!(forward.digest(), backward.digest());
    assert_eq!(forward.active().count(), 5);
    assert_eq!(backward.active().count(), 5);
}

/// A case authored by `node` (actor = node key + incarnation), with every change signed.
fn signed_case(node: &SigningKey) -> (CaseDoc, BTreeMap<ChangeHash, [u8; 64]>) {
    let hall = Hall::jiangan_default();
    let mut author = Node::window(0);
    author.actor = actor_id(&node.verifying_key().to_bytes(), &[9; 8]);
    let ctx = author.ctx();
    let reg_no = RegNo::next_after("BBC01", 2026, None).unwrap();
    let (mut doc, _) = CaseDoc::register(
        &ctx,
        &hall,
        author.actor.clone(),
        reg_no,
        &QueryCode::from_entropy(5),
        registration("BDC", Nature::Help, "登记"),
    )
    .unwrap();
    let signatures =
        doc.automerge_mut().get_changes(&[]).iter().map(|c| (c.hash(), sign_change(node, &c.hash()))).collect();
    (doc, signatures)
}

#[test]
fn changes_count_only_when_signed_by_an_active_member() {
    let (root, window, stranger) = (key(1), key(2), key(4));
    let mut roster = Roster::new(root.verifying_key().to_bytes());
    roster.insert(enroll(&root, &window, "BBC01", Role::Window, 1)).unwrap();
    let (mut doc, signatures) = signed_case(&window);
    let mut change = doc.automerge_mut().get_changes(&[])[0].clone();
    let bytes = change.bytes().to_vec();
    let lookup = |hash: &ChangeHash| signatures.get(hash).copied();
    let (hash, author) = verify_change(&roster, &bytes, lookup).unwrap();
    assert_eq!((hash, author), (change.hash(), window.verifying_key().to_bytes()));
    assert!(matches!(verify_change(&roster, &bytes, |_| None), Err(ChangeRejected::Unsigned(_))));
    let forged = sign_change(&stranger, &hash);
    assert!(matches!(verify_change(&roster, &bytes, |_| Some(forged)), Err(ChangeRejected::Forged(_))));
    assert!(matches!(verify_change(&roster, b"\x85\x6f\x4a\x83junk", lookup), Err(ChangeRejected::Malformed(_))));
    // A stranger's change, validly signed by the stranger, is still refused: not a member.
    let (mut other, other_signatures) = signed_case(&stranger);
    let mut change = other.automerge_mut().get_changes(&[])[0].clone();
    let other_bytes = change.bytes().to_vec();
    assert!(matches!(
        verify_change(&roster, &other_bytes, |h| other_signatures.get(h).copied()),
        Err(ChangeRejected::Unauthorized(_))
    ));
    // A revocation keeps what the member made before it (relaying peers are not blamed either way) and refuses what
    // it made at or after it.
    let made_ms = change.timestamp() * 1000;
    assert!(made_ms > 0, "changes carry their author's time");
    let mut later = roster.clone();
    later.insert(revoke(&root, &window, made_ms + 1)).unwrap();
    assert!(verify_change(&later, &bytes, lookup).is_ok());
    roster.insert(revoke(&root, &window, made_ms)).unwrap();
    let refused = verify_change(&roster, &bytes, lookup).unwrap_err();
    assert!(matches!(refused, ChangeRejected::Revoked(..)), "{refused:?}");
    assert!(!refused.drops_peer());
    assert!(ChangeRejected::Forged(String::new()).drops_peer());
    // An actor id that is not key + incarnation.
    let (mut plain, _, _) =
        Node::window(5).register(&Hall::jiangan_default(), registration("BDC", Nature::Help, "登记"));
    let mut change = plain.automerge_mut().get_changes(&[])[0].clone();
    assert!(matches!(verify_change(&roster, &change.bytes(), |_| None), Err(ChangeRejected::ForeignActor(_))));
    let _ = Role::Admin;
}
