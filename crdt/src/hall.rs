//! The hall: windows, units, categories, the routing table, time-limit rules and the working-day calendar, and the
//! Automerge document that replicates them (only admins may change it).
//!
//! Due dates are computed here in working days on the hall's calendar, which knows holidays and 调休 make-up working
//! days (a Saturday that is a working day because a holiday was moved).

use crate::amjson;
pub use crate::calendar::Calendar;
use crate::ids::is_valid_code;
use crate::limits::NAME_CHARS_MAX;
use crate::model::{Nature, Priority, Role};
use crate::roster::{PublicKey, Roster};
use crate::signing::{ChangeRejected, verify_admin_change};
use crate::time::{DAY_MS, Date};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A service window (or a node's registering desk: a volunteer laptop has a window code too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub floor: String,
}

/// A department (承办单位).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub name: String,
}

/// A category (诉求类别) with its routing: the default lead unit and co-units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub name: String,
    pub lead_unit: String,
    pub co_units: Vec<String>,
}

/// A span of time a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    /// Until the end of the working day that many working days after the start (0: the same working day).
    WorkingDays(u16),
    /// Calendar hours from the start (加急: 24 h).
    Hours(u16),
}

impl Span {
    /// Whether the span is within [`TIME_LIMIT_WORKING_DAYS_MAX`] / [`TIME_LIMIT_HOURS_MAX`] (and not zero hours).
    pub fn check(self) -> Result<(), String> {
        match self {
            Span::WorkingDays(days) if days > TIME_LIMIT_WORKING_DAYS_MAX => {
                Err(format!("{days} working days, more than {TIME_LIMIT_WORKING_DAYS_MAX}"))
            }
            Span::Hours(0) => Err("0 hours".to_owned()),
            Span::Hours(hours) if hours > TIME_LIMIT_HOURS_MAX => {
                Err(format!("{hours} hours, more than {TIME_LIMIT_HOURS_MAX}"))
            }
            _ => Ok(()),
        }
    }
}

/// 时限规则 for one nature × priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeLimit {
    pub nature: Nature,
    pub priority: Priority,
    /// First response (签收 or a public reply).
    pub response: Span,
    /// Solution (REPLIED), paused while ON_HOLD.
    pub solve: Span,
}

/// The whole configuration of a hall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hall {
    pub name: String,
    pub windows: BTreeMap<String, Window>,
    pub units: BTreeMap<String, Unit>,
    pub categories: BTreeMap<String, Category>,
    pub time_limits: Vec<TimeLimit>,
    pub calendar: Calendar,
    /// Staff accounts of the web desk by username, so a clerk can sign in at any window (admins manage them).
    #[serde(default)]
    pub accounts: BTreeMap<String, StaffAccount>,
    /// 个人信息保存期限 (issue 13 §3): days after 办结 at which the hall's oversight PCs (督查科, admin) purge a
    /// case's personal data, which makes every node destroy the case key. The hall decides; a hall document written
    /// before the setting existed holds [`RETENTION_DAYS_DEFAULT`].
    #[serde(default = "retention_days_default")]
    pub retention_days: u32,
    /// Texts to citizens (issue 15 §4, §5): SMS templates by kind and canned replies (服务用语); see `messages`.
    #[serde(default)]
    pub messages: crate::messages::Messages,
    /// 差评 follow-through (issue 15 §2): working days the 督查科 has from a 不满意/非常不满意 rating to 反馈 to the
    /// citizen. A hall document written before the setting holds [`BAD_REVIEW_WORKING_DAYS_DEFAULT`].
    #[serde(default = "bad_review_working_days_default")]
    pub bad_review_working_days: u16,
    /// Whether 满意率 counts 基本满意 as satisfied (issue 15 §6; halls and bulletins differ). A hall document written
    /// before the setting existed counts it, as most 12345 bulletins do.
    #[serde(default = "satisfaction_counts_basic_default")]
    pub satisfaction_counts_basic: bool,
}

