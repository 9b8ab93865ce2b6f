//! The SMS sender (issue 15 §4): one tokio task per node that has an SMS platform configured (`[sms]` in
//! `node.toml`), started by `Node::spawn`. It asks the store for the messages due (`Store::outbox_due`: rendered
//! from the hall's templates, the phone read from the sealed record), posts each to the platform as JSON, and settles
//! it: sent, retried with capped exponential backoff (platform down, 5xx, 408/429, timeout), or given up with the
//! reason the case page shows (another 4xx, or [`SMS_GIVE_UP_AFTER_MS`] without success).
//!
//! Exactly once: only the node that authored an event has its outbox row (see `store::db::outbox`), and the row is
//! written in the event's transaction. A POST whose answer is lost (timeout, crash before the row is settled) is sent
//! again with the same idempotency key (the event id, in the body and the `Idempotency-Key` header): the platform
//! must dedupe on it. Nothing personal is logged: event ids, kinds, attempts and status codes only.
//!
//! The body: `{"idempotency_key": EVENT_ID, "kind": "registered", "case_id": CASE_ID, "phone": DIGITS, "text": TEXT}`.
//! Any 2xx is success.

use crate::config::SmsEndpoint;
use crate::live::Live;
use crate::store::{OutboxJob, OutboxOutcome, Store};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long one POST may take, connect to last byte: a platform that has not answered by then is treated as down
/// (and gets the message again with the same idempotency key).
pub const SMS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay; each later one doubles, up to [`SMS_RETRY_MAX`].
pub const SMS_RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest wait between two attempts: a hall offline for a day is retried every ten minutes, and a message goes
/// out at most ten minutes after the platform is back.
pub const SMS_RETRY_MAX: Duration = Duration::from_secs(600);
/// A message not sent within three days is given up (shown as failed): a receipt or a 待补充 notice that late misleads
/// more than it helps; the clerk phones instead.
pub const SMS_GIVE_UP_AFTER_MS: i64 = 3 * 24 * 3600 * 1000;
/// Messages taken from the store per round: bounds what is held in memory (each is one SMS).
pub const SMS_BATCH_MAX: usize = 16;
/// Bytes of the platform's answer read at most (only the status code counts).
pub const SMS_RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// How often the sender looks for messages due (also woken by every local write).
pub const SMS_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The sender's timing; [`OutboxTiming::recommended`] is what `zhaowo run` uses, tests shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxTiming {
    pub request_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub give_up_after_ms: i64,
    pub poll_interval: Duration,
}

impl OutboxTiming {
    pub fn recommended() -> OutboxTiming {
        OutboxTiming {
            request_timeout: SMS_REQUEST_TIMEOUT,
            retry_min: SMS_RETRY_MIN,
            retry_max: SMS_RETRY_MAX,
            give_up_after_ms: SMS_GIVE_UP_AFTER_MS,
            poll_interval: SMS_POLL_INTERVAL,
        }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failed ones: `retry_min × 2^(attempts-1)`, capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
        self.retry_min.saturating_mul(factor).min(self.retry_max)
    }
}

/// What one POST gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Accepted,
    /// Worth another try: the reason for the case page.
    Transient(String),
    /// The platform refused this message.
    Refused(String),
}

