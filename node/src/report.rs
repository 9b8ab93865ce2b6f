//! The 督查科's figures for a period (issue 15 §6): every [`Kpi`] of all cases and per group (month, window, unit,
//! nature, category, service mode), as the desk's statistics page, `zhaowo stats --json` and the monthly report
//! (xlsx and printable HTML) show them. The formulas are `zhaowo_crdt::kpi`'s; the store sums the facts
//! (`Store::kpi_tallies`); this module only reads, labels and lays out.

use crate::store::{ReadError, Store};
use maud::{Markup, html};
use zhaowo_crdt::Hall;
use zhaowo_crdt::kpi::{Figure, GroupBy, Kpi, KpiSettings, Tally};
use zhaowo_crdt::time::Date;

/// The figures of one group.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's key as stored (a code, or `YYYY-MM`).
    pub key: String,
    /// The key as people read it (the unit's name, 求助, 加急…).
    pub label: String,
    pub tally: Tally,
    pub figures: Vec<Figure>,
}

/// Every figure of a period, of all cases and by each grouping.
#[derive(Debug, Clone)]
pub struct Report {
    pub hall: String,
    pub from: Date,
    pub to: Date,
    pub settings: KpiSettings,
    pub total: Group,
    pub groups: Vec<(GroupBy, Vec<Group>)>,
}

/// The label of a group key: names from the hall configuration and the closed vocabularies.
pub fn group_label(hall: &Hall, group: GroupBy, key: &str) -> String {
    use zhaowo_crdt::model::{Mode, Nature};
    let label = match group {
        GroupBy::Month => {
            key.split_once('-').map(|(year, month)| format!("{year}年{}月", month.trim_start_matches('0')))
        }
        GroupBy::Window => hall.windows.get(key).map(|window| format!("{key} {}", window.name)),
        GroupBy::Unit => hall.units.get(key).map(|unit| unit.name.clone()),
        GroupBy::Nature => Nature::parse(key).map(|nature| nature.label().to_owned()),
        GroupBy::Category => hall.categories.get(key).map(|category| category.name.clone()),
        GroupBy::Mode => Mode::parse(key).map(|mode| mode.label().to_owned()),
    };
    label.unwrap_or_else(|| key.to_owned())
}

fn group_of(key: String, label: String, tally: Tally, settings: KpiSettings) -> Group {
    Group { figures: Kpi::all(&tally, settings), key, label, tally }
}

/// The figures of cases registered from `from` to `to` (inclusive), by `groups`.
pub async fn build(store: &Store, hall: &Hall, from: Date, to: Date, groups: &[GroupBy]) -> Result<Report, ReadError> {
    let settings = hall.kpi_settings();
    let total = store.kpi_tallies(from, to, None).await?.into_iter().next().map(|(_, tally)| tally).unwrap_or_default();
    let mut by = Vec::with_capacity(groups.len());
    for &group in groups {
        let rows = store.kpi_tallies(from, to, Some(group)).await?;
        let rows = rows
            .into_iter()
            .map(|(key, tally)| {
                let label = group_label(hall, group, &key);
                group_of(key, label, tally, settings)
            })
            .collect();
        by.push((group, rows));
    }
    Ok(Report {
        hall: hall.name.clone(),
        from,
        to,
        settings,
        total: group_of("全部".to_owned(), "全部".to_owned(), total, settings),
        groups: by,
    })
}

/// The first and last day of the month `YYYY-MM`.
pub fn month_range(text: &str) -> Option<(Date, Date)> {
    let (year, month) = text.split_once('-')?;
    let (year, month): (i32, u8) = (year.parse().ok()?, month.parse().ok()?);
    let first = Date::new(year, month, 1)?;
    let next = if month == 12 { Date::new(year + 1, 1, 1)? } else { Date::new(year, month + 1, 1)? };
    Some((first, next.add_days(-1)))
}

