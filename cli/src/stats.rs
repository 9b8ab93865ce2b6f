//! `stats`: the supervision figures (受理量, 响应率, 办结率, 满意率) over a date range.

use crate::case::{parse_date, read_error};
use crate::setup::open;
use crate::{Cli, expected, out, print_json};
use clap::Args;
use zhaowo_crdt::time::Date;
use zhaowo_node::home::now_ms;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// First day (YYYY-MM-DD); default: January 1st of this year.
    #[arg(long, value_parser = parse_date)]
    pub from: Option<Date>,
    /// Last day (YYYY-MM-DD); default: today.
    #[arg(long, value_parser = parse_date)]
    pub to: Option<Date>,
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
