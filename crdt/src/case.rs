//! `CaseDoc`: one case as one Automerge document, with registration, typed commands and the read model.
//!
//! Layout of the document (readable by any Automerge implementation):
//! - root scalars: `schema`, `case_id`, `reg_no`, `query_hash`, `channel`, `registered_at`, `registered_by`,
//!   `registered_node`, `window`, `nature`, `category`, `not_done_reason`, `summary`, `detail`, `expectation`,
//!   `location`, `sensitive`, `first_response_due`, `due_ms`; maps `modes`, `tags` (key → true: an add-wins set),
//!   `matter` and `consent` (the citizen's public flags: callback, publication, anonymity, subject type, contact
//!   preference);
//! - `pi`: the personal record (see `pi`) as one sealed JSON value;
//! - `detail`, `expectation`, `location`, `pi` and the private payload fields of events are sealed under the case key
//!   (see `seal`): ciphertext in the document and all of its history. A `CaseDoc` may hold the key (`set_key`); without
//!   it, private values read as `seal::SEALED_ZH` and commands that write private text are refused.
//! - `events`: the append-only list of event maps (see `event`).
//!
//! Editable scalars are per-field last-writer-wins; concurrent values stay readable with `get_all` and are listed as
//! conflicts. Everything else (status, lead unit, due date, priority, …) is derived from the events by `fold`.

use crate::amjson;
use crate::command::{Command, CommandError, ConflictDecision, Ctx, Registration};
use crate::event::{Event, EventKind};
use crate::fold::{Ancestry, PriorityFold, SupervisionFold, arbitrate, sort_events};
use crate::hall::Hall;
use crate::ids::{CaseId, EventId, QueryCode, RegNo, hex_encode};
use crate::limits::*;
use crate::model::{
    BadReviewReason, CallbackOutcome, CaseResult, Channel, CommandKind, EditableField, Mode, Nature, NotDoneReason,
    Priority, Role, Satisfaction, Status, SupervisionLevel,
};
use crate::pi::{MaskedPersonalData, PersonalData, check_plain_text};
use crate::seal::{self, CaseKey};
use crate::time::Hlc;
use crate::view::{
    Appeal, BadReviewTask, Callback, CaseView, Conflict, ConflictDetail, Extension, FieldCandidate, Flags, Matter,
    PublicReply, Rating, ReviewStepEntry, TimelineEntry, describe,
};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The version of the document layout this crate writes. A document with a larger `schema` is refused.
/// Version 2 (issue 13) sealed the private layer: earlier documents hold personal data in clear and are refused.
pub const SCHEMA_VERSION: i64 = 2;

/// Why a stored or received document is not a readable case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Automerge could not decode the bytes.
    #[error("not an automerge document: {0}")]
    Automerge(String),
    /// The document lacks a field every case has.
    #[error("not a case document: missing or invalid `{0}`")]
    Field(&'static str),
    /// Written by a newer version of zhaowo.
    #[error("case document schema {found} is newer than this version understands ({SCHEMA_VERSION}): upgrade zhaowo")]
    NewerSchema { found: i64 },
    /// Written before the private layer (schema 2): its personal data is in clear, and this version does not read it.
    #[error(
        "case document schema {found} predates the sealed private layer (schema {SCHEMA_VERSION}); this version does not read it (see the README's changelog)"
    )]
    OlderSchema { found: i64 },
}

/// One case: an Automerge document plus the rules to change it.
#[derive(Debug)]
pub struct CaseDoc {
    doc: AutoCommit,
    /// The case's data key, when this node holds it.
    key: Option<CaseKey>,
}

/// The parsed events of a case in fold order, with what the fold needs.
struct Log {
    events: Vec<Event>,
    ancestry: Ancestry,
    unreadable: usize,
}

fn doc_error(error: automerge::AutomergeError) -> CommandError {
    CommandError::Document(error.to_string())
}

fn check_text(field: &'static str, value: &str, max: usize, required: bool) -> Result<(), CommandError> {
    if required && value.trim().is_empty() {
        return Err(CommandError::Empty { field });
    }
    check_plain_text(field, value, max).map_err(|error| match error {
        crate::pi::PersonalDataError::TooLong { field, chars, max } => CommandError::TooLong { field, chars, max },
        _ => CommandError::ControlCharacter { field },
    })
}

/// The summary is shown publicly: no phone, id-card number or e-mail in any disguise, no invisible characters
/// (`public_text`: NFKC, digit words, look-alikes, separators).
fn check_public_summary(summary: &str) -> Result<(), CommandError> {
    match crate::public_text::check_public(summary) {
        Ok(()) => Ok(()),
        Err(crate::public_text::PublicTextError::Hidden(_)) => Err(CommandError::ControlCharacter { field: "summary" }),
        Err(_) => Err(CommandError::SummaryHasPersonalData),
    }
}

fn check_units(hall: &Hall, field: &'static str, units: &[String]) -> Result<(), CommandError> {
    if units.len() > UNITS_PER_COMMAND_MAX {
        return Err(CommandError::TooMany { field, count: units.len(), max: UNITS_PER_COMMAND_MAX });
    }
    match units.iter().find(|unit| !hall.units.contains_key(*unit)) {
        Some(unit) => Err(CommandError::UnknownUnit(unit.clone())),
        None => Ok(()),
    }
}

fn check_time(field: &'static str, at_ms: i64, now_ms: i64) -> Result<(), CommandError> {
    if (at_ms - now_ms).abs() > FUTURE_SKEW_MS_MAX { Err(CommandError::TimeOutOfRange { field }) } else { Ok(()) }
}

fn check_tags(tags: &[String]) -> Result<(), CommandError> {
    if tags.len() > TAGS_MAX {
        return Err(CommandError::TooMany { field: "tags", count: tags.len(), max: TAGS_MAX });
    }
    tags.iter().try_for_each(|tag| check_text("tag", tag, TAG_CHARS_MAX, true))
}

fn map_set<'a>(doc: &mut AutoCommit, key: &str, items: impl IntoIterator<Item = &'a str>) -> Result<(), CommandError> {
    let obj = match doc.get(ROOT, key).map_err(doc_error)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => doc.put_object(ROOT, key, ObjType::Map).map_err(doc_error)?,
    };
    for item in items {
        doc.put(&obj, item, true).map_err(doc_error)?;
    }
    Ok(())
}

/// The duplicate-detection tag of a phone number: computed where the case is open (a node holding its key), never
/// stored in the document (a keyed tag in the document let any node that holds the hall configuration, a laptop
/// among them, test every phone number against it).
fn phone_tag(phone: &str) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"zhaowo-phone-tag-v2\0");
    hash.update(phone.as_bytes());
    hex_encode(&hash.finalize()[..16])
}

/// Where an SMS about a case may go ([`CaseDoc::sms_recipient`]).
#[derive(Clone, PartialEq, Eq)]
pub enum SmsRecipient {
    /// The citizen's phone (digits).
    Phone(String),
    /// The citizen did not agree to SMS (or the consent is not known: a case registered before the flag existed).
    NoConsent,
    /// Agreed, but gave no phone.
    NoPhone,
    /// This node does not hold the case key, so it cannot read the phone.
    NoKey,
    /// The personal data was purged.
    Purged,
}

impl std::fmt::Debug for SmsRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The phone never reaches a log or a panic message.
        f.write_str(match self {
            SmsRecipient::Phone(_) => "Phone([redacted])",
            SmsRecipient::NoConsent => "NoConsent",
            SmsRecipient::NoPhone => "NoPhone",
            SmsRecipient::NoKey => "NoKey",
            SmsRecipient::Purged => "Purged",
        })
    }
}

/// The public flags of the personal record (the document's `consent` map).
fn consent_json(personal: &PersonalData) -> Value {
    let mut consent = serde_json::json!({
        "subject_type": personal.subject_type,
        "contact_pref": personal.contact_pref,
        "callback_ok": personal.callback_ok,
        "publish_ok": personal.publish_ok,
        "anonymous": personal.anonymous,
    });
    // 同意接收短信通知 (issue 15 §4) only when given: a case without it keeps the layout it had before the flag.
    if personal.sms_ok {
        consent["sms_ok"] = true.into();
    }
    consent
}

/// The seal's error as a command error.
fn seal_error(error: seal::SealError) -> CommandError {
    CommandError::Seal(error.to_string())
}

/// What a private value is stored as: sealed under the case key, or as it is when empty (nothing to hide, and a node
/// without the key may clear a field); a non-empty value without the key is refused.
fn stored_private(
    key: Option<&CaseKey>,
    ctx: &Ctx,
    case_id: &str,
    field: &str,
    name: &'static str,
    value: &str,
) -> Result<String, CommandError> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let key = key.ok_or(CommandError::NoCaseKey(name))?;
    seal::seal(key, &ctx.secret, case_id, field, value).map_err(seal_error)
}