/// 差评整改 within 15 working days, the local limit DOMAIN.md §8 quotes.
pub const BAD_REVIEW_WORKING_DAYS_DEFAULT: u16 = 15;

fn bad_review_working_days_default() -> u16 {
    BAD_REVIEW_WORKING_DAYS_DEFAULT
}

fn satisfaction_counts_basic_default() -> bool {
    true
}

/// The retention a hall starts with: one year after 办结.
pub const RETENTION_DAYS_DEFAULT: u32 = 365;
/// The longest retention a hall may set: thirty years (archives keep case files that long; personal data no longer).
pub const RETENTION_DAYS_MAX: u32 = 30 * 366;

impl Hall {
    /// When a 差评 task opened at `now_ms` is due: `bad_review_working_days` working days by the hall's calendar.
    pub fn bad_review_due(&self, now_ms: i64) -> i64 {
        self.calendar.add(now_ms, Span::WorkingDays(self.bad_review_working_days))
    }

    /// The settings the 督查科's figures depend on.
    pub fn kpi_settings(&self) -> crate::kpi::KpiSettings {
        crate::kpi::KpiSettings { satisfaction_counts_basic: self.satisfaction_counts_basic }
    }
}

fn retention_days_default() -> u32 {
    RETENTION_DAYS_DEFAULT
}

/// A staff member's web desk account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffAccount {
    /// 姓名, recorded as the staff member on every action.
    pub display_name: String,
    pub role: Role,
    /// The password as an argon2id PHC string (never the password).
    pub password_hash: String,
    /// A disabled account cannot sign in (accounts are never deleted: events name them).
    #[serde(default)]
    pub disabled: bool,
}

