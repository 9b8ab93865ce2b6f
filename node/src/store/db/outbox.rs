//! The SMS outbox in the store (issue 15 §4): rows written in the transaction of the local event that asks for a
//! message (so an acknowledged event never loses its message and a crash never writes two), picked by the sender
//! (`node::outbox`), rendered here on the store thread from the case, the hall's template and the row, and settled
//! with the platform's answer.
//!
//! Exactly once across nodes: only a *local* write (a command this node's desk or CLI ran) writes a row; changes
//! from peers, bundles and imports never do, so the event's author is the one sender. The event id is the row's key
//! and the idempotency key the platform sees.

use super::*;
use crate::store::{OutboxJob, OutboxOutcome, OutboxRow, OutboxState};
use zhaowo_crdt::case::SmsRecipient;
use zhaowo_crdt::messages::{SmsKind, render, sms_for};

/// Why a message was given up, shown on the case page (zh-CN).
pub(crate) const NO_KEY_ZH: &str = "本机无权读取手机号（未持有案件密钥，如志愿者电脑登记的案件），未发送";
const PURGED_ZH: &str = "个人信息已清除，未发送";
const CONSENT_GONE_ZH: &str = "诉求人未同意接收短信或未留手机号，未发送";

/// Writes the outbox row of a local event, if the event asks for an SMS and the citizen agreed and gave a phone.
/// Inside the caller's write transaction. A node that cannot read the phone (no case key) writes the row as failed,
/// with the reason, so the case page says why no message went.
pub(crate) fn enqueue(
    conn: &Connection,
    case: &CaseDoc,
    event_id: &zhaowo_crdt::EventId,
    query_code: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let (events, _) = case.events();
    let Some(event) = events.iter().find(|event| &event.id == event_id) else { return Ok(false) };
    let Some((kind, _)) = sms_for(&event.kind) else { return Ok(false) };
    let (state, reason) = match case.sms_recipient() {
        SmsRecipient::Phone(_) => (OutboxState::Queued, ""),
        SmsRecipient::NoKey => (OutboxState::Failed, NO_KEY_ZH),
        SmsRecipient::NoConsent | SmsRecipient::NoPhone | SmsRecipient::Purged => return Ok(false),
    };
    let query_code = query_code.filter(|_| kind == SmsKind::Registered && state == OutboxState::Queued);
    let done_ms = (state != OutboxState::Queued).then_some(now_ms);
    conn.prepare_cached(
        "INSERT INTO outbox (event_id, doc_id, kind, query_code, state, reason, attempts, created_ms, next_ms, done_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8) ON CONFLICT (event_id) DO NOTHING",
    )?
    .execute(params![
        event_id.to_string(),
        case.case_id().as_str(),
        kind.code(),
        query_code,
        state.code(),
        reason,
        now_ms,
        done_ms
    ])?;
    Ok(true)
}

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let kind: String = row.get(2)?;
    let state: String = row.get(3)?;
    Ok(OutboxRow {
        event_id: row.get(0)?,
        case_id: row.get(1)?,
        kind: SmsKind::parse(&kind).unwrap_or(SmsKind::Registered),
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Failed),
        reason: row.get(4)?,
        attempts: row.get::<_, i64>(5)? as u32,
        created_ms: row.get(6)?,
        next_ms: row.get(7)?,
        done_ms: row.get(8)?,
    })
}

const ROW_COLUMNS: &str = "event_id, doc_id, kind, state, reason, attempts, created_ms, next_ms, done_ms";

