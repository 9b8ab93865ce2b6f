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
