//! The hall: working-day calendar with holidays and 调休, due dates, validation, and the admin-only hall document.
use automerge::ActorId;
use zhaowo_crdt::Hall;
use zhaowo_crdt::hall::{HallDoc, HallError, Span};
use zhaowo_crdt::model::{Nature, Priority, Role};
use zhaowo_crdt::time::{Date, format_local_minute};

fn at(y: i32, m: u8, d: u8, hour: u32, minute: u32) -> i64 {
    Date::new(y, m, d).unwrap().at_minute_ms(hour * 60 + minute)
}

#[test]
fn working_days_skip_weekends_and_holidays_and_count_make_up_days() {
    let hall = Hall::jiangan_default();
    let cal = &hall.calendar;
    // 2026-02-13 is the Friday before the Spring Festival; 02-14 (Saturday) is a 调休 working day; 02-15..23 are off.
    assert!(cal.is_working_day(Date::new(2026, 2, 14).unwrap()));
    assert!(!cal.is_working_day(Date::new(2026, 2, 16).unwrap()));
    assert!(!cal.is_working_day(Date::new(2026, 3, 1).unwrap()), "an ordinary Sunday");
    let due = |start: i64, days: u16| format_local_minute(cal.add(start, Span::WorkingDays(days)));
    // Friday morning + 1 working day = the make-up Saturday; + 2 = the Tuesday after the holiday (02-24).
    assert_eq!(due(at(2026, 2, 13, 10, 0), 1), "2026-02-14 17:30");
    assert_eq!(due(at(2026, 2, 13, 10, 0), 2), "2026-02-24 17:30");
    // Same day when 0, next working day when registered after hours or on a holiday.
    assert_eq!(due(at(2026, 3, 2, 9, 0), 0), "2026-03-02 17:30");
    assert_eq!(due(at(2026, 3, 2, 18, 0), 0), "2026-03-03 17:30");
    assert_eq!(due(at(2026, 10, 3, 9, 0), 0), "2026-10-08 17:30");
    // 加急: calendar hours.
    assert_eq!(format_local_minute(cal.add(at(2026, 3, 2, 9, 0), Span::Hours(24))), "2026-03-03 09:00");
    assert_eq!(cal.working_days_between(at(2026, 2, 13, 9, 0), at(2026, 2, 25, 9, 0)), 3);
}

#[test]
fn due_dates_follow_nature_and_priority() {
    let hall = Hall::jiangan_default();
    let registered = at(2026, 3, 2, 9, 0);
    let (response, solve) = hall.due_dates(Nature::Suggestion, Priority::Normal, registered);
    assert_eq!(
        (format_local_minute(response), format_local_minute(solve)),
        ("2026-03-03 17:30".into(), "2026-03-23 17:30".into())
    );
    let (_, urgent) = hall.due_dates(Nature::Suggestion, Priority::Urgent, registered);
    assert_eq!(format_local_minute(urgent), "2026-03-03 09:00");
}

#[test]
fn hall_configuration_is_validated() {
    let mut hall = Hall::jiangan_default();
    hall.validate().unwrap();
    hall.categories.get_mut("BDC").unwrap().co_units.push("NOPE".into());
    assert_eq!(hall.validate(), Err(HallError::UnknownUnit { category: "BDC".into(), unit: "NOPE".into() }));
    let mut hall = Hall::jiangan_default();
    hall.time_limits.pop();
    assert!(matches!(hall.validate(), Err(HallError::MissingTimeLimit { .. })));
    let mut hall = Hall::jiangan_default();
    hall.calendar.holidays.insert(Date::new(2026, 2, 14).unwrap());
    assert!(matches!(hall.validate(), Err(HallError::CalendarClash(_))));
    let mut hall = Hall::jiangan_default();
    hall.windows.insert("bad code!".into(), hall.windows["BBC01"].clone());
    assert!(matches!(hall.validate(), Err(HallError::InvalidCode { kind: "window", .. })));
}

