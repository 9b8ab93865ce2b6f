//! The working-day calendar: weekends, public holidays and 调休 make-up working days, the State Council's published
//! holiday arrangements, and how far ahead a calendar is known ([`Calendar::coverage`]).
//!
//! A year is *covered* when the calendar holds at least one holiday in it (every State Council arrangement has 元旦 and
//! 春节). Outside the covered years a due date counts Monday to Friday only, which is wrong around every holiday: the
//! node says so (`zhaowo status`, the desk header, `/metrics`) from [`COVERAGE_WARN_DAYS`] before the last covered day.

use crate::hall::Span;
use crate::time::Date;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How long before the last covered day the node starts warning: the State Council publishes the next year's
/// arrangement in November or December, so 60 days before 31 December is when an admin should be watching for it.
pub const COVERAGE_WARN_DAYS: i64 = 60;

/// Farthest a due date search walks: a year of calendar days always holds a working day unless the calendar is broken.
const CALENDAR_SEARCH_DAYS_MAX: i64 = 366;

/// The working-day calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    /// Public holidays that fall on weekdays or weekends (法定节假日及调休放假).
    pub holidays: BTreeSet<Date>,
    /// Weekend days that are working days (调休上班).
    pub make_up_workdays: BTreeSet<Date>,
    /// The end of a working day, in minutes after midnight (17:30 = 1050): a due date is the end of its day.
    pub workday_end_minute: u32,
}

/// How far ahead the calendar knows the holidays, seen from one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// The day the coverage was computed for.
    pub today: Date,
    /// The years the calendar holds holidays for, oldest first.
    pub covered_years: Vec<i32>,
    /// The last day of the run of covered years starting at `today`'s year; `None` when `today`'s year itself is not
    /// covered (due dates already count Monday to Friday only).
    pub last_covered_day: Option<Date>,
    /// Days from `today` to `last_covered_day` (0 when uncovered).
    pub days_left: i64,
    /// Whether to warn: uncovered, or at most [`COVERAGE_WARN_DAYS`] left.
    pub warn: bool,
}

impl Coverage {
    /// The warning in one English line for logs and the CLI, `None` when there is nothing to say.
    pub fn warning(&self) -> Option<String> {
        if !self.warn {
            return None;
        }
        Some(match self.last_covered_day {
            Some(last) => format!(
                "the holiday calendar ends on {last} ({} days left): after it, due dates count Monday to Friday only; \
                 add the next year's State Council arrangement (`zhaowo hall export`, edit, `zhaowo hall import`)",
                self.days_left
            ),
            None => format!(
                "the holiday calendar does not cover {}: due dates count Monday to Friday only; add the year's State \
                 Council arrangement (`zhaowo hall export`, edit, `zhaowo hall import`)",
                self.today.year
            ),
        })
    }

    /// The same warning in Simplified Chinese, for the desk.
    pub fn warning_zh(&self) -> Option<String> {
        if !self.warn {
            return None;
        }
        Some(match self.last_covered_day {
            Some(last) => format!(
                "节假日日历只到 {last}（还剩 {} 天），此后办理时限只按周一至周五计算，请管理员导入下一年的国务院节假日安排。",
                self.days_left
            ),
            None => format!(
                "节假日日历未包含 {} 年，办理时限目前只按周一至周五计算，请管理员导入该年的国务院节假日安排。",
                self.today.year
            ),
        })
    }
}

impl Calendar {
    pub fn is_working_day(&self, date: Date) -> bool {
        if self.make_up_workdays.contains(&date) {
            return true;
        }
        !self.holidays.contains(&date) && date.weekday() <= 5
    }

    /// The instant `span` after `start_ms`.
    pub fn add(&self, start_ms: i64, span: Span) -> i64 {
        match span {
            Span::Hours(hours) => start_ms + i64::from(hours) * 3_600_000,
            Span::WorkingDays(days) => {
                // Day 0 is the day of registration if it is a working day and the desk is still open, else the next
                // working day; the due date is the end of the working day `days` working days after day 0.
                let start = Date::of_ms(start_ms);
                let mut date = if self.is_working_day(start) && start_ms <= start.at_minute_ms(self.workday_end_minute)
                {
                    start
                } else {
                    self.next_working_day(start.add_days(1))
                };
                for _ in 0..days {
                    date = self.next_working_day(date.add_days(1));
                }
                date.at_minute_ms(self.workday_end_minute)
            }
        }
    }

    /// `date` itself if it is a working day, else the first working day after it.
    fn next_working_day(&self, date: Date) -> Date {
        (0..CALENDAR_SEARCH_DAYS_MAX).map(|d| date.add_days(d)).find(|&d| self.is_working_day(d)).unwrap_or(date)
    }

    /// Working days strictly after the date of `from_ms` up to and including the date of `to_ms` (0 if `to` ≤ `from`).
    pub fn working_days_between(&self, from_ms: i64, to_ms: i64) -> u32 {
        let (from, to) = (Date::of_ms(from_ms), Date::of_ms(to_ms));
        let span = (to.to_days() - from.to_days()).clamp(0, CALENDAR_SEARCH_DAYS_MAX * 10);
        (1..=span).filter(|&d| self.is_working_day(from.add_days(d))).count() as u32
    }

