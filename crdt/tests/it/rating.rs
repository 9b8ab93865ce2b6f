//! 好差评 (issue 15 §1–§2): the citizen's rating (one per round, changeable for `RATING_CHANGE_DAYS`), the 差评 task
//! it opens for the 督查科 (核实 → 整改 → 反馈, due in the hall's working days), 申诉复核, and 回访 without a rating
//! counted as 未评价. Every refusal leaves the document as it was.
use crate::support::*;
use zhaowo_crdt::limits::{RATING_CHANGE_DAYS, RATING_COMMENT_CHARS_MAX};
use zhaowo_crdt::model::*;
use zhaowo_crdt::time::DAY_MS;
use zhaowo_crdt::*;

/// The cast: the window that registers and answers, the 督查科, and the citizen rating on the lookup page (served by
/// the window's PC, which holds the case key).
struct Cast {
    window: Node,
    supervision: Node,
    citizen: Node,
}

fn cast() -> Cast {
    Cast {
        window: Node::new("BBC01", "张敏", Role::Window, 0),
        supervision: Node::new("DC01", "刘督查", Role::Supervision, 2),
        citizen: Node::new("BBC01", "citizen", Role::Citizen, 7),
    }
}

/// Every node acts after `at` (their clocks never go back).
fn sync_clocks(cast: &mut Cast) {
    let now = cast.window.now_ms.max(cast.supervision.now_ms).max(cast.citizen.now_ms);
    for node in [&mut cast.window, &mut cast.supervision, &mut cast.citizen] {
        node.now_ms = now;
    }
}

/// A case answered (已答复) by the window.
fn answered_case(hall: &Hall, cast: &mut Cast) -> CaseDoc {
    let (mut doc, _, _) = cast.window.register(hall, registration("BDC", Nature::Help, "房屋登记信息有误"));
    for command in [
        Command::Dispatch { lead_unit: None, co_units: None, due_ms: None },
        Command::SignIn { assignee: "王工".into() },
        Command::Resolve { result: CaseResult::Done, reply: "已更正登记信息".into() },
    ] {
        cast.window.apply(&mut doc, hall, command).unwrap();
    }
    sync_clocks(cast);
    doc
}

fn rate(level: Satisfaction, reasons: &[BadReviewReason], comment: &str) -> Command {
    Command::Rate { level, reasons: reasons.to_vec(), comment: comment.to_owned() }
}

/// Applies a command that must be refused, and checks the document did not change.
fn refused(node: &mut Node, doc: &mut CaseDoc, hall: &Hall, command: Command) -> CommandError {
    let heads = doc.automerge_mut().get_heads();
    let error = node.apply(doc, hall, command).expect_err("refused");
    assert_eq!(doc.automerge_mut().get_heads(), heads, "a refused command changed the document: {error}");
    error
}

