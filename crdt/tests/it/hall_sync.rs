//! The hall document between two sans-IO sessions: heads announced once, only what the peer lacks pushed, every new
//! change signed by an admin. A legacy base without signatures keeps working; a window node's forged hall change, an
//! unsigned one and a revoked admin's late one are refused without changing anything.
#![allow(clippy::print_stdout)] // The figures are printed (TESTING.md).
use automerge::ChangeHash;
use automerge::sync::{Message, State};
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use zhaowo_crdt::Hall;
use zhaowo_crdt::hall::{HallDoc, HallSignatures, SignedHall, StaffAccount};
use zhaowo_crdt::model::Role;
use zhaowo_crdt::roster::{Enrollment, PublicKey, Record, Revocation, Roster, SignedRecord};
use zhaowo_crdt::signing::{actor_id, sign_change};
use zhaowo_crdt::sync::{Replica, Session, SessionEvent, SyncError};
use zhaowo_crdt::wire::{self, CatalogEntry, ChangeSignature, Frame};

/// A replica that holds no cases, only the hall document.
struct HallOnly {
    roster: Roster,
    hall: SignedHall,
    persisted: usize,
}

impl Replica for HallOnly {
    fn catalog_after(&mut self, _after: u64, _limit: usize) -> Vec<CatalogEntry> {
        Vec::new()
    }
    fn heads_hash(&mut self, _doc_id: &str) -> Option<[u8; 32]> {
        None
    }
    fn has_all(&mut self, _doc_id: &str, heads: &[ChangeHash]) -> bool {
        heads.is_empty()
    }
    fn generate(&mut self, _doc_id: &str, _state: &mut State) -> Option<Message> {
        None
    }
    fn receive(&mut self, _: &str, _: &mut State, _: Message, _: &[ChangeSignature]) -> Result<(), String> {
        Err("this replica holds no cases".into())
    }
    fn reload(&mut self, _doc_id: &str) {}
    fn signature(&mut self, _doc_id: &str, _hash: &ChangeHash) -> Option<[u8; 64]> {
        None
    }
    fn roster(&self) -> &Roster {
        &self.roster
    }
    fn add_roster_records(&mut self, _records: Vec<SignedRecord>) -> usize {
        0
    }
    fn hall(&mut self) -> Option<&mut SignedHall> {
        Some(&mut self.hall)
    }
    fn hall_changed(&mut self) {
        self.persisted += 1;
    }
}

struct Setup {
    root: SigningKey,
    admin: SigningKey,
    window: SigningKey,
    roster: Roster,
}

fn enroll(root: &SigningKey, key: &SigningKey, window: &str, role: Role) -> SignedRecord {
    Record::Enrollment(Enrollment {
        hall: root.verifying_key().to_bytes(),
        node_key: key.verifying_key().to_bytes(),
        window: window.to_owned(),
        role,
        display_name: window.to_owned(),
        issued_ms: 1,
    })
    .sign(root)
}

fn setup() -> Setup {
    let root = SigningKey::from_bytes(&[1; 32]);
    let admin = SigningKey::from_bytes(&[2; 32]);
    let window = SigningKey::from_bytes(&[3; 32]);
    let mut roster = Roster::new(root.verifying_key().to_bytes());
    roster.insert(enroll(&root, &admin, "BBC01", Role::Admin)).unwrap();
    roster.insert(enroll(&root, &window, "1F02", Role::Window)).unwrap();
    Setup { root, admin, window, roster }
}

fn key(signing: &SigningKey) -> PublicKey {
    signing.verifying_key().to_bytes()
}

/// The admin's hall document: created unsigned (a hall from before signing), then copied to the window node as the
/// enrollment file does.
fn legacy_base(admin: &SigningKey) -> (HallDoc, Vec<u8>) {
    let mut doc =
        HallDoc::create(actor_id(&key(admin), &[9; 8]), Role::Admin, "管理员", 1_000, &Hall::jiangan_default())
            .unwrap();
    let bytes = doc.automerge_mut().save();
    (doc, bytes)
}

fn add_account(hall: &mut SignedHall, username: &str, at_ms: i64) {
    let mut config = hall.doc.hall().unwrap();
    let account = StaffAccount {
        display_name: "王五".into(),
        role: Role::Window,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
    };
    config.accounts.insert(username.to_owned(), account);
    hall.doc.update(Role::Admin, "管理员", at_ms, &config, &format!("新增工作人员账号 {username}")).unwrap();
}

/// Runs two sessions until neither has a frame to send. Returns (frames, bytes) delivered, or the first error with the
/// side that raised it (0: a, 1: b).
fn run(
    a: &mut HallOnly,
    b: &mut HallOnly,
    sa: &mut Session,
    sb: &mut Session,
) -> Result<(usize, usize), (usize, SyncError)> {
    let (mut frames, mut bytes) = (0, 0);
    loop {
        let mut moved = false;
        while let Some(frame) = sa.poll_transmit() {
            moved = true;
            frames += 1;
            bytes += frame.len();
            sb.handle_frame(&frame, b).map_err(|error| (1, error))?;
        }
        while let Some(frame) = sb.poll_transmit() {
            moved = true;
            frames += 1;
            bytes += frame.len();
            sa.handle_frame(&frame, a).map_err(|error| (0, error))?;
        }
        if !moved {
            return Ok((frames, bytes));
        }
    }
}

