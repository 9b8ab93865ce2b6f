//! `zhaowo hall show|export|import|log`: the hall's configuration as a TOML file the admin edits — windows, units,
//! categories with their routing, time limits by nature × priority, working hours and the calendar per year — checked
//! with the file, line and key of every error, applied as one signed change of the hall document, which syncs to every
//! node like any admin edit.
//!
//! The file leaves out the desk accounts (`zhaowo staff`): an import keeps
//! both as they are.

use crate::{Cli, expected, out, print_json, say};
use anyhow::Context;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use zhaowo_crdt::hall::{Calendar, Category, Hall, Span, TimeLimit, Unit, Window};
use zhaowo_crdt::limits::NAME_CHARS_MAX;
use zhaowo_crdt::messages::{self, CannedReply, Messages, MessagesError, SmsKind};
use zhaowo_crdt::model::{Nature, Priority, Status};
use zhaowo_crdt::time::{Date, format_local_minute};

/// A hall file: a district hall's file is ~10 KB; 1 MiB is far beyond any real one and bounds what is parsed.
pub const HALL_FILE_BYTES_MAX: u64 = 1 << 20;
/// Years a calendar section may name: the State Council arrangements start long after 2000, and a hall will not plan
/// beyond 2100.
const CALENDAR_YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;