#[test]
fn only_admins_change_the_hall_and_concurrent_edits_of_different_keys_merge() {
    let hall = Hall::jiangan_default();
    let now = at(2026, 3, 2, 9, 0);
    assert_eq!(
        HallDoc::create(ActorId::from(vec![1; 16]), Role::Window, "张敏", now, &hall).unwrap_err(),
        HallError::NotAdmin(Role::Window)
    );
    let mut a = HallDoc::create(ActorId::from(vec![1; 16]), Role::Admin, "管理员甲", now, &hall).unwrap();
    let bytes = a.automerge_mut().save();
    let mut b = HallDoc::load(&bytes, ActorId::from(vec![2; 16])).unwrap();
    // Admin A reroutes 户政 to 综合; admin B, offline, adds a holiday.
    let mut edit_a = hall.clone();
    edit_a.categories.get_mut("HUZHENG").unwrap().lead_unit = "ZH".into();
    a.update(Role::Admin, "管理员甲", now + 1, &edit_a, "户政改由综合窗口主办").unwrap();
    let mut edit_b = hall.clone();
    edit_b.calendar.holidays.insert(Date::new(2026, 12, 31).unwrap());
    b.update(Role::Admin, "管理员乙", now + 2, &edit_b, "增加假日").unwrap();
    assert_eq!(b.update(Role::Volunteer, "小周", now + 3, &edit_b, "x"), Err(HallError::NotAdmin(Role::Volunteer)));
    a.automerge_mut().merge(b.automerge_mut()).unwrap();
    let merged = a.hall().unwrap();
    assert_eq!(merged.categories["HUZHENG"].lead_unit, "ZH");
    assert!(merged.calendar.holidays.contains(&Date::new(2026, 12, 31).unwrap()));
    assert_eq!(a.history().len(), 3, "creation plus both edits are in the history");
    assert!(matches!(HallDoc::load(b"junk", ActorId::from(vec![3; 16])), Err(HallError::Unreadable(_))));
}

#[test]
fn the_published_arrangements_are_the_notices_day_by_day() {
    let cal = zhaowo_crdt::hall::Calendar::state_council();
    let day = |y, m, d| Date::new(y, m, d).unwrap();
    // 2025: 元旦 1 day; 春节 01-28..02-04 (8); 清明 04-04..06 (3); 劳动节 05-01..05 (5); 端午 05-31..06-02 (3);
    // 国庆/中秋 10-01..08 (8): 28 days. Make-up Sundays/Saturdays: 01-26, 02-08, 04-27, 09-28, 10-11.
    // 2026: 元旦 3, 春节 9, 清明 3, 劳动节 5, 端午 3, 中秋 3, 国庆 7: 33 days; make-up 01-04, 02-14, 02-28, 05-09,
    // 09-20, 10-10.
    let count = |year| cal.holidays.iter().filter(|d| d.year == year).count();
    println!("holidays: 2025 {}, 2026 {}; make-up days {}", count(2025), count(2026), cal.make_up_workdays.len());
    assert_eq!((count(2025), count(2026)), (28, 33));
    let make_up: Vec<String> = cal.make_up_workdays.iter().map(ToString::to_string).collect();
    assert_eq!(
        make_up,
        [
            "2025-01-26",
            "2025-02-08",
            "2025-04-27",
            "2025-09-28",
            "2025-10-11",
            "2026-01-04",
            "2026-02-14",
            "2026-02-28",
            "2026-05-09",
            "2026-09-20",
            "2026-10-10"
        ]
    );
    for make_up in &cal.make_up_workdays {
        assert!(make_up.weekday() >= 6, "{make_up} is a weekend day worked");
    }
    for (first, last) in [
        (day(2025, 1, 1), day(2025, 1, 1)),
        (day(2025, 1, 28), day(2025, 2, 4)),
        (day(2025, 5, 31), day(2025, 6, 2)),
        (day(2025, 10, 1), day(2025, 10, 8)),
        (day(2026, 2, 15), day(2026, 2, 23)),
        (day(2026, 10, 1), day(2026, 10, 7)),
    ] {
        assert!(cal.holidays.contains(&first) && cal.holidays.contains(&last), "{first}..{last}");
        assert!(!cal.holidays.contains(&first.add_days(-1)) && !cal.holidays.contains(&last.add_days(1)));
    }
    // The weekday notes of the notices: 2025-01-28 is a Tuesday (除夕), 2026-10-01 a Thursday.
    assert_eq!((day(2025, 1, 28).weekday(), day(2026, 10, 1).weekday()), (2, 4));
    let hall = Hall::jiangan_default();
    assert_eq!(hall.calendar, cal, "the demo hall ships the same calendar");
}

#[test]
fn coverage_warns_sixty_days_before_the_last_covered_day_and_outside_it() {
    let cal = zhaowo_crdt::hall::Calendar::state_council();
    let day = |y, m, d| Date::new(y, m, d).unwrap();
    let early = cal.coverage(day(2025, 6, 1));
    assert_eq!(early.last_covered_day, Some(day(2026, 12, 31)), "2025 and 2026 make one run");
    assert!(!early.warn && early.warning().is_none());
    let before = cal.coverage(day(2026, 11, 1));
    assert_eq!((before.days_left, before.warn), (60, true), "60 days before warns");
    assert_eq!(cal.coverage(day(2026, 10, 31)).warn, false, "61 days before does not");
    // Today is 2026-12-02: 29 days left, a warning in both languages.
    let today = cal.coverage(day(2026, 12, 2));
    println!("coverage on 2026-12-02: {today:?}");
    assert_eq!((today.days_left, today.warn), (29, true));
    assert!(today.warning().unwrap().contains("2026-12-31"));
    assert!(today.warning_zh().unwrap().contains("国务院节假日安排"));
    let after = cal.coverage(day(2027, 1, 4));
    assert_eq!((after.last_covered_day, after.days_left, after.warn), (None, 0, true));
    assert!(after.warning().unwrap().contains("does not cover 2027"));
    assert!(!cal.is_covered(day(2027, 2, 10)) && cal.is_covered(day(2026, 2, 10)));
}