/// Why a hall configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HallError {
    /// A window, unit or category code is not 1–16 ASCII letters, digits or `_`.
    #[error("invalid {kind} code `{code}`: use 1-16 ASCII letters, digits or `_`")]
    InvalidCode { kind: &'static str, code: String },
    /// A name is empty or longer than the limit.
    #[error("the name of {kind} `{code}` must be 1-{max} characters")]
    InvalidName { kind: &'static str, code: String, max: usize },
    /// The routing table names a unit that does not exist.
    #[error("category `{category}` routes to unknown unit `{unit}`")]
    UnknownUnit { category: String, unit: String },
    /// A nature × priority has no time limit.
    #[error("no time limit for nature {nature} and priority {priority}")]
    MissingTimeLimit { nature: Nature, priority: Priority },
    /// A day is both a holiday and a make-up working day.
    #[error("{0} is both a holiday and a make-up working day")]
    CalendarClash(Date),
    /// The end of the working day is past midnight.
    #[error("workday_end_minute {0} is past midnight (max 1439)")]
    InvalidWorkdayEnd(u32),
    /// The stored hall document does not hold a readable configuration.
    #[error("the hall document is unreadable: {0}")]
    Unreadable(String),
    /// Only admin keys may change the hall document.
    #[error("only an admin may change the hall configuration, not a {0} node")]
    NotAdmin(Role),
    /// The hall's name is empty or too long.
    #[error("the hall name must be 1-{max} characters")]
    InvalidHallName { max: usize },
    /// A hall without units or categories cannot route a case.
    #[error("the hall has no {0}: it needs at least one to route a case")]
    Empty(&'static str),
    /// More windows, units, categories or calendar days than [`HALL_ENTRIES_MAX`].
    #[error("the hall has {count} {kind}, more than the limit of {max}")]
    TooMany { kind: &'static str, count: usize, max: usize },
    /// Two time limits for the same nature × priority.
    #[error("two time limits for nature {nature} and priority {priority}")]
    DuplicateTimeLimit { nature: Nature, priority: Priority },
    /// A time limit of zero hours, or longer than [`TIME_LIMIT_WORKING_DAYS_MAX`] / [`TIME_LIMIT_HOURS_MAX`].
    #[error("the {which} limit for nature {nature} and priority {priority} is out of range: {reason}")]
    InvalidTimeLimit { nature: Nature, priority: Priority, which: &'static str, reason: String },
    /// A 调休 make-up working day that is not a Saturday or Sunday (a weekday is a working day anyway).
    #[error("make-up working day {0} is not a Saturday or Sunday")]
    MakeUpNotWeekend(Date),
    /// The retention of personal data is out of range.
    #[error("retention_days {0} is out of range: 1-{RETENTION_DAYS_MAX} days after 办结")]
    Retention(u32),
    /// An SMS template or a canned reply is refused (see `messages`).
    #[error(transparent)]
    Messages(#[from] crate::messages::MessagesError),
    /// The 差评 time limit is out of range.
    #[error("bad_review_working_days {0} is out of range: 1-{TIME_LIMIT_WORKING_DAYS_MAX} working days")]
    BadReviewDays(u16),
}

/// Windows, units or categories of one hall, and holidays plus make-up days of its calendar: a district hall has tens
/// of each and ~40 calendar days a year; 1,024 keeps a hall document far below `HALL_FILE_BYTES_MAX` (4 MiB).
pub const HALL_ENTRIES_MAX: usize = 1024;
/// The longest working-day limit: a year of working days (statutory limits are at most 60 working days).
pub const TIME_LIMIT_WORKING_DAYS_MAX: u16 = 250;
/// The longest limit in hours: 30 days (hour limits are for 加急 and 特急 cases).
pub const TIME_LIMIT_HOURS_MAX: u16 = 720;

impl Hall {
    pub fn validate(&self) -> Result<(), HallError> {
        if !(1..=RETENTION_DAYS_MAX).contains(&self.retention_days) {
            return Err(HallError::Retention(self.retention_days));
        }
        if !(1..=TIME_LIMIT_WORKING_DAYS_MAX).contains(&self.bad_review_working_days) {
            return Err(HallError::BadReviewDays(self.bad_review_working_days));
        }
        let name_ok = |name: &str| !name.trim().is_empty() && name.chars().count() <= NAME_CHARS_MAX;
        if !name_ok(&self.name) {
            return Err(HallError::InvalidHallName { max: NAME_CHARS_MAX });
        }
        let days = self.calendar.holidays.len() + self.calendar.make_up_workdays.len();
        for (kind, count) in [
            ("windows", self.windows.len()),
            ("units", self.units.len()),
            ("categories", self.categories.len()),
            ("calendar days", days),
        ] {
            if count > HALL_ENTRIES_MAX {
                return Err(HallError::TooMany { kind, count, max: HALL_ENTRIES_MAX });
            }
        }
        if self.units.is_empty() {
            return Err(HallError::Empty("units"));
        }
        if self.categories.is_empty() {
            return Err(HallError::Empty("categories"));
        }
        let check = |kind: &'static str, code: &str, name: &str| {
            if !is_valid_code(code) {
                return Err(HallError::InvalidCode { kind, code: code.to_owned() });
            }
            if !name_ok(name) {
                return Err(HallError::InvalidName { kind, code: code.to_owned(), max: NAME_CHARS_MAX });
            }
            Ok(())
        };
        for (code, window) in &self.windows {
            check("window", code, &window.name)?;
        }
        for (code, unit) in &self.units {
            check("unit", code, &unit.name)?;
        }
        for (code, category) in &self.categories {
            check("category", code, &category.name)?;
            for unit in std::iter::once(&category.lead_unit).chain(&category.co_units) {
                if !self.units.contains_key(unit) {
                    return Err(HallError::UnknownUnit { category: code.clone(), unit: unit.clone() });
                }
            }
        }
        for &nature in Nature::ALL {
            for &priority in Priority::ALL {
                if self.time_limit(nature, priority).is_none() {
                    return Err(HallError::MissingTimeLimit { nature, priority });
                }
            }
        }
        let mut seen = BTreeSet::new();
        for rule in &self.time_limits {
            let (nature, priority) = (rule.nature, rule.priority);
            if !seen.insert((nature, priority)) {
                return Err(HallError::DuplicateTimeLimit { nature, priority });
            }
            for (which, span) in [("response", rule.response), ("solve", rule.solve)] {
                if let Err(reason) = span.check() {
                    return Err(HallError::InvalidTimeLimit { nature, priority, which, reason });
                }
            }
        }
        if let Some(day) = self.calendar.holidays.intersection(&self.calendar.make_up_workdays).next() {
            return Err(HallError::CalendarClash(*day));
        }
        if let Some(day) = self.calendar.make_up_workdays.iter().find(|day| day.weekday() <= 5) {
            return Err(HallError::MakeUpNotWeekend(*day));
        }
        if self.calendar.workday_end_minute >= (DAY_MS / 60_000) as u32 {
            return Err(HallError::InvalidWorkdayEnd(self.calendar.workday_end_minute));
        }
        self.messages.validate()?;
        Ok(())
    }

    pub fn time_limit(&self, nature: Nature, priority: Priority) -> Option<&TimeLimit> {
        self.time_limits.iter().find(|rule| rule.nature == nature && rule.priority == priority)
    }

    /// `(first_response_due_ms, due_ms)` for a case registered at `registered_ms`.
    pub fn due_dates(&self, nature: Nature, priority: Priority, registered_ms: i64) -> (i64, i64) {
        let rule = self.time_limit(nature, priority);
        let response = rule.map_or(Span::WorkingDays(1), |r| r.response);
        let solve = rule.map_or(Span::WorkingDays(5), |r| r.solve);
        (self.calendar.add(registered_ms, response), self.calendar.add(registered_ms, solve))
    }

    /// The neutral starting point of a new hall (`zhaowo init --hall`): one window (the admin's), one unit and one
    /// category routed to it, the time limits of DOMAIN.md §7 and the State Council's published holiday arrangements.
    /// The admin edits it with
    /// `zhaowo hall export` / `zhaowo hall import`.
    pub fn template(name: &str, window: &str, window_name: &str) -> Hall {
        let windows =
            BTreeMap::from([(window.to_owned(), Window { name: window_name.to_owned(), floor: String::new() })]);
        let units = BTreeMap::from([("ZH".to_owned(), Unit { name: "综合受理".to_owned() })]);
        let categories = BTreeMap::from([(
            "ZONGHE".to_owned(),
            Category { name: "综合/其他".to_owned(), lead_unit: "ZH".to_owned(), co_units: Vec::new() },
        )]);
        Hall {
            name: name.to_owned(),
            windows,
            units,
            categories,
            time_limits: default_time_limits(),
            calendar: Calendar::state_council(),
            retention_days: RETENTION_DAYS_DEFAULT,
            bad_review_working_days: BAD_REVIEW_WORKING_DAYS_DEFAULT,
            satisfaction_counts_basic: true,
            accounts: BTreeMap::new(),
            messages: crate::messages::Messages::recommended(),
        }
    }

    /// The hall of the demo and of the tests: Jiang'an district's service hall, with the departments and categories of
    /// DOMAIN.md §7 and the State Council's published holiday arrangements. A real hall starts from [`Hall::template`].
    pub fn jiangan_default() -> Hall {
        let windows = [
            ("BBC01", "办不成事窗口", "1F"),
            ("1F02", "综合受理窗口", "1F"),
            ("2F03", "不动产登记窗口", "2F"),
            ("3F01", "企业专区窗口", "3F"),
            ("DC01", "督查科", "4F"),
            ("V01", "帮帮哥志愿服务队", "—"),
        ]
        .into_iter()
        .map(|(code, name, floor)| (code.to_owned(), Window { name: name.to_owned(), floor: floor.to_owned() }))
        .collect();
        let units = [
            ("GA", "公安分局（户政/出入境/车驾管）"),
            ("SW", "税务局"),
            ("FG", "房管局"),
            ("BDC", "不动产登记中心"),
            ("SCJG", "市场监管局（企业专区）"),
            ("RS", "人社局"),
            ("YB", "医保局"),
            ("GJJ", "公积金中心"),
            ("MZ", "民政局"),
            ("SQ", "社区网格"),
            ("ZH", "综合窗口"),
        ]
        .into_iter()
        .map(|(code, name)| (code.to_owned(), Unit { name: name.to_owned() }))
        .collect();
        let categories = [
            ("HUZHENG", "户政", "GA", &[][..]),
            ("CHURUJING", "出入境", "GA", &[]),
            ("CHEJIAGUAN", "车驾管", "GA", &[]),
            ("SHUIWU", "税务", "SW", &[]),
            ("FANGGUAN", "房管", "FG", &["BDC"]),
            ("BDC", "不动产登记", "BDC", &["FG", "SW"]),
            ("QIYE", "企业专区（开办企业）", "SCJG", &["SW"]),
            ("SHEBAO", "人社/社保", "RS", &[]),
            ("YIBAO", "医保", "YB", &[]),
            ("GJJ", "公积金", "GJJ", &[]),
            ("MINZHENG", "民政", "MZ", &["SQ"]),
            ("ZONGHE", "综合/其他", "ZH", &[]),
        ]
        .into_iter()
        .map(|(code, name, lead, co): (&str, &str, &str, &[&str])| {
            let category = Category {
                name: name.to_owned(),
                lead_unit: lead.to_owned(),
                co_units: co.iter().map(|unit| (*unit).to_owned()).collect(),
            };
            (code.to_owned(), category)
        })
        .collect();
        let time_limits = default_time_limits();
        Hall {
            name: "江岸区政务服务中心".to_owned(),
            windows,
            units,
            categories,
            time_limits,
            calendar: Calendar::state_council(),
            retention_days: RETENTION_DAYS_DEFAULT,
            bad_review_working_days: BAD_REVIEW_WORKING_DAYS_DEFAULT,
            satisfaction_counts_basic: true,
            accounts: BTreeMap::new(),
            messages: crate::messages::Messages::recommended(),
        }
    }
}

/// The time limits of DOMAIN.md §7 for every nature × priority: 咨询 on the spot or ≤1 working day, 求助 2-5, 投诉 5,
/// 建议 15 working days; 加急 and 特急 in hours.
pub fn default_time_limits() -> Vec<TimeLimit> {
    let mut time_limits = Vec::new();
    for &nature in Nature::ALL {
        let solve_days = match nature {
            Nature::Consultation | Nature::Venting => 1,
            Nature::Help | Nature::Complaint | Nature::Praise | Nature::Other => 5,
            Nature::Report | Nature::Suggestion => 15,
        };
        for &priority in Priority::ALL {
            let (response, solve) = match priority {
                Priority::Normal => (Span::WorkingDays(1), Span::WorkingDays(solve_days)),
                // 加急: same-day or 24 h limits.
                Priority::Urgent => (Span::Hours(4), Span::Hours(24)),
                Priority::Critical => (Span::Hours(1), Span::Hours(8)),
            };
            time_limits.push(TimeLimit { nature, priority, response, solve });
        }
    }
    time_limits
}

/// One change of the hall configuration, kept in the hall document's history (the routing table's edit history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HallEdit {
    pub at_ms: i64,
    pub by: String,
    pub what: String,
    /// The node that wrote the edit (its key in hex), read from the Automerge actor that created the entry: not
    /// stored, so an entry cannot claim another node; `None` only for an entry of no readable actor.
    #[serde(skip)]
    pub node: Option<String>,
}

/// The replicated hall document: `hall` (the configuration as a map) and `history` (a list of [`HallEdit`]).
#[derive(Debug)]
pub struct HallDoc {
    doc: AutoCommit,
}

impl HallDoc {
    /// Creates the hall document (by the admin who sets up the hall).
    pub fn create(actor: ActorId, role: Role, by: &str, now_ms: i64, hall: &Hall) -> Result<HallDoc, HallError> {
        let mut doc = HallDoc { doc: AutoCommit::new().with_actor(actor) };
        doc.update(role, by, now_ms, hall, "创建大厅配置")?;
        Ok(doc)
    }

    pub fn load(bytes: &[u8], actor: ActorId) -> Result<HallDoc, HallError> {
        crate::wire::check_document_chunks(bytes).map_err(HallError::Unreadable)?;
        let doc = AutoCommit::load(bytes).map_err(|error| HallError::Unreadable(error.to_string()))?;
        let doc = HallDoc { doc: doc.with_actor(actor) };
        doc.hall()?;
        Ok(doc)
    }

    /// Replaces the configuration with `hall`, key by key (so concurrent admin edits of different keys both survive).
    pub fn update(&mut self, role: Role, by: &str, now_ms: i64, hall: &Hall, what: &str) -> Result<(), HallError> {
        if role != Role::Admin {
            return Err(HallError::NotAdmin(role));
        }
        hall.validate()?;
        let unreadable = |error: automerge::AutomergeError| HallError::Unreadable(error.to_string());
        let target = serde_json::to_value(hall).map_err(|error| HallError::Unreadable(error.to_string()))?;
        let serde_json::Value::Object(target) = target else { unreachable!("a struct serialises to a map") };
        let result = (|| {
            let hall_obj = match self.doc.get(ROOT, "hall").map_err(unreadable)? {
                Some((automerge::Value::Object(ObjType::Map), id)) => id,
                _ => self.doc.put_object(ROOT, "hall", ObjType::Map).map_err(unreadable)?,
            };
            amjson::update_map(&mut self.doc, &hall_obj, &target).map_err(unreadable)?;
            let history = match self.doc.get(ROOT, "history").map_err(unreadable)? {
                Some((automerge::Value::Object(ObjType::List), id)) => id,
                _ => self.doc.put_object(ROOT, "history", ObjType::List).map_err(unreadable)?,
            };
            let edit = HallEdit { at_ms: now_ms, by: by.to_owned(), what: what.to_owned(), node: None };
            amjson::push(&mut self.doc, &history, &serde_json::to_value(edit).unwrap_or_default()).map_err(unreadable)
        })();
        match result {
            Ok(()) => {
                self.doc.commit_with(CommitOptions::default().with_time(now_ms / 1000).with_message(what.to_owned()));
                Ok(())
            }
            Err(error) => {
                self.doc.rollback();
                Err(error)
            }
        }
    }

    pub fn hall(&self) -> Result<Hall, HallError> {
        let value =
            amjson::read_prop(&self.doc, &ROOT, "hall").ok_or_else(|| HallError::Unreadable("no `hall` map".into()))?;
        let hall: Hall = serde_json::from_value(value).map_err(|error| HallError::Unreadable(error.to_string()))?;
        hall.validate()?;
        Ok(hall)
    }

    pub fn history(&self) -> Vec<HallEdit> {
        use automerge::ReadDoc;
        let Ok(Some((_, history))) = self.doc.get(ROOT, "history") else { return Vec::new() };
        (0..self.doc.length(&history))
            .filter_map(|index| {
                let (_, id) = self.doc.get(&history, index).ok()??;
                let mut edit: HallEdit = serde_json::from_value(amjson::read_obj(&self.doc, &id)).ok()?;
                if let automerge::ObjId::Id(_, actor, _) = &id {
                    let bytes = actor.to_bytes();
                    edit.node = Some(crate::ids::hex_encode(&bytes[..bytes.len().min(32)]));
                }
                Some(edit)
            })
            .collect()
    }

    pub fn automerge(&self) -> &AutoCommit {
        &self.doc
    }

    pub fn automerge_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }
}

/// A hall document change's hash and its author's signature (see `signing`).
pub type HallSignatures = BTreeMap<[u8; 32], [u8; 64]>;

/// A signed change of the hall document, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HallChange {
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    pub signature: [u8; 64],
}

/// What [`SignedHall::receive`] did with a peer's hall changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HallReceived {
    /// Changes new to us, verified and applied.
    pub applied: usize,
    /// Signatures learned for changes we already held without one (so we can relay them).
    pub signatures_learned: usize,
    /// Why the frame was refused without blaming the peer (a revoked admin's late change, or changes that would leave
    /// the configuration unreadable): nothing of it was applied.
    pub refused: Option<String>,
}