#[derive(Debug, Subcommand)]
pub enum HallCommand {
    /// Show the hall's configuration: windows, units, routing, time limits, working hours, calendar coverage.
    Show,
    /// Write the configuration as a TOML file to edit (without desk accounts).
    Export {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a TOML file and make it the hall's configuration (admin node): one signed change that syncs to every node.
    Import {
        /// The file (as written by `zhaowo hall export`, edited).
        file: PathBuf,
        /// Check the file and print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The history of the hall document: who changed what, when.
    Log,
}

pub fn run(cli: &Cli, command: &HallCommand) -> anyhow::Result<()> {
    match command {
        HallCommand::Show => show(cli),
        HallCommand::Export { out } => export(cli, out),
        HallCommand::Import { file, dry_run } => import(cli, file, *dry_run),
        HallCommand::Log => log(cli),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The file

fn bad_review_working_days_default() -> u16 {
    zhaowo_crdt::hall::BAD_REVIEW_WORKING_DAYS_DEFAULT
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HallFile {
    /// The hall's name.
    name: Spanned<String>,
    /// The end of the working day, `HH:MM`: a due date counted in working days is the end of its day.
    workday_end: Spanned<String>,
    /// 个人信息保存期限: days after 办结 at which the 督查科's and the admin's PCs purge a case's personal data.
    retention_days: Spanned<u32>,
    /// 差评 follow-through: working days from a 不满意/非常不满意 rating to the 督查科's 反馈 (issue 15).
    #[serde(default = "bad_review_working_days_default")]
    bad_review_working_days: u16,
    /// 满意率 counts 基本满意 as satisfied (default true).
    #[serde(default)]
    satisfaction_counts_basic: Option<Spanned<bool>>,
    #[serde(default)]
    windows: BTreeMap<Spanned<String>, WindowFile>,
    #[serde(default)]
    units: BTreeMap<Spanned<String>, UnitFile>,
    #[serde(default)]
    categories: BTreeMap<Spanned<String>, CategoryFile>,
    #[serde(default)]
    time_limits: Vec<TimeLimitFile>,
    #[serde(default)]
    calendar: BTreeMap<Spanned<String>, YearFile>,
    /// SMS templates by kind (issue 15 §4).
    #[serde(default)]
    sms: BTreeMap<Spanned<String>, Spanned<String>>,
    /// 服务用语 offered in the desk's reply box (issue 15 §5).
    #[serde(default)]
    canned_replies: Vec<CannedReplyFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CannedReplyFile {
    title: Spanned<String>,
    text: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nature: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<Spanned<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    name: Spanned<String>,
    #[serde(default)]
    floor: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitFile {
    name: Spanned<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    name: Spanned<String>,
    lead_unit: Spanned<String>,
    #[serde(default)]
    co_units: Vec<Spanned<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeLimitFile {
    nature: Spanned<String>,
    priority: Spanned<String>,
    /// First response: `N working days` or `N hours`.
    response: Spanned<String>,
    /// Solution: `N working days` or `N hours`.
    solve: Spanned<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    #[serde(default)]
    holidays: Vec<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    make_up_workdays: Vec<Spanned<toml::value::Datetime>>,
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn span_text(span: Span) -> String {
    match span {
        Span::WorkingDays(1) => "1 working day".to_owned(),
        Span::WorkingDays(days) => format!("{days} working days"),
        Span::Hours(1) => "1 hour".to_owned(),
        Span::Hours(hours) => format!("{hours} hours"),
    }
}

fn parse_span(text: &str) -> Result<Span, String> {
    let bad = || format!("`{text}` is not a time limit: write `N working days` or `N hours`");
    let (number, unit) = text.trim().split_once(' ').ok_or_else(bad)?;
    let number: u16 = number.parse().map_err(|_| bad())?;
    let span = match unit.trim() {
        "working day" | "working days" => Span::WorkingDays(number),
        "hour" | "hours" => Span::Hours(number),
        _ => return Err(bad()),
    };
    span.check()?;
    Ok(span)
}

fn toml_date(date: Date) -> toml::value::Datetime {
    toml::value::Datetime {
        date: Some(toml::value::Date { year: date.year as u16, month: date.month, day: date.day }),
        time: None,
        offset: None,
    }
}

impl HallFile {
    fn of(hall: &Hall) -> HallFile {
        fn year<'a>(calendar: &'a mut BTreeMap<Spanned<String>, YearFile>, date: &Date) -> &'a mut YearFile {
            calendar
                .entry(unspanned(date.year.to_string()))
                .or_insert_with(|| YearFile { holidays: Vec::new(), make_up_workdays: Vec::new() })
        }
        let mut calendar: BTreeMap<Spanned<String>, YearFile> = BTreeMap::new();
        for date in &hall.calendar.holidays {
            year(&mut calendar, date).holidays.push(unspanned(toml_date(*date)));
        }
        for date in &hall.calendar.make_up_workdays {
            year(&mut calendar, date).make_up_workdays.push(unspanned(toml_date(*date)));
        }
        let minute = hall.calendar.workday_end_minute;
        HallFile {
            name: unspanned(hall.name.clone()),
            workday_end: unspanned(format!("{:02}:{:02}", minute / 60, minute % 60)),
            retention_days: unspanned(hall.retention_days),
            bad_review_working_days: hall.bad_review_working_days,
            satisfaction_counts_basic: Some(unspanned(hall.satisfaction_counts_basic)),
            windows: hall
                .windows
                .iter()
                .map(|(code, w)| {
                    (unspanned(code.clone()), WindowFile { name: unspanned(w.name.clone()), floor: w.floor.clone() })
                })
                .collect(),
            units: hall
                .units
                .iter()
                .map(|(code, u)| (unspanned(code.clone()), UnitFile { name: unspanned(u.name.clone()) }))
                .collect(),
            categories: hall
                .categories
                .iter()
                .map(|(code, c)| {
                    let file = CategoryFile {
                        name: unspanned(c.name.clone()),
                        lead_unit: unspanned(c.lead_unit.clone()),
                        co_units: c.co_units.iter().cloned().map(unspanned).collect(),
                    };
                    (unspanned(code.clone()), file)
                })
                .collect(),
            time_limits: hall
                .time_limits
                .iter()
                .map(|rule| TimeLimitFile {
                    nature: unspanned(rule.nature.code().to_owned()),
                    priority: unspanned(rule.priority.code().to_owned()),
                    response: unspanned(span_text(rule.response)),
                    solve: unspanned(span_text(rule.solve)),
                })
                .collect(),
            calendar,
            sms: hall
                .messages
                .sms
                .iter()
                .map(|(kind, text)| (unspanned(kind.clone()), unspanned(text.clone())))
                .collect(),
            canned_replies: hall
                .messages
                .canned_replies
                .iter()
                .map(|reply| CannedReplyFile {
                    title: unspanned(reply.title.clone()),
                    text: unspanned(reply.text.clone()),
                    nature: reply.nature.map(|n| unspanned(n.code().to_owned())),
                    status: reply.status.map(|s| unspanned(s.code().to_owned())),
                })
                .collect(),
        }
    }
}

/// The commented header of an exported file.
fn header(hall: &Hall) -> String {
    let natures: Vec<String> = Nature::ALL.iter().map(|n| format!("{} {}", n.code(), n.label())).collect();
    let priorities: Vec<String> = Priority::ALL.iter().map(|p| format!("{} {}", p.code(), p.label())).collect();
    format!(
        "# The configuration of the hall \"{name}\" (zhaowo), exported {at}.\n\
         #\n\
         # Edit this file, then check it and see what would change:   zhaowo hall import FILE --dry-run\n\
         # and apply it on the admin node (it syncs to every node):      zhaowo hall import FILE\n\
         #\n\
         # Codes (windows, units, categories): 1-16 ASCII letters, digits or `_`. Names: 1-{NAME_CHARS_MAX} characters.\n\
         # Every category names its lead unit and its co-units, which must be units below.\n\
         # time_limits: one entry for every nature x priority; `response` and `solve` are `N working days` or `N hours`.\n\
         #   natures:    {natures}\n\
         #   priorities: {priorities}\n\
         # calendar: one [calendar.YEAR] section per year of the State Council's holiday arrangement (国务院办公厅关于\n\
         #   YEAR年部分节假日安排的通知): every day off in `holidays`, every weekend day worked (调休上班) in\n\
         #   `make_up_workdays`. A year without a section counts Monday to Friday only, and the node warns about it.\n\
         # retention_days: days after 办结 at which the 督查科's and the admin's PCs purge a case's personal data\n\
         #   (every node then destroys the case key); 1-{retention_max}.\n\
         # bad_review_working_days: working days from a 差评 (不满意/非常不满意) to the 督查科's 反馈 to the citizen.\n\
         # satisfaction_counts_basic: whether 满意率 counts 基本满意 as satisfied (true or false; default true).\n\
         # sms: the texts sent to citizens who agreed to SMS, by kind ({sms_kinds}); placeholders in braces:\n\
         #   {placeholders} ({{查询码}} only in `registered`: the code is known only at registration).\n\
         #   A kind without a template sends nothing. At most {sms_max} characters each.\n\
         # canned_replies: 服务用语 offered in the desk's reply box; `nature` and `status` (codes) narrow where.\n\
         # Not in this file: desk accounts (`zhaowo staff`); they are kept.\n\n",
        name = hall.name.replace(['"', '\n', '\r'], " "),
        at = format_local_minute(zhaowo_node::home::now_ms()),
        natures = natures.join(", "),
        priorities = priorities.join(", "),
        retention_max = zhaowo_crdt::hall::RETENTION_DAYS_MAX,
        sms_kinds = SmsKind::ALL.iter().map(|k| k.code()).collect::<Vec<_>>().join(", "),
        placeholders = messages::PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(" "),
        sms_max = messages::SMS_TEMPLATE_CHARS_MAX,
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Checking a file

/// One problem of a hall file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProblem {
    pub line: usize,
    /// The dotted key, e.g. `categories.FANGGUAN.lead_unit`.
    pub key: String,
    pub message: String,
    /// What would fix it (e.g. the known codes), if there is something to say.
    pub hint: Option<String>,
}

/// A hall file that was refused: every problem found, with file, line and key.
#[derive(Debug)]
pub struct HallFileErrors {
    pub file: PathBuf,
    pub problems: Vec<FileProblem>,
}

impl std::fmt::Display for HallFileErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.problems.len();
        write!(f, "`{}` is not a valid hall configuration: {count} error{}", self.file.display(), plural(count))?;
        for problem in &self.problems {
            write!(f, "\n  {}:{}: `{}`: {}", self.file.display(), problem.line, problem.key, problem.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for HallFileErrors {}

impl HallFileErrors {
    /// The hints of the problems, one line each (rendered by `main` as `hint:`).
    pub fn hint(&self) -> Option<String> {
        let hints: BTreeSet<&str> = self.problems.iter().filter_map(|p| p.hint.as_deref()).collect();
        (!hints.is_empty()).then(|| hints.into_iter().collect::<Vec<_>>().join("\n      "))
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The dotted key at a byte offset: the last table header above it, then the key on its line.
fn key_at(text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line.split_once('=').map(|(key, _)| key.trim().to_owned());
    match (table, key) {
        (Some(table), Some(key)) => format!("{table}.{key}"),
        (None, Some(key)) => key,
        (Some(table), None) => table,
        (None, None) => "(file)".to_owned(),
    }
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<FileProblem>,
}

impl Checker<'_> {
    fn at(&mut self, span: Range<usize>, key: String, message: impl Into<String>, hint: Option<String>) {
        let line = line_of(self.text, span.start);
        self.problems.push(FileProblem { line, key, message: message.into(), hint });
    }

    fn code(&mut self, kind: &str, code: &Spanned<String>, key: &str) {
        if !zhaowo_crdt::ids::is_valid_code(code.get_ref()) {
            self.at(
                code.span(),
                key.to_owned(),
                format!("invalid {kind} code `{}`: use 1-16 ASCII letters, digits or `_`", code.get_ref()),
                None,
            );
        }
    }

    fn name(&mut self, name: &Spanned<String>, key: String) {
        let chars = name.get_ref().chars().count();
        if name.get_ref().trim().is_empty() || chars > NAME_CHARS_MAX {
            self.at(name.span(), key, format!("a name must be 1-{NAME_CHARS_MAX} characters (is {chars})"), None);
        }
    }
}

fn known(kind: &str, codes: impl IntoIterator<Item = String>) -> Option<String> {
    let codes: Vec<String> = codes.into_iter().collect();
    Some(format!("known {kind}: {}", codes.join(", ")))
}

/// Parses and checks a hall file; `current` gives the accounts, which the file does not hold.
pub fn parse_hall_file(path: &Path, text: &str, current: &Hall) -> Result<Hall, HallFileErrors> {
    let refused = |problems| HallFileErrors { file: path.to_path_buf(), problems };
    let file: HallFile = toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        refused(vec![FileProblem {
            line: line_of(text, offset),
            key: key_at(text, offset),
            message: error.message().trim().to_owned(),
            hint: None,
        }])
    })?;
    let mut check = Checker { text, problems: Vec::new() };
    check.name(&file.name, "name".to_owned());
    let retention_days = *file.retention_days.get_ref();
    if !(1..=zhaowo_crdt::hall::RETENTION_DAYS_MAX).contains(&retention_days) {
        check.at(
            file.retention_days.span(),
            "retention_days".into(),
            format!("{retention_days} is out of range"),
            Some(format!(
                "1-{} days after 办结 (default {})",
                zhaowo_crdt::hall::RETENTION_DAYS_MAX,
                zhaowo_crdt::hall::RETENTION_DAYS_DEFAULT
            )),
        );
    }
    let workday_end = parse_minute(file.workday_end.get_ref());
    if workday_end.is_none() {
        check.at(
            file.workday_end.span(),
            "workday_end".into(),
            format!("`{}` is not a time of day: write `HH:MM`, e.g. `17:30`", file.workday_end.get_ref()),
            None,
        );
    }
    for (code, window) in &file.windows {
        let key = format!("windows.{}", code.get_ref());
        check.code("window", code, &key);
        check.name(&window.name, format!("{key}.name"));
    }
    for (code, unit) in &file.units {
        let key = format!("units.{}", code.get_ref());
        check.code("unit", code, &key);
        check.name(&unit.name, format!("{key}.name"));
    }
    let units: BTreeSet<&String> = file.units.keys().map(Spanned::get_ref).collect();
    let known_units = || known("units", units.iter().map(|u| (*u).clone()));
    if file.units.is_empty() {
        check.at(0..0, "units".into(), "the hall has no units: it needs at least one to route a case", None);
    }
    if file.categories.is_empty() {
        check.at(0..0, "categories".into(), "the hall has no categories: it needs at least one", None);
    }
    for (code, category) in &file.categories {
        let key = format!("categories.{}", code.get_ref());
        check.code("category", code, &key);
        check.name(&category.name, format!("{key}.name"));
        let mut seen = BTreeSet::new();
        for (field, unit) in
            std::iter::once(("lead_unit", &category.lead_unit)).chain(category.co_units.iter().map(|u| ("co_units", u)))
        {
            if !units.contains(unit.get_ref()) {
                let message = format!("unknown unit `{}`", unit.get_ref());
                check.at(unit.span(), format!("{key}.{field}"), message, known_units());
            } else if !seen.insert(unit.get_ref()) {
                let message = format!("unit `{}` is named twice in this category", unit.get_ref());
                check.at(unit.span(), format!("{key}.{field}"), message, None);
            }
        }
    }
    let mut time_limits = Vec::new();
    let mut rules_seen: BTreeMap<(Nature, Priority), usize> = BTreeMap::new();
    for (index, rule) in file.time_limits.iter().enumerate() {
        let key = |field: &str| format!("time_limits[{index}].{field}");
        let nature = Nature::parse(rule.nature.get_ref());
        if nature.is_none() {
            let hint = known("natures", Nature::ALL.iter().map(|n| format!("{} ({})", n.code(), n.label())));
            check.at(rule.nature.span(), key("nature"), format!("unknown nature `{}`", rule.nature.get_ref()), hint);
        }
        let priority = Priority::parse(rule.priority.get_ref());
        if priority.is_none() {
            let hint = known("priorities", Priority::ALL.iter().map(|p| format!("{} ({})", p.code(), p.label())));
            let message = format!("unknown priority `{}`", rule.priority.get_ref());
            check.at(rule.priority.span(), key("priority"), message, hint);
        }
        let mut spans = [None, None];
        for (slot, (field, text)) in spans.iter_mut().zip([("response", &rule.response), ("solve", &rule.solve)]) {
            match parse_span(text.get_ref()) {
                Ok(span) => *slot = Some(span),
                Err(message) => check.at(text.span(), key(field), message, None),
            }
        }
        if let (Some(nature), Some(priority), [Some(response), Some(solve)]) = (nature, priority, spans) {
            if let Some(first) = rules_seen.insert((nature, priority), index) {
                let message =
                    format!("a second time limit for {} × {} (the first is time_limits[{first}])", nature, priority);
                check.at(rule.nature.span(), key("nature"), message, None);
            }
            time_limits.push(TimeLimit { nature, priority, response, solve });
        }
    }
    // Missing rules are named only when every rule read: a rule with an unknown nature would be reported twice.
    let rules_read = rules_seen.len() == time_limits.len() && time_limits.len() == file.time_limits.len();
    for &nature in Nature::ALL {
        for &priority in Priority::ALL {
            if !rules_seen.contains_key(&(nature, priority)) && rules_read {
                let offset = text.find("[[time_limits]]").unwrap_or(0);
                let message = format!(
                    "no time limit for nature {} ({}) and priority {} ({})",
                    nature.code(),
                    nature.label(),
                    priority.code(),
                    priority.label()
                );
                check.at(offset..offset, "time_limits".into(), message, None);
            }
        }
    }
    let mut holidays = BTreeSet::new();
    let mut make_up_workdays = BTreeSet::new();
    for (year_key, year) in &file.calendar {
        let section = format!("calendar.{}", year_key.get_ref());
        let year_number = year_key.get_ref().parse::<i32>().ok().filter(|y| CALENDAR_YEARS.contains(y));
        let Some(year_number) = year_number else {
            let message = format!(
                "`{}` is not a year from {} to {}",
                year_key.get_ref(),
                CALENDAR_YEARS.start(),
                CALENDAR_YEARS.end()
            );
            check.at(year_key.span(), section, message, None);
            continue;
        };
        if year.holidays.is_empty() {
            let message = "a year section needs its holidays (every State Council arrangement has 元旦 and 春节)";
            check.at(year_key.span(), format!("{section}.holidays"), message, None);
        }
        for (field, dates) in [("holidays", &year.holidays), ("make_up_workdays", &year.make_up_workdays)] {
            let key = format!("{section}.{field}");
            for date in dates {
                let Some(day) = plain_date(date.get_ref()) else {
                    let message = format!("`{}` is not a date: write YYYY-MM-DD", date.get_ref());
                    check.at(date.span(), key.clone(), message, None);
                    continue;
                };
                if day.year != year_number {
                    let message = format!("{day} is not in {year_number}: move it to [calendar.{}]", day.year);
                    check.at(date.span(), key.clone(), message, None);
                    continue;
                }
                let fresh = if field == "holidays" {
                    holidays.insert(day)
                } else {
                    if day.weekday() <= 5 {
                        let message = format!(
                            "{day} is a {}, not a weekend day: a 调休 make-up working day is a Saturday or Sunday",
                            weekday_name(day)
                        );
                        check.at(date.span(), key.clone(), message, None);
                    }
                    if holidays.contains(&day) {
                        let message = format!("{day} is also a holiday: a day is either off or worked");
                        check.at(date.span(), key.clone(), message, None);
                    }
                    make_up_workdays.insert(day)
                };
                if !fresh {
                    check.at(date.span(), key.clone(), format!("{day} is listed twice"), None);
                }
            }
        }
    }
    let mut sms = BTreeMap::new();
    for (kind, template) in &file.sms {
        let key = format!("sms.{}", kind.get_ref());
        match messages::check_template(kind.get_ref(), template.get_ref()) {
            Ok(_) => {
                sms.insert(kind.get_ref().clone(), template.get_ref().clone());
            }
            Err(error @ MessagesError::UnknownKind(_)) => {
                let hint = known("kinds", SmsKind::ALL.iter().map(|k| format!("{} ({})", k.code(), k.label())));
                check.at(kind.span(), key, error.to_string(), hint);
            }
            Err(error) => check.at(template.span(), key, error.to_string(), None),
        }
    }
    let mut canned_replies = Vec::new();
    for (index, reply) in file.canned_replies.iter().enumerate() {
        let key = |field: &str| format!("canned_replies[{index}].{field}");
        let nature = reply.nature.as_ref().map(|n| (n, Nature::parse(n.get_ref())));
        if let Some((text, None)) = &nature {
            let hint = known("natures", Nature::ALL.iter().map(|n| format!("{} ({})", n.code(), n.label())));
            check.at(text.span(), key("nature"), format!("unknown nature `{}`", text.get_ref()), hint);
        }
        let status = reply.status.as_ref().map(|s| (s, Status::parse(s.get_ref())));
        if let Some((text, None)) = &status {
            let hint = known("states", Status::ALL.iter().map(|s| format!("{} ({})", s.code(), s.label())));
            check.at(text.span(), key("status"), format!("unknown status `{}`", text.get_ref()), hint);
        }
        let canned = CannedReply {
            title: reply.title.get_ref().clone(),
            text: reply.text.get_ref().clone(),
            nature: nature.and_then(|(_, n)| n),
            status: status.and_then(|(_, s)| s),
        };
        let alone = Messages { sms: BTreeMap::new(), canned_replies: vec![canned.clone()] };
        if let Err(MessagesError::Reply { field, max, .. }) = alone.validate() {
            let span = if field == "title" { reply.title.span() } else { reply.text.span() };
            check.at(span, key(field), format!("the {field} must be 1-{max} printable characters"), None);
        }
        canned_replies.push(canned);
    }
    if !check.problems.is_empty() {
        return Err(refused(check.problems));
    }
    let hall = Hall {
        name: file.name.get_ref().clone(),
        windows: file
            .windows
            .iter()
            .map(|(code, w)| {
                (code.get_ref().clone(), Window { name: w.name.get_ref().clone(), floor: w.floor.clone() })
            })
            .collect(),
        units: file
            .units
            .iter()
            .map(|(code, u)| (code.get_ref().clone(), Unit { name: u.name.get_ref().clone() }))
            .collect(),
        categories: file
            .categories
            .iter()
            .map(|(code, c)| {
                let category = Category {
                    name: c.name.get_ref().clone(),
                    lead_unit: c.lead_unit.get_ref().clone(),
                    co_units: c.co_units.iter().map(|u| u.get_ref().clone()).collect(),
                };
                (code.get_ref().clone(), category)
            })
            .collect(),
        time_limits,
        // `workday_end` is `Some` here: a problem was recorded when it did not parse.
        calendar: Calendar { holidays, make_up_workdays, workday_end_minute: workday_end.unwrap_or(u32::MAX) },
        accounts: current.accounts.clone(),
        retention_days,
        bad_review_working_days: file.bad_review_working_days,
        satisfaction_counts_basic: file.satisfaction_counts_basic.as_ref().is_none_or(|value| *value.get_ref()),
        messages: Messages { sms, canned_replies },
    };
    // Whatever the checks above did not name (limits on counts): the hall's own rules, at the file's first line.
    hall.validate().map_err(|error| {
        refused(vec![FileProblem { line: 1, key: "(file)".into(), message: error.to_string(), hint: None }])
    })?;
    Ok(hall)
}

fn weekday_name(date: Date) -> &'static str {
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"][usize::from(date.weekday() - 1)]
}

fn plain_date(value: &toml::value::Datetime) -> Option<Date> {
    match value {
        toml::value::Datetime { date: Some(date), time: None, offset: None } => {
            Date::new(i32::from(date.year), date.month, date.day)
        }
        _ => None,
    }
}

fn parse_minute(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60 && text.len() == 5).then_some(hours * 60 + minutes)
}

// ---------------------------------------------------------------------------------------------------------------
// The difference

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// What: `name`, `workday_end`, `window`, `unit`, `category`, `time_limit`, `holiday`, `make_up_workday`.
    pub item: &'static str,
    pub key: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

fn diff_maps<T: PartialEq>(
    out: &mut Vec<Difference>,
    item: &'static str,
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    show: impl Fn(&T) -> String,
) {
    for (key, old) in before {
        match after.get(key) {
            None => {
                out.push(Difference { change: "removed", item, key: key.clone(), before: Some(show(old)), after: None })
            }
            Some(new) if new != old => out.push(Difference {
                change: "changed",
                item,
                key: key.clone(),
                before: Some(show(old)),
                after: Some(show(new)),
            }),
            Some(_) => {}
        }
    }
    for (key, new) in after {
        if !before.contains_key(key) {
            out.push(Difference { change: "added", item, key: key.clone(), before: None, after: Some(show(new)) });
        }
    }
}

/// What importing `after` over `before` changes (the parts a hall file holds).
pub fn difference(before: &Hall, after: &Hall) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut scalar = |item: &'static str, old: String, new: String| {
        if old != new {
            out.push(Difference { change: "changed", item, key: item.to_owned(), before: Some(old), after: Some(new) });
        }
    };
    scalar("name", before.name.clone(), after.name.clone());
    let minute = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    scalar("workday_end", minute(before.calendar.workday_end_minute), minute(after.calendar.workday_end_minute));
    scalar("retention_days", before.retention_days.to_string(), after.retention_days.to_string());
    scalar(
        "bad_review_working_days",
        before.bad_review_working_days.to_string(),
        after.bad_review_working_days.to_string(),
    );
    scalar(
        "satisfaction_counts_basic",
        before.satisfaction_counts_basic.to_string(),
        after.satisfaction_counts_basic.to_string(),
    );
    diff_maps(&mut out, "window", &before.windows, &after.windows, |w| {
        format!("{} {}", w.name, w.floor).trim().to_owned()
    });
    diff_maps(&mut out, "unit", &before.units, &after.units, |u| u.name.clone());
    diff_maps(&mut out, "category", &before.categories, &after.categories, |c| {
        let co = if c.co_units.is_empty() { String::new() } else { format!(" + {}", c.co_units.join(", ")) };
        format!("{} → {}{co}", c.name, c.lead_unit)
    });
    let rules = |hall: &Hall| -> BTreeMap<String, (Span, Span)> {
        hall.time_limits
            .iter()
            .map(|r| (format!("{} × {}", r.nature.code(), r.priority.code()), (r.response, r.solve)))
            .collect()
    };
    diff_maps(&mut out, "time_limit", &rules(before), &rules(after), |(response, solve)| {
        format!("response {}, solve {}", span_text(*response), span_text(*solve))
    });
    let days = |set: &BTreeSet<Date>| -> BTreeMap<String, ()> { set.iter().map(|d| (d.to_string(), ())).collect() };
    diff_maps(&mut out, "holiday", &days(&before.calendar.holidays), &days(&after.calendar.holidays), |()| {
        String::new()
    });
    diff_maps(&mut out, "sms", &before.messages.sms, &after.messages.sms, Clone::clone);
    let replies = |hall: &Hall| -> BTreeMap<String, String> {
        hall.messages.canned_replies.iter().map(|r| (r.title.clone(), r.text.clone())).collect()
    };
    diff_maps(&mut out, "canned_reply", &replies(before), &replies(after), Clone::clone);
    diff_maps(
        &mut out,
        "make_up_workday",
        &days(&before.calendar.make_up_workdays),
        &days(&after.calendar.make_up_workdays),
        |()| String::new(),
    );
    out
}

fn difference_line(d: &Difference) -> String {
    let sign = match d.change {
        "added" => "+",
        "removed" => "-",
        _ => "~",
    };
    let detail = match (&d.before, &d.after) {
        (Some(before), Some(after)) => format!(": {before} ⇒ {after}"),
        (Some(text), None) | (None, Some(text)) if !text.is_empty() => format!(": {text}"),
        _ => String::new(),
    };
    if d.item == d.key { format!("{sign} {}{detail}", d.item) } else { format!("{sign} {} {}{detail}", d.item, d.key) }
}

/// The history line of an import (zh-CN, like the other hall edits): counts by item.
fn history_what(file: &Path, differences: &[Difference]) -> String {
    let label = |item: &str| match item {
        "name" => "名称",
        "workday_end" => "下班时间",
        "window" => "窗口",
        "unit" => "承办单位",
        "category" => "诉求类别",
        "time_limit" => "时限",
        "holiday" => "节假日",
        _ => "调休上班日",
    };
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for d in differences {
        *counts.entry((label(d.item), d.change)).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|((item, change), n)| {
            let verb = match *change {
                "added" => "新增",
                "removed" => "删除",
                _ => "修改",
            };
            format!("{verb}{item} {n}")
        })
        .collect();
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    format!("导入大厅配置 {name}：{}", parts.join("，"))
}

// ---------------------------------------------------------------------------------------------------------------
// Commands

fn show(cli: &Cli) -> anyhow::Result<()> {
    let home = crate::setup::open(cli)?;
    let hall = home.hall().context("failed to read the hall configuration")?;
    let today = Date::of_ms(zhaowo_node::home::now_ms());
    let coverage = hall.calendar.coverage(today);
    if cli.json {
        let file = HallFile::of(&hall);
        let time_limits: Vec<serde_json::Value> = hall
            .time_limits
            .iter()
            .map(|r| {
                serde_json::json!({ "nature": r.nature.code(), "priority": r.priority.code(),
                    "response": span_text(r.response), "solve": span_text(r.solve) })
            })
            .collect();
        print_json(&serde_json::json!({
            "name": hall.name,
            "workday_end": file.workday_end.get_ref(),
            "windows": hall.windows,
            "units": hall.units,
            "categories": hall.categories,
            "time_limits": time_limits,
            "holidays": hall.calendar.holidays,
            "make_up_workdays": hall.calendar.make_up_workdays,
            "coverage": coverage,
            "retention_days": hall.retention_days,
            "bad_review_working_days": hall.bad_review_working_days,
            "satisfaction_counts_basic": hall.satisfaction_counts_basic,
            "sms": hall.messages.sms,
            "canned_replies": hall.messages.canned_replies,
            "accounts": hall.accounts.len(),
        }));
        return Ok(());
    }
    let minute = hall.calendar.workday_end_minute;
    out!("hall        {}", hall.name);
    out!("workday end {:02}:{:02}", minute / 60, minute % 60);
    out!("retention   personal data purged {} days after 办结", hall.retention_days);
    out!(
        "满意率       {}",
        if hall.satisfaction_counts_basic { "counts 基本满意 as satisfied" } else { "does not count 基本满意" }
    );
    out!("windows     {}", hall.windows.len());
    for (code, window) in &hall.windows {
        out!("  {code:<16} {} {}", window.name, window.floor);
    }
    out!("units       {}", hall.units.len());
    for (code, unit) in &hall.units {
        out!("  {code:<16} {}", unit.name);
    }
    out!("categories  {} (lead unit + co-units)", hall.categories.len());
    for (code, category) in &hall.categories {
        let co =
            if category.co_units.is_empty() { String::new() } else { format!(" + {}", category.co_units.join(", ")) };
        out!("  {code:<16} {} → {}{co}", category.name, category.lead_unit);
    }
    out!("time limits (response / solve)");
    for rule in &hall.time_limits {
        out!(
            "  {:<4} {:<8} {} / {}",
            rule.nature.code(),
            rule.priority.code(),
            span_text(rule.response),
            span_text(rule.solve)
        );
    }
    out!("sms         {} templates (sent to citizens who agreed to SMS)", hall.messages.sms.len());
    for (kind, text) in &hall.messages.sms {
        let label = SmsKind::parse(kind).map_or("", |k| k.label());
        out!("  {kind:<16} {label}: {text}");
    }
    out!("replies     {} canned replies (服务用语)", hall.messages.canned_replies.len());
    for reply in &hall.messages.canned_replies {
        let nature = reply.nature.map_or("所有性质", |n| n.label());
        let status = reply.status.map_or("所有状态", |s| s.label());
        out!("  {} ({nature}, {status})", reply.title);
    }
    for year in hall.calendar.covered_years() {
        let in_year = |set: &BTreeSet<Date>| set.iter().filter(|d| d.year == year).count();
        out!(
            "calendar    {year}: {} holidays, {} make-up working days",
            in_year(&hall.calendar.holidays),
            in_year(&hall.calendar.make_up_workdays)
        );
    }
    match coverage.last_covered_day {
        Some(last) => out!("covered to  {last} ({} days left)", coverage.days_left),
        None => out!("covered to  (not this year: due dates count Monday to Friday only)"),
    }
    if let Some(warning) = coverage.warning() {
        say(cli, &format!("warning: {warning}"));
    }
    Ok(())
}

fn export(cli: &Cli, out_path: &Path) -> anyhow::Result<()> {
    let home = crate::setup::open(cli)?;
    let hall = home.hall().context("failed to read the hall configuration")?;
    let body = toml::to_string_pretty(&HallFile::of(&hall)).context("failed to write the configuration as TOML")?;
    let newline = if body.ends_with('\n') { "" } else { "\n" };
    let text = format!("{}{body}{newline}", header(&hall));
    std::fs::write(out_path, text).with_context(|| format!("failed to write `{}`", out_path.display()))?;
    if cli.json {
        print_json(&serde_json::json!({ "file": out_path, "windows": hall.windows.len(), "units": hall.units.len(),
            "categories": hall.categories.len(), "covered_years": hall.calendar.covered_years() }));
    } else {
        say(
            cli,
            &format!(
                "wrote {}; edit it, check it with `zhaowo hall import {} --dry-run`, apply it with `zhaowo hall import {}`",
                out_path.display(),
                out_path.display(),
                out_path.display()
            ),
        );
    }
    Ok(())
}

/// Reads a hall file within [`HALL_FILE_BYTES_MAX`].
fn read_file(path: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path).with_context(|| format!("failed to read `{}`", path.display()))?.len();
    if size > HALL_FILE_BYTES_MAX {
        anyhow::bail!("`{}` is {size} bytes, more than the limit of {HALL_FILE_BYTES_MAX}", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("failed to read `{}` (is it UTF-8 text?)", path.display()))
}

fn import(cli: &Cli, path: &Path, dry_run: bool) -> anyhow::Result<()> {
    let mut home = crate::setup::open(cli)?;
    if !dry_run && (!home.is_admin() || home.config.role != zhaowo_crdt::model::Role::Admin) {
        return Err(expected(format!(
            "this node is a {} node: only the admin node that holds the hall root key changes the hall configuration",
            home.config.role.code()
        )));
    }
    let current = home.hall().context("failed to read the hall configuration")?;
    let text = read_file(path)?;
    let hall = parse_hall_file(path, &text, &current)?;
    let differences = difference(&current, &hall);
    if cli.json {
        print_json(&serde_json::json!({ "file": path, "dry_run": dry_run, "differences": differences }));
    } else {
        for d in &differences {
            out!("{}", difference_line(d));
        }
    }
    let count = differences.len();
    if dry_run {
        say(cli, &format!("{count} difference{}; nothing changed (--dry-run)", plural(count)));
        return Ok(());
    }
    if differences.is_empty() {
        say(cli, "the file holds the configuration as it is: nothing to change");
        return Ok(());
    }
    let what = history_what(path, &differences);
    home.import_hall(hall, &what, zhaowo_node::home::now_ms())
        .with_context(|| format!("failed to import `{}`", path.display()))?;
    say(cli, &format!("imported {}: {count} difference{}; it syncs to every node", path.display(), plural(count)));
    Ok(())
}

fn log(cli: &Cli) -> anyhow::Result<()> {
    let home = crate::setup::open(cli)?;
    home.hall().context("failed to read the hall configuration")?;
    let history = home.hall_history();
    if cli.json {
        let edits: Vec<serde_json::Value> = history
            .iter()
            .map(
                |e| serde_json::json!({ "at": zhaowo_crdt::time::format_rfc3339(e.at_ms), "by": e.by, "node": e.node, "what": e.what }),
            )
            .collect();
        print_json(&serde_json::json!({ "edits": edits }));
    } else {
        for edit in &history {
            // The node's short id (the first 16 hex digits, as `zhaowo status` and the peers page show keys).
            let node = edit.node.as_deref().map_or("-", |node| &node[..node.len().min(16)]);
            out!("{}  {}  {}  {}", format_local_minute(edit.at_ms), node, edit.by, edit.what);
        }
        say(cli, &format!("{} edit{} of the hall document", history.len(), plural(history.len())));
    }
    Ok(())
}