fn events(session: &mut Session) -> Vec<SessionEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

fn accounts(hall: &SignedHall) -> Vec<String> {
    hall.doc.hall().unwrap().accounts.into_keys().collect()
}

#[test]
fn an_admins_new_account_reaches_a_window_node_over_a_legacy_unsigned_base() {
    let s = setup();
    let (admin_doc, base) = legacy_base(&s.admin);
    let window_doc = HallDoc::load(&base, actor_id(&key(&s.window), &[8; 8])).unwrap();
    let mut a =
        HallOnly { roster: s.roster.clone(), hall: SignedHall::new(admin_doc, HallSignatures::new()), persisted: 0 };
    let mut w =
        HallOnly { roster: s.roster.clone(), hall: SignedHall::new(window_doc, HallSignatures::new()), persisted: 0 };

    // Same base, nothing signed: two `HallHeads` frames and nothing else.
    let mut sa = Session::new(key(&s.admin), key(&s.window), 0, &s.roster);
    let mut sw = Session::new(key(&s.window), key(&s.admin), 0, &s.roster);
    let (in_sync_frames, _) = run(&mut a, &mut w, &mut sa, &mut sw).unwrap();
    assert_eq!(in_sync_frames, 2 + 2 + 2, "hello, catalog and hall heads each way");

    // The admin adds an account and signs its own changes (the unsigned base included); the live push carries only
    // the new change.
    add_account(&mut a.hall, "wangwu", 2_000);
    let signed = a.hall.sign_own(&key(&s.admin), |hash| sign_change(&s.admin, hash));
    assert_eq!(signed, 2, "the legacy base change and the new one");
    sa.push_hall(&mut a);
    let pushed: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
    assert_eq!(pushed.len(), 1);
    let Ok(Frame::HallChanges { changes, signatures }) = wire::decode(&pushed[0]) else { panic!("not hall changes") };
    assert_eq!((changes.len(), signatures.len()), (1, 1), "only the change the window node lacks");
    sw.handle_frame(&pushed[0], &mut w).unwrap();
    assert_eq!(accounts(&w.hall), ["wangwu"]);
    assert_eq!(w.persisted, 1);
    assert!(events(&mut sw).contains(&SessionEvent::HallChanged { applied: 1, signatures_learned: 0 }));
    assert_eq!(w.hall.heads(), a.hall.heads());
    println!("hall sync push_frame_bytes={} in_sync_session_frames={in_sync_frames}", pushed[0].len());

    // Pushing again changes nothing: the session knows the window node holds it.
    sa.push_hall(&mut a);
    assert!(sa.poll_transmit().is_none());

    // A third node that joined later from the window node's copy gets the account relayed by the window node.
    let third_doc = HallDoc::load(&base, actor_id(&[7; 32], &[7; 8])).unwrap();
    let mut t =
        HallOnly { roster: s.roster.clone(), hall: SignedHall::new(third_doc, HallSignatures::new()), persisted: 0 };
    // Sessions check the peer against the roster: both ends get the roster that enrolls the third node.
    let third = SigningKey::from_bytes(&[7; 32]);
    let mut roster = s.roster.clone();
    roster.insert(enroll(&s.root, &third, "3F01", Role::Window)).unwrap();
    w.roster = roster.clone();
    t.roster = roster.clone();
    let mut sw2b = Session::new(key(&s.window), key(&third), 0, &roster);
    let mut st2 = Session::new(key(&third), key(&s.window), 0, &roster);
    run(&mut w, &mut t, &mut sw2b, &mut st2).unwrap();
    assert_eq!(accounts(&t.hall), ["wangwu"]);
}

