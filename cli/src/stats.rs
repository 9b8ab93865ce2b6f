//! `stats`: the 督查科's figures over a period (issue 15 §6): every KPI with its counts and formula, by month, window,
//! unit, nature, category or service mode; `--out` writes the report as xlsx or printable HTML.

use crate::case::{parse_date, read_error};
use crate::setup::open;
use crate::{Cli, expected, out, print_json, say};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use zhaowo_crdt::kpi::{GroupBy, Kpi};
use zhaowo_crdt::time::Date;
use zhaowo_node::home::now_ms;

/// The figures a grouped line shows (the full set is in `--json` and the report files).
const MAIN_KPIS: &[Kpi] =
    &[Kpi::Registered, Kpi::AnswerRate, Kpi::OnTimeCloseRate, Kpi::SatisfactionRate, Kpi::BadRate, Kpi::CallbackRate];

fn parse_group(text: &str) -> Result<GroupBy, String> {
    GroupBy::parse(text).ok_or_else(|| {
        let valid: Vec<&str> = GroupBy::ALL.iter().map(|group| group.code()).collect();
        format!("`{text}` is not a grouping: {}", valid.join(", "))
    })
}

fn parse_month(text: &str) -> Result<(Date, Date), String> {
    zhaowo_node::report::month_range(text).ok_or_else(|| format!("`{text}` is not a month: use YYYY-MM, e.g. 2026-11"))
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// First day of registration (YYYY-MM-DD); default: January 1st of this year.
    #[arg(long, value_parser = parse_date, conflicts_with = "month")]
    pub from: Option<Date>,
    /// Last day of registration (YYYY-MM-DD); default: today.
    #[arg(long, value_parser = parse_date, conflicts_with = "month")]
    pub to: Option<Date>,
    /// One month (YYYY-MM) instead of --from/--to: the monthly report.
    #[arg(long, value_parser = parse_month)]
    pub month: Option<(Date, Date)>,
    /// Group the figures: month, window, unit, nature, category, mode (repeatable; `--out` includes them all).
    #[arg(long = "by", value_parser = parse_group)]
    pub by: Vec<GroupBy>,
    /// Write the report to this file: `.xlsx` (a sheet per grouping) or `.html` (printable); refuses to overwrite.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn stats(cli: &Cli, args: &StatsArgs) -> anyhow::Result<()> {
    let home = open(cli)?;
    let hall = home.hall()?;
    let store = home.open_store()?;
    let today = Date::of_ms(now_ms());
    let (from, to) = args.month.unwrap_or_else(|| {
        (
            args.from.unwrap_or_else(|| Date::new(today.year, 1, 1).expect("January 1st exists")),
            args.to.unwrap_or(today),
        )
    });
    if from > to {
        return Err(expected(format!("--from {from} is after --to {to}")));
    }
    let format = match &args.out {
        None => None,
        Some(path) => match path.extension().and_then(|ext| ext.to_str()) {
            Some("xlsx") => Some("xlsx"),
            Some("html" | "htm") => Some("html"),
            _ => return Err(expected(format!("`{}`: the report file must end in .xlsx or .html", path.display()))),
        },
    };
    let groups: Vec<GroupBy> = if args.out.is_some() { GroupBy::ALL.to_vec() } else { args.by.clone() };
    let report = zhaowo_node::report::build(&store, &hall, from, to, &groups).await.map_err(read_error)?;
    if let (Some(path), Some(format)) = (&args.out, format) {
        let bytes = match format {
            "xlsx" => report.xlsx().context("failed to build the workbook")?,
            _ => report.printable().into_string().into_bytes(),
        };
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).with_context(|| {
            format!("failed to create `{}` (an existing file is never overwritten)", path.display())
        })?;
        std::io::Write::write_all(&mut file, &bytes)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
        say(cli, &format!("wrote the report {from} – {to} to {}", path.display()));
    }
    // The older counters (受理量, 响应率, 办结率…) from the daily statistics, kept beside the KPIs.
    let s = store.statistics(from, to).await.map_err(read_error)?;
    let c = s.counts;
    if cli.json {
        let mut value = report.json();
        let extra = serde_json::json!({
            "registered": c.registered, "responded": c.responded, "responded_on_time": c.responded_on_time,
            "closed": c.closed, "closed_on_time": c.closed_on_time, "rated": c.rated, "satisfied": c.satisfied,
            "response_rate": s.response_rate, "close_rate": s.close_rate, "close_on_time_rate": s.close_on_time_rate,
            "satisfaction_rate_4_5": s.satisfaction_rate,
        });
        if let (Some(map), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
            map.extend(extra);
        }
        print_json(&value);
        return Ok(());
    }
    if args.out.is_some() {
        return Ok(());
    }
    out!("{} 督查统计 {from} – {to}（按登记时间统计；比率旁为件数）", hall.name);
    for figure in &report.total.figures {
        out!("  {:<10} {}", figure.kpi.zh(), figure.display());
    }
    let levels = report.total.tally.0.rated_by_level;
    out!(
        "  评价分布   非常满意 {} · 满意 {} · 基本满意 {} · 不满意 {} · 非常不满意 {}",
        levels[4],
        levels[3],
        levels[2],
        levels[1],
        levels[0]
    );
    for (by, rows) in &report.groups {
        out!("");
        out!("按{}", by.zh());
        for group in rows {
            let figures: Vec<String> = MAIN_KPIS
                .iter()
                .map(|kpi| kpi.figure(&group.tally, report.settings))
                .map(|figure| format!("{} {}", figure.kpi.zh(), figure.display()))
                .collect();
            out!("  {:<16} {}", group.label, figures.join(" · "));
        }
    }
    out!("");
    out!("计算公式");
    for figure in &report.total.figures {
        out!("  {}：{}", figure.kpi.zh(), figure.kpi.formula_zh(report.settings));
    }
    Ok(())
}
