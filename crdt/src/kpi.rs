//! The figures the 督查科 reports (issue 15 §6, DOMAIN.md §8): one owner for every formula.
//!
//! A case contributes [`CaseFacts`], read off its public layer only (so every node, with or without the case key,
//! counts the same), and facts add up into a [`Tally`] per group (month, window, unit, nature, category, service
//! mode). Each [`Kpi`] is a numerator and a denominator of the tally with its formula written out in Chinese, which
//! the desk prints beside the figure, `zhaowo stats` prints and the monthly report carries. Counts always go next to
//! rates (DOMAIN.md §8: about 154 cases a year, so a rate of a handful of cases means little).
//!
//! Cases are grouped by when they were registered (the cohort of a month): a case registered in March and closed in
//! April counts in March's 按期办结率. This is what the 154-case annual figure counts, and it makes a month's report
//! final once its cases are done instead of shifting with every late event.

use crate::model::{CallbackOutcome, Mode, Priority};
use crate::view::CaseView;
use serde::Serialize;

/// What one case adds to its group: each field is a count (mostly 0 or 1) so that groups add up by summing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CaseFacts {
    /// 受理量.
    pub registered: i64,
    /// At least one public reply (答复) reached the citizen: 回应.
    pub answered: i64,
    /// 办结.
    pub closed: i64,
    /// 办结 on or before the due date (approved extensions and 待补充 pauses included).
    pub closed_on_time: i64,
    /// A 回访 reached the citizen and recorded whether the problem was solved (a valid 回访).
    pub callback_valid: i64,
    /// The latest valid 回访 said 已解决.
    pub callback_resolved: i64,
    /// Named (not anonymous), agreed to 回访, and answered or closed: the 回访率 denominator.
    pub callback_eligible: i64,
    /// An eligible case with a 回访 that reached the citizen.
    pub called_back: i64,
    /// The case's rating, counted by level: `rated_by_level[level - 1]` (1 = 非常不满意 … 5 = 非常满意).
    pub rated_by_level: [i64; 5],
    /// A 差评 (不满意 or 非常不满意) whose follow-through was completed (整改 and 反馈).
    pub bad_rectified: i64,
    /// A 差评 of a named citizen.
    pub named_bad: i64,
    /// A 差评 of a named citizen who was contacted again after it (回访 or 反馈).
    pub named_bad_contacted: i64,
    /// 派单 count and 退单 count (退单率 = 退单 ÷ 派单).
    pub dispatches: i64,
    pub returns: i64,
    /// Closed at least once and 重办 (reopened).
    pub reopened: i64,
    /// An approved extension moved the due date.
    pub extended: i64,
    /// 会诊 and 上门 counts, and 加急 cases (the 加急 service mode or a priority above 一般).
    pub consultations: i64,
    pub site_visits: i64,
    pub expedited: i64,
}

impl CaseFacts {
    /// The stored columns of the facts, in [`CaseFacts::values`] order (the store's `case_facts` table).
    pub const COLUMNS: [&'static str; 23] = [
        "registered",
        "answered",
        "closed",
        "closed_on_time",
        "callback_valid",
        "callback_resolved",
        "callback_eligible",
        "called_back",
        "rated_1",
        "rated_2",
        "rated_3",
        "rated_4",
        "rated_5",
        "bad_rectified",
        "named_bad",
        "named_bad_contacted",
        "dispatches",
        "returns",
        "reopened",
        "extended",
        "consultations",
        "site_visits",
        "expedited",
    ];

    pub fn values(&self) -> [i64; 23] {
        let r = self.rated_by_level;
        [
            self.registered,
            self.answered,
            self.closed,
            self.closed_on_time,
            self.callback_valid,
            self.callback_resolved,
            self.callback_eligible,
            self.called_back,
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            self.bad_rectified,
            self.named_bad,
            self.named_bad_contacted,
            self.dispatches,
            self.returns,
            self.reopened,
            self.extended,
            self.consultations,
            self.site_visits,
            self.expedited,
        ]
    }

    pub fn from_values(v: [i64; 23]) -> CaseFacts {
        CaseFacts {
            registered: v[0],
            answered: v[1],
            closed: v[2],
            closed_on_time: v[3],
            callback_valid: v[4],
            callback_resolved: v[5],
            callback_eligible: v[6],
            called_back: v[7],
            rated_by_level: [v[8], v[9], v[10], v[11], v[12]],
            bad_rectified: v[13],
            named_bad: v[14],
            named_bad_contacted: v[15],
            dispatches: v[16],
            returns: v[17],
            reopened: v[18],
            extended: v[19],
            consultations: v[20],
            site_visits: v[21],
            expedited: v[22],
        }
    }
}