impl Db {
    /// The outbox rows of one case, oldest first (the case page).
    pub fn outbox_for_case(&self, doc_id: &str) -> Result<Vec<OutboxRow>, ReadError> {
        if !self.projections {
            return Ok(Vec::new());
        }
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM outbox WHERE doc_id = ?1 ORDER BY created_ms, event_id"
        ))?;
        let rows = statement.query_map([doc_id], row_of)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Counts by state (queued, sent, failed): `/metrics` and the tests.
    pub fn outbox_counts(&self) -> Result<[u64; 3], ReadError> {
        let mut counts = [0; 3];
        if !self.projections {
            return Ok(counts);
        }
        let mut statement = self.conn.prepare_cached("SELECT state, count(*) FROM outbox GROUP BY state")?;
        for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
            let (state, count) = row?;
            if let Some(state) = OutboxState::parse(&state) {
                counts[state as usize] = count as u64;
            }
        }
        Ok(counts)
    }

    /// The messages due at `now_ms` (at most `limit`), each rendered from the hall's template with the phone read
    /// from the sealed record. A message that can no longer be built (no template, no key, purged, consent
    /// withdrawn) is settled as failed here, with its reason, and not returned.
    pub fn outbox_due(&mut self, now_ms: i64, hall: &Hall, limit: usize) -> Result<Vec<OutboxJob>, WriteError> {
        if !self.projections {
            return Ok(Vec::new());
        }
        let due: Vec<(OutboxRow, Option<String>)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS}, query_code FROM outbox WHERE state = 'queued' AND next_ms <= ?1
                 ORDER BY next_ms, event_id LIMIT ?2"
            ))?
            .query_map(params![now_ms, limit as i64], |row| Ok((row_of(row)?, row.get(9)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut jobs = Vec::new();
        for (row, query_code) in due {
            match self.render_job(&row, query_code, hall) {
                Ok(job) => jobs.push(job),
                Err(reason) => {
                    self.settle(&row.event_id, OutboxOutcome::Failed(reason), now_ms, false)?;
                }
            }
        }
        Ok(jobs)
    }

    fn render_job(&mut self, row: &OutboxRow, query_code: Option<String>, hall: &Hall) -> Result<OutboxJob, String> {
        let case = self.case_mut(&row.case_id).map_err(|error| format!("读取案件失败：{error}"))?;
        let phone = match case.sms_recipient() {
            SmsRecipient::Phone(phone) => phone,
            SmsRecipient::NoKey => return Err(NO_KEY_ZH.to_owned()),
            SmsRecipient::Purged => return Err(PURGED_ZH.to_owned()),
            SmsRecipient::NoConsent | SmsRecipient::NoPhone => return Err(CONSENT_GONE_ZH.to_owned()),
        };
        let Some(template) = hall.messages.template(row.kind) else {
            return Err(format!("大厅配置中没有「{}」短信模板，未发送", row.kind.label()));
        };
        let view = case.view();
        let (events, _) = case.events();
        let event = events.iter().find(|event| event.id.to_string() == row.event_id);
        let mut values = event.and_then(|event| sms_for(&event.kind)).map(|(_, values)| values).unwrap_or_default();
        values.insert("登记编号", view.reg_no.to_string());
        values.insert("大厅", hall.name.clone());
        let category = hall.categories.get(&view.category).map_or(view.category.clone(), |c| c.name.clone());
        values.insert("诉求类别", category);
        if let Some(code) = query_code {
            values.insert("查询码", code);
        }
        let text = render(template, &values).map_err(|missing| format!("模板中的{{{missing}}}无法填写，未发送"))?;
        Ok(OutboxJob {
            event_id: row.event_id.clone(),
            case_id: row.case_id.clone(),
            kind: row.kind,
            attempts: row.attempts,
            created_ms: row.created_ms,
            phone,
            text,
        })
    }

    /// Records what became of one attempt to post: sent, retry later (with why), or given up (with why). The 查询码
    /// leaves the row once the message is sent or given up.
    pub fn outbox_settle(&mut self, event_id: &str, outcome: OutboxOutcome, now_ms: i64) -> Result<(), WriteError> {
        self.settle(event_id, outcome, now_ms, true)
    }

    /// Settles a row; `attempted`: the outcome is a POST's (counted in `attempts`), not a message that could not
    /// even be built.
    fn settle(
        &mut self,
        event_id: &str,
        outcome: OutboxOutcome,
        now_ms: i64,
        attempted: bool,
    ) -> Result<(), WriteError> {
        let (state, reason, next_ms) = match &outcome {
            OutboxOutcome::Sent => (OutboxState::Sent, String::new(), now_ms),
            OutboxOutcome::Retry { reason, next_ms } => (OutboxState::Queued, reason.clone(), *next_ms),
            OutboxOutcome::Failed(reason) => (OutboxState::Failed, reason.clone(), now_ms),
        };
        let done_ms = (state != OutboxState::Queued).then_some(now_ms);
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = ?2, reason = ?3, next_ms = ?4, done_ms = ?5,
                    attempts = attempts + ?6,
                    query_code = CASE WHEN ?2 = 'queued' THEN query_code ELSE NULL END
                 WHERE event_id = ?1 AND state = 'queued'",
            )?
            .execute(params![event_id, state.code(), reason, next_ms, done_ms, attempted as i64])?;
        Ok(())
    }
}