#[test]
fn a_citizen_rates_once_per_round_and_may_change_it_within_the_period() {
    let hall = Hall::jiangan_default();
    let mut cast = cast();
    let mut doc = answered_case(&hall, &mut cast);
    let mut refusals = 0;
    // Staff may not rate for the citizen (the desk's 回访 records what the citizen said instead).
    for node in [&mut cast.window, &mut cast.supervision] {
        let error = refused(node, &mut doc, &hall, rate(Satisfaction::VerySatisfied, &[], ""));
        assert!(matches!(error, CommandError::Role { command: CommandKind::Rate, .. }), "{error}");
        refusals += 1;
    }
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::Satisfied, &[], "")).unwrap();
    assert_eq!(doc.view().rating_score(), Some(4));
    // The same rating again (a replayed form) changes nothing.
    let error = refused(&mut cast.citizen, &mut doc, &hall, rate(Satisfaction::Satisfied, &[], ""));
    assert!(matches!(error, CommandError::NoChange(_)), "{error}");
    refusals += 1;
    // A change within the period.
    cast.citizen.now_ms += 3 * DAY_MS;
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::VerySatisfied, &[], "窗口很耐心")).unwrap();
    let view = doc.view();
    let rating = view.rating.as_ref().unwrap();
    assert_eq!((rating.level, rating.changes, rating.round), (Satisfaction::VerySatisfied, 1, 0));
    assert!(view.bad_reviews.is_empty());
    // After the period the rating stands.
    cast.citizen.now_ms = rating.first_at_ms + RATING_CHANGE_DAYS * DAY_MS + 1;
    assert!(!view.citizen_may_rate(cast.citizen.now_ms + 60_000));
    let error = refused(&mut cast.citizen, &mut doc, &hall, rate(Satisfaction::Basic, &[], ""));
    assert_eq!(error, CommandError::RatingPeriodOver { days: RATING_CHANGE_DAYS });
    assert_eq!(error.zh(), "评价提交已超过 7 天，不能再修改");
    refusals += 1;
    // 重办 opens a new round: the rating after it is the case's rating.
    sync_clocks(&mut cast);
    cast.supervision.apply(&mut doc, &hall, Command::Reopen { reason: "群众反映仍有错误".into() }).unwrap();
    let error = refused(&mut cast.citizen, &mut doc, &hall, rate(Satisfaction::Basic, &[], ""));
    assert!(matches!(error, CommandError::State { status: Status::InProgress, .. }), "{error}");
    refusals += 1;
    sync_clocks(&mut cast);
    let reply = Command::Resolve { result: CaseResult::Done, reply: "已再次核对更正".into() };
    cast.window.apply(&mut doc, &hall, reply).unwrap();
    sync_clocks(&mut cast);
    assert!(doc.view().citizen_may_rate(cast.citizen.now_ms + 60_000));
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::Basic, &[], "")).unwrap();
    let view = doc.view();
    let rating = view.rating.as_ref().unwrap();
    assert_eq!((rating.level, rating.round, rating.changes), (Satisfaction::Basic, 1, 0));
    assert_eq!(view.rating_score(), Some(3));
    let ratings = view.timeline.iter().filter(|entry| entry.label == "好差评").count();
    println!(
        "好差评: {ratings} ratings over 2 rounds stored, {refusals} refused (staff ×2, replay, after {RATING_CHANGE_DAYS} \
         days, before the new answer); the case's score is the latest round's: {}",
        rating.level.score()
    );
}

#[test]
fn a_bad_rating_opens_a_task_the_supervision_follows_through_in_order_and_in_time() {
    let mut hall = Hall::jiangan_default();
    hall.bad_review_working_days = 3;
    let mut cast = cast();
    let mut doc = answered_case(&hall, &mut cast);
    let reasons = [BadReviewReason::Runs, BadReviewReason::Unresolved];
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::Dissatisfied, &reasons, "跑了三趟")).unwrap();
    let view = doc.view();
    let task = view.open_bad_review().expect("a 差评 opens a task");
    let rated_at = view.rating.as_ref().unwrap().at_ms;
    assert_eq!(task.due_ms, hall.calendar.add(rated_at, zhaowo_crdt::hall::Span::WorkingDays(3)));
    // Stored sorted, whatever order they were ticked in.
    assert_eq!(task.reasons, vec![BadReviewReason::Unresolved, BadReviewReason::Runs]);
    assert_eq!(task.stage_zh(), "待核实");
    assert!(!view.bad_review_overdue(task.due_ms) && view.bad_review_overdue(task.due_ms + 1));
    let mut refusals = 0;
    // The window may not record the 督查科's steps; steps go in order.
    let step = |step, text: &str| Command::BadReviewStep { step, text: text.to_owned() };
    let error = refused(&mut cast.window, &mut doc, &hall, step(ReviewStep::Verify, "已核实"));
    assert!(matches!(error, CommandError::Role { .. }), "{error}");
    let error = refused(&mut cast.supervision, &mut doc, &hall, step(ReviewStep::Rectify, "已整改"));
    assert_eq!(error, CommandError::ReviewStepOrder { expected: ReviewStep::Verify });
    let error = refused(&mut cast.supervision, &mut doc, &hall, step(ReviewStep::Verify, " "));
    assert!(matches!(error, CommandError::Empty { .. }), "{error}");
    refusals += 3;
    // A citizen changing 不满意 to 非常不满意 keeps the one task.
    cast.citizen.now_ms += 60_000;
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::VeryDissatisfied, &reasons, "跑了三趟")).unwrap();
    assert_eq!(doc.view().bad_reviews.len(), 1);
    sync_clocks(&mut cast);
    for (kind, text) in [
        (ReviewStep::Verify, "经核实，窗口未一次性告知所需材料"),
        (ReviewStep::Rectify, "已修订办事指南并对窗口人员培训"),
        (ReviewStep::Feedback, "已电话向您致歉，办事指南已更新，欢迎监督"),
    ] {
        cast.supervision.apply(&mut doc, &hall, step(kind, text)).unwrap();
    }
    let view = doc.view();
    let task = &view.bad_reviews[0];
    assert!(!task.is_open() && !view.bad_review_overdue(i64::MAX));
    assert_eq!(task.stage_zh(), "已反馈");
    assert_eq!(task.feedback().unwrap().text, "已电话向您致歉，办事指南已更新，欢迎监督");
    let error = refused(&mut cast.supervision, &mut doc, &hall, step(ReviewStep::Feedback, "再次反馈"));
    assert_eq!(error, CommandError::NoBadReview);
    refusals += 1;
    // A good rating opens nothing; a 差评 changed to good before any step cancels its task.
    let mut other = answered_case(&hall, &mut cast);
    cast.citizen.apply(&mut other, &hall, rate(Satisfaction::VeryDissatisfied, &[BadReviewReason::Slow], "")).unwrap();
    cast.citizen.apply(&mut other, &hall, rate(Satisfaction::Satisfied, &[], "后来办好了")).unwrap();
    let other_view = other.view();
    assert!(other_view.open_bad_review().is_none() && other_view.bad_reviews[0].cancelled);
    println!(
        "差评 task: due {} working days after the rating, 3 steps in order, {refusals} refused (window, out of order, \
         empty, after 反馈); a 差评 changed to 满意 before any step: task {}",
        hall.bad_review_working_days,
        other_view.bad_reviews[0].stage_zh()
    );
}