/// The hall document and the signatures of its changes: what nodes sync.
///
/// Trust: every change a node takes from a peer must be signed by an enrolled admin ([`verify_admin_change`]). The
/// changes a node already holds need no signature: the hall document that came in the enrollment file (handed over
/// by the admin with the root-signed roster) is trusted as the base, so halls whose first changes predate signing keep
/// working. A change we hold without a signature is never sent (the peer would rightly refuse it).
///
/// [`verify_admin_change`]: crate::signing::verify_admin_change
#[derive(Debug)]
pub struct SignedHall {
    pub doc: HallDoc,
    pub signatures: HallSignatures,
}

impl SignedHall {
    pub fn new(doc: HallDoc, signatures: HallSignatures) -> SignedHall {
        SignedHall { doc, signatures }
    }

    pub fn heads(&mut self) -> Vec<automerge::ChangeHash> {
        self.doc.doc.get_heads()
    }

    /// Signs the changes authored by `node_key` that have no signature yet (the admin's own edits, including those
    /// made before hall changes were signed). Returns how many were signed.
    pub fn sign_own(&mut self, node_key: &PublicKey, sign: impl Fn(&automerge::ChangeHash) -> [u8; 64]) -> usize {
        let mut signed = 0;
        for change in self.doc.doc.get_changes(&[]) {
            let hash = change.hash();
            if !self.signatures.contains_key(&hash.0)
                && crate::signing::node_key_of(change.actor_id()).as_ref() == Some(node_key)
            {
                self.signatures.insert(hash.0, sign(&hash));
                signed += 1;
            }
        }
        signed
    }