/// The case's rating, 1 (非常不满意) to 5 (非常满意): the citizen's own 好差评 (none when an appeal voided it), else the
/// latest one recorded at a 回访 ([`CaseView::rating_score`], the one owner of which rating counts).
pub fn rating_of(view: &CaseView) -> Option<u8> {
    view.rating_score()
}

/// Whether a 1–5 score is a 差评 (GB/T 39734: 不满意 and 非常不满意), as `Satisfaction::is_bad` says.
pub fn is_bad(rating: u8) -> bool {
    crate::model::Satisfaction::from_score(rating).is_some_and(crate::model::Satisfaction::is_bad)
}

impl CaseFacts {
    pub fn of(view: &CaseView) -> CaseFacts {
        let flag = |value: bool| i64::from(value);
        let count = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        let rating = rating_of(view);
        let mut rated_by_level = [0; 5];
        if let Some(level) = rating.filter(|level| (1..=5).contains(level)) {
            rated_by_level[usize::from(level) - 1] = 1;
        }
        let valid: Vec<_> =
            view.callbacks.iter().filter(|callback| callback.reached && callback.outcome.is_some()).collect();
        let answered = !view.public_replies.is_empty() || view.public_reply.is_some();
        let closed = view.closed_at_ms.is_some();
        let named = !view.personal.anonymous;
        let eligible = named && view.personal.callback_ok && (answered || closed);
        let bad = rating.is_some_and(is_bad);
        // The 差评 follow-through: the task of the counted rating's round reached 反馈 (整改 and 反馈 recorded).
        let fed_back = |task: &crate::view::BadReviewTask| {
            task.steps.iter().any(|entry| entry.step == crate::model::ReviewStep::Feedback)
        };
        let rectified = bad && view.bad_reviews.last().is_some_and(fed_back);
        // Contacted again after the 差评: the 反馈, or a 回访 that reached the citizen after the rating.
        // When the counted rating was given: the citizen's own, else the 回访 that recorded it.
        let rated_at = match &view.rating {
            Some(rating) => rating.at_ms,
            None => {
                view.callbacks.iter().rev().find(|callback| callback.rating.is_some()).map_or(i64::MAX, |c| c.at_ms)
            }
        };
        let contacted =
            rectified || view.callbacks.iter().any(|callback| callback.reached && callback.at_ms > rated_at);
        CaseFacts {
            registered: 1,
            answered: flag(answered),
            closed: flag(closed),
            closed_on_time: flag(view.closed_at_ms.is_some_and(|at| at <= view.due_ms + view.paused_ms)),
            callback_valid: flag(!valid.is_empty()),
            callback_resolved: flag(
                valid.last().is_some_and(|callback| callback.outcome == Some(CallbackOutcome::Resolved)),
            ),
            callback_eligible: flag(eligible),
            called_back: flag(eligible && view.callbacks.iter().any(|callback| callback.reached)),
            rated_by_level,
            bad_rectified: flag(rectified),
            named_bad: flag(bad && named),
            named_bad_contacted: flag(bad && named && contacted),
            dispatches: count(view.dispatches),
            returns: count(view.returns),
            reopened: flag(view.reopens > 0),
            extended: flag(view.flags.extended),
            consultations: count(view.consultations),
            site_visits: count(view.site_visits),
            expedited: flag(view.modes.contains(&Mode::Expedited) || view.priority != Priority::Normal),
        }
    }
}

/// The sum of a group's [`CaseFacts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Tally(pub CaseFacts);

impl std::ops::AddAssign<&CaseFacts> for Tally {
    fn add_assign(&mut self, facts: &CaseFacts) {
        let mut sum = self.0.values();
        for (total, one) in sum.iter_mut().zip(facts.values()) {
            *total += one;
        }
        self.0 = CaseFacts::from_values(sum);
    }
}

impl Tally {
    pub fn of<'a>(facts: impl IntoIterator<Item = &'a CaseFacts>) -> Tally {
        let mut tally = Tally::default();
        for one in facts {
            tally += one;
        }
        tally
    }

    /// Cases with a rating.
    pub fn rated(&self) -> i64 {
        self.0.rated_by_level.iter().sum()
    }

    /// Ratings at `levels` (1..=5).
    fn rated_at(&self, levels: std::ops::RangeInclusive<usize>) -> i64 {
        levels.map(|level| self.0.rated_by_level[level - 1]).sum()
    }

    /// 差评: ratings 1 and 2.
    pub fn bad(&self) -> i64 {
        self.rated_at(1..=2)
    }

    /// The mean rating (1-5), if any case was rated.
    pub fn mean_rating(&self) -> Option<f64> {
        let rated = self.rated();
        let sum: i64 = (1..=5).map(|level| level as i64 * self.0.rated_by_level[level - 1]).sum();
        (rated > 0).then(|| sum as f64 / rated as f64)
    }
}

