//! Time without a clock: civil dates, the hall's UTC+08:00 wall time, and the hybrid logical clock of events.
//!
//! `zhaowo-crdt` never reads the clock. Callers pass `now_ms` (milliseconds since the Unix epoch, UTC). China has one
//! time zone and no daylight saving, so local time is UTC+8 everywhere in this crate. Date arithmetic is Howard Hinnant's
//! `days_from_civil`, which is exact for the proleptic Gregorian calendar.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;
/// The hall's offset from UTC: China Standard Time.
pub const OFFSET_MS: i64 = 8 * 3_600_000;

/// A calendar date (local, UTC+8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// Days since 1970-01-01.
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The local date of an instant.
    pub fn of_ms(ms: i64) -> Date {
        Date::from_days((ms + OFFSET_MS).div_euclid(DAY_MS))
    }

    /// The instant at `minute` minutes after local midnight of this date.
    pub fn at_minute_ms(self, minute: u32) -> i64 {
        self.to_days() * DAY_MS - OFFSET_MS + i64::from(minute) * 60_000
    }

    pub fn add_days(self, n: i64) -> Date {
        Date::from_days(self.to_days() + n)
    }

    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub fn weekday(self) -> u8 {
        ((self.to_days() + 3).rem_euclid(7) + 1) as u8
    }

    pub fn parse(text: &str) -> Option<Date> {
        let mut parts = text.split('-');
        let year = parts.next()?.parse().ok()?;
        let month = parts.next()?.parse().ok()?;
        let day = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Date::new(year, month, day)
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl From<Date> for String {
    fn from(date: Date) -> String {
        date.to_string()
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(text: String) -> Result<Date, String> {
        Date::parse(&text).ok_or_else(|| format!("invalid date `{text}`, expected YYYY-MM-DD"))
    }
}

/// Formats an instant as RFC 3339 in the hall's zone, e.g. `2026-03-02T09:30:00+08:00` (Open311's datetime form).
pub fn format_rfc3339(ms: i64) -> String {
    let date = Date::of_ms(ms);
    let ms_of_day = (ms + OFFSET_MS).rem_euclid(DAY_MS);
    let secs = ms_of_day / 1000;
    format!("{date}T{:02}:{:02}:{:02}+08:00", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Formats an instant as `2026-03-02 09:30` local time, the form printed in the register book.
pub fn format_local_minute(ms: i64) -> String {
    let date = Date::of_ms(ms);
    let minutes = (ms + OFFSET_MS).rem_euclid(DAY_MS) / 60_000;
    format!("{date} {:02}:{:02}", minutes / 60, minutes % 60)
}

/// A hybrid logical clock reading: wall milliseconds plus a counter for events within the same millisecond.
///
/// Events are ordered by `(hlc, node, event id)`. The HLC only orders; SLA clocks and statistics use the event's
/// `wall_ms`, the time the action was really performed (DOMAIN.md §6.3, clock hygiene).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Hlc {
    pub wall_ms: i64,
    pub counter: u32,
}

impl Hlc {
    /// The reading for a new event authored at `now_ms` after every event in `seen`.
    pub fn next(now_ms: i64, seen: impl IntoIterator<Item = Hlc>) -> Hlc {
        let max_seen = seen.into_iter().max().unwrap_or_default();
        if now_ms > max_seen.wall_ms {
            Hlc { wall_ms: now_ms, counter: 0 }
        } else {
            Hlc { wall_ms: max_seen.wall_ms, counter: max_seen.counter.saturating_add(1) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_over_four_centuries() {
        let start = Date::new(1900, 1, 1).unwrap().to_days();
        for days in start..start + 146_097 {
            let date = Date::from_days(days);
            assert_eq!(date.to_days(), days);
            assert!(Date::new(date.year, date.month, date.day).is_some());
        }
        assert_eq!(Date::new(1970, 1, 1).unwrap().to_days(), 0);
        assert_eq!(Date::new(2026, 11, 25).unwrap().weekday(), 3);
        assert_eq!(Date::new(2024, 2, 30), None);
        assert_eq!(Date::parse("2026-02-29"), None);
        assert_eq!(Date::parse("2028-02-29"), Date::new(2028, 2, 29));
    }

    #[test]
    fn local_time_is_utc_plus_eight() {
        // 2026-01-01T00:30+08:00 is 2025-12-31T16:30Z.
        let ms = Date::new(2026, 1, 1).unwrap().at_minute_ms(30);
        assert_eq!(Date::of_ms(ms), Date::new(2026, 1, 1).unwrap());
        assert_eq!(format_rfc3339(ms), "2026-01-01T00:30:00+08:00");
        assert_eq!(format_local_minute(ms), "2026-01-01 00:30");
    }

    #[test]
    fn hlc_moves_past_what_it_has_seen() {
        let seen = [Hlc { wall_ms: 100, counter: 2 }];
        assert_eq!(Hlc::next(50, seen), Hlc { wall_ms: 100, counter: 3 });
        assert_eq!(Hlc::next(200, seen), Hlc { wall_ms: 200, counter: 0 });
        assert_eq!(Hlc::next(5, []), Hlc { wall_ms: 5, counter: 0 });
    }
}
