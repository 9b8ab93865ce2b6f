//! Test harness: simulated nodes with their own actor, clock and entropy, and helpers to fork and merge replicas.
#![allow(dead_code)]

use automerge::ActorId;
use std::collections::BTreeSet;
use zhaowo_crdt::model::{Channel, Nature, Priority, Role};
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{Author, CaseDoc, Command, CommandError, Ctx, EventId, Hall, QueryCode, RegNo, Registration};

/// 2026-03-02 (a Monday) 09:00 in Wuhan.
pub fn monday_nine() -> i64 {
    Date::new(2026, 3, 2).unwrap().at_minute_ms(9 * 60)
}

/// A simulated node: who it is, its clock and its entropy source.
pub struct Node {
    pub author: Author,
    pub actor: ActorId,
    pub now_ms: i64,
    counter: u128,
    pub last_seq: Option<u32>,
}

impl Node {
    pub fn new(window: &str, staff: &str, role: Role, index: u8) -> Node {
        Node {
            author: Author {
                node: format!("node-{window}-{index}"),
                staff: staff.to_owned(),
                role,
                window: window.to_owned(),
            },
            actor: ActorId::from(vec![index + 1; 16]),
            now_ms: monday_nine(),
            counter: u128::from(index) << 64,
            last_seq: None,
        }
    }

    pub fn window(index: u8) -> Node {
        Node::new("BBC01", "张敏", Role::Window, index)
    }

    /// A context one minute after the last one (each command takes time).
    pub fn ctx(&mut self) -> Ctx {
        self.now_ms += 60_000;
        self.counter += 1;
        // Spread the counter over the 80 random bits of a ULID like real entropy would.
        let entropy = self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        Ctx { now_ms: self.now_ms, entropy, secret: secret_of(entropy), author: self.author.clone() }
    }

    pub fn register(&mut self, hall: &Hall, registration: Registration) -> (CaseDoc, EventId, QueryCode) {
        let ctx = self.ctx();
        let reg_no = RegNo::next_after(&self.author.window, 2026, self.last_seq).unwrap();
        self.last_seq = Some(reg_no.seq);
        let code = QueryCode::from_entropy(ctx.entropy as u64);
        let (doc, event) =
            CaseDoc::register(&ctx, hall, self.actor.clone(), reg_no, &code, registration).expect("registration");
        (doc, event, code)
    }

    pub fn apply(&mut self, doc: &mut CaseDoc, hall: &Hall, command: Command) -> Result<EventId, CommandError> {
        let ctx = self.ctx();
        doc.apply(&ctx, hall, command)
    }

    /// A replica of `doc` on this node (as if synced over), holding the case key as every hall PC does.
    pub fn fork(&self, doc: &mut CaseDoc) -> CaseDoc {
        let mut replica = CaseDoc::load(&doc.save(), self.actor.clone()).expect("load");
        replica.set_key(doc.key().cloned());
        replica
    }
}

/// Merges both ways and asserts both replicas now show the same case.
pub fn merge_both(a: &mut CaseDoc, b: &mut CaseDoc) {
    a.merge(b).unwrap();
    b.merge(a).unwrap();
    assert_eq!(a.automerge_mut().get_heads(), b.automerge_mut().get_heads());
    assert_eq!(a.view(), b.view(), "replicas diverge after a two-way merge");
}

pub fn registration(category: &str, nature: Nature, summary: &str) -> Registration {
    Registration {
        channel: Channel::Window,
        nature,
        category: category.to_owned(),
        modes: BTreeSet::new(),
        priority: Priority::Normal,
        matter: None,
        not_done_reason: None,
        summary: summary.to_owned(),
        detail: format!("{summary}。详细情况见窗口记录。"),
        expectation: String::new(),
        location: String::new(),
        sensitive: false,
        tags: BTreeSet::new(),
        personal: PersonalData {
            name: Some("李建国".to_owned()),
            phone: Some("13812341234".to_owned()),
            callback_ok: true,
            ..PersonalData::default()
        },
    }
}

/// A deterministic command secret for tests (a node draws it from the OS random source).
pub fn secret_of(entropy: u128) -> [u8; 32] {
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(&entropy.to_le_bytes());
    secret[16..].copy_from_slice(&(!entropy).to_le_bytes());
    secret
}