/// How 满意率 counts 基本满意: a hall setting (`Hall::satisfaction_counts_basic`), since practice differs between
/// halls and bulletins (DOMAIN.md §8: "(非常满意 + 满意 [+ 基本满意]) ÷ valid ratings").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KpiSettings {
    pub satisfaction_counts_basic: bool,
}

macro_rules! kpis {
    ($($variant:ident = ($code:literal, $zh:literal, $kind:ident)),* $(,)?) => {
        /// One figure of the 督查科's report.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum Kpi { $($variant),* }

        impl Kpi {
            /// Every figure, in report order.
            pub const ALL: &'static [Kpi] = &[$(Kpi::$variant),*];

            /// A stable ASCII name (JSON keys, CLI).
            pub fn code(self) -> &'static str {
                match self { $(Kpi::$variant => $code),* }
            }

            /// The figure's name on the desk and in reports.
            pub fn zh(self) -> &'static str {
                match self { $(Kpi::$variant => $zh),* }
            }

            /// A rate (numerator ÷ denominator) or a plain count.
            pub fn is_rate(self) -> bool {
                match self { $(Kpi::$variant => stringify!($kind) == "rate"),* }
            }
        }
    };
}

kpis! {
    Registered = ("registered", "受理量", count),
    AnswerRate = ("answer_rate", "回应率", rate),
    OnTimeCloseRate = ("on_time_close_rate", "按期办结率", rate),
    ResolveRate = ("resolve_rate", "解决率", rate),
    SatisfactionRate = ("satisfaction_rate", "满意率", rate),
    GoodRate = ("good_rate", "好评率", rate),
    BadRate = ("bad_rate", "差评率", rate),
    BadRectifiedRate = ("bad_rectified_rate", "差评整改率", rate),
    NamedBadContactRate = ("named_bad_contact_rate", "实名差评回访率", rate),
    CallbackRate = ("callback_rate", "回访率", rate),
    ReturnRate = ("return_rate", "退单率", rate),
    ReopenRate = ("reopen_rate", "重办率", rate),
    ExtensionRate = ("extension_rate", "延期率", rate),
    Consultations = ("consultations", "会诊件次", count),
    SiteVisits = ("site_visits", "上门次数", count),
    Expedited = ("expedited", "加急件数", count),
}

/// A figure of a group: numerator and denominator (a count has denominator `None`), and the rate when defined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figure {
    pub kpi: Kpi,
    pub numerator: i64,
    pub denominator: Option<i64>,
}

impl Figure {
    /// The rate in [0, 1]; `None` for a count or an empty denominator (shown as "—", never as 0 % or 100 %).
    pub fn rate(&self) -> Option<f64> {
        self.denominator.filter(|d| *d > 0).map(|d| self.numerator as f64 / d as f64)
    }

    /// `97.4%（150/154）`, `—（0/0）` or a plain count: counts always beside rates.
    pub fn display(&self) -> String {
        match (self.denominator, self.rate()) {
            (None, _) => self.numerator.to_string(),
            (Some(d), Some(rate)) => format!("{:.1}%（{}/{}）", rate * 100.0, self.numerator, d),
            (Some(d), None) => format!("—（{}/{}）", self.numerator, d),
        }
    }
}