    /// The changes a peer whose heads (and received changes) are `theirs` lacks, oldest first, each with its
    /// signature; changes we hold unsigned are left out (`skipped`).
    pub fn changes_for(&mut self, theirs: &BTreeSet<[u8; 32]>) -> (Vec<HallChange>, usize) {
        // `get_changes` wants hashes we know: a peer ahead of us names heads we have never seen.
        let known: Vec<automerge::ChangeHash> = theirs
            .iter()
            .map(|hash| automerge::ChangeHash(*hash))
            .filter(|hash| self.doc.doc.get_change_by_hash(hash).is_some())
            .collect();
        let mut skipped = 0;
        let mut out = Vec::new();
        for change in self.doc.doc.get_changes(&known) {
            let hash = change.hash().0;
            if theirs.contains(&hash) {
                continue;
            }
            match self.signatures.get(&hash) {
                Some(signature) => {
                    out.push(HallChange { hash, bytes: change.raw_bytes().to_vec(), signature: *signature })
                }
                None => skipped += 1,
            }
        }
        (out, skipped)
    }

    /// Merges a hall document this node wrote itself (the admin's CLI saving `hall.automerge`): trusted, not
    /// verified. Returns whether anything was new.
    pub fn merge_local(&mut self, other: &mut SignedHall) -> Result<bool, HallError> {
        let before = (self.heads(), self.signatures.len());
        self.doc.doc.merge(&mut other.doc.doc).map_err(|error| HallError::Unreadable(error.to_string()))?;
        for (hash, signature) in &other.signatures {
            self.signatures.entry(*hash).or_insert(*signature);
        }
        Ok((self.heads(), self.signatures.len()) != before)
    }