impl Report {
    /// The report as JSON (`zhaowo stats --json`): every figure with numerator, denominator, rate and formula.
    pub fn json(&self) -> serde_json::Value {
        let figures = |group: &Group| -> serde_json::Value {
            group
                .figures
                .iter()
                .map(|figure| {
                    (
                        figure.kpi.code().to_owned(),
                        serde_json::json!({
                            "name": figure.kpi.zh(),
                            "numerator": figure.numerator,
                            "denominator": figure.denominator,
                            "rate": figure.rate(),
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let formulas: serde_json::Map<String, serde_json::Value> =
            Kpi::ALL.iter().map(|kpi| (kpi.code().to_owned(), kpi.formula_zh(self.settings).into())).collect();
        let groups: serde_json::Map<String, serde_json::Value> = self
            .groups
            .iter()
            .map(|(by, rows)| {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|g| serde_json::json!({ "key": g.key, "label": g.label, "kpis": figures(g) }))
                    .collect();
                (by.code().to_owned(), rows.into())
            })
            .collect();
        serde_json::json!({
            "from": self.from.to_string(),
            "to": self.to.to_string(),
            "by_registration_date": true,
            "satisfaction_counts_basic": self.settings.satisfaction_counts_basic,
            "rating_distribution": self.total.tally.0.rated_by_level,
            "rating_mean": self.total.tally.mean_rating(),
            "kpis": figures(&self.total),
            "formulas": formulas,
            "groups": groups,
        })
    }

    /// The report as an xlsx workbook: a sheet 汇总 (every figure with its counts and formula) and one sheet per
    /// grouping (a row per group, a column per figure). Every cell a person typed is written as text.
    pub fn xlsx(&self) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
        let mut workbook = rust_xlsxwriter::Workbook::new();
        let bold = rust_xlsxwriter::Format::new().set_bold();
        let percent = rust_xlsxwriter::Format::new().set_num_format("0.0%");
        let sheet = workbook.add_worksheet().set_name("汇总")?;
        sheet.write_string_with_format(
            0,
            0,
            format!("{} 督查统计 {} 至 {}（按登记时间）", self.hall, self.from, self.to),
            &bold,
        )?;
        for (col, head) in ["指标", "比率", "分子", "分母", "计算公式"].iter().enumerate() {
            sheet.write_string_with_format(2, col as u16, *head, &bold)?;
        }
        for (i, figure) in self.total.figures.iter().enumerate() {
            let row = 3 + i as u32;
            sheet.write_string(row, 0, figure.kpi.zh())?;
            if let Some(rate) = figure.rate() {
                sheet.write_number_with_format(row, 1, rate, &percent)?;
            }
            sheet.write_number(row, 2, figure.numerator as f64)?;
            if let Some(denominator) = figure.denominator {
                sheet.write_number(row, 3, denominator as f64)?;
            }
            sheet.write_string(row, 4, figure.kpi.formula_zh(self.settings))?;
        }
        let after = 4 + self.total.figures.len() as u32;
        sheet.write_string_with_format(after, 0, "评价分布（件）", &bold)?;
        for (i, label) in ["非常不满意", "不满意", "基本满意", "满意", "非常满意"].iter().enumerate()
        {
            sheet.write_string(after + 1, i as u16, *label)?;
            sheet.write_number(after + 2, i as u16, self.total.tally.0.rated_by_level[i] as f64)?;
        }
        sheet.set_column_width(0, 16)?;
        sheet.set_column_width(4, 70)?;
        for (by, rows) in &self.groups {
            let sheet = workbook.add_worksheet().set_name(format!("按{}", by.zh()))?;
            sheet.write_string_with_format(0, 0, by.zh(), &bold)?;
            for (col, kpi) in Kpi::ALL.iter().enumerate() {
                sheet.write_string_with_format(0, 1 + 2 * col as u16, kpi.zh(), &bold)?;
                if kpi.is_rate() {
                    sheet.write_string_with_format(0, 2 + 2 * col as u16, "分子/分母", &bold)?;
                }
            }
            for (r, group) in rows.iter().enumerate() {
                let row = 1 + r as u32;
                sheet.write_string(row, 0, &group.label)?;
                for (col, figure) in group.figures.iter().enumerate() {
                    let col = 1 + 2 * col as u16;
                    match figure.rate() {
                        Some(rate) => sheet.write_number_with_format(row, col, rate, &percent)?,
                        None if figure.denominator.is_none() => {
                            sheet.write_number(row, col, figure.numerator as f64)?
                        }
                        None => sheet.write_string(row, col, "—")?,
                    };
                    if let Some(denominator) = figure.denominator {
                        sheet.write_string(row, col + 1, format!("{}/{}", figure.numerator, denominator))?;
                    }
                }
            }
            sheet.set_column_width(0, 20)?;
            sheet.set_freeze_panes(1, 1)?;
        }
        workbook.save_to_buffer()
    }

    /// The figures as an HTML table with the formula beside each (the desk's statistics page and the printable
    /// report).
    pub fn summary_table(&self) -> Markup {
        html! {
            table.kpis {
                thead { tr { th { "指标" } th { "数值（分子/分母）" } th.bar-cell { "" } th { "计算公式" } } }
                tbody {
                    @for figure in &self.total.figures {
                        tr data-kpi=(figure.kpi.code()) {
                            td { (figure.kpi.zh()) }
                            td.num { (figure.display()) }
                            td.bar-cell { (bar(figure.rate())) }
                            td.hint { (figure.kpi.formula_zh(self.settings)) }
                        }
                    }
                }
            }
        }
    }

    /// One grouping as a table: a row per group, the main figures as columns with a bar each.
    pub fn group_table(&self, by: GroupBy, kpis: &[Kpi]) -> Markup {
        let rows = self.groups.iter().find(|(b, _)| *b == by).map(|(_, rows)| rows.as_slice()).unwrap_or_default();
        html! {
            table.kpis data-by=(by.code()) {
                thead { tr { th { (by.zh()) } @for kpi in kpis { th { (kpi.zh()) } } } }
                tbody {
                    @if rows.is_empty() { tr { td colspan=(kpis.len() + 1) { "本期没有登记的案件。" } } }
                    @for group in rows {
                        tr {
                            td { (group.label) }
                            @for kpi in kpis {
                                @let figure = kpi.figure(&group.tally, self.settings);
                                td.num { (figure.display()) (bar(figure.rate())) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The printable monthly report (通报): header, every figure with its formula, each grouping, the rating
    /// distribution. Self-contained HTML with print styles.
    pub fn printable(&self) -> Markup {
        let main = [
            Kpi::Registered,
            Kpi::AnswerRate,
            Kpi::OnTimeCloseRate,
            Kpi::SatisfactionRate,
            Kpi::BadRate,
            Kpi::CallbackRate,
        ];
        html! {
            (maud::DOCTYPE)
            html lang="zh-CN" {
                head {
                    meta charset="utf-8";
                    title { (self.hall) " 督查统计 " (self.from) " 至 " (self.to) }
                    style { (maud::PreEscaped(REPORT_CSS)) }
                }
                body {
                    h1 { (self.hall) "“办不成事”反映窗口 督查统计" }
                    p { "统计期间：" (self.from) " 至 " (self.to) "（按登记时间统计；件数少时比率波动大，比率旁均列出件数）" }
                    (self.summary_table())
                    h2 { "评价分布" }
                    table.kpis { tbody {
                        @for (i, label) in ["非常不满意", "不满意", "基本满意", "满意", "非常满意"].iter().enumerate() {
                            tr { td { (label) } td.num { (self.total.tally.0.rated_by_level[i]) " 件" } }
                        }
                        tr { td { "平均分" } td.num { (self.total.tally.mean_rating().map_or("—".to_owned(), |m| format!("{m:.2}"))) } }
                    } }
                    @for (by, _) in &self.groups {
                        h2 { "按" (by.zh()) }
                        (self.group_table(*by, &main))
                    }
                }
            }
        }
    }
}

/// A horizontal bar for a rate (none for a count or an empty denominator): meaning is in the number beside it, never
/// in the colour alone.
fn bar(rate: Option<f64>) -> Markup {
    match rate {
        Some(rate) => html! {
            span.bar title=(format!("{:.1}%", rate * 100.0)) { span.fill style=(format!("width:{:.0}%", rate * 100.0)) {} }
        },
        None => html! {},
    }
}

/// Styles of the report tables (desk and printable page).
pub const REPORT_CSS: &str = "body{font-family:sans-serif;margin:2em;color:#111}\
table.kpis{border-collapse:collapse;margin:.5em 0 1.5em}\
table.kpis th,table.kpis td{border:1px solid #999;padding:.3em .6em;text-align:left;vertical-align:top}\
td.num{white-space:nowrap}td.hint{color:#444;font-size:.9em}\
.bar{display:inline-block;width:6em;height:.7em;border:1px solid #555;margin-left:.5em;vertical-align:middle}\
.bar .fill{display:block;height:100%;background:#1f5fa8}\
@media print{body{margin:1cm}h2{break-after:avoid}table{break-inside:avoid}}";