impl Kpi {
    /// The formula, written on the page beside the figure.
    pub fn formula_zh(self, settings: KpiSettings) -> &'static str {
        match self {
            Kpi::Registered => "期间登记的诉求件数（按登记时间统计，下同）",
            Kpi::AnswerRate => "已答复群众的件数 ÷ 受理量（事事有回应）",
            Kpi::OnTimeCloseRate => "在承诺时限内办结的件数（含批准延期、扣除待补充暂停）÷ 办结件数",
            Kpi::ResolveRate => "最近一次有效回访为“已解决”的件数 ÷ 有效回访件数",
            Kpi::SatisfactionRate if settings.satisfaction_counts_basic => {
                "（非常满意 + 满意 + 基本满意）÷ 有评价的件数（本厅设置：基本满意计入满意）"
            }
            Kpi::SatisfactionRate => "（非常满意 + 满意）÷ 有评价的件数（本厅设置：基本满意不计入满意）",
            Kpi::GoodRate => "好评（非常满意、满意、基本满意）÷ 有评价的件数",
            Kpi::BadRate => "差评（不满意、非常不满意）÷ 有评价的件数",
            Kpi::BadRectifiedRate => "已完成整改并反馈群众的差评件数 ÷ 差评件数",
            Kpi::NamedBadContactRate => "差评后再次联系群众（回访或反馈）的实名差评件数 ÷ 实名差评件数",
            Kpi::CallbackRate => {
                "已回访（联系上群众）的件数 ÷ 应回访件数（实名、同意回访、已答复或办结；匿名件不计入）"
            }
            Kpi::ReturnRate => "退单次数 ÷ 派单次数",
            Kpi::ReopenRate => "发回重办过的件数 ÷ 办结件数",
            Kpi::ExtensionRate => "经批准延期的件数 ÷ 受理量",
            Kpi::Consultations => "会诊次数",
            Kpi::SiteVisits => "上门服务次数",
            Kpi::Expedited => "加急办理（服务方式含加急，或紧急程度为紧急、特急）的件数",
        }
    }

    /// The figure of a group's tally.
    pub fn figure(self, tally: &Tally, settings: KpiSettings) -> Figure {
        let t = &tally.0;
        let rate = |numerator: i64, denominator: i64| Figure { kpi: self, numerator, denominator: Some(denominator) };
        let count = |numerator: i64| Figure { kpi: self, numerator, denominator: None };
        let satisfied = if settings.satisfaction_counts_basic { tally.rated_at(3..=5) } else { tally.rated_at(4..=5) };
        match self {
            Kpi::Registered => count(t.registered),
            Kpi::AnswerRate => rate(t.answered, t.registered),
            Kpi::OnTimeCloseRate => rate(t.closed_on_time, t.closed),
            Kpi::ResolveRate => rate(t.callback_resolved, t.callback_valid),
            Kpi::SatisfactionRate => rate(satisfied, tally.rated()),
            Kpi::GoodRate => rate(tally.rated_at(3..=5), tally.rated()),
            Kpi::BadRate => rate(tally.bad(), tally.rated()),
            Kpi::BadRectifiedRate => rate(t.bad_rectified, tally.bad()),
            Kpi::NamedBadContactRate => rate(t.named_bad_contacted, t.named_bad),
            Kpi::CallbackRate => rate(t.called_back, t.callback_eligible),
            Kpi::ReturnRate => rate(t.returns, t.dispatches),
            Kpi::ReopenRate => rate(t.reopened, t.closed),
            Kpi::ExtensionRate => rate(t.extended, t.registered),
            Kpi::Consultations => count(t.consultations),
            Kpi::SiteVisits => count(t.site_visits),
            Kpi::Expedited => count(t.expedited),
        }
    }

    /// Every figure of a tally, in report order.
    pub fn all(tally: &Tally, settings: KpiSettings) -> Vec<Figure> {
        Kpi::ALL.iter().map(|kpi| kpi.figure(tally, settings)).collect()
    }
}

/// What a report groups cases by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    Month,
    Window,
    Unit,
    Nature,
    Category,
    Mode,
}

impl GroupBy {
    pub const ALL: &'static [GroupBy] =
        &[GroupBy::Month, GroupBy::Window, GroupBy::Unit, GroupBy::Nature, GroupBy::Category, GroupBy::Mode];

    pub fn code(self) -> &'static str {
        match self {
            GroupBy::Month => "month",
            GroupBy::Window => "window",
            GroupBy::Unit => "unit",
            GroupBy::Nature => "nature",
            GroupBy::Category => "category",
            GroupBy::Mode => "mode",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            GroupBy::Month => "月份",
            GroupBy::Window => "窗口",
            GroupBy::Unit => "承办单位",
            GroupBy::Nature => "诉求性质",
            GroupBy::Category => "事项类别",
            GroupBy::Mode => "服务方式",
        }
    }

    pub fn parse(code: &str) -> Option<GroupBy> {
        GroupBy::ALL.iter().copied().find(|group| group.code() == code)
    }

    /// The group keys of a case: one, except by service mode, where a case counts under each of its modes (and under
    /// "无" without one). Month keys are `YYYY-MM` in the hall's time zone; a case without a lead unit is "未派单".
    pub fn keys(self, view: &CaseView) -> Vec<String> {
        match self {
            GroupBy::Month => {
                let date = crate::time::Date::of_ms(view.registered_at_ms);
                vec![format!("{:04}-{:02}", date.year, date.month)]
            }
            GroupBy::Window => vec![view.window.clone()],
            GroupBy::Unit => vec![view.lead_unit.clone().unwrap_or_else(|| "未派单".to_owned())],
            GroupBy::Nature => vec![view.nature.code().to_owned()],
            GroupBy::Category => vec![view.category.clone()],
            GroupBy::Mode if view.modes.is_empty() => vec!["无".to_owned()],
            GroupBy::Mode => view.modes.iter().map(|mode| mode.code().to_owned()).collect(),
        }
    }
}
