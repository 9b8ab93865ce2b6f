//! `export`: the register book as CSV or xlsx, masked unless an admin asks for `--unmasked` (each reveal recorded).

use crate::case::{all_case_ids, parse_date, read_error, staff, write_error};
use crate::setup::open;
use crate::{Cli, expected, print_json, say};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use zhaowo_crdt::CaseDoc;
use zhaowo_crdt::model::*;
use zhaowo_crdt::time::Date;

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
        rows.push(zhaowo_node::export::export_row(&view, personal.as_ref()));
    }
    let bytes = match args.format.as_str() {
        "xlsx" => zhaowo_node::export::xlsx_bytes(&rows).context("failed to build the workbook")?,
        _ => zhaowo_node::export::csv_bytes(&rows),
    };
    std::fs::write(&args.out, bytes).with_context(|| format!("failed to write `{}`", args.out.display()))?;
    if cli.json {
        print_json(&serde_json::json!({ "cases": rows.len(), "file": args.out, "masked": !args.unmasked }));
    } else {
        let masked =
            if args.unmasked { "personal data in full; each case records the export" } else { "personal data masked" };
        say(cli, &format!("exported {} cases to {} ({masked})", rows.len(), args.out.display()));
    }
    Ok(())
}