impl CaseDoc {
    /// Registers a new case (登记): validates everything, then writes the fields, the personal record and the
    /// `Registered` event in one change. `reg_no` must be the next number of the author's window; `query_code` is the
    /// citizen's receipt secret (only its hash is stored).
    pub fn register(
        ctx: &Ctx,
        hall: &Hall,
        actor: ActorId,
        reg_no: RegNo,
        query_code: &QueryCode,
        registration: Registration,
    ) -> Result<(CaseDoc, EventId), CommandError> {
        let author = &ctx.author;
        if reg_no.window != author.window {
            return Err(CommandError::RegNoWindow { reg_no: reg_no.to_string(), window: author.window.clone() });
        }
        if !hall.windows.contains_key(&author.window) {
            return Err(CommandError::UnknownWindow(author.window.clone()));
        }
        if author.role == Role::Citizen && registration.channel != Channel::MiniProgram {
            return Err(CommandError::CitizenChannel);
        }
        if !hall.categories.contains_key(&registration.category) {
            return Err(CommandError::UnknownCategory(registration.category.clone()));
        }
        check_text("summary", &registration.summary, SUMMARY_CHARS_MAX, true)?;
        check_public_summary(&registration.summary)?;
        check_text("detail", &registration.detail, DETAIL_CHARS_MAX, true)?;
        check_text("expectation", &registration.expectation, EXPECTATION_CHARS_MAX, false)?;
        check_text("location", &registration.location, LOCATION_CHARS_MAX, false)?;
        let tags: Vec<String> = registration.tags.iter().cloned().collect();
        check_tags(&tags)?;
        if let Some(matter) = &registration.matter {
            check_text("matter name", &matter.name, NAME_CHARS_MAX, true)?;
            check_text("matter code", &matter.code, NAME_CHARS_MAX, false)?;
            check_text("matter window", &matter.window, NAME_CHARS_MAX, false)?;
        }
        let personal = registration.personal.clone().validated()?;
        // 加急 ⇒ at least 紧急 (DOMAIN.md §5.1).
        let priority = if registration.modes.contains(&Mode::Expedited) {
            registration.priority.max(Priority::Urgent)
        } else {
            registration.priority
        };
        // 倾诉 is sensitive by nature (DOMAIN.md §7).
        let sensitive = registration.sensitive || registration.nature == Nature::Venting;
        let (first_response_due, due_ms) = hall.due_dates(registration.nature, priority, ctx.now_ms);
        let case_id = CaseId::new(ctx.now_ms, ctx.entropy);
        let submitted = author.role == Role::Citizen;

        let key = CaseKey::derive(&ctx.secret);
        let case_text = case_id.to_string();
        let sealed = |field: &'static str, text: &str| -> Result<Value, CommandError> {
            stored_private(Some(&key), ctx, &case_text, field, field, text).map(Value::String)
        };
        let pi_json = serde_json::to_string(&personal).map_err(|error| CommandError::Document(error.to_string()))?;
        let sealed_pi = sealed("pi", &pi_json)?;
        let sealed_detail = sealed("detail", &registration.detail)?;
        let sealed_expectation = sealed("expectation", &registration.expectation)?;
        let sealed_location = sealed("location", &registration.location)?;
        let mut case = CaseDoc { doc: AutoCommit::new().with_actor(actor), key: Some(key) };
        let doc = &mut case.doc;
        let put =
            |doc: &mut AutoCommit, key: &str, value: Value| amjson::put(doc, &ROOT, key, &value).map_err(doc_error);
        put(doc, "schema", SCHEMA_VERSION.into())?;
        put(doc, "case_id", case_id.to_string().into())?;
        put(doc, "reg_no", reg_no.to_string().into())?;
        put(doc, "query_hash", query_code.hash_for(&case_id).into())?;
        put(doc, "channel", registration.channel.code().into())?;
        put(doc, "registered_at", ctx.now_ms.into())?;
        put(doc, "registered_by", author.staff.clone().into())?;
        put(doc, "registered_node", author.node.clone().into())?;
        put(doc, "window", author.window.clone().into())?;
        put(doc, "nature", registration.nature.code().into())?;
        put(doc, "category", registration.category.clone().into())?;
        put(doc, "not_done_reason", registration.not_done_reason.map(NotDoneReason::code).into())?;
        put(doc, "summary", registration.summary.clone().into())?;
        put(doc, "detail", sealed_detail)?;
        put(doc, "expectation", sealed_expectation)?;
        put(doc, "location", sealed_location)?;
        put(doc, "sensitive", sensitive.into())?;
        put(doc, "first_response_due", first_response_due.into())?;
        put(doc, "due_ms", due_ms.into())?;
        if let Some(matter) = &registration.matter {
            put(doc, "matter", serde_json::to_value(matter).unwrap_or_default())?;
        }
        map_set(doc, "modes", registration.modes.iter().map(|mode| mode.code()))?;
        map_set(doc, "tags", registration.tags.iter().map(String::as_str))?;
        put(doc, "consent", consent_json(&personal))?;
        put(doc, "pi", sealed_pi)?;
        doc.put_object(ROOT, "events", ObjType::List).map_err(doc_error)?;
        let event_id = case.append(ctx, EventKind::Registered { submitted, priority }, None, &Log::empty())?;
        Ok((case, event_id))
    }

    /// Loads a stored document and checks it is a case this version can read.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<CaseDoc, LoadError> {
        crate::wire::check_document_chunks(bytes).map_err(LoadError::Automerge)?;
        let doc = AutoCommit::load(bytes).map_err(|error| LoadError::Automerge(error.to_string()))?;
        CaseDoc::from_automerge(doc.with_actor(actor))
    }

    /// Wraps an Automerge document (one that sync or a merge produced) after checking it is a readable case.
    pub fn from_automerge(doc: AutoCommit) -> Result<CaseDoc, LoadError> {
        match CaseDoc::from_automerge_or_back(doc) {
            Ok(case) => Ok(case),
            Err((error, _)) => Err(error),
        }
    }

    /// [`CaseDoc::from_automerge`] that hands the document back when it is not a case (no copy either way: sync
    /// holds documents that may turn out not to be cases, and copying every one cost a tenth of an initial sync).
    #[allow(clippy::result_large_err, reason = "the Ok variant is the same document: boxing one side saves nothing")]
    pub fn from_automerge_or_back(doc: AutoCommit) -> Result<CaseDoc, (LoadError, AutoCommit)> {
        let case = CaseDoc { doc, key: None };
        match case.check() {
            Ok(()) => Ok(case),
            Err(error) => Err((error, case.doc)),
        }
    }

    fn check(&self) -> Result<(), LoadError> {
        let case = self;
        match amjson::read_prop(&case.doc, &ROOT, "schema").and_then(|v| v.as_i64()) {
            Some(found) if found > SCHEMA_VERSION => return Err(LoadError::NewerSchema { found }),
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) if found >= 1 => return Err(LoadError::OlderSchema { found }),
            _ => return Err(LoadError::Field("schema")),
        }
        case.try_case_id().ok_or(LoadError::Field("case_id"))?;
        RegNo::parse(&case.str_field("reg_no")).ok_or(LoadError::Field("reg_no"))?;
        match case.doc.get(ROOT, "events") {
            Ok(Some((automerge::Value::Object(ObjType::List), _))) => {}
            _ => return Err(LoadError::Field("events")),
        }
        Ok(())
    }

    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The case's data key, when this replica holds it.
    pub fn key(&self) -> Option<&CaseKey> {
        self.key.as_ref()
    }

    /// Gives this replica the case key (read from the node's key table) or takes it away.
    pub fn set_key(&mut self, key: Option<CaseKey>) {
        self.key = key;
    }

    /// Whether `key` is this case's key: it opens the sealed personal record (or, without one, the sealed detail).
    pub fn key_opens(&self, key: &CaseKey) -> bool {
        let case_id = self.case_id();
        ["pi", "detail"].iter().any(|field| {
            let stored = self.str_field(field);
            seal::is_sealed(&stored) && seal::open(key, case_id.as_str(), field, &stored).is_ok()
        })
    }

    /// A private root field as this replica can read it (see `seal::reveal`).
    fn private_field(&self, field: &str) -> String {
        let case_id = self.str_field("case_id");
        seal::reveal(self.key.as_ref(), &case_id, field, &self.str_field(field))
    }

    /// Writes a private root field, sealed; refused without the key (an empty value needs none).
    fn put_private(&mut self, ctx: &Ctx, field: &'static str, value: &str) -> Result<(), CommandError> {
        let stored = stored_private(self.key.as_ref(), ctx, self.case_id().as_str(), field, field, value)?;
        amjson::put(&mut self.doc, &ROOT, field, &stored.into()).map_err(doc_error)
    }

    /// Merges another replica of the same case into this one.
    pub fn merge(&mut self, other: &mut CaseDoc) -> Result<(), LoadError> {
        self.doc.merge(&mut other.doc).map(drop).map_err(|error| LoadError::Automerge(error.to_string()))
    }

    pub fn automerge(&self) -> &AutoCommit {
        &self.doc
    }

    pub fn automerge_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// Gives the Automerge document back (to a store that keeps documents as `AutoCommit`).
    pub fn into_automerge(self) -> AutoCommit {
        self.doc
    }

    fn try_case_id(&self) -> Option<CaseId> {
        CaseId::parse(&self.str_field("case_id"))
    }

    pub fn case_id(&self) -> CaseId {
        self.try_case_id().expect("checked when the document was loaded")
    }

    fn str_field(&self, key: &str) -> String {
        match amjson::read_prop(&self.doc, &ROOT, key) {
            Some(Value::String(text)) => text,
            _ => String::new(),
        }
    }

    fn int_field(&self, key: &str) -> i64 {
        amjson::read_prop(&self.doc, &ROOT, key).and_then(|v| v.as_i64()).unwrap_or(0)
    }

    fn set_keys(&self, key: &str) -> BTreeSet<String> {
        match self.doc.get(ROOT, key) {
            Ok(Some((automerge::Value::Object(ObjType::Map), id))) => self.doc.keys(&id).collect(),
            _ => BTreeSet::new(),
        }
    }

    fn events_obj(&self) -> Option<ObjId> {
        match self.doc.get(ROOT, "events") {
            Ok(Some((automerge::Value::Object(ObjType::List), id))) => Some(id),
            _ => None,
        }
    }

    fn log(&self) -> Log {
        let mut events = Vec::new();
        let mut unreadable = 0;
        let mut ids = BTreeSet::new();
        let case_id = self.str_field("case_id");
        if let Some(list) = self.events_obj() {
            for item in self.doc.list_range(&list, ..).take(EVENTS_PER_CASE_MAX * 2) {
                let id = item.id();
                let mut value = amjson::to_json(&self.doc, item.value.into(), &id, 0);
                self.open_payload(&case_id, &mut value);
                match serde_json::from_value::<Event>(value) {
                    Ok(event) if event.parents.len() <= PARENTS_PER_EVENT_MAX && ids.insert(event.id.clone()) => {
                        events.push(event)
                    }
                    _ => unreadable += 1,
                }
            }
        }
        sort_events(&mut events);
        let ancestry = Ancestry::new(&events);
        Log { events, ancestry, unreadable }
    }

    /// Replaces the private payload fields of a stored event (JSON) by what this replica can read of them.
    fn open_payload(&self, case_id: &str, event: &mut Value) {
        let Some(type_name) = event.get("type").and_then(Value::as_str) else { return };
        let fields = seal::private_payload_fields(type_name);
        if fields.is_empty() {
            return;
        }
        let event_id = event.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let Some(payload) = event.get_mut("payload").and_then(Value::as_object_mut) else { return };
        for field in fields {
            if let Some(Value::String(stored)) = payload.get_mut(*field) {
                *stored = seal::reveal(self.key.as_ref(), case_id, &format!("event/{event_id}/{field}"), stored);
            }
        }
    }

    /// Seals the private payload fields of an event about to be stored; refused without the key (empty values are
    /// stored as they are).
    fn seal_payload(&self, ctx: &Ctx, event: &mut Value) -> Result<(), CommandError> {
        let Some(type_name) = event.get("type").and_then(Value::as_str).map(str::to_owned) else { return Ok(()) };
        let fields = seal::private_payload_fields(&type_name);
        let event_id = event.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let case_id = self.case_id();
        let Some(payload) = event.get_mut("payload").and_then(Value::as_object_mut) else { return Ok(()) };
        for field in fields {
            if !seal::payload_is_private(&type_name, payload, field) {
                continue;
            }
            if let Some(Value::String(text)) = payload.get_mut(*field) {
                let place = format!("event/{event_id}/{field}");
                *text = stored_private(self.key.as_ref(), ctx, case_id.as_str(), &place, field, text)?;
            }
        }
        Ok(())
    }

    /// Appends one event (and commits), after the caller validated it.
    fn append(&mut self, ctx: &Ctx, kind: EventKind, seen: Option<Status>, log: &Log) -> Result<EventId, CommandError> {
        if log.events.len() + log.unreadable >= EVENTS_PER_CASE_MAX {
            return Err(CommandError::TooManyEvents(log.events.len() + log.unreadable));
        }
        let event = Event {
            id: EventId::new(ctx.now_ms, ctx.entropy),
            hlc: Hlc::next(ctx.now_ms, log.events.iter().map(|event| event.hlc)),
            wall_ms: ctx.now_ms,
            node: ctx.author.node.clone(),
            staff: ctx.author.staff.clone(),
            role: ctx.author.role,
            window: ctx.author.window.clone(),
            parents: log.ancestry.heads(),
            seen,
            kind,
        };
        let list = self.events_obj().ok_or_else(|| CommandError::Document("no events list".into()))?;
        let mut value = serde_json::to_value(&event).map_err(|error| CommandError::Document(error.to_string()))?;
        self.seal_payload(ctx, &mut value)?;
        amjson::push(&mut self.doc, &list, &value).map_err(doc_error)?;
        self.doc.commit_with(
            CommitOptions::default().with_time(ctx.now_ms / 1000).with_message(event.kind.type_name().to_owned()),
        );
        Ok(event.id)
    }

    /// The events of the case in fold order (and how many could not be read).
    pub fn events(&self) -> (Vec<Event>, usize) {
        let log = self.log();
        (log.events, log.unreadable)
    }

    /// Applies a lifecycle command: checks role, state and input against the current fold, then appends the event
    /// (and writes the fields it changes) as one Automerge change. On error nothing is written.
    pub fn apply(&mut self, ctx: &Ctx, hall: &Hall, command: Command) -> Result<EventId, CommandError> {
        let log = self.log();
        let view = self.view_of(&log);
        let result = self.apply_checked(ctx, hall, command, &log, &view);
        if result.is_err() {
            self.doc.rollback();
        }
        result
    }

    fn apply_checked(
        &mut self,
        ctx: &Ctx,
        hall: &Hall,
        command: Command,
        log: &Log,
        view: &CaseView,
    ) -> Result<EventId, CommandError> {
        let role = ctx.author.role;
        let command_kind = command.kind();
        let status = view.status;
        // Role and state first, from the one table; then the payload.
        command_kind.check(role, status)?;

        let kind = match command {
            Command::Accept => EventKind::Accepted {},
            Command::Reject { reason, basis } => {
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                check_text("basis", &basis, REASON_CHARS_MAX, true)?;
                EventKind::Rejected { reason, basis }
            }
            Command::Dispatch { lead_unit, co_units, due_ms } => {
                let route = hall.categories.get(&view.category);
                let lead_unit = lead_unit
                    .or_else(|| route.map(|r| r.lead_unit.clone()))
                    .ok_or_else(|| CommandError::UnknownCategory(view.category.clone()))?;
                let co_units = co_units.unwrap_or_else(|| route.map(|r| r.co_units.clone()).unwrap_or_default());
                check_units(hall, "lead unit", std::slice::from_ref(&lead_unit))?;
                check_units(hall, "co-units", &co_units)?;
                let due_ms = due_ms.unwrap_or(view.due_ms);
                check_time("due date", due_ms, ctx.now_ms)?;
                if due_ms < view.registered_at_ms {
                    return Err(CommandError::DueBeforeRegistration);
                }
                EventKind::Dispatched { lead_unit, co_units, due_ms }
            }
            Command::SignIn { assignee } => {
                check_text("assignee", &assignee, NAME_CHARS_MAX, true)?;
                EventKind::SignedIn { assignee }
            }
            Command::Return { reason, basis } => {
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                check_text("basis", &basis, REASON_CHARS_MAX, true)?;
                EventKind::Returned { reason, basis }
            }
            Command::Reassign { lead_unit, co_units, reason } => {
                check_units(hall, "lead unit", std::slice::from_ref(&lead_unit))?;
                check_units(hall, "co-units", &co_units)?;
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                EventKind::Reassigned { lead_unit, co_units, due_ms: view.due_ms, reason }
            }
            Command::AddNote { text } => {
                check_text("note", &text, NOTE_CHARS_MAX, true)?;
                EventKind::NoteAdded { text }
            }
            Command::PublishReply { text } => {
                check_text("reply", &text, REPLY_CHARS_MAX, true)?;
                EventKind::ReplyPublished { text }
            }
            Command::HoldConsultation { units, minutes, site_visit, held_at_ms } => {
                if units.is_empty() {
                    return Err(CommandError::Empty { field: "units" });
                }
                check_units(hall, "units", &units)?;
                check_text("minutes", &minutes, NOTE_CHARS_MAX, true)?;
                check_time("consultation time", held_at_ms, ctx.now_ms)?;
                EventKind::ConsultationHeld { units, minutes, site_visit, held_at_ms }
            }
            Command::AssignVisit { laptop } => {
                if laptop.len() != 64 || !laptop.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(CommandError::NotALaptop(laptop));
                }
                EventKind::VisitAssigned { laptop }
            }
            Command::LogVisit { volunteers, outcome, visited_at_ms, duration_minutes } => {
                if volunteers.is_empty() {
                    return Err(CommandError::Empty { field: "volunteers" });
                }
                if volunteers.len() > VOLUNTEERS_PER_VISIT_MAX {
                    return Err(CommandError::TooMany {
                        field: "volunteers",
                        count: volunteers.len(),
                        max: VOLUNTEERS_PER_VISIT_MAX,
                    });
                }
                volunteers.iter().try_for_each(|v| check_text("volunteer", v, NAME_CHARS_MAX, true))?;
                check_text("outcome", &outcome, NOTE_CHARS_MAX, true)?;
                check_time("visit time", visited_at_ms, ctx.now_ms)?;
                EventKind::SiteVisitLogged {
                    volunteers,
                    outcome,
                    visited_at_ms,
                    duration_minutes: duration_minutes.min(24 * 60),
                }
            }
            Command::RequestExtension { working_days, reason } => {
                if working_days == 0 || working_days > EXTENSION_WORKING_DAYS_MAX {
                    return Err(CommandError::ExtensionDays { got: working_days, max: EXTENSION_WORKING_DAYS_MAX });
                }
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                EventKind::ExtensionRequested { span: crate::hall::Span::WorkingDays(working_days), reason }
            }
            Command::ApproveExtension { request } => {
                let pending =
                    view.extensions.iter().find(|ext| ext.request == request && ext.approved_due_ms.is_none());
                let Some(_) = pending else { return Err(CommandError::UnknownExtension(request.to_string())) };
                let span = log
                    .events
                    .iter()
                    .find_map(|event| match &event.kind {
                        EventKind::ExtensionRequested { span, .. } if event.id == request => Some(*span),
                        _ => None,
                    })
                    .ok_or_else(|| CommandError::UnknownExtension(request.to_string()))?;
                EventKind::ExtensionApproved { request, due_ms: hall.calendar.add(view.due_ms, span) }
            }
            Command::Supervise { level, comment } => {
                if level == SupervisionLevel::None && view.supervision == SupervisionLevel::None {
                    return Err(CommandError::NoChange("the case is not under supervision"));
                }
                check_text("comment", &comment, REASON_CHARS_MAX, false)?;
                EventKind::SupervisionIssued { level, comment }
            }
            Command::ChangePriority { priority } => {
                if priority == view.priority {
                    return Err(CommandError::NoChange("the priority is already that"));
                }
                EventKind::PriorityChanged { priority }
            }
            Command::ChangeCategory { category } => {
                if !hall.categories.contains_key(&category) {
                    return Err(CommandError::UnknownCategory(category));
                }
                if category == view.category {
                    return Err(CommandError::NoChange("the category is already that"));
                }
                amjson::put(&mut self.doc, &ROOT, "category", &category.clone().into()).map_err(doc_error)?;
                EventKind::CategoryChanged { category }
            }
            Command::EditField { field, value } => {
                let (max, required) = match field {
                    EditableField::Summary => (SUMMARY_CHARS_MAX, true),
                    EditableField::Detail => (DETAIL_CHARS_MAX, true),
                    EditableField::Expectation => (EXPECTATION_CHARS_MAX, false),
                    EditableField::Location => (LOCATION_CHARS_MAX, false),
                };
                check_text(field.code(), &value, max, required)?;
                if field == EditableField::Summary {
                    check_public_summary(&value)?;
                }
                if field == EditableField::Summary {
                    if self.str_field(field.code()) == value {
                        return Err(CommandError::NoChange("the field already has that value"));
                    }
                    amjson::put(&mut self.doc, &ROOT, field.code(), &value.clone().into()).map_err(doc_error)?;
                } else {
                    if self.key.is_none() {
                        return Err(CommandError::NoCaseKey(field.code()));
                    }
                    if self.private_field(field.code()) == value {
                        return Err(CommandError::NoChange("the field already has that value"));
                    }
                    self.put_private(ctx, field.code(), &value)?;
                }
                EventKind::FieldEdited { field, value }
            }
            Command::AddTags { tags } => {
                check_tags(&tags)?;
                let total = view.tags.iter().chain(&tags).collect::<BTreeSet<_>>().len();
                if total > TAGS_MAX {
                    return Err(CommandError::TooMany { field: "tags", count: total, max: TAGS_MAX });
                }
                map_set(&mut self.doc, "tags", tags.iter().map(String::as_str))?;
                EventKind::TagsAdded { tags }
            }
            Command::AddCoUnits { units } => {
                if units.is_empty() {
                    return Err(CommandError::Empty { field: "units" });
                }
                check_units(hall, "co-units", &units)?;
                EventKind::CoUnitsAdded { units }
            }
            Command::Suspend { reason } => {
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                // The citizen's lookup shows what a 待补充 case waits for (issue 15 §3).
                match crate::public_text::check_public(&reason) {
                    Ok(()) => {}
                    Err(crate::public_text::PublicTextError::Hidden(_)) => {
                        return Err(CommandError::ControlCharacter { field: "reason" });
                    }
                    Err(_) => return Err(CommandError::PublicHasPersonalData { field: "reason" }),
                }
                EventKind::Suspended { reason }
            }
            Command::Resume => EventKind::Resumed {},
            Command::Resolve { result, reply } => {
                if matches!(result, CaseResult::Withdrawn | CaseResult::Duplicate) {
                    return Err(CommandError::State { command: command_kind, status });
                }
                check_text("reply", &reply, REPLY_CHARS_MAX, true)?;
                EventKind::Resolved { result, reply }
            }
            Command::RecordCallback { method, reached, outcome, rating, comment } => {
                if let Some(rating) = rating.filter(|r| !(1..=5).contains(r)) {
                    return Err(CommandError::Rating(rating));
                }
                if !reached && (outcome.is_some() || rating.is_some()) {
                    return Err(CommandError::CallbackNotReached);
                }
                check_text("comment", &comment, REASON_CHARS_MAX, false)?;
                // 不满意/非常不满意 said at a 回访 opens the round's 差评 task too (issue 15 §2), unless one is open.
                let round_has_task = view.bad_reviews.iter().any(|task| task.round == view.reopens);
                let task_due_ms = (reached && rating.is_some_and(crate::kpi::is_bad) && !round_has_task)
                    .then(|| hall.bad_review_due(ctx.now_ms));
                EventKind::CallbackRecorded { method, reached, outcome, rating, comment, task_due_ms }
            }
            Command::Close { reviewer, forced } => {
                check_text("reviewer", &reviewer, NAME_CHARS_MAX, true)?;
                if !forced && view.status == Status::Replied {
                    check_callback_before_close(view)?;
                }
                EventKind::Closed { reviewer, forced }
            }
            Command::Reopen { reason } => {
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                EventKind::Reopened { reason }
            }
            Command::Unmerge => {
                let master = view.duplicate_of.clone().ok_or(CommandError::State { command: command_kind, status })?;
                EventKind::Unmerged { master }
            }
            Command::Withdraw { reason } => {
                check_text("reason", &reason, REASON_CHARS_MAX, false)?;
                EventKind::Withdrawn { reason }
            }
            Command::Archive => EventKind::Archived {},
            Command::PurgePersonalData => {
                if view.personal.purged {
                    return Err(CommandError::Purged);
                }
                // The sealed record leaves the current document; its old bytes stay in the history as ciphertext,
                // unreadable once every node destroyed the case key (which the purge event tells them to do).
                amjson::put(&mut self.doc, &ROOT, "pi", &Value::Null).map_err(doc_error)?;
                EventKind::PiPurged {}
            }
            Command::ResolveConflict { conflict, decision, note } => {
                check_text("resolution note", &note, REASON_CHARS_MAX, false)?;
                let found = view
                    .conflicts
                    .iter()
                    .find(|c| c.id == conflict)
                    .ok_or_else(|| CommandError::UnknownConflict(conflict.clone()))?;
                let decision_text = match (&found.detail, decision) {
                    (ConflictDetail::Transition { .. }, ConflictDecision::Keep) => "维持合并结果".to_owned(),
                    (ConflictDetail::Transition { .. }, ConflictDecision::Choose(_)) => {
                        return Err(CommandError::DecisionKind(conflict));
                    }
                    (ConflictDetail::Field { field, candidates }, decision) => {
                        let private = seal::PRIVATE_ROOT_FIELDS.contains(&field.as_str());
                        if private && self.key.is_none() {
                            return Err(CommandError::NoCaseKey("a private field"));
                        }
                        let value = match decision {
                            ConflictDecision::Keep if private => self.private_field(field),
                            ConflictDecision::Keep => self.str_field(field),
                            ConflictDecision::Choose(value) => value,
                        };
                        if !candidates.iter().any(|c| c.value == value) {
                            return Err(CommandError::NotACandidate(value));
                        }
                        match seal::PRIVATE_ROOT_FIELDS.iter().find(|name| **name == field.as_str()) {
                            Some(name) => self.put_private(ctx, name, &value)?,
                            None => {
                                amjson::put(&mut self.doc, &ROOT, field, &value.clone().into()).map_err(doc_error)?
                            }
                        }
                        format!("采用「{value}」")
                    }
                };
                EventKind::ConflictResolved { conflict, decision: decision_text, note }
            }
            Command::Rate { level, mut reasons, comment } => {
                check_rating_reasons(level, &mut reasons)?;
                check_text("rating comment", &comment, RATING_COMMENT_CHARS_MAX, false)?;
                let round = view.reopens;
                if let Some(current) = view.rating.as_ref().filter(|rating| rating.round == round) {
                    if ctx.now_ms - current.first_at_ms > RATING_CHANGE_DAYS * crate::time::DAY_MS {
                        return Err(CommandError::RatingPeriodOver { days: RATING_CHANGE_DAYS });
                    }
                    if current.level == level && current.reasons == reasons && current.comment == comment {
                        return Err(CommandError::NoChange("the rating is already that"));
                    }
                }
                // The task's due date is fixed when it opens, from the hall's limit then.
                let task_exists = view.bad_reviews.iter().any(|task| task.round == round);
                let task_due_ms = (level.is_bad() && !task_exists).then(|| hall.bad_review_due(ctx.now_ms));
                EventKind::RatingReceived { level, reasons, comment, task_due_ms }
            }
            Command::BadReviewStep { step, text } => {
                let task = view.open_bad_review().ok_or(CommandError::NoBadReview)?;
                let expected = task.next_step().ok_or(CommandError::NoBadReview)?;
                if step != expected {
                    return Err(CommandError::ReviewStepOrder { expected });
                }
                check_text("review", &text, REPLY_CHARS_MAX, true)?;
                EventKind::BadReviewStepRecorded { step, text }
            }
            Command::AppealRating { reason } => {
                view.appealable_bad_review().ok_or(CommandError::NoBadReview)?;
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                EventKind::RatingAppealed { reason }
            }
            Command::DecideAppeal { upheld, note } => {
                view.pending_appeal().ok_or(CommandError::NoPendingAppeal)?;
                check_text("comment", &note, REASON_CHARS_MAX, true)?;
                EventKind::AppealDecided { upheld, note }
            }
            Command::AddMaterial { hash, bytes, media, name, public, thumbnail } => {
                use crate::materials::{
                    BLOB_OVERHEAD, CASE_MATERIALS_BYTES_MAX, CASE_MATERIALS_MAX, MATERIAL_NAME_CHARS_MAX,
                    SEALED_BLOB_BYTES_MAX, THUMBNAIL_BYTES_MAX, is_blob_hash,
                };
                if view.personal.purged {
                    return Err(CommandError::Purged);
                }
                if self.key.is_none() {
                    return Err(CommandError::NoCaseKey("materials"));
                }
                check_text("file name", &name, MATERIAL_NAME_CHARS_MAX, true)?;
                if !is_blob_hash(&hash) {
                    return Err(CommandError::BadMaterial("hash"));
                }
                if bytes <= BLOB_OVERHEAD as u64 || bytes > SEALED_BLOB_BYTES_MAX as u64 {
                    return Err(CommandError::BadMaterial("size"));
                }
                if let Some((thumb, thumb_bytes)) = &thumbnail
                    && (!is_blob_hash(thumb)
                        || *thumb_bytes <= BLOB_OVERHEAD as u64
                        || *thumb_bytes > (THUMBNAIL_BYTES_MAX + BLOB_OVERHEAD) as u64)
                {
                    return Err(CommandError::BadMaterial("thumbnail"));
                }
                if view.materials.iter().any(|material| material.hash == hash) {
                    return Err(CommandError::NoChange("the file is already on the case"));
                }
                let count = view.live_materials().count();
                let held: u64 = view.live_materials().map(|material| material.bytes).sum();
                if count + 1 > CASE_MATERIALS_MAX || held + bytes > (CASE_MATERIALS_BYTES_MAX + BLOB_OVERHEAD) as u64 {
                    return Err(CommandError::MaterialsFull {
                        count,
                        bytes: held,
                        count_max: CASE_MATERIALS_MAX,
                        bytes_max: CASE_MATERIALS_BYTES_MAX as u64,
                    });
                }
                let (thumb, thumb_bytes) = thumbnail.map_or((None, 0), |(hash, bytes)| (Some(hash), bytes));
                EventKind::MaterialAdded { hash, bytes, media, name, public, thumb, thumb_bytes }
            }
            Command::RemoveMaterial { material, reason } => {
                view.material(material.as_str()).ok_or_else(|| CommandError::UnknownMaterial(material.to_string()))?;
                check_text("reason", &reason, REASON_CHARS_MAX, true)?;
                if self.key.is_none() {
                    return Err(CommandError::NoCaseKey("reason"));
                }
                EventKind::MaterialRemoved { material, reason }
            }
            Command::PublishMaterial { material, public } => {
                let found = view
                    .material(material.as_str())
                    .ok_or_else(|| CommandError::UnknownMaterial(material.to_string()))?;
                if view.personal.purged {
                    return Err(CommandError::Purged);
                }
                if found.public == public {
                    return Err(CommandError::NoChange("the material is already so"));
                }
                EventKind::MaterialPublished { material, public }
            }
        };
        // The table was asked above; the event a command writes is a transition exactly when its kind has a target.
        debug_assert_eq!(kind.is_transition(), command_kind.target().is_some());
        let seen = kind.is_transition().then_some(status);
        self.append(ctx, kind, seen, log)
    }

    /// 并案: marks `duplicate` as a duplicate of `master`, writing an event into both documents.
    pub fn mark_duplicate(
        duplicate: &mut CaseDoc,
        master: &mut CaseDoc,
        ctx: &Ctx,
    ) -> Result<(EventId, EventId), CommandError> {
        let master_view = master.view();
        let first = duplicate.mark_duplicate_of(&master_view, ctx)?;
        let master_ctx = Ctx { entropy: ctx.entropy ^ (1 << 70), ..ctx.clone() };
        let second = master.attach_duplicate(&duplicate.case_id(), &master_ctx)?;
        Ok((first, second))
    }

    /// The duplicate's half of 并案, for a caller that holds the two documents one at a time (a store): checks against
    /// the master's view and writes `MarkedDuplicate` here. Follow with [`CaseDoc::attach_duplicate`] on the master.
    pub fn mark_duplicate_of(&mut self, master_view: &CaseView, ctx: &Ctx) -> Result<EventId, CommandError> {
        let log = self.log();
        let view = self.view_of(&log);
        let command = CommandKind::MarkDuplicate;
        if view.case_id == master_view.case_id
            || master_view.duplicate_of.as_ref() == Some(&view.case_id)
            || view.duplicates.contains(&master_view.case_id)
        {
            return Err(CommandError::DuplicateCycle);
        }
        if master_view.status == Status::Duplicate || master_view.status == Status::Archived {
            return Err(CommandError::State { command, status: master_view.status });
        }
        command.check(ctx.author.role, view.status)?;
        let kind = EventKind::MarkedDuplicate { master: master_view.case_id.clone() };
        self.append(ctx, kind, Some(view.status), &log)
    }

    /// The master's half of 并案: records that `duplicate` was merged into this case.
    pub fn attach_duplicate(&mut self, duplicate: &CaseId, ctx: &Ctx) -> Result<EventId, CommandError> {
        let log = self.log();
        self.append(ctx, EventKind::DuplicateAttached { duplicate: duplicate.clone() }, None, &log)
    }

    /// 解除并案: the duplicate returns to REGISTERED and the master forgets it.
    pub fn unmerge(
        duplicate: &mut CaseDoc,
        master: &mut CaseDoc,
        ctx: &Ctx,
        hall: &Hall,
    ) -> Result<(EventId, EventId), CommandError> {
        let first = duplicate.apply(ctx, hall, Command::Unmerge)?;
        let master_ctx = Ctx { entropy: ctx.entropy ^ (1 << 70), ..ctx.clone() };
        let log = master.log();
        let second =
            master.append(&master_ctx, EventKind::DuplicateDetached { duplicate: duplicate.case_id() }, None, &log)?;
        Ok((first, second))
    }

    /// Returns the full personal record and records who looked and why (查看完整号码, an audit event).
    pub fn reveal_personal_data(&mut self, ctx: &Ctx, purpose: &str) -> Result<PersonalData, CommandError> {
        self.reveal_personal_data_event(ctx, purpose).map(|(personal, _)| personal)
    }

    /// [`CaseDoc::reveal_personal_data`], also returning the audit event's id (for a store that acknowledges events).
    pub fn reveal_personal_data_event(
        &mut self,
        ctx: &Ctx,
        purpose: &str,
    ) -> Result<(PersonalData, EventId), CommandError> {
        let log = self.log();
        CommandKind::RevealPersonalData.check(ctx.author.role, self.view_of(&log).status)?;
        check_text("purpose", purpose, REASON_CHARS_MAX, true)?;
        if log.events.iter().any(|event| matches!(event.kind, EventKind::PiPurged {})) {
            return Err(CommandError::Purged);
        }
        let (personal, sealed) = self.personal_data();
        if sealed {
            return Err(CommandError::NoCaseKey("personal data"));
        }
        let event = self.append(ctx, EventKind::PiRevealed { purpose: purpose.to_owned() }, None, &log)?;
        Ok((personal, event))
    }

    /// Seals a material and its thumbnail under the case key (issue 16): the files for the blob store, each under its
    /// content address. `kind` and `plaintext` come from `materials::clean` (metadata already stripped), the thumbnail
    /// from the node's renderer. Store the files, then apply [`Command::AddMaterial`] naming them.
    pub fn seal_material(
        &self,
        secret: &[u8; 32],
        kind: crate::materials::MaterialType,
        plaintext: &[u8],
        thumbnail: Option<&[u8]>,
    ) -> Result<crate::materials::SealedMaterial, CommandError> {
        use crate::materials::{BlobRole, MATERIAL_BYTES_MAX, THUMBNAIL_BYTES_MAX, blob_hash, seal_blob};
        let key = self.key.as_ref().ok_or(CommandError::NoCaseKey("materials"))?;
        if plaintext.is_empty() || plaintext.len() > MATERIAL_BYTES_MAX {
            return Err(CommandError::BadMaterial("size"));
        }
        if thumbnail.is_some_and(|thumb| thumb.is_empty() || thumb.len() > THUMBNAIL_BYTES_MAX) {
            return Err(CommandError::BadMaterial("thumbnail"));
        }
        let case_id = self.case_id();
        let blob = seal_blob(key, secret, case_id.as_str(), BlobRole::Material, plaintext);
        let thumbnail = thumbnail.map(|thumb| {
            let sealed = seal_blob(key, secret, case_id.as_str(), BlobRole::Thumbnail, thumb);
            let hash = blob_hash(&sealed);
            (sealed, hash)
        });
        Ok(crate::materials::SealedMaterial { kind, hash: blob_hash(&blob), blob, thumbnail })
    }

    /// Opens a sealed file of this case (a material or its thumbnail) with the case key.
    pub fn open_blob(&self, role: crate::materials::BlobRole, sealed: &[u8]) -> Result<Vec<u8>, CommandError> {
        let key = self.key.as_ref().ok_or(CommandError::NoCaseKey("materials"))?;
        crate::materials::open_blob(key, self.case_id().as_str(), role, sealed)
            .map_err(|error| CommandError::Seal(error.to_string()))
    }

    /// Records a download of a material (查看材料, like a reveal of personal data) and returns the material as the
    /// view shows it. The caller reads the file after this event is stored.
    pub fn view_material_event(
        &mut self,
        ctx: &Ctx,
        material: &EventId,
    ) -> Result<(crate::view::Material, EventId), CommandError> {
        let log = self.log();
        let view = self.view_of(&log);
        CommandKind::ViewMaterial.check(ctx.author.role, view.status)?;
        if view.personal.purged {
            return Err(CommandError::Purged);
        }
        if self.key.is_none() {
            return Err(CommandError::NoCaseKey("materials"));
        }
        let found = view
            .material(material.as_str())
            .cloned()
            .ok_or_else(|| CommandError::UnknownMaterial(material.to_string()))?;
        let event = self.append(ctx, EventKind::MaterialViewed { material: material.clone() }, None, &log)?;
        Ok((found, event))
    }

    /// The personal record as this replica can read it: the sealed record opened with the key, or only the public
    /// flags (`consent`) without it; `None` for the record itself when it is sealed and this replica lacks the key.
    fn personal_data(&self) -> (PersonalData, bool) {
        let consent: PersonalData = amjson::read_prop(&self.doc, &ROOT, "consent")
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default();
        let stored = self.str_field("pi");
        if !seal::is_sealed(&stored) {
            return (consent, false);
        }
        let case_id = self.str_field("case_id");
        let opened = self.key.as_ref().and_then(|key| seal::open(key, &case_id, "pi", &stored).ok());
        match opened.and_then(|json| serde_json::from_str::<PersonalData>(&json).ok()) {
            Some(personal) => (personal, false),
            None => (consent, true),
        }
    }

    /// Where an SMS about this case may go (issue 15 §4): the phone of a citizen who gave one and agreed to SMS
    /// (`sms_ok`), read with the case key. This is the one other way a personal value leaves `CaseDoc` besides
    /// `reveal_personal_data`: to the hall's SMS platform only, never to a page or a log (the node's outbox holds it
    /// in memory for one request).
    pub fn sms_recipient(&self) -> SmsRecipient {
        if self.view().personal.purged {
            return SmsRecipient::Purged;
        }
        let (personal, sealed) = self.personal_data();
        if sealed {
            return SmsRecipient::NoKey;
        }
        if !personal.sms_ok {
            return SmsRecipient::NoConsent;
        }
        match personal.phone {
            Some(phone) if !phone.is_empty() => SmsRecipient::Phone(phone),
            _ => SmsRecipient::NoPhone,
        }
    }

    /// Checks a query code (查询码) typed by a citizen against the stored hash, in constant time.
    pub fn query_code_matches(&self, typed: &str) -> bool {
        crate::ids::query_code_matches(&self.case_id(), &self.str_field("query_hash"), typed)
    }

    /// The read model of the case.
    pub fn view(&self) -> CaseView {
        self.view_of(&self.log())
    }

    fn view_of(&self, log: &Log) -> CaseView {
        let case_id = self.case_id();
        let arbitration = arbitrate(&case_id, &log.events, &log.ancestry);
        let applied: BTreeSet<&EventId> = arbitration.applied.iter().map(|(id, _)| id).collect();
        let status = arbitration.status.unwrap_or(Status::Registered);
        let registered = log.events.iter().find(|event| matches!(event.kind, EventKind::Registered { .. }));
        let initial_priority = match registered.map(|event| &event.kind) {
            Some(EventKind::Registered { priority, .. }) => *priority,
            _ => Priority::Normal,
        };
        let mut priority = PriorityFold::new(initial_priority);
        let mut supervision = SupervisionFold::new(SupervisionLevel::None);
        let mut view = CaseView {
            case_id: case_id.clone(),
            reg_no: RegNo::parse(&self.str_field("reg_no")).expect("checked when the document was loaded"),
            channel: Channel::parse(&self.str_field("channel")).unwrap_or(Channel::Window),
            registered_at_ms: self.int_field("registered_at"),
            registered_by: self.str_field("registered_by"),
            registered_node: self.str_field("registered_node"),
            window: self.str_field("window"),
            nature: Nature::parse(&self.str_field("nature")).unwrap_or(Nature::Other),
            category: self.str_field("category"),
            modes: self.set_keys("modes").iter().filter_map(|code| Mode::parse(code)).collect(),
            matter: amjson::read_prop(&self.doc, &ROOT, "matter")
                .and_then(|value| serde_json::from_value::<Matter>(value).ok()),
            not_done_reason: NotDoneReason::parse(&self.str_field("not_done_reason")),
            summary: self.str_field("summary"),
            detail: self.private_field("detail"),
            expectation: self.private_field("expectation"),
            location: self.private_field("location"),
            priority: initial_priority,
            status,
            lead_unit: None,
            co_units: BTreeSet::new(),
            assignee: None,
            signed_at_ms: None,
            first_response_due_ms: self.int_field("first_response_due"),
            due_ms: self.int_field("due_ms"),
            paused_ms: 0,
            hold_started_ms: None,
            first_response_ms: None,
            replied_at_ms: None,
            supervision: SupervisionLevel::None,
            supervision_count: 0,
            public_reply: None,
            public_replies: Vec::new(),
            notes: Vec::new(),
            result: None,
            closed_at_ms: None,
            closed_by: None,
            reviewer: None,
            callbacks: Vec::new(),
            rating: None,
            bad_reviews: Vec::new(),
            hold_reason: None,
            extensions: Vec::new(),
            consultations: 0,
            site_visits: 0,
            visit_assignment: None,
            visit_minutes: 0,
            dispatches: 0,
            returns: 0,
            reopens: 0,
            duplicate_of: None,
            duplicates: BTreeSet::new(),
            tags: self.set_keys("tags"),
            sensitive: matches!(amjson::read_prop(&self.doc, &ROOT, "sensitive"), Some(Value::Bool(true))),
            phone_tag: None,
            personal: MaskedPersonalData::default(),
            pi_reveals: 0,
            updated_at_ms: 0,
            timeline: Vec::new(),
            conflicts: Vec::new(),
            flags: Flags { unreadable_events: log.unreadable, ..Flags::default() },
            event_ids: log.events.iter().map(|event| event.id.clone()).collect(),
            materials: Vec::new(),
        };
        let mut dispatch_co = BTreeSet::new();
        let mut extra_co = BTreeSet::new();
        let mut extension_due: Option<i64> = None;
        let mut dispatched_once = false;
        let mut purged = false;
        let mut resolved_conflicts = BTreeSet::new();
        let mut detached = BTreeSet::new();
        for event in &log.events {
            let is_applied = applied.contains(&event.id);
            view.updated_at_ms = view.updated_at_ms.max(event.wall_ms);
            match &event.kind {
                EventKind::Dispatched { lead_unit, co_units, due_ms }
                | EventKind::Reassigned { lead_unit, co_units, due_ms, .. }
                    if is_applied =>
                {
                    view.lead_unit = Some(lead_unit.clone());
                    dispatch_co = co_units.iter().cloned().collect();
                    view.due_ms = *due_ms;
                    view.assignee = None;
                    view.dispatches += 1;
                    dispatched_once = true;
                }
                EventKind::SignedIn { assignee } if is_applied => {
                    view.assignee = Some(assignee.clone());
                    view.signed_at_ms.get_or_insert(event.wall_ms);
                    view.first_response_ms.get_or_insert(event.wall_ms);
                }
                EventKind::Returned { .. } if is_applied => {
                    view.lead_unit = None;
                    view.assignee = None;
                    dispatch_co.clear();
                    view.returns += 1;
                }
                EventKind::Suspended { reason } if is_applied => {
                    view.hold_started_ms = Some(event.wall_ms);
                    view.hold_reason = Some(reason.clone());
                }
                EventKind::Resumed {} if is_applied => {
                    view.hold_reason = None;
                    if let Some(start) = view.hold_started_ms.take() {
                        view.paused_ms += (event.wall_ms - start).max(0);
                    }
                }
                EventKind::Resolved { result, reply } if is_applied => {
                    view.result = Some(*result);
                    view.replied_at_ms = Some(event.wall_ms);
                    view.first_response_ms.get_or_insert(event.wall_ms);
                    view.public_reply = Some(reply.clone());
                    view.public_replies.push(PublicReply { at_ms: event.wall_ms, text: reply.clone() });
                }
                EventKind::Rejected { reason, basis } if is_applied => {
                    view.result = Some(CaseResult::OutOfScope);
                    let text = format!("不予受理：{reason}（依据：{basis}）");
                    view.public_reply = Some(text.clone());
                    view.public_replies.push(PublicReply { at_ms: event.wall_ms, text });
                }
                EventKind::Closed { reviewer, .. } if is_applied => {
                    view.closed_at_ms = Some(event.wall_ms);
                    view.closed_by = Some(event.staff.clone());
                    view.reviewer = Some(reviewer.clone());
                }
                EventKind::Reopened { .. } if is_applied => {
                    view.reopens += 1;
                    view.closed_at_ms = None;
                    view.closed_by = None;
                    view.reviewer = None;
                    view.replied_at_ms = None;
                    view.result = None;
                }
                EventKind::MarkedDuplicate { master } if is_applied => {
                    view.duplicate_of = Some(master.clone());
                    view.result = Some(CaseResult::Duplicate);
                }
                EventKind::Unmerged { .. } if is_applied => {
                    view.duplicate_of = None;
                    view.result = None;
                }
                EventKind::Withdrawn { .. } if is_applied => view.result = Some(CaseResult::Withdrawn),
                EventKind::ReplyPublished { text } => {
                    view.first_response_ms.get_or_insert(event.wall_ms);
                    view.public_reply = Some(text.clone());
                    view.public_replies.push(PublicReply { at_ms: event.wall_ms, text: text.clone() });
                }
                EventKind::NoteAdded { text } => view.notes.push(text.clone()),
                EventKind::ConsultationHeld { .. } => view.consultations += 1,
                EventKind::SiteVisitLogged { duration_minutes, .. } => {
                    view.site_visits += 1;
                    view.visit_minutes += u64::from(*duration_minutes);
                    if view.visit_assignment.as_ref().is_some_and(|open| open.laptop == event.node) {
                        view.visit_assignment = None;
                    }
                }
                EventKind::VisitAssigned { laptop } => {
                    view.visit_assignment =
                        Some(crate::view::VisitAssignment { laptop: laptop.clone(), at_ms: event.wall_ms })
                }
                EventKind::ExtensionRequested { reason, .. } => view.extensions.push(Extension {
                    request: event.id.clone(),
                    requested_at_ms: event.wall_ms,
                    reason: reason.clone(),
                    approved_due_ms: None,
                }),
                EventKind::ExtensionApproved { request, due_ms } => {
                    if let Some(extension) = view.extensions.iter_mut().find(|ext| &ext.request == request) {
                        extension.approved_due_ms = Some(extension.approved_due_ms.map_or(*due_ms, |d| d.max(*due_ms)));
                        extension_due = Some(extension_due.map_or(*due_ms, |d| d.max(*due_ms)));
                    }
                }
                EventKind::SupervisionIssued { level, .. } => {
                    supervision.write(&log.ancestry, &event.id, *level);
                    view.supervision_count += 1;
                }
                EventKind::PriorityChanged { priority: p } => priority.write(&log.ancestry, &event.id, *p),
                EventKind::CategoryChanged { .. } if dispatched_once => {
                    view.flags.category_changed_after_dispatch = true
                }
                EventKind::CoUnitsAdded { units } => extra_co.extend(units.iter().cloned()),
                EventKind::CallbackRecorded { method, reached, outcome, rating, comment, task_due_ms } => {
                    view.callbacks.push(Callback {
                        event_id: event.id.clone(),
                        at_ms: event.wall_ms,
                        by: event.staff.clone(),
                        method: *method,
                        reached: *reached,
                        outcome: *outcome,
                        rating: *rating,
                        comment: comment.clone(),
                    });
                    fold_callback_task(&mut view, event, *rating, *task_due_ms);
                }
                EventKind::DuplicateAttached { duplicate } => {
                    view.duplicates.insert(duplicate.clone());
                }
                EventKind::DuplicateDetached { duplicate } => {
                    detached.insert(duplicate.clone());
                }
                // Only the citizen's own rating counts (a rating event under a staff role, which no command writes,
                // is kept in the timeline and ignored).
                EventKind::RatingReceived { level, reasons, comment, task_due_ms } if event.role == Role::Citizen => {
                    fold_rating(&mut view, event, *level, reasons, comment, *task_due_ms)
                }
                EventKind::BadReviewStepRecorded { step, text } => {
                    if let Some(task) = view.bad_reviews.last_mut() {
                        task.steps.push(ReviewStepEntry {
                            step: *step,
                            at_ms: event.wall_ms,
                            by: event.staff.clone(),
                            text: text.clone(),
                        });
                    }
                }
                EventKind::RatingAppealed { reason } => {
                    if let Some(task) = view.bad_reviews.last_mut() {
                        task.appeal.get_or_insert(Appeal {
                            at_ms: event.wall_ms,
                            by: event.staff.clone(),
                            reason: reason.clone(),
                            decision: None,
                        });
                    }
                }
                EventKind::AppealDecided { upheld, note } => {
                    let task = view.bad_reviews.last_mut();
                    if let Some(task) = task
                        && let Some(appeal) = task.appeal.as_mut().filter(|appeal| appeal.decision.is_none())
                    {
                        appeal.decision = Some((*upheld, note.clone(), event.wall_ms, event.staff.clone()));
                        let round = task.round;
                        if *upheld && let Some(rating) = view.rating.as_mut().filter(|rating| rating.round == round) {
                            rating.void = true;
                        }
                    }
                }
                EventKind::PiRevealed { .. } => view.pi_reveals += 1,
                // A material is named by its event id; a second event naming a file already on the case (a bug or a
                // hostile member) is kept in the timeline only.
                EventKind::MaterialAdded { hash, bytes, media, name, public, thumb, thumb_bytes }
                    if !view.materials.iter().any(|material| &material.hash == hash) =>
                {
                    view.materials.push(crate::view::Material {
                        id: event.id.clone(),
                        hash: hash.clone(),
                        bytes: *bytes,
                        media: *media,
                        name: name.clone(),
                        public: *public,
                        thumb: thumb.clone(),
                        thumb_bytes: *thumb_bytes,
                        added_at_ms: event.wall_ms,
                        added_by: event.staff.clone(),
                        added_role: event.role,
                        removed: false,
                        views: 0,
                    });
                }
                // Removal and publication follow the log order (a removal is final).
                EventKind::MaterialRemoved { material, .. } => {
                    if let Some(found) = view.materials.iter_mut().find(|m| &m.id == material) {
                        found.removed = true;
                    }
                }
                EventKind::MaterialPublished { material, public } => {
                    if let Some(found) = view.materials.iter_mut().find(|m| &m.id == material) {
                        found.public = *public;
                    }
                }
                EventKind::MaterialViewed { material } => {
                    if let Some(found) = view.materials.iter_mut().find(|m| &m.id == material) {
                        found.views += 1;
                    }
                }
                EventKind::PiPurged {} => purged = true,
                EventKind::ConflictResolved { conflict, .. } => {
                    resolved_conflicts.insert(conflict.clone());
                }
                _ => {}
            }
            view.timeline.push(TimelineEntry {
                event_id: event.id.clone(),
                at_ms: event.wall_ms,
                node: event.node.clone(),
                staff: event.staff.clone(),
                role: event.role,
                label: event.kind.label(),
                text: describe(event),
                public: event.kind.is_public(),
                superseded: arbitration.superseded.contains_key(&event.id),
            });
        }
        view.priority = priority.get();
        view.supervision = supervision.get();
        if status != Status::OnHold {
            view.hold_started_ms = None;
            view.hold_reason = None;
        }
        // A visit is open only while the case is being worked on (or awaits its callback).
        if !matches!(
            status,
            Status::Registered | Status::Dispatched | Status::InProgress | Status::OnHold | Status::Replied
        ) {
            view.visit_assignment = None;
        }
        if let Some(extended) = extension_due.filter(|&due| due > view.due_ms) {
            view.due_ms = extended;
            view.flags.extended = true;
        }
        view.co_units = dispatch_co.into_iter().chain(extra_co).collect();
        view.duplicates.retain(|dup| !detached.contains(dup) && view.duplicate_of.as_ref() != Some(dup));
        view.personal = if purged {
            MaskedPersonalData { purged: true, ..MaskedPersonalData::default() }
        } else {
            let (personal, sealed) = self.personal_data();
            view.phone_tag = personal.phone.as_deref().map(phone_tag);
            MaskedPersonalData { sealed, ..personal.masked() }
        };
        if status == Status::Closed
            && let Some((close_id, _)) = arbitration.applied.last()
        {
            let seen_by_close = log.ancestry.ancestors(close_id);
            view.flags.content_after_close = log.events.iter().any(|event| {
                matches!(event.kind, EventKind::NoteAdded { .. } | EventKind::ReplyPublished { .. })
                    && !seen_by_close.contains(&event.id)
                    && &event.id != close_id
            });
        }
        view.conflicts = self.conflicts(log, &arbitration, &resolved_conflicts);
        view
    }

    fn conflicts(
        &self,
        log: &Log,
        arbitration: &crate::fold::Arbitration,
        resolved: &BTreeSet<String>,
    ) -> Vec<Conflict> {
        let by_id: BTreeMap<&EventId, &Event> = log.events.iter().map(|event| (&event.id, event)).collect();
        let mut conflicts = Vec::new();
        for (loser, reason) in &arbitration.superseded {
            let id = format!("t-{loser}");
            let Some(event) = by_id.get(loser) else { continue };
            if resolved.contains(&id) {
                continue;
            }
            let winner_label = match reason {
                crate::fold::SupersededBy::Concurrent { winner } => by_id.get(winner).map(|w| w.kind.label()),
                _ => None,
            };
            conflicts.push(Conflict {
                id,
                detail: ConflictDetail::Transition {
                    loser: loser.clone(),
                    loser_label: event.kind.label(),
                    loser_node: event.node.clone(),
                    loser_staff: event.staff.clone(),
                    loser_at_ms: event.wall_ms,
                    reason: reason.clone(),
                    winner_label,
                },
            });
        }
        let registered = log.events.iter().find(|event| matches!(event.kind, EventKind::Registered { .. }));
        let case_id = self.str_field("case_id");
        for field in ["summary", "detail", "expectation", "location", "category"] {
            let Ok(values) = self.doc.get_all(ROOT, field) else { continue };
            let private = seal::PRIVATE_ROOT_FIELDS.contains(&field);
            let mut distinct: Vec<String> = values
                .into_iter()
                .filter_map(|(value, id)| match amjson::to_json(&self.doc, value, &id, 0) {
                    Value::String(text) if private => Some(seal::reveal(self.key.as_ref(), &case_id, field, &text)),
                    Value::String(text) => Some(text),
                    _ => None,
                })
                .collect();
            distinct.sort();
            distinct.dedup();
            if distinct.len() < 2 {
                continue;
            }
            let candidates = distinct
                .into_iter()
                .map(|value| {
                    let writer = log.events.iter().rev().find(|event| match &event.kind {
                        EventKind::FieldEdited { field: f, value: v } => f.code() == field && v == &value,
                        EventKind::CategoryChanged { category } => field == "category" && category == &value,
                        _ => false,
                    });
                    let writer = writer.or(registered);
                    FieldCandidate {
                        value,
                        node: writer.map(|e| e.node.clone()).unwrap_or_default(),
                        staff: writer.map(|e| e.staff.clone()).unwrap_or_default(),
                        at_ms: writer.map_or(0, |e| e.wall_ms),
                    }
                })
                .collect();
            conflicts.push(Conflict {
                id: format!("f-{field}"),
                detail: ConflictDetail::Field { field: field.to_owned(), candidates },
            });
        }
        conflicts
    }
}

