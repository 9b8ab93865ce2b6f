//! The register book (登记簿) as a table: its columns, one row per case, and the CSV and xlsx files the CLI's
//! `zhaowo export` writes and the desk's 导出登记簿 serves. One owner for both surfaces (issue 12 §4): the columns, the
//! masking and the formula defusing are written once.
//!
//! A row holds the masked personal record unless the caller passes the revealed one (the CLI's `--unmasked`, which
//! records a reveal event in every case first); the desk only ever exports masked rows.

use zhaowo_crdt::CaseView;
use zhaowo_crdt::pi::PersonalData;
use zhaowo_crdt::time::format_local_minute;

/// The register book's columns, in order.
pub const EXPORT_HEADERS: [&str; 17] = [
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
    "评价（1-5）",
];

/// One row of the register book.
pub type ExportRow = [String; 17];

/// The row of one case: `personal` is the revealed record (an unmasked export), `None` keeps the view's masked one.
pub fn export_row(view: &CaseView, personal: Option<&PersonalData>) -> ExportRow {
    // The counted rating: the citizen's own 好差评, else the latest 回访 that recorded one (`CaseView::rating_score`).
    let rating = view.rating_score().map(|r| r.to_string()).unwrap_or_default();
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

/// Quotes a CSV field (RFC 4180) and defuses formula injection in spreadsheet programs.
pub fn csv_field(text: &str) -> String {
    let safe = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text.to_owned() };
    if safe.contains([',', '"', '\n', '\r']) { format!("\"{}\"", safe.replace('"', "\"\"")) } else { safe }
}

/// The rows as a UTF-8 CSV file with a byte-order mark (WPS and Excel then read the Chinese columns correctly).
pub fn csv_bytes(rows: &[ExportRow]) -> Vec<u8> {
    let mut text = String::from("\u{feff}");
    text += &EXPORT_HEADERS.join(",");
    text += "\r\n";
    for row in rows {
        text += &row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
        text += "\r\n";
    }
    text.into_bytes()
}

/// The rows as an xlsx workbook (one sheet 登记簿, a bold frozen header row); every cell is written as text, so a
/// leading `=` stays a string, never a formula.
pub fn xlsx_bytes(rows: &[ExportRow]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("登记簿")?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (column, header) in EXPORT_HEADERS.iter().enumerate() {
        sheet.write_with_format(0, column as u16, *header, &bold)?;
    }
    for (row_index, row) in rows.iter().enumerate() {
        for (column, value) in row.iter().enumerate() {
            sheet.write_string(row_index as u32 + 1, column as u16, value)?;
        }
    }
    sheet.set_freeze_panes(1, 0)?;
    workbook.save_to_buffer()
}