    /// Takes hall changes from a peer. Every change we lack must be signed by an enrolled admin: one that is not
    /// (unsigned, forged, by a non-admin or a non-member, malformed) rejects the whole frame before anything is applied,
    /// and the caller drops the peer. Changes we already hold are skipped (their verified signatures are kept).
    /// Automerge runs on a copy, inside `catch_unwind`, and the copy replaces the document only if the configuration
    /// still reads.
    pub fn receive(
        &mut self,
        roster: &Roster,
        changes: &[Vec<u8>],
        signatures: &[crate::wire::ChangeSignature],
    ) -> Result<HallReceived, ChangeRejected> {
        let by_hash: HallSignatures = signatures.iter().map(|s| (s.hash, s.signature)).collect();
        let signature_of = |hash: &automerge::ChangeHash| by_hash.get(&hash.0).copied();
        let mut received = HallReceived::default();
        let mut new_changes = Vec::new();
        let mut new_signatures = HallSignatures::new();
        let mut old_signatures = HallSignatures::new();
        for bytes in changes {
            let parsed = std::panic::catch_unwind(|| automerge::Change::from_bytes(bytes.clone()))
                .map_err(|_| ChangeRejected::Malformed("the parser panicked".into()))?
                .map_err(|error| ChangeRejected::Malformed(error.to_string()))?;
            let hash = parsed.hash();
            if self.doc.doc.get_change_by_hash(&hash).is_some() {
                if !self.signatures.contains_key(&hash.0)
                    && let Ok((_, _)) = verify_admin_change(roster, bytes, signature_of)
                    && let Some(signature) = signature_of(&hash)
                {
                    old_signatures.insert(hash.0, signature);
                }
                continue;
            }
            match verify_admin_change(roster, bytes, signature_of) {
                Ok(_) => {}
                Err(refused @ ChangeRejected::Revoked(..)) => {
                    received.refused = Some(refused.to_string());
                    return Ok(received);
                }
                Err(rejected) => return Err(rejected),
            }
            if let Some(signature) = signature_of(&hash) {
                new_signatures.insert(hash.0, signature);
            }
            new_changes.push(parsed);
        }
        if !new_changes.is_empty() {
            let copy = self.doc.doc.clone();
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let mut copy = copy;
                copy.apply_changes(new_changes).map(|()| copy)
            }));
            let copy = match applied {
                Ok(Ok(copy)) => HallDoc { doc: copy },
                Ok(Err(error)) => return Err(ChangeRejected::Malformed(error.to_string())),
                Err(_) => return Err(ChangeRejected::Malformed("automerge panicked applying hall changes".into())),
            };
            // Reading walks the whole document Automerge just built from outside bytes: isolated like the apply.
            let readable = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| copy.hall()))
                .unwrap_or_else(|_| Err(HallError::Unreadable("automerge panicked reading it".into())));
            if let Err(error) = readable {
                received.refused = Some(format!("the hall changes leave the configuration unreadable: {error}"));
                return Ok(received);
            }
            // A change whose dependencies we lack waits in Automerge's queue and is not part of the document yet.
            for (hash, signature) in new_signatures {
                if copy.doc.get_change_by_hash(&automerge::ChangeHash(hash)).is_some() {
                    self.signatures.insert(hash, signature);
                    received.applied += 1;
                }
            }
            self.doc = copy;
        }
        for (hash, signature) in old_signatures {
            if self.signatures.insert(hash, signature).is_none() {
                received.signatures_learned += 1;
            }
        }
        Ok(received)
    }
}