/// 差评 reasons: at least one with 不满意/非常不满意, none with a good rating, none twice; stored sorted, so a change
/// compares as a set.
fn check_rating_reasons(level: Satisfaction, reasons: &mut Vec<BadReviewReason>) -> Result<(), CommandError> {
    let before = reasons.len();
    reasons.sort();
    reasons.dedup();
    if reasons.len() != before {
        return Err(CommandError::RatingReasons { level, rule: "each reason once" });
    }
    match (level.is_bad(), reasons.is_empty()) {
        (true, true) => Err(CommandError::RatingReasons { level, rule: "at least one reason" }),
        (false, false) => Err(CommandError::RatingReasons { level, rule: "no reason" }),
        _ => Ok(()),
    }
}

/// Folds a citizen's rating: the round's first rating or a change of it, and the round's 差评 task (opened by a bad
/// rating, cancelled when the citizen changes to a good one before any step, reopened when they change back).
fn fold_rating(
    view: &mut CaseView,
    event: &Event,
    level: Satisfaction,
    reasons: &[BadReviewReason],
    comment: &str,
    task_due_ms: Option<i64>,
) {
    let round = view.reopens;
    let (first_at_ms, changes) = match view.rating.as_ref().filter(|rating| rating.round == round) {
        Some(current) => (current.first_at_ms, current.changes + 1),
        None => (event.wall_ms, 0),
    };
    view.rating = Some(Rating {
        event_id: event.id.clone(),
        at_ms: event.wall_ms,
        first_at_ms,
        round,
        level,
        reasons: reasons.to_vec(),
        comment: comment.to_owned(),
        changes,
        void: false,
    });
    match view.bad_reviews.iter_mut().find(|task| task.round == round) {
        Some(task) => {
            if level.is_bad() {
                task.cancelled = false;
                task.level = level;
                task.reasons = reasons.to_vec();
            } else if task.steps.is_empty() && task.appeal.is_none() {
                task.cancelled = true;
            }
        }
        None if level.is_bad() => view.bad_reviews.push(BadReviewTask {
            round,
            opened_at_ms: event.wall_ms,
            // A rating written without a due date (it found the round's task, which a concurrent replica lacked):
            // the task counts from the rating, due at once, so it is on the overdue list rather than lost.
            due_ms: task_due_ms.unwrap_or(event.wall_ms),
            level,
            reasons: reasons.to_vec(),
            steps: Vec::new(),
            appeal: None,
            cancelled: false,
        }),
        None => {}
    }
}

