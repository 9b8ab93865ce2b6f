//! `case`: working cases from the terminal (register, list, show, every lifecycle step), and the helpers the other
//! case commands share (`conflicts`, `stats`, `export`, `verify`, `doc`, `merge`).
//!
//! A case is named by its registration number (`BBC01-2026-0001`) or its case id (a ULID).

use crate::setup::open;
use crate::{Cli, expected, expected_with_hint, out, print_json, say};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use zhaowo_crdt::model::*;
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::{Date, format_local_minute};
use zhaowo_crdt::{CaseDoc, CaseView, Command, CommandError, EventId, QueryCode, RegNo, Registration};
use zhaowo_node::home::{Home, entropy, now_ms};
use zhaowo_node::store::{CaseRow, PAGE_ROWS_MAX, ReadError, RegisterFn, RegisterQuery, Store, WriteError};

/// A clap value parser for a closed vocabulary (a code or its Chinese label); an unknown value is refused with the
/// list of valid ones.
pub(crate) fn parse_vocab<T>(
    parse: fn(&str) -> Option<T>,
    known: fn() -> String,
    what: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |text| parse(text).ok_or_else(|| format!("unknown {what} `{text}`\n\nhint: valid {what} codes: {}", known()))
}

pub(crate) fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text).ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// Register a case in the register book (登记).
    New(NewArgs),
    /// List the register book, newest first, with filters.
    List(ListArgs),
    /// Show a case and its timeline.
    Show { case: String },
    /// 受理: accept a citizen's mini-program submission into the register book.
    Accept { case: String },
    /// 不予受理: reject, with the reason and its legal or policy basis (both shown to the citizen).
    Reject {
        case: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        basis: String,
    },
    /// 待补充材料: suspend the case (the solution clock pauses) until the citizen brings what is missing.
    Suspend {
        case: String,
        #[arg(long)]
        reason: String,
    },
    /// 恢复办理: resume a suspended case.
    Resume { case: String },
    /// 查看完整个人信息: print the citizen's full record once, recorded on the case's timeline with who looked and why
    /// (a window, 督查科 or admin node that holds the case key).
    Reveal {
        case: String,
        /// Why (recorded), e.g. 回访核实.
        #[arg(long)]
        purpose: String,
    },
    /// 上传材料: attach files (JPEG, PNG, WebP, PDF; checked by content, metadata such as GPS stripped, sealed under
    /// the case key).
    Attach {
        case: String,
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Show the files on the citizen's lookup page and in Open311 (default: staff only).
        #[arg(long)]
        public: bool,
    },
    /// List a case's materials (and whether this node holds each file yet).
    Materials { case: String },
    /// 查看材料: write one material to a file, recorded on the case's timeline like a reveal of personal data.
    MaterialGet {
        case: String,
        /// The material's id (from `case materials`).
        material: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// 删除材料: remove a material from the case file (its files are deleted on every node), with a reason.
    MaterialRemove {
        case: String,
        material: String,
        #[arg(long)]
        reason: String,
    },
    /// 公开材料: show a material on the citizen's lookup page and in Open311 (`--unpublish` hides it again).
    MaterialPublish {
        case: String,
        material: String,
        #[arg(long)]
        unpublish: bool,
    },
    /// 修改诉求信息: change the case's fields, category or priority (one event each, stored together or not at all).
    Edit {
        case: String,
        /// 诉求摘要 (≤100 characters, shown publicly: no personal data).
        #[arg(long)]
        summary: Option<String>,
        #[arg(long)]
        detail: Option<String>,
        #[arg(long)]
        expectation: Option<String>,
        #[arg(long)]
        location: Option<String>,
        /// 诉求类别 code from the hall's catalogue.
        #[arg(long)]
        category: Option<String>,
        /// 一般, 紧急, 特急.
        #[arg(long, value_parser = parse_vocab(Priority::parse, Priority::known, "priority"))]
        priority: Option<Priority>,
    },
    /// 添加标签: tag the case (comma-separated).
    Tag {
        case: String,
        #[arg(long, value_delimiter = ',', required = true)]
        tags: Vec<String>,
    },
    /// 增加协办单位: add co-units (unit codes, comma-separated).
    CoUnits {
        case: String,
        #[arg(long, value_delimiter = ',', required = true)]
        units: Vec<String>,
    },
    /// 派单: dispatch to a lead unit (default: the routing table's).
    Dispatch {
        case: String,
        /// Lead unit code (e.g. BDC).
        #[arg(long)]
        lead: Option<String>,
        /// Co-unit codes, comma-separated.
        #[arg(long, value_delimiter = ',')]
        co: Option<Vec<String>>,
        /// Due date (YYYY-MM-DD, end of that working day); default: the time limit's.
        #[arg(long, value_parser = parse_date)]
        due: Option<Date>,
    },
    /// 签收: the lead unit signs the case in.
    Sign {
        case: String,
        #[arg(long)]
        assignee: String,
    },
    /// 改派: reassign to another lead unit (督查科).
    Reassign {
        case: String,
        #[arg(long)]
        lead: String,
        /// Co-unit codes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "")]
        co: Vec<String>,
        #[arg(long)]
        reason: String,
    },
    /// 退单: the lead unit returns the case, with reason and basis.
    Return {
        case: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        basis: String,
    },
    /// 内部备注 (never shown to the citizen).
    Note { case: String, text: String },
    /// 对外答复 (shown to the citizen).
    Reply { case: String, text: String },
    /// 会诊: a joint consultation of units.
    Consult {
        case: String,
        #[arg(long, value_delimiter = ',', required = true)]
        units: Vec<String>,
        #[arg(long)]
        minutes: String,
        /// The consultation included a site visit.
        #[arg(long)]
        site_visit: bool,
    },
    /// 上门 / 现场勘查: a home or site visit.
    Visit {
        case: String,
        #[arg(long, value_delimiter = ',', required = true)]
        volunteers: Vec<String>,
        #[arg(long)]
        outcome: String,
        /// How long the visit took, in minutes.
        #[arg(long, default_value_t = 60)]
        duration: u32,
    },
    /// 指派上门: name the volunteer laptop that visits the citizen. That laptop may read the case's private data (and
    /// gets its key at its next sync) until it logs the visit, the case leaves the working states, or 14 days pass.
    AssignVisit {
        case: String,
        /// The laptop: its window code (as enrolled, e.g. LAP01) or its node id.
        #[arg(long)]
        laptop: String,
    },
    /// 延期: request an extension in working days, or approve one (督查科).
    Extend {
        case: String,
        #[arg(long, conflicts_with = "approve")]
        days: Option<u16>,
        #[arg(long, default_value = "")]
        reason: String,
        /// The request's event id (from `case show`).
        #[arg(long)]
        approve: Option<String>,
    },
    /// 督办: supervise the case (督查科).
    Supervise {
        case: String,
        /// 提醒, 催办, 督办 or 挂牌督办.
        #[arg(long, value_parser = parse_vocab(SupervisionLevel::parse, SupervisionLevel::known, "supervision level"))]
        level: SupervisionLevel,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// 办理完毕 / 答复: the result and the public reply.
    Resolve {
        case: String,
        /// 已办成, 部分办成, 解释说明, 不属于受理范围, 转其他渠道.
        #[arg(long, value_parser = parse_vocab(CaseResult::parse, CaseResult::known, "result"))]
        result: CaseResult,
        #[arg(long)]
        reply: String,
    },
    /// 回访: record a callback.
    Callback {
        case: String,
        /// 电话, 短信, 当面, 小程序.
        #[arg(long, default_value = "电话", value_parser = parse_vocab(CallbackMethod::parse, CallbackMethod::known, "callback method"))]
        method: CallbackMethod,
        /// The citizen could not be reached.
        #[arg(long)]
        unreached: bool,
        /// 已解决, 部分解决, 未解决.
        #[arg(long, value_parser = parse_vocab(CallbackOutcome::parse, CallbackOutcome::known, "callback outcome"))]
        outcome: Option<CallbackOutcome>,
        /// 1-5.
        #[arg(long)]
        rating: Option<u8>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// 办结: close, signed by a reviewer.
    Close {
        case: String,
        #[arg(long)]
        reviewer: String,
        /// 强制办结 (督查科).
        #[arg(long)]
        force: bool,
    },
    /// 发回重办 (督查科).
    Reopen {
        case: String,
        #[arg(long)]
        reason: String,
    },
    /// 并案: mark the case a duplicate of another.
    Duplicate {
        case: String,
        #[arg(long)]
        of: String,
    },
    /// 解除并案 (督查科/admin): the duplicate returns to 已登记 and its master stops listing it, in one store transaction.
    Unmerge { case: String },
    /// 清除个人信息 (督查科, admin): purge the citizen's personal data. Irreversible: every node that learns it destroys
    /// the case key, so the private layer (record, 诉求内容, notes, visit records) can never be read again; the
    /// de-identified case stays for the register book and statistics.
    Purge {
        case: String,
        /// Confirms the purge (it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
    /// 差评 follow-through (督查科): record the next step of the open 差评 task, in order 核实, 整改, 反馈 (the 反馈 is
    /// shown to the citizen on the lookup page).
    BadReview {
        case: String,
        /// 核实, 整改 or 反馈 (VERIFY, RECTIFY, FEEDBACK).
        #[arg(long, value_parser = parse_vocab(ReviewStep::parse, ReviewStep::known, "bad-review step"))]
        step: ReviewStep,
        #[arg(long)]
        text: String,
    },
    /// 申诉复核 (the unit): appeal a 差评 held mistaken or malicious; the 督查科 decides with `decide-appeal`.
    Appeal {
        case: String,
        #[arg(long)]
        reason: String,
    },
    /// 复核决定 (督查科): `--upheld` voids the rating (not counted), without it the rating stands.
    DecideAppeal {
        case: String,
        #[arg(long)]
        upheld: bool,
        #[arg(long)]
        note: String,
    },
    /// 撤回 (at the citizen's request).
    Withdraw {
        case: String,
        #[arg(long, default_value = "群众申请撤回")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// 诉求性质: 咨询, 求助, 投诉, 举报, 建议, 表扬, 倾诉, 其他 (or ZX, QZ, …).
    #[arg(long, value_parser = parse_vocab(Nature::parse, Nature::known, "nature"))]
    pub nature: Nature,
    /// 诉求类别 code from the hall's catalogue (e.g. BDC, HUZHENG, QIYE).
    #[arg(long)]
    pub category: String,
    /// 诉求摘要 (≤100 characters, shown publicly: no personal data).
    #[arg(long)]
    pub summary: String,
    /// 诉求内容.
    #[arg(long)]
    pub detail: String,
    /// 服务方式, comma-separated: 即办, 加急, 上门, 视频, 会诊, 帮办代办.
    #[arg(long, value_delimiter = ',', value_parser = parse_vocab(Mode::parse, Mode::known, "mode"))]
    pub modes: Vec<Mode>,
    /// 一般, 紧急, 特急.
    #[arg(long, default_value = "一般", value_parser = parse_vocab(Priority::parse, Priority::known, "priority"))]
    pub priority: Priority,
    /// 来源渠道.
    #[arg(long, default_value = "窗口现场", value_parser = parse_vocab(Channel::parse, Channel::known, "channel"))]
    pub channel: Channel,
    #[arg(long, default_value = "")]
    pub expectation: String,
    #[arg(long, default_value = "")]
    pub location: String,
    /// The citizen's name (stored in the personal record, shown masked).
    #[arg(long)]
    pub name: Option<String>,
    /// The citizen's phone.
    #[arg(long)]
    pub phone: Option<String>,
    /// The citizen agrees to a callback (回访).
    #[arg(long)]
    pub callback_ok: bool,
    /// The citizen agrees that the case be listed publicly (同意脱敏公开, Open311), without personal data;
    /// 举报, 倾诉, 投诉 and sensitive cases are never listed.
    #[arg(long)]
    pub publish_ok: bool,
    /// The citizen agrees to SMS notifications (同意接收短信通知: receipt with 查询码, replies, 待补充, rating
    /// invitation); needs `--phone`.
    #[arg(long, requires = "phone")]
    pub sms_ok: bool,
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_parser = parse_vocab(Status::parse, Status::known, "status"))]
    pub status: Option<Status>,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long, value_parser = parse_vocab(Nature::parse, Nature::known, "nature"))]
    pub nature: Option<Nature>,
    /// Lead unit code.
    #[arg(long)]
    pub unit: Option<String>,
    #[arg(long)]
    pub window: Option<String>,
    /// Registered on or after (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<Date>,
    /// Registered on or before (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<Date>,
    /// Only cases overdue now.
    #[arg(long)]
    pub overdue: bool,
    /// Full-text search in summary, detail, notes and replies (Chinese works).
    #[arg(long)]
    pub search: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

pub(crate) fn staff(cli: &Cli, home: &Home) -> String {
    cli.staff.clone().unwrap_or_else(|| home.config.display_name.clone())
}

/// A store write error; its type decides the exit code and hint in `main::classify` (a refused command or a missing
/// case is an expected failure, exit 1).
pub(crate) fn write_error(error: WriteError) -> anyhow::Error {
    match error {
        WriteError::Command(error) => expected(format!("refused: {error}")),
        exhausted @ WriteError::NumbersExhausted { .. } => expected(exhausted.to_string()),
        other => anyhow::Error::new(other),
    }
}

pub(crate) fn read_error(error: ReadError) -> anyhow::Error {
    anyhow::Error::new(error)
}

/// A refused command with a hint chosen from its type: the valid codes for an unknown category or unit, what this
/// node may do now for a role or state refusal.
pub(crate) fn refused(error: WriteError, hall: &zhaowo_crdt::Hall, view: Option<(&CaseView, Role)>) -> anyhow::Error {
    let WriteError::Command(command_error) = &error else { return write_error(error) };
    let list = |items: Vec<String>| items.join(", ");
    let hint = match command_error {
        CommandError::UnknownCategory(_) => Some(format!(
            "valid category codes: {}",
            list(hall.categories.iter().map(|(code, c)| format!("{code} {}", c.name)).collect())
        )),
        CommandError::UnknownUnit(_) => Some(format!(
            "valid unit codes: {}",
            list(hall.units.iter().map(|(code, u)| format!("{code} {}", u.name)).collect())
        )),
        CommandError::NoCaseKey(_) => Some(
            "this node holds the case's key only if it is a hall PC, or a volunteer laptop the visit is assigned to \
             (`zhaowo case assign-visit CASE --laptop LAPTOP` on a hall PC, then sync)"
                .to_owned(),
        ),
        CommandError::Role { .. } | CommandError::State { .. } => view.map(|(view, role)| {
            let allowed = view.allowed(role);
            if allowed.is_empty() {
                format!("a {} node may do nothing to this case in its state {}", role.code(), view.status.label())
            } else {
                format!("a {} node may now: {}", role.code(), allowed_list(&allowed))
            }
        }),
        _ => None,
    };
    match hint {
        Some(hint) => expected_with_hint(format!("refused: {command_error}"), hint),
        None => write_error(error),
    }
}

/// The node id of a volunteer laptop named by its enrolled window code or its node id.
fn laptop_id(home: &zhaowo_node::home::Home, laptop: &str) -> anyhow::Result<String> {
    let laptops: Vec<(String, String, String)> = home
        .roster()
        .map(|roster| {
            roster
                .active()
                .filter(|e| e.role == Role::Volunteer)
                .map(|e| (zhaowo_crdt::ids::hex_encode(&e.node_key), e.window.clone(), e.display_name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let wanted = laptop.trim();
    match laptops.iter().find(|(id, window, _)| id == &wanted.to_ascii_lowercase() || window == wanted) {
        Some((id, _, _)) => Ok(id.clone()),
        None if laptops.is_empty() => Err(expected_with_hint(
            format!("`{laptop}` is not a volunteer laptop of this hall"),
            "the roster holds no volunteer laptop: enroll one with `zhaowo enroll NODE_ID --role volunteer`",
        )),
        None => Err(expected_with_hint(
            format!("`{laptop}` is not a volunteer laptop of this hall"),
            format!(
                "volunteer laptops: {}",
                laptops.iter().map(|(_, window, name)| format!("{window} {name}")).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// `受理 (accept), 派单 (dispatch), …`
fn allowed_list(kinds: &[CommandKind]) -> String {
    kinds.iter().map(|kind| format!("{} ({})", kind.label(), kind.code())).collect::<Vec<_>>().join(", ")
}

/// Finds a case by registration number or case id.
pub(crate) async fn resolve(store: &Store, reference: &str) -> anyhow::Result<String> {
    if zhaowo_crdt::CaseId::parse(reference).is_some() {
        return Ok(reference.to_owned());
    }
    let reg_no = RegNo::parse(reference).ok_or_else(|| {
        expected(format!("`{reference}` is neither a registration number (BBC01-2026-0001) nor a case id"))
    })?;
    store.case_id_by_reg_no(&reg_no).await.map_err(read_error)?.ok_or_else(|| expected(format!("no case {reference}")))
}

fn row_json(row: &CaseRow) -> serde_json::Value {
    serde_json::json!({
        "case_id": row.case_id, "reg_no": row.reg_no, "status": row.status, "category": row.category, "nature": row.nature,
        "priority": row.priority, "lead_unit": row.lead_unit, "window": row.window, "registered_at_ms": row.registered_at_ms,
        "due_ms": row.due_ms, "summary": row.summary, "supervision": row.supervision,
    })
}

fn print_row(row: &CaseRow, now: i64) {
    let status = Status::parse(&row.status).map_or(row.status.as_str(), |s| s.label());
    let overdue = if row.clock_runs && now > row.due_ms { " 超期" } else { "" };
    out!(
        "{}  {}  {:<6} {:<10} {}  {}{overdue}",
        row.reg_no,
        format_local_minute(row.registered_at_ms),
        status,
        row.category,
        row.lead_unit.as_deref().unwrap_or("-"),
        row.summary
    );
}

fn print_view(view: &CaseView, now: i64) {
    out!("{}  {} ({})", view.reg_no, view.status.label(), view.status.code());
    out!("案件标识  {}", view.case_id);
    out!("登记      {} {} 窗口 {}", format_local_minute(view.registered_at_ms), view.registered_by, view.window);
    out!(
        "性质/类别 {} / {}  方式 {}",
        view.nature.label(),
        view.category,
        view.modes.iter().map(|m| m.label()).collect::<Vec<_>>().join("+")
    );
    out!("紧急程度  {}  督办 {}", view.priority.label(), view.supervision.label());
    out!(
        "主办/协办 {} / {}",
        view.lead_unit.as_deref().unwrap_or("-"),
        view.co_units.iter().cloned().collect::<Vec<_>>().join(",")
    );
    out!(
        "时限      {}{}",
        format_local_minute(view.effective_due_ms(now)),
        if view.overdue(now) { "（已超期）" } else { "" }
    );
    out!(
        "诉求人    {} {}",
        view.personal.name.as_deref().unwrap_or("-"),
        view.personal.phone.as_deref().unwrap_or("-")
    );
    out!("摘要      {}", view.summary);
    out!("内容      {}", view.detail);
    if let Some(result) = view.result {
        out!("结果      {}", result.label());
    }
    if let Some(rating) = &view.rating {
        out!("好差评    {}{}", rating.level.label(), if rating.void { "（申诉成立，不计入）" } else { "" });
    }
    for task in &view.bad_reviews {
        out!(
            "差评任务  {}  反馈时限 {}{}",
            task.stage_zh(),
            format_local_minute(task.due_ms),
            if task.overdue(now) { "（已超期）" } else { "" }
        );
    }
    out!("时间线:");
    for entry in &view.timeline {
        let mark = if entry.superseded { "（未生效，见冲突）" } else { "" };
        out!(
            "  {} {} [{}] {}：{}{mark}  #{}",
            format_local_minute(entry.at_ms),
            entry.staff,
            entry.role.label(),
            entry.label,
            entry.text,
            entry.event_id
        );
    }
    if !view.conflicts.is_empty() {
        out!("冲突待核: {}", view.conflicts.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", "));
    }
}

pub async fn run(cli: &Cli, command: &CaseCommand) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    let hall = std::sync::Arc::new(home.hall()?);
    let now = now_ms();
    let lifecycle = |command: Command| command;
    let (reference, command) = match command {
        CaseCommand::New(args) => return new_case(cli, &home, &store, args).await,
        CaseCommand::List(args) => return list(cli, &store, &hall, args).await,
        CaseCommand::Show { case } => {
            let case_id = resolve(&store, case).await?;
            let view = store.case_view(&case_id).await.map_err(read_error)?;
            let role = home.config.role;
            let allowed = view.allowed(role);
            if cli.json {
                let mut value = serde_json::to_value(&view)?;
                value["allowed"] = allowed.iter().map(|kind| kind.code()).collect();
                print_json(&value);
            } else {
                print_view(&view, now);
                out!(
                    "可执行操作（{}）: {}",
                    role.label(),
                    if allowed.is_empty() { "无".to_owned() } else { allowed_list(&allowed) }
                );
            }
            return Ok(());
        }
        CaseCommand::Unmerge { case } => {
            let dup_id = resolve(&store, case).await?;
            let view = store.case_view(&dup_id).await.map_err(read_error)?;
            let Some(master) = view.duplicate_of.clone() else {
                return Err(expected(format!("{case} is not a duplicate of another case: nothing to unmerge")));
            };
            let ctx = home.ctx(&staff(cli, &home))?;
            let role = ctx.author.role;
            let acks = store
                .unmerge(&dup_id, master.as_str(), ctx, hall.clone())
                .await
                .map_err(|error| refused(error, &hall, Some((&view, role))))?;
            if acks.second.is_some() {
                say(cli, &format!("{case} is no longer a duplicate; its master no longer lists it"));
            } else {
                say(
                    cli,
                    &format!("{case} is no longer a duplicate (its master is not on this node: it heals by sync)"),
                );
            }
            return Ok(());
        }
        CaseCommand::Duplicate { case, of } => {
            let (dup_id, master_id) = (resolve(&store, case).await?, resolve(&store, of).await?);
            // Both documents in one store transaction: both events are stored, or neither.
            let ctx = home.ctx(&staff(cli, &home))?;
            store.mark_duplicate(&dup_id, &master_id, ctx).await.map_err(write_error)?;
            say(cli, &format!("{case} is now a duplicate of {of}"));
            return Ok(());
        }
        CaseCommand::Reveal { case, purpose } => {
            let case_id = resolve(&store, case).await?;
            let view = store.case_view(&case_id).await.map_err(read_error)?;
            let ctx = home.ctx(&staff(cli, &home))?;
            let role = ctx.author.role;
            let shown: std::sync::Arc<std::sync::Mutex<Option<PersonalData>>> = std::sync::Arc::default();
            let slot = shown.clone();
            let purpose = purpose.clone();
            let edit: zhaowo_node::store::EditFn = Box::new(move |doc: &mut CaseDoc| {
                let (personal, event) = doc.reveal_personal_data_event(&ctx, &purpose)?;
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(personal);
                Ok(event)
            });
            store.edit(&case_id, edit).await.map_err(|error| refused(error, &hall, Some((&view, role))))?;
            let personal = shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take().unwrap_or_default();
            if cli.json {
                print_json(&serde_json::json!({ "reg_no": view.reg_no.to_string(), "personal": personal }));
            } else {
                out!("{} (recorded on the timeline)", view.reg_no);
                out!("name      {}", personal.name.as_deref().unwrap_or("-"));
                out!("phone     {}", personal.phone.as_deref().unwrap_or("-"));
                out!("address   {}", personal.address.as_deref().unwrap_or("-"));
                out!("visit at  {}", personal.visit_address.as_deref().unwrap_or("-"));
                out!("company   {}", personal.enterprise_name.as_deref().unwrap_or("-"));
            }
            return Ok(());
        }
        CaseCommand::Edit { case, summary, detail, expectation, location, category, priority } => {
            let case_id = resolve(&store, case).await?;
            let view = store.case_view(&case_id).await.map_err(read_error)?;
            let mut commands = Vec::new();
            for (field, value) in [
                (EditableField::Summary, summary),
                (EditableField::Detail, detail),
                (EditableField::Expectation, expectation),
                (EditableField::Location, location),
            ] {
                if let Some(value) = value {
                    commands.push(Command::EditField { field, value: value.clone() });
                }
            }
            if let Some(category) = category {
                commands.push(Command::ChangeCategory { category: category.clone() });
            }
            if let Some(priority) = priority {
                commands.push(Command::ChangePriority { priority: *priority });
            }
            if commands.is_empty() {
                return Err(expected_with_hint(
                    "nothing to edit",
                    "give at least one of --summary, --detail, --expectation, --location, --category, --priority",
                ));
            }
            // One context per command (fresh entropy per event id); one store edit, so a refused field stores none.
            let mut steps = Vec::with_capacity(commands.len());
            for command in commands {
                steps.push((home.ctx(&staff(cli, &home))?, command));
            }
            let role = home.config.role;
            let edit_hall = hall.clone();
            let edit: zhaowo_node::store::EditFn = Box::new(move |doc: &mut CaseDoc| {
                let mut last = None;
                for (ctx, command) in steps {
                    last = Some(doc.apply(&ctx, &edit_hall, command)?);
                }
                last.ok_or(CommandError::NoChange("nothing to edit"))
            });
            store
                .edit(&case_id, edit)
                .await
                .map_err(|error| refused(error, &hall, Some((&view, role))))
                .with_context(|| format!("edit {case}"))?;
            say(cli, &format!("{case}: edited"));
            return Ok(());
        }
        CaseCommand::Attach { case, files, public } => {
            return crate::materials::attach(cli, &home, &store, hall, case, files, *public).await;
        }
        CaseCommand::Materials { case } => return crate::materials::list(cli, &home, &store, case).await,
        CaseCommand::MaterialGet { case, material, out } => {
            return crate::materials::get(cli, &home, &store, &hall, case, material, out).await;
        }
        CaseCommand::MaterialRemove { case, material, reason } => {
            (case, crate::materials::command(material, Some(reason), None)?)
        }
        CaseCommand::MaterialPublish { case, material, unpublish } => {
            (case, crate::materials::command(material, None, Some(!unpublish))?)
        }
        CaseCommand::Accept { case } => (case, Command::Accept),
        CaseCommand::Reject { case, reason, basis } => {
            (case, Command::Reject { reason: reason.clone(), basis: basis.clone() })
        }
        CaseCommand::Suspend { case, reason } => (case, Command::Suspend { reason: reason.clone() }),
        CaseCommand::Resume { case } => (case, Command::Resume),
        CaseCommand::Tag { case, tags } => (case, Command::AddTags { tags: tags.clone() }),
        CaseCommand::CoUnits { case, units } => (case, Command::AddCoUnits { units: units.clone() }),
        CaseCommand::AssignVisit { case, laptop } => (case, Command::AssignVisit { laptop: laptop_id(&home, laptop)? }),
        CaseCommand::Dispatch { case, lead, co, due } => (
            case,
            lifecycle(Command::Dispatch {
                lead_unit: lead.clone(),
                co_units: co.clone(),
                due_ms: due.map(|d| d.at_minute_ms(hall.calendar.workday_end_minute)),
            }),
        ),
        CaseCommand::Sign { case, assignee } => (case, Command::SignIn { assignee: assignee.clone() }),
        CaseCommand::Reassign { case, lead, co, reason } => (
            case,
            Command::Reassign {
                lead_unit: lead.clone(),
                co_units: co.iter().filter(|unit| !unit.is_empty()).cloned().collect(),
                reason: reason.clone(),
            },
        ),
        CaseCommand::Return { case, reason, basis } => {
            (case, Command::Return { reason: reason.clone(), basis: basis.clone() })
        }
        CaseCommand::Note { case, text } => (case, Command::AddNote { text: text.clone() }),
        CaseCommand::Reply { case, text } => (case, Command::PublishReply { text: text.clone() }),
        CaseCommand::Consult { case, units, minutes, site_visit } => (
            case,
            Command::HoldConsultation {
                units: units.clone(),
                minutes: minutes.clone(),
                site_visit: *site_visit,
                held_at_ms: now,
            },
        ),
        CaseCommand::Visit { case, volunteers, outcome, duration } => (
            case,
            Command::LogVisit {
                volunteers: volunteers.clone(),
                outcome: outcome.clone(),
                visited_at_ms: now,
                duration_minutes: *duration,
            },
        ),
        CaseCommand::Extend { case, days, reason, approve } => match (days, approve) {
            (Some(days), None) => (case, Command::RequestExtension { working_days: *days, reason: reason.clone() }),
            (None, Some(request)) => {
                let request =
                    EventId::parse(request).ok_or_else(|| expected(format!("`{request}` is not an event id")))?;
                (case, Command::ApproveExtension { request })
            }
            _ => return Err(expected("give --days N to request an extension, or --approve EVENT_ID to approve one")),
        },
        CaseCommand::Supervise { case, level, comment } => {
            (case, Command::Supervise { level: *level, comment: comment.clone() })
        }
        CaseCommand::Resolve { case, result, reply } => {
            (case, Command::Resolve { result: *result, reply: reply.clone() })
        }
        CaseCommand::Callback { case, method, unreached, outcome, rating, comment } => (
            case,
            Command::RecordCallback {
                method: *method,
                reached: !unreached,
                outcome: *outcome,
                rating: *rating,
                comment: comment.clone(),
            },
        ),
        CaseCommand::Close { case, reviewer, force } => {
            (case, Command::Close { reviewer: reviewer.clone(), forced: *force })
        }
        CaseCommand::Reopen { case, reason } => (case, Command::Reopen { reason: reason.clone() }),
        CaseCommand::Withdraw { case, reason } => (case, Command::Withdraw { reason: reason.clone() }),
        CaseCommand::BadReview { case, step, text } => {
            (case, Command::BadReviewStep { step: *step, text: text.clone() })
        }
        CaseCommand::Appeal { case, reason } => (case, Command::AppealRating { reason: reason.clone() }),
        CaseCommand::DecideAppeal { case, upheld, note } => {
            (case, Command::DecideAppeal { upheld: *upheld, note: note.clone() })
        }
        CaseCommand::Purge { case, yes } => {
            if !yes {
                return Err(expected_with_hint(
                    format!("purging the personal data of {case} cannot be undone"),
                    format!("run again with --yes: `zhaowo case purge {case} --yes`"),
                ));
            }
            (case, Command::PurgePersonalData)
        }
    };
    let case_id = resolve(&store, reference).await?;
    let name = command.name();
    let ctx = home.ctx(&staff(cli, &home))?;
    let role = ctx.author.role;
    // The case as it was, for a refusal's hint (what this node may do instead).
    let before = store.case_view(&case_id).await.map_err(read_error)?;
    let ack = store
        .apply(&case_id, ctx, hall.clone(), command)
        .await
        .map_err(|error| refused(error, &hall, Some((&before, role))))
        .with_context(|| format!("{name} {reference}"))?;
    let view = store.case_view(&case_id).await.map_err(read_error)?;
    if cli.json {
        print_json(
            &serde_json::json!({ "case_id": case_id, "reg_no": view.reg_no, "event_id": ack.event_id, "status": view.status.code() }),
        );
    } else {
        say(cli, &format!("{reference}: {name} recorded; the case is {}", view.status.label()));
    }
    Ok(())
}

async fn new_case(cli: &Cli, home: &Home, store: &Store, args: &NewArgs) -> anyhow::Result<()> {
    let hall = home.hall()?;
    let ctx = home.ctx(&staff(cli, home))?;
    let year = Date::of_ms(ctx.now_ms).year;
    let code = QueryCode::from_entropy(entropy()? as u64);
    let registration = Registration {
        channel: args.channel,
        nature: args.nature,
        category: args.category.clone(),
        modes: args.modes.iter().copied().collect(),
        priority: args.priority,
        matter: None,
        not_done_reason: None,
        summary: args.summary.clone(),
        detail: args.detail.clone(),
        expectation: args.expectation.clone(),
        location: args.location.clone(),
        sensitive: false,
        tags: args.tags.iter().cloned().collect::<BTreeSet<_>>(),
        personal: PersonalData {
            name: args.name.clone(),
            phone: args.phone.clone(),
            callback_ok: args.callback_ok,
            publish_ok: args.publish_ok,
            sms_ok: args.sms_ok,
            ..PersonalData::default()
        },
    };
    let actor = home.identity.new_actor()?;
    // The store picks the number inside the transaction that stores the case: another `case new` or the running
    // node registering at the same time waits for it and gets the next one.
    let receipt_code = code.clone();
    let hall_for_hints = hall.clone();
    let build: RegisterFn = Box::new(move |reg_no| {
        CaseDoc::register(&ctx, &hall, actor, reg_no, &receipt_code, registration).map(|(doc, _)| doc)
    });
    let registered = store
        .register_new_with_receipt(&home.config.window, year, &code, build)
        .await
        .map_err(|error| refused(error, &hall_for_hints, None))?;
    let (ack, reg_no) = (registered.ack, registered.reg_no);
    if cli.json {
        print_json(
            &serde_json::json!({ "case_id": ack.case_id, "reg_no": reg_no.to_string(), "query_code": code.as_str() }),
        );
    } else {
        out!("{reg_no}");
        say(cli, &format!("registered {reg_no}; the citizen's query code (查询码) is {}", code.as_str()));
    }
    Ok(())
}

async fn list(cli: &Cli, store: &Store, hall: &zhaowo_crdt::Hall, args: &ListArgs) -> anyhow::Result<()> {
    // A filter on a code the hall does not know would silently list nothing: refuse it with the valid codes.
    if let Some(category) = args.category.as_deref().filter(|code| !hall.categories.contains_key(*code)) {
        let error = WriteError::Command(CommandError::UnknownCategory(category.to_owned()));
        return Err(refused(error, hall, None));
    }
    if let Some(unit) = args.unit.as_deref().filter(|code| !hall.units.contains_key(*code)) {
        return Err(refused(WriteError::Command(CommandError::UnknownUnit(unit.to_owned())), hall, None));
    }
    let now = now_ms();
    let limit = args.limit.clamp(1, PAGE_ROWS_MAX);
    let rows = if let Some(text) = &args.search {
        store.search(text, limit).await.map_err(read_error)?
    } else {
        let query = RegisterQuery {
            status: args.status,
            category: args.category.clone(),
            nature: args.nature,
            lead_unit: args.unit.clone(),
            window: args.window.clone(),
            registered_from_ms: args.from.map(|d| d.at_minute_ms(0)),
            registered_to_ms: args.to.map(|d| d.add_days(1).at_minute_ms(0)),
            overdue_at_ms: args.overdue.then_some(now),
            after: None,
            limit,
        };
        store.register_page(query).await.map_err(read_error)?.rows
    };
    if cli.json {
        print_json(&serde_json::Value::Array(rows.iter().map(row_json).collect()));
    } else {
        for row in &rows {
            print_row(row, now);
        }
        say(cli, &format!("{} cases", rows.len()));
    }
    Ok(())
}

/// Every case id of the store, page by page.
pub(crate) async fn all_case_ids(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut query = RegisterQuery { limit: PAGE_ROWS_MAX, ..RegisterQuery::default() };
    loop {
        let page = store.register_page(query.clone()).await.map_err(read_error)?;
        ids.extend(page.rows.iter().map(|row| row.case_id.clone()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(ids),
        }
    }
}
