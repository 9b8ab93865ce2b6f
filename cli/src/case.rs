//! `case`, `conflicts`, `stats`, `export`, `verify`, `doc`: working cases from the terminal.
//!
//! A case is named by its registration number (`BBC01-2026-0001`) or its case id (a ULID).

use crate::setup::open;
use crate::{Cli, expected, out, print_json, say};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::path::PathBuf;
use zhaowo_crdt::model::*;
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::{Date, format_local_minute};
use zhaowo_crdt::view::ConflictDetail;
use zhaowo_crdt::{CaseDoc, CaseView, Command, ConflictDecision, EventId, QueryCode, RegNo, Registration};
use zhaowo_node::home::{Home, entropy, now_ms};
use zhaowo_node::store::{
    CONFLICTS_LISTED_MAX, CaseRow, PAGE_ROWS_MAX, ReadError, RegisterFn, RegisterQuery, Store, WriteError,
};

fn parse_vocab<T>(parse: fn(&str) -> Option<T>, what: &'static str) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |text| parse(text).ok_or_else(|| format!("unknown {what} `{text}`"))
}

fn parse_date(text: &str) -> Result<Date, String> {
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
        #[arg(long, value_parser = parse_vocab(SupervisionLevel::parse, "supervision level"))]
        level: SupervisionLevel,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// 办理完毕 / 答复: the result and the public reply.
    Resolve {
        case: String,
        /// 已办成, 部分办成, 解释说明, 不属于受理范围, 转其他渠道.
        #[arg(long, value_parser = parse_vocab(CaseResult::parse, "result"))]
        result: CaseResult,
        #[arg(long)]
        reply: String,
    },
    /// 回访: record a callback.
    Callback {
        case: String,
        /// 电话, 短信, 当面, 小程序.
        #[arg(long, default_value = "电话", value_parser = parse_vocab(CallbackMethod::parse, "callback method"))]
        method: CallbackMethod,
        /// The citizen could not be reached.
        #[arg(long)]
        unreached: bool,
        /// 已解决, 部分解决, 未解决.
        #[arg(long, value_parser = parse_vocab(CallbackOutcome::parse, "callback outcome"))]
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
    #[arg(long, value_parser = parse_vocab(Nature::parse, "nature"))]
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
    #[arg(long, value_delimiter = ',', value_parser = parse_vocab(Mode::parse, "mode"))]
    pub modes: Vec<Mode>,
    /// 一般, 紧急, 特急.
    #[arg(long, default_value = "一般", value_parser = parse_vocab(Priority::parse, "priority"))]
    pub priority: Priority,
    /// 来源渠道.
    #[arg(long, default_value = "窗口现场", value_parser = parse_vocab(Channel::parse, "channel"))]
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
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_parser = parse_vocab(Status::parse, "status"))]
    pub status: Option<Status>,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long, value_parser = parse_vocab(Nature::parse, "nature"))]
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

#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Every open conflict, by case.
    List,
    /// The conflicts of one case, with the values and who wrote them.
    Show { case: String },
    /// Settle a conflict (督查科/admin); recorded as an event.
    Resolve {
        case: String,
        /// The conflict id (`t-…` or `f-…`, from `conflicts show`).
        conflict: String,
        /// For a field conflict: the value to keep (default: keep what the case shows now).
        #[arg(long)]
        choose: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// First day (YYYY-MM-DD); default: January 1st of this year.
    #[arg(long, value_parser = parse_date)]
    pub from: Option<Date>,
    /// Last day (YYYY-MM-DD); default: today.
    #[arg(long, value_parser = parse_date)]
    pub to: Option<Date>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// csv or xlsx.
    #[arg(long, default_value = "csv", value_parser = ["csv", "xlsx"])]
    pub format: String,
    /// Names and phone numbers in full (admin only; every case records who exported it, as a reveal event).
    #[arg(long)]
    pub unmasked: bool,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_parser = parse_date)]
    pub from: Option<Date>,
    #[arg(long, value_parser = parse_date)]
    pub to: Option<Date>,
}

