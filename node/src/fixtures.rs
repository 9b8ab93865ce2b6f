//! Deterministic generators of realistic cases, for tests, crash harnesses and benchmarks.
//!
//! A [`CaseFactory`] is one simulated window node: its own actor, clock and a seeded xorshift generator, so the same
//! seed makes the same cases. Not used by the node at run time.

use automerge::ActorId;
use std::collections::BTreeSet;
use std::sync::Arc;
use zhaowo_crdt::model::{CallbackMethod, CallbackOutcome, CaseResult, Channel, Nature, Priority, Role, Status};
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{Author, CaseDoc, CaseView, Command, Ctx, Hall, QueryCode, RegNo, Registration};

const PLACES: &[&str] = &["江岸区", "后湖街道", "永清街", "百步亭", "黄浦路", "台北路", "二七街道", "丹水池"];
const MATTERS: &[&str] = &[
    "房产证办理",
    "户口迁移",
    "社保转移",
    "公积金提取",
    "营业执照变更",
    "医保报销",
    "不动产登记",
    "出入境证件",
    "车辆年检",
    "低保申请",
];
const PROBLEMS: &[&str] =
    &["材料不齐", "系统无法提交", "窗口说不归他们管", "等了三个月没有结果", "需要跨部门盖章", "政策不清楚"];
const NOTES: &[&str] = &[
    "已电话联系申请人",
    "协调房管局核实",
    "等待税务局回函",
    "申请人补充了材料",
    "现场勘查完毕",
    "Call back on Monday",
];

/// One simulated window node that registers and works cases.
#[derive(Debug)]
pub struct CaseFactory {
    hall: Arc<Hall>,
    actor: ActorId,
    author: Author,
    now_ms: i64,
    state: u64,
    /// The year and the last registration number sequence of that year.
    last_seq: (i32, Option<u32>),
}

impl CaseFactory {
    /// A window node with the given seed, actor and starting clock. Its window code comes from the actor
    /// (`W` + the first three bytes in hex), as a hall gives every enrolled node its own code: factories of
    /// different nodes never issue the same 登记编号, factories sharing an actor share a window.
    pub fn new(seed: u64, actor: ActorId, start_ms: i64) -> CaseFactory {
        let window: String = std::iter::once("W".to_owned())
            .chain(actor.to_bytes().iter().take(3).map(|byte| format!("{byte:02X}")))
            .collect();
        let mut hall = Hall::jiangan_default();
        let name = format!("模拟窗口 {window}");
        hall.windows.insert(window.clone(), zhaowo_crdt::hall::Window { name, floor: "1F".to_owned() });
        let author = Author { node: format!("node-{seed}"), staff: "张敏".to_owned(), role: Role::Window, window };
        CaseFactory {
            hall: Arc::new(hall),
            actor,
            author,
            now_ms: start_ms,
            // Spread the seed first: with `seed | 1` alone, seeds 2k and 2k+1 gave the same stream (same case ids on
            // two "different" nodes).
            state: (seed ^ 0x5851_f42d_4c95_7f2d).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            last_seq: (0, None),
        }
    }

    /// The same factory registering under another window code (two generators sharing one node's actor must not
    /// issue the same 登记编号).
    pub fn with_window(mut self, window: &str) -> CaseFactory {
        let mut hall = (*self.hall).clone();
        hall.windows.insert(
            window.to_owned(),
            zhaowo_crdt::hall::Window { name: format!("模拟窗口 {window}"), floor: "1F".to_owned() },
        );
        self.hall = Arc::new(hall);
        self.author.window = window.to_owned();
        self
    }

    /// 2026-01-05 (a Monday) 09:00 in Wuhan.
    pub fn start_2026() -> i64 {
        Date::new(2026, 1, 5).expect("a valid date").at_minute_ms(9 * 60)
    }