#[test]
fn rating_input_is_checked_and_the_comment_is_sealed() {
    let hall = Hall::jiangan_default();
    let mut cast = cast();
    let mut doc = answered_case(&hall, &mut cast);
    let bad = Satisfaction::Dissatisfied;
    let cases = [
        (rate(bad, &[], ""), "a 差评 without a reason"),
        (rate(Satisfaction::Satisfied, &[BadReviewReason::Slow], ""), "a reason with a good rating"),
        (rate(bad, &[BadReviewReason::Slow, BadReviewReason::Slow], ""), "a reason twice"),
        (rate(bad, &[BadReviewReason::Slow], &"长".repeat(RATING_COMMENT_CHARS_MAX + 1)), "an oversized comment"),
        (rate(bad, &[BadReviewReason::Slow], "abc\u{0}def"), "a control character"),
    ];
    for (command, what) in &cases {
        let error = refused(&mut cast.citizen, &mut doc, &hall, command.clone());
        assert!(!error.zh().is_empty(), "{what}");
    }
    let comment = "窗口工作人员态度冷淡，李建国 13812341234";
    cast.citizen.apply(&mut doc, &hall, rate(bad, &[BadReviewReason::Attitude], comment)).unwrap();
    assert_eq!(doc.view().rating.unwrap().comment, comment);
    let bytes = doc.save();
    let found = bytes.windows(comment.len()).any(|window| window == comment.as_bytes());
    assert!(!found, "the rating comment is in the document in clear");
    let mut keyless = CaseDoc::load(&bytes, automerge::ActorId::from(vec![42; 16])).unwrap();
    keyless.set_key(None);
    assert_eq!(keyless.view().rating.unwrap().comment, zhaowo_crdt::seal::SEALED_ZH);
    // A node without the key cannot write a comment (nor read the one there).
    let error = refused(&mut cast.citizen, &mut keyless, &hall, rate(bad, &[BadReviewReason::Slow], "再补充一句"));
    assert_eq!(error, CommandError::NoCaseKey("comment"));
    println!(
        "rating input: {} hostile ratings refused with the document unchanged; the comment ({} bytes) is not in the \
         {}-byte document, and a keyless replica reads {}",
        cases.len() + 1,
        comment.len(),
        bytes.len(),
        zhaowo_crdt::seal::SEALED_ZH
    );
}