/// A 差评 said at a 回访 (staff record it) opens the round's 差评 task when the round has none: 核实 → 整改 → 反馈
/// as for the citizen's own rating, with no reasons ticked (the 回访's comment says why).
fn fold_callback_task(view: &mut CaseView, event: &Event, rating: Option<u8>, task_due_ms: Option<i64>) {
    let (Some(level), Some(due_ms)) = (rating.and_then(Satisfaction::from_score), task_due_ms) else { return };
    let round = view.reopens;
    if !level.is_bad() || view.bad_reviews.iter().any(|task| task.round == round) {
        return;
    }
    view.bad_reviews.push(BadReviewTask {
        round,
        opened_at_ms: event.wall_ms,
        due_ms,
        level,
        reasons: Vec::new(),
        steps: Vec::new(),
        appeal: None,
        cancelled: false,
    });
}

/// 办结 needs a callback when the citizen asked for one: the latest reached callback must not say "unresolved", and
/// without any reached callback there must have been enough failed attempts.
fn check_callback_before_close(view: &CaseView) -> Result<(), CommandError> {
    if !view.personal.callback_ok || view.personal.anonymous || view.personal.purged {
        return Ok(());
    }
    match view.callbacks.iter().rev().find(|callback| callback.reached) {
        Some(callback) if callback.outcome == Some(CallbackOutcome::Unresolved) => {
            Err(CommandError::CallbackUnresolved)
        }
        Some(_) => Ok(()),
        None => {
            let attempts = view.callbacks.len();
            if attempts >= CALLBACK_ATTEMPTS_FOR_CLOSE {
                Ok(())
            } else {
                Err(CommandError::CallbackRequired { attempts: CALLBACK_ATTEMPTS_FOR_CLOSE })
            }
        }
    }
}

impl Log {
    fn empty() -> Log {
        Log { events: Vec::new(), ancestry: Ancestry::new(&[]), unreadable: 0 }
    }
}