    pub fn hall(&self) -> Arc<Hall> {
        self.hall.clone()
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Moves the clock forward.
    pub fn advance_ms(&mut self, ms: i64) {
        self.now_ms += ms;
    }

    /// Sets the clock (cases are independent: a later case may start before an earlier one's last event).
    pub fn set_now_ms(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    /// The next pseudo-random number (xorshift64*).
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// A context a few minutes after the previous one.
    pub fn ctx(&mut self) -> Ctx {
        self.now_ms += 60_000 * (1 + self.below(20) as i64);
        let entropy = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        // Deterministic like the rest of the fixture (tests replay it); nodes draw it from the OS.
        let secret = {
            let mut secret = [0u8; 32];
            secret[..16].copy_from_slice(&entropy.to_le_bytes());
            secret[16..].copy_from_slice(&(!entropy).to_le_bytes());
            secret
        };
        Ctx { now_ms: self.now_ms, entropy, secret, author: self.author.clone() }
    }

    /// A new registration with varied nature, category, priority and Chinese text.
    pub fn registration(&mut self) -> Registration {
        let nature = Nature::ALL[self.below(Nature::ALL.len() as u64) as usize];
        let categories: Vec<String> = self.hall.categories.keys().cloned().collect();
        let category = categories[self.below(categories.len() as u64) as usize].clone();
        let priority = if self.below(10) == 0 { Priority::Urgent } else { Priority::Normal };
        let place = self.pick(PLACES);
        let matter = self.pick(MATTERS);
        let problem = self.pick(PROBLEMS);
        Registration {
            channel: Channel::Window,
            nature,
            category,
            modes: BTreeSet::new(),
            priority,
            matter: None,
            not_done_reason: None,
            summary: format!("{place}{matter}{problem}"),
            detail: format!("群众反映在{place}办理{matter}时{problem}，希望尽快解决。编号 {}", self.below(1000)),
            expectation: "尽快办结".to_owned(),
            location: place.to_owned(),
            sensitive: false,
            tags: BTreeSet::new(),
            personal: PersonalData {
                name: Some("李建国".to_owned()),
                phone: Some("13812341234".to_owned()),
                callback_ok: true,
                publish_ok: true,
                ..PersonalData::default()
            },
        }
    }

    /// Registers a new case on this node.
    pub fn register(&mut self) -> CaseDoc {
        let registration = self.registration();
        let ctx = self.ctx();
        let year = Date::of_ms(ctx.now_ms).year;
        let last = if self.last_seq.0 == year { self.last_seq.1 } else { None };
        let reg_no = RegNo::next_after(&self.author.window, year, last)
            .expect("fewer than a million cases per year and factory");
        self.last_seq = (year, Some(reg_no.seq));
        let code = QueryCode::from_entropy(self.next_u64());
        let (case, _) = CaseDoc::register(&ctx, &self.hall, self.actor.clone(), reg_no, &code, registration)
            .expect("a valid registration");
        case
    }

    /// Registers a new case into `store`, which allocates its number in the registering transaction (as the desk,
    /// the citizen page and the CLI do). The in-memory [`CaseFactory::register`] numbers cases itself, for documents
    /// that never meet a store's register.
    pub async fn register_into(
        &mut self,
        store: &crate::store::Store,
    ) -> Result<crate::store::Registered, crate::store::WriteError> {
        let registration = self.registration();
        let ctx = self.ctx();
        let year = Date::of_ms(ctx.now_ms).year;
        let code = QueryCode::from_entropy(self.next_u64());
        let (hall, actor) = (self.hall.clone(), self.actor.clone());
        let build: crate::store::RegisterFn = Box::new(move |reg_no| {
            CaseDoc::register(&ctx, &hall, actor, reg_no, &code, registration).map(|(case, _)| case)
        });
        let registered = store.register_new(&self.author.window, year, build).await?;
        self.last_seq = (year, Some(registered.reg_no.seq));
        Ok(registered)
    }

    /// A plausible next command for a case in this state (it may still be refused: callers skip refusals).
    pub fn next_command(&mut self, view: &CaseView) -> Command {
        if self.below(4) == 0 {
            let text = self.pick(NOTES).to_owned();
            return if self.below(2) == 0 { Command::AddNote { text } } else { Command::PublishReply { text } };
        }
        match view.status {
            Status::Submitted => Command::Accept,
            Status::Registered => Command::Dispatch { lead_unit: None, co_units: None, due_ms: None },
            Status::Dispatched => Command::SignIn { assignee: "王工".to_owned() },
            Status::InProgress if self.below(6) == 0 => {
                Command::Suspend { reason: "等待申请人补充材料".to_owned() }
            }
            Status::InProgress => Command::Resolve { result: CaseResult::Done, reply: "已按规定办理".to_owned() },
            Status::OnHold => Command::Resume,
            Status::Replied if self.below(2) == 0 => Command::RecordCallback {
                method: CallbackMethod::Phone,
                reached: true,
                outcome: Some(CallbackOutcome::Resolved),
                rating: Some(1 + self.below(5) as u8),
                comment: String::new(),
            },
            Status::Replied => Command::Close { reviewer: "陈科长".to_owned(), forced: false },
            _ => Command::AddNote { text: self.pick(NOTES).to_owned() },
        }
    }

    /// Applies up to `steps` plausible commands to `case` in memory, skipping refusals; returns how many took.
    pub fn work(&mut self, case: &mut CaseDoc, steps: usize) -> usize {
        let mut done = 0;
        for _ in 0..steps {
            let command = self.next_command(&case.view());
            let ctx = self.ctx();
            if case.apply(&ctx, &self.hall, command).is_ok() {
                done += 1;
            }
        }
        done
    }
}