/// Posts one message. Never logs or returns the phone or the text.
async fn post(endpoint: &SmsEndpoint, job: &OutboxJob, timeout: Duration) -> Attempt {
    let body = serde_json::json!({
        "idempotency_key": job.event_id,
        "kind": job.kind.code(),
        "case_id": job.case_id,
        "phone": job.phone,
        "text": job.text,
    });
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|error| Attempt::Transient(format!("无法连接短信平台（{}）", error.kind())))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Attempt::Transient("与短信平台的连接失败".to_owned()))?;
        let connection = tokio::spawn(connection);
        let host =
            if endpoint.port == 80 { endpoint.host.clone() } else { format!("{}:{}", endpoint.host, endpoint.port) };
        let mut request = axum::http::Request::post(endpoint.path.as_str())
            .header(axum::http::header::HOST, host)
            .header(axum::http::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header("Idempotency-Key", job.event_id.as_str());
        if let Some(token) = &endpoint.token {
            request = request.header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(body)).map_err(|_| Attempt::Refused("短信请求无法构造".to_owned()))?;
        let response =
            sender.send_request(request).await.map_err(|_| Attempt::Transient("短信平台未返回应答".to_owned()));
        let result = match response {
            Ok(response) => {
                let status = response.status();
                // Read (and drop) a bounded answer so the platform sees its response taken; its content is not used.
                drop(Limited::new(response.into_body(), SMS_RESPONSE_BYTES_MAX).collect().await);
                Ok(status)
            }
            Err(error) => Err(error),
        };
        connection.abort();
        result
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Attempt::Transient(format!("短信平台 {} 秒内未应答", timeout.as_secs_f32().ceil() as u64)),
        Ok(Err(attempt)) => attempt,
        Ok(Ok(status)) if status.is_success() => Attempt::Accepted,
        Ok(Ok(status)) if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 => {
            Attempt::Transient(format!("短信平台暂时不可用（HTTP {}）", status.as_u16()))
        }
        Ok(Ok(status)) => Attempt::Refused(format!("短信平台拒收（HTTP {}）", status.as_u16())),
    }
}

/// Sends the messages due until `stop` turns true. Runs on the node's runtime (`Node::spawn`).
pub async fn run(
    store: Arc<Store>,
    live: Live,
    endpoint: SmsEndpoint,
    timing: OutboxTiming,
    mut stop: watch::Receiver<bool>,
) {
    let mut wake = store.subscribe();
    // Host and port only: a URL's query could hold a credential.
    tracing::info!(host = %endpoint.host, port = endpoint.port, "SMS outbox started");
    loop {
        if *stop.borrow() {
            return;
        }
        let hall = Arc::new(live.hall().hall.clone());
        let jobs = match store.outbox_due(crate::home::now_ms(), hall, SMS_BATCH_MAX).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "reading the SMS outbox failed; retrying");
                Vec::new()
            }
        };
        let full = jobs.len() == SMS_BATCH_MAX;
        for job in jobs {
            if *stop.borrow() {
                return;
            }
            // Shutdown does not wait for a slow platform: the row stays queued and goes again (same key) at start.
            let attempt = tokio::select! {
                attempt = post(&endpoint, &job, timing.request_timeout) => attempt,
                _ = stop.changed() => return,
            };
            let now_ms = crate::home::now_ms();
            let attempts = job.attempts + 1;
            let outcome = match attempt {
                Attempt::Accepted => OutboxOutcome::Sent,
                Attempt::Refused(reason) => OutboxOutcome::Failed(reason),
                Attempt::Transient(reason) if now_ms - job.created_ms > timing.give_up_after_ms => {
                    OutboxOutcome::Failed(format!(
                        "{reason}；超过 {} 小时未能发送，已放弃",
                        timing.give_up_after_ms / 3_600_000
                    ))
                }
                Attempt::Transient(reason) => {
                    let delay = timing.backoff(attempts);
                    OutboxOutcome::Retry { reason, next_ms: now_ms + delay.as_millis() as i64 }
                }
            };
            match &outcome {
                OutboxOutcome::Sent => {
                    tracing::info!(event_id = %job.event_id, kind = job.kind.code(), attempts, "SMS sent")
                }
                OutboxOutcome::Retry { next_ms, .. } => tracing::info!(
                    event_id = %job.event_id, kind = job.kind.code(), attempts, retry_in_ms = next_ms - now_ms,
                    "SMS platform unavailable; retrying later"
                ),
                OutboxOutcome::Failed(_) => {
                    tracing::warn!(event_id = %job.event_id, kind = job.kind.code(), attempts, "SMS given up")
                }
            }
            if let Err(error) = store.outbox_settle(&job.event_id, outcome, now_ms).await {
                tracing::warn!(%error, event_id = %job.event_id, "recording the SMS outcome failed");
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(timing.poll_interval) => {}
            _ = wake.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let timing = OutboxTiming::recommended();
        let delays: Vec<u64> = (1..=10).map(|attempts| timing.backoff(attempts).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(timing.backoff(u32::MAX), SMS_RETRY_MAX);
    }
}
