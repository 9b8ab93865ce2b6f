//! `conflicts list|show|resolve`: the 冲突待核 items of the node's cases, and settling them (督查科/admin).

use crate::case::{read_error, resolve, staff, write_error};
use crate::setup::open;
use crate::{Cli, out, print_json, say};
use clap::Subcommand;
use zhaowo_crdt::time::format_local_minute;
use zhaowo_crdt::view::ConflictDetail;
use zhaowo_crdt::{Command, ConflictDecision};
use zhaowo_node::store::CONFLICTS_LISTED_MAX;

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