#[test]
fn a_window_nodes_forged_hall_change_is_refused_and_changes_nothing() {
    let s = setup();
    let (admin_doc, base) = legacy_base(&s.admin);
    let mut a =
        HallOnly { roster: s.roster.clone(), hall: SignedHall::new(admin_doc, HallSignatures::new()), persisted: 0 };
    let before = a.hall.heads();

    // The window node edits its copy of the hall document and signs the change with its own (genuine) key.
    let mut forged = HallDoc::load(&base, actor_id(&key(&s.window), &[8; 8])).unwrap();
    let mut config = forged.hall().unwrap();
    config.name = "冒名大厅".into();
    forged.update(Role::Admin, "窗口", 3_000, &config, "冒名修改").unwrap();
    let change = forged.automerge_mut().get_last_local_change().unwrap();
    let signature = ChangeSignature { hash: change.hash().0, signature: sign_change(&s.window, &change.hash()) };
    let bytes = change.raw_bytes().to_vec();
    let frame = wire::encode(&Frame::HallChanges { changes: vec![bytes.clone()], signatures: vec![signature] });

    let hello = |from: &SigningKey| {
        wire::encode(&Frame::Hello { hall: *s.roster.hall(), node_key: key(from), roster_digest: s.roster.digest() })
    };
    let mut sa = Session::new(key(&s.admin), key(&s.window), 0, &s.roster);
    sa.handle_frame(&hello(&s.window), &mut a).unwrap();
    let error = sa.handle_frame(&frame, &mut a).unwrap_err();
    assert!(matches!(&error, SyncError::RejectedChange(why) if why.contains("not an admin")), "{error}");
    assert_eq!(a.hall.heads(), before, "nothing applied");
    assert_eq!(a.persisted, 0);
    assert_eq!(a.hall.doc.hall().unwrap().name, Hall::jiangan_default().name);

    // The same change unsigned, or with a signature by the wrong key, is refused too.
    for signatures in
        [vec![], vec![ChangeSignature { hash: change.hash().0, signature: sign_change(&s.admin, &change.hash()) }]]
    {
        let mut sa = Session::new(key(&s.admin), key(&s.window), 0, &s.roster);
        sa.handle_frame(&hello(&s.window), &mut a).unwrap();
        let frame = wire::encode(&Frame::HallChanges { changes: vec![bytes.clone()], signatures });
        assert!(matches!(sa.handle_frame(&frame, &mut a), Err(SyncError::RejectedChange(_))));
        assert_eq!(a.hall.heads(), before);
    }

    // Junk bytes claiming to be a change are refused, not a panic.
    let mut sa = Session::new(key(&s.admin), key(&s.window), 0, &s.roster);
    sa.handle_frame(&hello(&s.window), &mut a).unwrap();
    let junk =
        wire::encode(&Frame::HallChanges { changes: vec![b"\x85\x6f\x4a\x83junk".to_vec()], signatures: vec![] });
    assert!(matches!(sa.handle_frame(&junk, &mut a), Err(SyncError::RejectedChange(_))));
    assert_eq!(a.hall.heads(), before);
}

#[test]
fn a_revoked_admins_late_hall_change_is_refused_without_blaming_the_relay() {
    let s = setup();
    let (mut admin_doc, base) = legacy_base(&s.admin);
    let mut config = admin_doc.hall().unwrap();
    config.name = "吊销之后".into();
    // Seconds 5 → 5,000 ms: after the revocation at 4,000 ms.
    admin_doc.update(Role::Admin, "管理员", 5_000, &config, "吊销后修改").unwrap();
    let change = admin_doc.automerge_mut().get_last_local_change().unwrap();
    let mut roster = s.roster.clone();
    roster
        .insert(
            Record::Revocation(Revocation {
                hall: key(&s.root),
                node_key: key(&s.admin),
                revoked_ms: 4_000,
                reason: "笔记本遗失".into(),
            })
            .sign(&s.root),
        )
        .unwrap();
    let mut w = HallOnly {
        roster: roster.clone(),
        hall: SignedHall::new(HallDoc::load(&base, actor_id(&key(&s.window), &[8; 8])).unwrap(), HallSignatures::new()),
        persisted: 0,
    };
    let before = w.hall.heads();
    let signatures: BTreeMap<_, _> = [(change.hash().0, sign_change(&s.admin, &change.hash()))].into();
    let received = w
        .hall
        .receive(
            &roster,
            &[change.raw_bytes().to_vec()],
            &signatures
                .iter()
                .map(|(hash, signature)| ChangeSignature { hash: *hash, signature: *signature })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert!(received.refused.as_deref().is_some_and(|why| why.contains("revoked")), "{received:?}");
    assert_eq!(received.applied, 0);
    assert_eq!(w.hall.heads(), before);
}

#[test]
fn hall_frames_round_trip_and_their_counts_are_bounded() {
    let heads = Frame::HallHeads { heads: vec![[3; 32]; 2] };
    assert_eq!(wire::decode(&wire::encode(&heads)), Ok(heads));
    let too_many = wire::encode(&Frame::HallHeads { heads: vec![[0; 32]; wire::HALL_HEADS_MAX + 1] });
    assert_eq!(wire::decode(&too_many), Err(wire::WireError::Bounds("hall heads")));
    let too_many = wire::encode(&Frame::HallChanges {
        changes: vec![vec![]; wire::HALL_CHANGES_PER_FRAME_MAX + 1],
        signatures: vec![],
    });
    assert_eq!(wire::decode(&too_many), Err(wire::WireError::Bounds("hall changes")));
    // The older variants keep their postcard index: a `Peers` frame still starts with index 6.
    assert_eq!(wire::encode(&Frame::Peers { peers: vec![] })[1], 6);
    assert_eq!(wire::encode(&Frame::HallHeads { heads: vec![] })[1], 7);
}
