//! `export`: the register book as CSV or xlsx, masked unless an admin asks for `--unmasked` (each reveal recorded).

use crate::case::{all_case_ids, parse_date, read_error, staff, write_error};
use crate::setup::open;
use crate::{Cli, expected, print_json, say};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use zhaowo_crdt::model::*;
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::{Date, format_local_minute};
use zhaowo_crdt::{CaseDoc, CaseView};

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