#[test]
fn an_appeal_upheld_by_the_supervision_voids_the_rating_and_closes_the_task() {
    let hall = Hall::jiangan_default();
    let mut cast = cast();
    let mut doc = answered_case(&hall, &mut cast);
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::VeryDissatisfied, &[BadReviewReason::Other], "")).unwrap();
    assert_eq!(doc.view().rating_score(), Some(1));
    sync_clocks(&mut cast);
    let decide =
        |upheld| Command::DecideAppeal { upheld, note: "经复核，评价针对的是另一部门的事项".into() };
    let error = refused(&mut cast.supervision, &mut doc, &hall, decide(true));
    assert_eq!(error, CommandError::NoPendingAppeal);
    cast.window.apply(&mut doc, &hall, Command::AppealRating { reason: "评价内容与本案无关".into() }).unwrap();
    let error = refused(&mut cast.window, &mut doc, &hall, Command::AppealRating { reason: "再次申诉".into() });
    assert_eq!(error, CommandError::NoBadReview);
    // The unit may not decide its own appeal, nor may an admin: the 督查科 decides.
    let error = refused(&mut cast.window, &mut doc, &hall, decide(true));
    assert!(matches!(error, CommandError::Role { command: CommandKind::DecideAppeal, .. }), "{error}");
    sync_clocks(&mut cast);
    cast.supervision.apply(&mut doc, &hall, decide(true)).unwrap();
    let view = doc.view();
    assert!(view.rating.as_ref().unwrap().void && view.rating_score().is_none());
    assert_eq!(view.bad_reviews[0].stage_zh(), "申诉成立");
    assert!(view.open_bad_review().is_none() && view.pending_appeal().is_none());
    let decisions: Vec<&str> =
        view.timeline.iter().filter(|e| e.label == "复核决定").map(|e| e.text.as_str()).collect();
    assert_eq!(decisions.len(), 1);
    assert!(decisions[0].starts_with("复核决定：申诉成立"));
    println!(
        "申诉复核: appeal by the window, 3 refusals, upheld by the 督查科: rating void, score none, in the timeline"
    );
}

#[test]
fn a_callback_without_a_rating_is_counted_as_unrated_and_a_citizen_rating_wins() {
    let hall = Hall::jiangan_default();
    let mut cast = cast();
    let mut doc = answered_case(&hall, &mut cast);
    let callback = |outcome, rating| Command::RecordCallback {
        method: CallbackMethod::Phone,
        reached: true,
        outcome,
        rating,
        comment: String::new(),
    };
    cast.window.apply(&mut doc, &hall, callback(None, None)).unwrap();
    let view = doc.view();
    assert_eq!(view.rating_score(), None, "a 回访 without a rating is 未评价, never 非常满意");
    assert!(
        view.timeline.last().unwrap().text.contains("未说明，评价 未评价"),
        "{}",
        view.timeline.last().unwrap().text
    );
    cast.window.apply(&mut doc, &hall, callback(Some(CallbackOutcome::Resolved), Some(4))).unwrap();
    assert_eq!(doc.view().rating_score(), Some(4));
    sync_clocks(&mut cast);
    cast.citizen.apply(&mut doc, &hall, rate(Satisfaction::Basic, &[], "")).unwrap();
    assert_eq!(doc.view().rating_score(), Some(3), "the citizen's own rating is the case's");
    println!("回访: unrated callback scores none, rated callback 4, then the citizen's own 基本满意 scores 3");
}

#[test]
fn a_rating_and_the_task_converge_across_offline_replicas() {
    let hall = Hall::jiangan_default();
    let mut cast = cast();
    let mut hall_pc = answered_case(&hall, &mut cast);
    let mut supervision_pc = cast.supervision.fork(&mut hall_pc);
    // The citizen rates on the window's PC while the 督查科's PC, offline, reopens the case.
    cast.citizen.apply(&mut hall_pc, &hall, rate(Satisfaction::Dissatisfied, &[BadReviewReason::Slow], "")).unwrap();
    cast.supervision
        .apply(&mut supervision_pc, &hall, Command::Reopen { reason: "抽查发现答复不完整".into() })
        .unwrap();
    merge_both(&mut hall_pc, &mut supervision_pc);
    let view = hall_pc.view();
    assert_eq!(view.status, Status::InProgress);
    assert_eq!(view.bad_reviews.len(), 1, "the 差评 keeps its task after a concurrent 重办");
    sync_clocks(&mut cast);
    let step = Command::BadReviewStep { step: ReviewStep::Verify, text: "已核实".into() };
    cast.supervision.apply(&mut supervision_pc, &hall, step).unwrap();
    merge_both(&mut hall_pc, &mut supervision_pc);
    println!(
        "offline: a 差评 concurrent with 重办 converges on 2 replicas: status {}, task {}",
        view.status.label(),
        hall_pc.view().bad_reviews[0].stage_zh()
    );
}