    /// The years this calendar holds holidays for.
    pub fn covered_years(&self) -> BTreeSet<i32> {
        self.holidays.iter().map(|date| date.year).collect()
    }

    /// Whether `date`'s year is covered (outside, working days are Monday to Friday).
    pub fn is_covered(&self, date: Date) -> bool {
        self.holidays.iter().any(|holiday| holiday.year == date.year)
    }

    /// How far ahead of `today` the calendar is known.
    pub fn coverage(&self, today: Date) -> Coverage {
        let years = self.covered_years();
        let mut last_year = None;
        let mut year = today.year;
        while years.contains(&year) {
            last_year = Some(year);
            year += 1;
        }
        let last_covered_day = last_year.and_then(|year| Date::new(year, 12, 31));
        let days_left = last_covered_day.map_or(0, |last| last.to_days() - today.to_days());
        Coverage {
            today,
            covered_years: years.into_iter().collect(),
            last_covered_day,
            days_left,
            warn: last_covered_day.is_none() || days_left <= COVERAGE_WARN_DAYS,
        }
    }

    /// The calendar of the State Council's published arrangements ([`PUBLISHED`]), the working day ending at 17:30.
    pub fn state_council() -> Calendar {
        let mut calendar =
            Calendar { holidays: BTreeSet::new(), make_up_workdays: BTreeSet::new(), workday_end_minute: 17 * 60 + 30 };
        for arrangement in PUBLISHED {
            let date = |(month, day): (u8, u8)| Date::new(arrangement.year, month, day).expect("a published date");
            for &(from, to) in arrangement.holidays {
                let (from, to) = (date(from), date(to));
                calendar.holidays.extend((0..=to.to_days() - from.to_days()).map(|d| from.add_days(d)));
            }
            calendar.make_up_workdays.extend(arrangement.make_up_workdays.iter().map(|&day| date(day)));
        }
        calendar
    }
}

/// One year's 部分节假日安排 of the 国务院办公厅: holiday spans (first and last day, inclusive) and 调休 working days.
#[derive(Debug)]
pub struct Arrangement {
    pub year: i32,
    /// The notice it comes from.
    pub source: &'static str,
    /// `((month, day), (month, day))`, first and last day of each holiday, in the notice's order.
    pub holidays: &'static [((u8, u8), (u8, u8))],
    /// `(month, day)` of each weekend day worked (调休上班).
    pub make_up_workdays: &'static [(u8, u8)],
}

/// The published arrangements, checked date by date against the notices. 2027's had not been found published when
/// this was written: a hall adds it with `zhaowo hall import` (the node warns from [`COVERAGE_WARN_DAYS`] before).
pub const PUBLISHED: &[Arrangement] = &[
    Arrangement {
        year: 2025,
        source: "国务院办公厅关于2025年部分节假日安排的通知（国办发明电〔2024〕12号，2024年11月12日）",
        holidays: &[
            ((1, 1), (1, 1)),   // 元旦：1月1日（周三）放假1天，不调休
            ((1, 28), (2, 4)),  // 春节：1月28日（除夕）至2月4日，共8天
            ((4, 4), (4, 6)),   // 清明节：4月4日至6日，共3天
            ((5, 1), (5, 5)),   // 劳动节：5月1日至5日，共5天
            ((5, 31), (6, 2)),  // 端午节：5月31日至6月2日，共3天
            ((10, 1), (10, 8)), // 国庆节、中秋节：10月1日至8日，共8天
        ],
        // 1月26日（周日）、2月8日（周六）、4月27日（周日）、9月28日（周日）、10月11日（周六）上班
        make_up_workdays: &[(1, 26), (2, 8), (4, 27), (9, 28), (10, 11)],
    },
    Arrangement {
        year: 2026,
        source: "国务院办公厅关于2026年部分节假日安排的通知（2025年11月4日）",
        holidays: &[
            ((1, 1), (1, 3)),   // 元旦：1月1日（周四）至3日，共3天
            ((2, 15), (2, 23)), // 春节：2月15日（腊月二十八）至23日，共9天
            ((4, 4), (4, 6)),   // 清明节：4月4日至6日，共3天
            ((5, 1), (5, 5)),   // 劳动节：5月1日至5日，共5天
            ((6, 19), (6, 21)), // 端午节：6月19日至21日，共3天
            ((9, 25), (9, 27)), // 中秋节：9月25日至27日，共3天
            ((10, 1), (10, 7)), // 国庆节：10月1日至7日，共7天
        ],
        // 1月4日（周日）、2月14日（周六）、2月28日（周六）、5月9日（周六）、9月20日（周日）、10月10日（周六）上班
        make_up_workdays: &[(1, 4), (2, 14), (2, 28), (5, 9), (9, 20), (10, 10)],
    },
];
