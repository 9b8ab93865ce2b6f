//! Named limits of the case model, each with the reason for its number.
//!
//! Every text a person or a peer can send is bounded here, so a form, a bundle or a crafted document cannot grow a case
//! without limit. Lengths are counted in Unicode scalar values (`chars`), because Chinese text is three bytes a character
//! in UTF-8 and the hall's rules are written in characters.

/// 诉求摘要 is shown on the public lookup and the register book row: DOMAIN.md §5.1 says ≤100 characters.
pub const SUMMARY_CHARS_MAX: usize = 100;
/// 诉求内容: DOMAIN.md §5.1 says ≤4,000 characters.
pub const DETAIL_CHARS_MAX: usize = 4_000;
/// 诉求人期望: a paragraph; a page of text is already more than any window clerk types.
pub const EXPECTATION_CHARS_MAX: usize = 1_000;
/// 地点: a full Chinese postal address fits in well under 200 characters.
pub const LOCATION_CHARS_MAX: usize = 200;
/// Internal notes and consultation minutes: the same bound as the case detail.
pub const NOTE_CHARS_MAX: usize = 4_000;
/// A public reply is read on a phone; 2,000 characters is several screens.
pub const REPLY_CHARS_MAX: usize = 2_000;
/// Reasons and legal/policy bases for 退单, 不予受理, 延期, 撤回, 重办.
pub const REASON_CHARS_MAX: usize = 500;
/// Names of people, units, staff ids, reviewers, volunteers.
pub const NAME_CHARS_MAX: usize = 50;
/// Codes (window, unit, category): short identifiers typed by admins.
pub const CODE_CHARS_MAX: usize = 16;
/// Tags per case and characters per tag: tags are for filtering, not for prose.
pub const TAGS_MAX: usize = 20;
pub const TAG_CHARS_MAX: usize = 20;
/// Units named in one dispatch or consultation: the hall has about ten departments.
pub const UNITS_PER_COMMAND_MAX: usize = 16;
/// Volunteers on one visit: the article's largest visit had four batches of staff.
pub const VOLUNTEERS_PER_VISIT_MAX: usize = 16;
/// Events in one case. The busiest case of the article (the flat split into two) has a few dozen events; 2,000 leaves two
/// orders of magnitude of headroom and keeps the fold (quadratic in transitions at worst) well under a millisecond.
pub const EVENTS_PER_CASE_MAX: usize = 2_000;
/// Parents recorded per event: the event heads of a case are few unless many offline nodes wrote concurrently.
pub const PARENTS_PER_EVENT_MAX: usize = 64;
/// Working days one extension may add: a month of working days; longer needs a new request.
pub const EXTENSION_WORKING_DAYS_MAX: u16 = 22;
/// Failed callback attempts after which a replied case may be closed without reaching the citizen (DOMAIN.md §6.2 "N").
pub const CALLBACK_ATTEMPTS_FOR_CLOSE: usize = 3;
/// A date-time farther than this from the caller's `now` is refused as a typo (a visit logged "in 2062").
pub const FUTURE_SKEW_MS_MAX: i64 = 366 * 24 * 3_600_000;
/// 好差评 (issue 15): days after a citizen's first rating of a round (registration or 重办 to answer) in which they may
/// change it. A week to think twice; after it the rating stands, so the 督查科's task and the statistics do not chase a
/// moving value. A rating after 重办 opens a new round.
pub const RATING_CHANGE_DAYS: i64 = 7;
/// The optional comment of a rating: a paragraph on a phone, as long as a reason.
pub const RATING_COMMENT_CHARS_MAX: usize = REASON_CHARS_MAX;

const _: () = assert!(SUMMARY_CHARS_MAX <= DETAIL_CHARS_MAX);
const _: () = assert!(CALLBACK_ATTEMPTS_FOR_CLOSE >= 1);