#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Write a case's Automerge document to a file (readable by any Automerge implementation).
    Export {
        case: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Merge an Automerge document of a case (from `doc export`, or any Automerge implementation) into this node.
    Import { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Another node's data directory (holding cases.db) or a database file.
    pub path: PathBuf,
}

/// A document file is at most this large: a case with the maximum events saves to a few hundred KB.
const DOC_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// What merging brought: cases new to this node, cases that gained changes, conflicts that appeared.
#[derive(Debug, Default)]
pub struct MergeReport {
    added: Vec<String>,
    changed: Vec<String>,
    unchanged: usize,
    new_conflicts: Vec<(String, String)>,
    /// Cases skipped because a revoked member changed them after its revocation (case id, why).
    refused: Vec<(String, String)>,
    /// Changes stored without a member's signature (a plain Automerge file): kept on this node, never relayed.
    unsigned: usize,
}

/// One case's changes to merge, with the signatures that came with them.
pub struct Incoming {
    pub case_id: String,
    pub changes: Vec<Vec<u8>>,
    pub signatures: Vec<zhaowo_crdt::wire::ChangeSignature>,
}

/// Applies the changes of several cases and reports what they did to this node. With `roster`, every change must be
/// signed by a member (a forged or unsigned change refuses everything before anything is stored); without it (a plain
/// Automerge file) the changes are stored unsigned and stay on this node.
pub async fn merge_cases(
    store: &Store,
    roster: Option<&zhaowo_crdt::roster::Roster>,
    cases: Vec<Incoming>,
) -> anyhow::Result<MergeReport> {
    let mut report = MergeReport::default();
    let mut accepted: Vec<Incoming> = Vec::new();
    match roster {
        Some(roster) => {
            // A change the source holds without a signature may be one this node holds signed (its own, or relayed
            // to it): lend those signatures before verifying.
            let mut cases = cases;
            for case in &mut cases {
                let known: BTreeSet<[u8; 32]> = case.signatures.iter().map(|s| s.hash).collect();
                if let Ok(ours) = store.signatures(&case.case_id).await {
                    case.signatures.extend(ours.into_iter().filter(|s| !known.contains(&s.hash)));
                }
            }
            let bundle = zhaowo_crdt::bundle::Bundle {
                hall: *roster.hall(),
                from: [0; 32],
                created_ms: 0,
                docs: cases
                    .into_iter()
                    .map(|case| zhaowo_crdt::bundle::BundleDoc {
                        doc_id: case.case_id,
                        changes: case.changes,
                        signatures: case.signatures,
                    })
                    .collect(),
            };
            let verified = zhaowo_crdt::bundle::verify(&bundle, roster).map_err(|error| {
                expected(format!("refused, nothing was stored: {error} (every change must be signed by a member)"))
            })?;
            report.refused = verified.refused;
            let mut docs: Vec<Option<zhaowo_crdt::bundle::BundleDoc>> = bundle.docs.into_iter().map(Some).collect();
            for index in verified.accepted {
                if let Some(doc) = docs[index].take() {
                    accepted.push(Incoming { case_id: doc.doc_id, changes: doc.changes, signatures: doc.signatures });
                }
            }
        }
        None => {
            for case in &cases {
                let signed: BTreeSet<[u8; 32]> = case.signatures.iter().map(|s| s.hash).collect();
                report.unsigned += case
                    .changes
                    .iter()
                    .filter(|bytes| {
                        automerge::Change::try_from(bytes.as_slice()).map_or(true, |c| !signed.contains(&c.hash().0))
                    })
                    .count();
            }
            accepted = cases;
        }
    }
    for case in accepted {
        let case_id = case.case_id;
        let before = store.case_view(&case_id).await.ok();
        let batch = vec![zhaowo_node::store::RemoteChanges { case_id: case_id.clone(), changes: case.changes }];
        let applied = store
            .apply_signed(batch, case.signatures)
            .await
            .with_context(|| format!("failed to store the changes of {case_id}"))?;
        if let Some(rejected) = applied.rejected.first() {
            return Err(expected(format!("case {} was refused: {}", rejected.case_id, rejected.reason)));
        }
        let after = store.case_view(&case_id).await.map_err(read_error)?;
        let old_conflicts: BTreeSet<String> =
            before.iter().flat_map(|b| b.conflicts.iter().map(|c| c.id.clone())).collect();
        for conflict in after.conflicts.iter().filter(|c| !old_conflicts.contains(&c.id)) {
            report.new_conflicts.push((after.reg_no.to_string(), conflict.id.clone()));
        }
        match before {
            None => report.added.push(after.reg_no.to_string()),
            Some(before) if before != after => report.changed.push(after.reg_no.to_string()),
            Some(_) => report.unchanged += 1,
        }
    }
    Ok(report)
}

pub fn print_merge(cli: &Cli, report: &MergeReport) {
    for (case_id, why) in &report.refused {
        say(cli, &format!("skipped {case_id}: {why}"));
    }
    if report.unsigned > 0 {
        say(
            cli,
            &format!(
                "{} changes carry no member's signature: they stay on this node and are not synced to peers",
                report.unsigned
            ),
        );
    }
    if cli.json {
        let conflicts: Vec<_> = report
            .new_conflicts
            .iter()
            .map(|(reg_no, id)| serde_json::json!({ "reg_no": reg_no, "conflict": id }))
            .collect();
        let refused: Vec<_> = report
            .refused
            .iter()
            .map(|(case_id, why)| serde_json::json!({ "case_id": case_id, "reason": why }))
            .collect();
        print_json(&serde_json::json!({
            "added": report.added, "changed": report.changed, "unchanged": report.unchanged, "new_conflicts": conflicts,
            "refused": refused, "unsigned_changes": report.unsigned,
        }));
    } else {
        for reg_no in &report.added {
            out!("added    {reg_no}");
        }
        for reg_no in &report.changed {
            out!("changed  {reg_no}");
        }
        for (reg_no, id) in &report.new_conflicts {
            out!("conflict {reg_no} {id}");
        }
        say(
            cli,
            &format!(
                "{} added, {} changed, {} unchanged, {} new conflicts (review them with `zhaowo conflicts list`)",
                report.added.len(),
                report.changed.len(),
                report.unchanged,
                report.new_conflicts.len()
            ),
        );
    }
}

pub async fn merge(cli: &Cli, args: &MergeArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    if home.config.role != Role::Admin {
        return Err(expected(format!("merge needs an admin node; this node is a {} node", home.config.role.code())));
    }
    let source = if args.path.is_dir() { args.path.join("cases.db") } else { args.path.clone() };
    if !source.is_file() {
        return Err(expected(format!(
            "`{}` is neither a node's data directory nor a database file",
            args.path.display()
        )));
    }
    if std::fs::canonicalize(&source).ok() == std::fs::canonicalize(home.config.store_path()).ok() {
        return Err(expected("that is this node's own store"));
    }
    // Read-only on the other side: open a copy (with its write-ahead log), never the original.
    let scratch = std::env::temp_dir().join(format!("zhaowo-merge-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("failed to create `{}`", scratch.display()))?;
    let copy = scratch.join("cases.db");
    std::fs::copy(&source, &copy).with_context(|| format!("failed to read `{}`", source.display()))?;
    let wal = source.with_extension("db-wal");
    if wal.is_file() {
        std::fs::copy(&wal, scratch.join("cases.db-wal"))
            .with_context(|| format!("failed to read `{}`", wal.display()))?;
    }
    let result = async {
        let other =
            Store::open(zhaowo_node::store::StoreOptions::recommended(copy, automerge::ActorId::from(vec![0; 16])))
                .map_err(|error| expected(format!("`{}` is not a zhaowo store: {error}", source.display())))?;
        let mut cases = Vec::new();
        for case_id in all_case_ids(&other).await? {
            let changes = other.changes_since(&case_id, Vec::new()).await.map_err(read_error)?;
            let signatures = other.signatures(&case_id).await.map_err(read_error)?;
            cases.push(Incoming { case_id, changes, signatures });
        }
        other.close();
        anyhow::Ok(cases)
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let store = home.open_store()?;
    let roster = home.roster().context("this node has not joined a hall")?;
    let report = merge_cases(&store, Some(roster), result?).await?;
    print_merge(cli, &report);
    Ok(())
}

fn staff(cli: &Cli, home: &Home) -> String {
    cli.staff.clone().unwrap_or_else(|| home.config.display_name.clone())
}

/// Turns a refused command or a missing case into an expected failure (exit 1).
fn write_error(error: WriteError) -> anyhow::Error {
    match error {
        WriteError::Command(error) => expected(format!("refused: {error}")),
        exhausted @ WriteError::NumbersExhausted { .. } => expected(exhausted.to_string()),
        other => {
            let text = other.to_string();
            if text.contains("no case") || text.contains("not found") {
                expected(text)
            } else {
                anyhow::Error::new(other)
            }
        }
    }
}

fn read_error(error: ReadError) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("no case") || text.contains("not found") { expected(text) } else { anyhow::Error::new(error) }
}

/// Finds a case by registration number or case id.
async fn resolve(store: &Store, reference: &str) -> anyhow::Result<String> {
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
        CaseCommand::List(args) => return list(cli, &store, args).await,
        CaseCommand::Show { case } => {
            let case_id = resolve(&store, case).await?;
            let view = store.case_view(&case_id).await.map_err(read_error)?;
            if cli.json {
                print_json(&serde_json::to_value(&view)?);
            } else {
                print_view(&view, now);
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
    };
    let case_id = resolve(&store, reference).await?;
    let name = command.name();
    let ctx = home.ctx(&staff(cli, &home))?;
    let ack = store
        .apply(&case_id, ctx, hall, command)
        .await
        .map_err(write_error)
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
            ..PersonalData::default()
        },
    };
    let actor = home.identity.new_actor()?;
    // The store picks the number inside the transaction that stores the case: another `case new` or the running
    // node registering at the same time waits for it and gets the next one.
    let receipt_code = code.clone();
    let build: RegisterFn = Box::new(move |reg_no| {
        CaseDoc::register(&ctx, &hall, actor, reg_no, &receipt_code, registration).map(|(doc, _)| doc)
    });
    let registered = store.register_new(&home.config.window, year, build).await.map_err(write_error)?;
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

async fn list(cli: &Cli, store: &Store, args: &ListArgs) -> anyhow::Result<()> {
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
async fn all_case_ids(store: &Store) -> anyhow::Result<Vec<String>> {
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

pub async fn conflicts(cli: &Cli, command: &ConflictsCommand) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    match command {
        ConflictsCommand::List => {
            // The store's list of cases with open conflicts (a projection), not a fold of every case.
            let list = store.conflicts(CONFLICTS_LISTED_MAX).await.map_err(read_error)?;
            let mut listed = Vec::new();
            for (row, _) in &list.rows {
                let view = store.case_view(&row.case_id).await.map_err(read_error)?;
                for conflict in &view.conflicts {
                    listed.push((view.reg_no.to_string(), conflict.clone()));
                }
            }
            if (list.rows.len() as u64) < list.cases {
                say(cli, &format!("showing {} of {} cases with open conflicts", list.rows.len(), list.cases));
            }
            if cli.json {
                let items: Vec<_> =
                    listed.iter().map(|(reg_no, c)| serde_json::json!({ "reg_no": reg_no, "conflict": c })).collect();
                print_json(&serde_json::Value::Array(items));
            } else {
                for (reg_no, conflict) in &listed {
                    out!("{reg_no}  {}  {}", conflict.id, describe_conflict(&conflict.detail));
                }
                say(cli, &format!("{} open conflicts", listed.len()));
            }
        }
        ConflictsCommand::Show { case } => {
            let case_id = resolve(&store, case).await?;
            let view = store.case_view(&case_id).await.map_err(read_error)?;
            if cli.json {
                print_json(&serde_json::to_value(&view.conflicts)?);
            } else {
                for conflict in &view.conflicts {
                    out!("{}  {}", conflict.id, describe_conflict(&conflict.detail));
                    if let ConflictDetail::Field { candidates, .. } = &conflict.detail {
                        for candidate in candidates {
                            out!(
                                "    「{}」 by {} on {} at {}",
                                candidate.value,
                                candidate.staff,
                                candidate.node.chars().take(12).collect::<String>(),
                                format_local_minute(candidate.at_ms)
                            );
                        }
                    }
                }
            }
        }
        ConflictsCommand::Resolve { case, conflict, choose, note } => {
            let case_id = resolve(&store, case).await?;
            let hall = std::sync::Arc::new(home.hall()?);
            let decision = choose.clone().map_or(ConflictDecision::Keep, ConflictDecision::Choose);
            let command = Command::ResolveConflict { conflict: conflict.clone(), decision, note: note.clone() };
            let ctx = home.ctx(&staff(cli, &home))?;
            store.apply(&case_id, ctx, hall, command).await.map_err(write_error)?;
            say(cli, &format!("{case}: conflict {conflict} resolved"));
        }
    }
    Ok(())
}

fn describe_conflict(detail: &ConflictDetail) -> String {
    match detail {
        ConflictDetail::Transition { loser_label, loser_staff, loser_at_ms, winner_label, .. } => format!(
            "{loser_label} by {loser_staff} at {} did not take effect{}",
            format_local_minute(*loser_at_ms),
            winner_label.map(|w| format!(" ({w} won)")).unwrap_or_default()
        ),
        ConflictDetail::Field { field, candidates } => {
            format!("{field} written concurrently: {} values", candidates.len())
        }
    }
}

pub async fn stats(cli: &Cli, args: &StatsArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    let today = Date::of_ms(now_ms());
    let from = args.from.unwrap_or_else(|| Date::new(today.year, 1, 1).expect("January 1st exists"));
    let to = args.to.unwrap_or(today);
    if from > to {
        return Err(expected(format!("--from {from} is after --to {to}")));
    }
    let s = store.statistics(from, to).await.map_err(read_error)?;
    let c = s.counts;
    if cli.json {
        print_json(&serde_json::json!({
            "from": from.to_string(), "to": to.to_string(),
            "registered": c.registered, "responded": c.responded, "responded_on_time": c.responded_on_time,
            "closed": c.closed, "closed_on_time": c.closed_on_time, "rated": c.rated, "satisfied": c.satisfied,
            "response_rate": s.response_rate, "close_rate": s.close_rate, "close_on_time_rate": s.close_on_time_rate,
            "satisfaction_rate": s.satisfaction_rate, "rating_mean": s.rating_mean,
        }));
    } else {
        let pct = |rate: f64| format!("{:.1}%", rate * 100.0);
        out!("{from} – {to}");
        out!("受理量      {}", c.registered);
        out!("响应率      {} ({} / {})", pct(s.response_rate), c.responded, c.registered);
        out!("按时响应率  {} ({} / {})", pct(s.response_on_time_rate), c.responded_on_time, c.registered);
        out!("办结率      {} ({} / {})", pct(s.close_rate), c.closed, c.registered);
        out!("按期办结率  {} ({} / {})", pct(s.close_on_time_rate), c.closed_on_time, c.closed);
        out!("满意率      {} ({} / {})  平均评分 {:.2}", pct(s.satisfaction_rate), c.satisfied, c.rated, s.rating_mean);
    }
    Ok(())
}

/// Quotes a CSV field (RFC 4180) and defuses formula injection in spreadsheet programs.
fn csv_field(text: &str) -> String {
    let safe = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text.to_owned() };
    if safe.contains([',', '"', '\n', '\r']) { format!("\"{}\"", safe.replace('"', "\"\"")) } else { safe }
}

/// The register book's columns (登记簿), in order.
const EXPORT_HEADERS: [&str; 17] = [
    "登记编号",
    "登记时间",
    "登记窗口",
    "来源渠道",
    "诉求性质",
    "诉求类别",
    "诉求摘要",
    "诉求人",
    "联系电话",
    "紧急程度",
    "状态",
    "主办单位",
    "承诺办结时间",
    "办理结果",
    "办结时间",
    "督办级别",
    "回访评价",
];

fn export_row(view: &CaseView, personal: Option<&PersonalData>) -> [String; 17] {
    let rating = view.callbacks.iter().rev().find_map(|c| c.rating).map(|r| r.to_string()).unwrap_or_default();
    let (name, phone) = match personal {
        Some(p) => (p.name.clone().unwrap_or_default(), p.phone.clone().unwrap_or_default()),
        None => (view.personal.name.clone().unwrap_or_default(), view.personal.phone.clone().unwrap_or_default()),
    };
    [
        view.reg_no.to_string(),
        format_local_minute(view.registered_at_ms),
        view.window.clone(),
        view.channel.label().to_owned(),
        view.nature.label().to_owned(),
        view.category.clone(),
        view.summary.clone(),
        name,
        phone,
        view.priority.label().to_owned(),
        view.status.label().to_owned(),
        view.lead_unit.clone().unwrap_or_default(),
        format_local_minute(view.due_ms),
        view.result.map(|r| r.label().to_owned()).unwrap_or_default(),
        view.closed_at_ms.map(format_local_minute).unwrap_or_default(),
        view.supervision.label().to_owned(),
        rating,
    ]
}

pub async fn export(cli: &Cli, args: &ExportArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    if args.unmasked && home.config.role != Role::Admin {
        return Err(expected(format!(
            "an unmasked export needs an admin node; this node is a {} node",
            home.config.role.code()
        )));
    }
    let store = home.open_store()?;
    let (from, to) = (args.from.map(|d| d.at_minute_ms(0)), args.to.map(|d| d.add_days(1).at_minute_ms(0)));
    let mut rows = Vec::new();
    for case_id in all_case_ids(&store).await? {
        let view = store.case_view(&case_id).await.map_err(read_error)?;
        if from.is_some_and(|f| view.registered_at_ms < f) || to.is_some_and(|t| view.registered_at_ms >= t) {
            continue;
        }
        let personal = if args.unmasked && !view.personal.purged {
            // Each case records the reveal before its personal data leaves the store.
            let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
            let (out_slot, ctx) = (slot.clone(), home.ctx(&staff(cli, &home))?);
            let reveal = move |doc: &mut CaseDoc| {
                let (personal, event) = doc.reveal_personal_data_event(&ctx, "导出登记簿（未脱敏）")?;
                *out_slot.lock().expect("the slot is never poisoned") = Some(personal);
                Ok(event)
            };
            store.edit(&case_id, Box::new(reveal)).await.map_err(write_error)?;
            slot.lock().expect("the slot is never poisoned").take()
        } else {
            None
        };
        rows.push(export_row(&view, personal.as_ref()));
    }
    match args.format.as_str() {
        "xlsx" => write_xlsx(&args.out, &rows)?,
        _ => {
            let mut text = String::from("\u{feff}");
            text += &EXPORT_HEADERS.join(",");
            text += "\r\n";
            for row in &rows {
                text += &row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
                text += "\r\n";
            }
            std::fs::write(&args.out, text).with_context(|| format!("failed to write `{}`", args.out.display()))?;
        }
    }
    if cli.json {
        print_json(&serde_json::json!({ "cases": rows.len(), "file": args.out, "masked": !args.unmasked }));
    } else {
        let masked =
            if args.unmasked { "personal data in full; each case records the export" } else { "personal data masked" };
        say(cli, &format!("exported {} cases to {} ({masked})", rows.len(), args.out.display()));
    }
    Ok(())
}

fn write_xlsx(path: &std::path::Path, rows: &[[String; 17]]) -> anyhow::Result<()> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("登记簿")?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (column, header) in EXPORT_HEADERS.iter().enumerate() {
        sheet.write_with_format(0, column as u16, *header, &bold)?;
    }
    for (row_index, row) in rows.iter().enumerate() {
        for (column, value) in row.iter().enumerate() {
            // Written as text: a leading `=` stays a string, never a formula.
            sheet.write_string(row_index as u32 + 1, column as u16, value)?;
        }
    }
    sheet.set_freeze_panes(1, 0)?;
    workbook.save(path).with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(())
}

pub async fn verify(cli: &Cli) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    // Every change signature is checked against this node's roster (a node without one checks the rest).
    let report = store.verify(home.roster().cloned()).await.context("verify failed")?;
    if cli.json {
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        print_json(&serde_json::json!({
            "docs": report.docs,
            "signatures_checked": report.signatures_checked,
            "unsigned_changes": report.unsigned_changes,
            "problems": problems,
        }));
    } else {
        for problem in &report.problems {
            out!("{problem}");
        }
        say(
            cli,
            &format!(
                "checked {} documents: {} problems ({} change signatures verified, {} changes unsigned and kept local)",
                report.docs,
                report.problems.len(),
                report.signatures_checked,
                report.unsigned_changes
            ),
        );
    }
    if report.problems.is_empty() { Ok(()) } else { Err(expected(format!("{} problems found", report.problems.len()))) }
}

pub async fn doc(cli: &Cli, command: &DocCommand) -> anyhow::Result<()> {
    let home = open(cli)?;
    let store = home.open_store()?;
    match command {
        DocCommand::Export { case, out } => {
            let case_id = resolve(&store, case).await?;
            let changes = store.changes_since(&case_id, Vec::new()).await.map_err(read_error)?;
            let mut doc = automerge::AutoCommit::new();
            for change in changes {
                doc.load_incremental(&change).with_context(|| format!("the stored changes of {case} do not load"))?;
            }
            let bytes = doc.save();
            std::fs::write(out, &bytes).with_context(|| format!("failed to write `{}`", out.display()))?;
            say(cli, &format!("wrote {} ({} bytes)", out.display(), bytes.len()));
        }
        DocCommand::Import { file } => {
            let size = std::fs::metadata(file).with_context(|| format!("failed to read `{}`", file.display()))?.len();
            if size > DOC_FILE_BYTES_MAX {
                return Err(expected(format!(
                    "`{}` is {size} bytes, more than the limit of {DOC_FILE_BYTES_MAX}",
                    file.display()
                )));
            }
            let bytes = std::fs::read(file).with_context(|| format!("failed to read `{}`", file.display()))?;
            // Outside bytes: Automerge has panicked on crafted documents, so the load is isolated.
            let loaded = std::panic::catch_unwind(|| CaseDoc::load(&bytes, automerge::ActorId::from(vec![0; 16])))
                .map_err(|_| expected(format!("`{}` is not a readable Automerge document", file.display())))?;
            let mut case =
                loaded.map_err(|error| expected(format!("`{}` is not a case document: {error}", file.display())))?;
            let case_id = case.case_id().to_string();
            let changes: Vec<Vec<u8>> =
                case.automerge_mut().get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect();
            // A plain Automerge file carries no signatures: changes this node already holds keep theirs; new ones
            // are stored unsigned and stay on this node.
            let known = store.signatures(&case_id).await.unwrap_or_default();
            let report = merge_cases(&store, None, vec![Incoming { case_id, changes, signatures: known }]).await?;
            print_merge(cli, &report);
        }
    }

    Ok(())
}