#[test]
fn a_due_date_across_the_covered_year_boundary_counts_monday_to_friday_after_it() {
    let hall = Hall::jiangan_default();
    let cal = &hall.calendar;
    // Registered Monday 2026-12-28 10:00, 15 working days (建议): 28, 29, 30, 31 Dec are working days of 2026 (day 0
    // is the 28th); in 2027 nothing is known, so 2027-01-01 (a Friday, 元旦 every year) counts as a working day.
    let due = format_local_minute(cal.add(at(2026, 12, 28, 10, 0), Span::WorkingDays(15)));
    println!("15 working days from 2026-12-28 10:00: {due} (2027 uncovered: Monday-Friday only)");
    assert_eq!(due, "2027-01-18 17:30");
    assert!(cal.is_working_day(Date::new(2027, 1, 1).unwrap()), "uncovered: 元旦 2027 is not known");
    // Once 2027's arrangement is imported with 元旦 on 2027-01-01, the same case is due one working day later.
    let mut with_2027 = hall.clone();
    with_2027.calendar.holidays.insert(Date::new(2027, 1, 1).unwrap());
    with_2027.validate().unwrap();
    let due = format_local_minute(with_2027.calendar.add(at(2026, 12, 28, 10, 0), Span::WorkingDays(15)));
    assert_eq!(due, "2027-01-19 17:30");
    assert_eq!(with_2027.calendar.coverage(Date::new(2026, 12, 2).unwrap()).last_covered_day, Date::new(2027, 12, 31));
}

#[test]
fn a_new_hall_starts_from_a_neutral_template() {
    let hall = Hall::template("某区政务服务中心", "W01", "一号窗口");
    hall.validate().unwrap();
    println!(
        "template: {} windows, {} units, {} categories, {} time limits, {} holidays",
        hall.windows.len(),
        hall.units.len(),
        hall.categories.len(),
        hall.time_limits.len(),
        hall.calendar.holidays.len()
    );
    assert_eq!(hall.windows.keys().collect::<Vec<_>>(), ["W01"]);
    assert!(hall.units.keys().all(|unit| unit == "ZH") && hall.categories.len() == 1);
    assert!(!hall.categories.contains_key("HUZHENG") && !hall.units.contains_key("GA"), "no Jiang'an units");
}

#[test]
fn every_new_rule_of_a_hall_is_checked() {
    let cases: Vec<(&str, Box<dyn Fn(&mut Hall)>, fn(&HallError) -> bool)> = vec![
        (
            "make-up weekday",
            Box::new(|h| {
                h.calendar.make_up_workdays.insert(Date::new(2026, 3, 2).unwrap());
            }),
            |e| matches!(e, HallError::MakeUpNotWeekend(_)),
        ),
        ("empty name", Box::new(|h| h.name = " ".into()), |e| matches!(e, HallError::InvalidHallName { .. })),
        ("no units", Box::new(|h| h.units.clear()), |e| {
            matches!(e, HallError::UnknownUnit { .. } | HallError::Empty(_))
        }),
        ("no categories", Box::new(|h| h.categories.clear()), |e| *e == HallError::Empty("categories")),
        (
            "duplicate limit",
            Box::new(|h| {
                let first = h.time_limits[0].clone();
                h.time_limits.push(first);
            }),
            |e| matches!(e, HallError::DuplicateTimeLimit { .. }),
        ),
        ("zero hours", Box::new(|h| h.time_limits[1].response = Span::Hours(0)), |e| {
            matches!(e, HallError::InvalidTimeLimit { which: "response", .. })
        }),
        ("too many days", Box::new(|h| h.time_limits[0].solve = Span::WorkingDays(251)), |e| {
            matches!(e, HallError::InvalidTimeLimit { which: "solve", .. })
        }),
    ];
    for (what, edit, expected) in &cases {
        let mut hall = Hall::jiangan_default();
        edit(&mut hall);
        let error = hall.validate().unwrap_err();
        assert!(expected(&error), "{what}: {error}");
    }
    println!("{} kinds of bad hall refused", cases.len());
}
