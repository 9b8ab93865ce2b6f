//! The closed vocabularies of a case: states, natures, modes, priorities, roles and the other enumerations of DOMAIN.md.
//!
//! Each value has a stable ASCII code (what the document stores and the wire carries) and a Chinese label (what a page
//! or the register book shows). Codes never change meaning; new values get new codes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Defines a closed vocabulary with a stable code and a zh-CN label per value, serialised as the code.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = ($code:literal, $label:literal),)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable code stored in documents.
            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code,)+ }
            }

            /// The label shown to people (zh-CN).
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            /// Every value as `CODE 标签`, comma-separated: what an error about an unknown value lists.
            pub fn known() -> String {
                [$(concat!($code, " ", $label),)+].join(", ")
            }

            /// Parses a code or a Chinese label.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($code | $label => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }

        impl From<$name> for &'static str {
            fn from(value: $name) -> &'static str {
                value.code()
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<$name, String> {
                $name::parse(&text).ok_or_else(|| format!(concat!("unknown ", stringify!($name), " `{}`"), text))
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// 状态: the lifecycle states of DOMAIN.md §6.1.
    Status {
        Submitted = ("SUBMITTED", "待受理"),
        Registered = ("REGISTERED", "已登记"),
        Dispatched = ("DISPATCHED", "已派单"),
        InProgress = ("IN_PROGRESS", "办理中"),
        OnHold = ("ON_HOLD", "待补充"),
        Replied = ("REPLIED", "已答复"),
        Closed = ("CLOSED", "已办结"),
        Rejected = ("REJECTED", "不予受理"),
        Duplicate = ("DUPLICATE", "重复件"),
        Withdrawn = ("WITHDRAWN", "已撤回"),
        Archived = ("ARCHIVED", "已归档"),
    }
}

impl Status {
    /// Open states are still being worked: Open311 `open`.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Status::Submitted
                | Status::Registered
                | Status::Dispatched
                | Status::InProgress
                | Status::OnHold
                | Status::Replied
        )
    }

    /// Terminal states count as "有着落" for 办结率.
    pub fn is_terminal(self) -> bool {
        !self.is_open()
    }

    /// States in which the solution clock runs (it stops at REPLIED and pauses in ON_HOLD).
    pub fn solution_clock_runs(self) -> bool {
        matches!(self, Status::Submitted | Status::Registered | Status::Dispatched | Status::InProgress)
    }
}

vocabulary! {
    /// 诉求性质 (axis 1 of DOMAIN.md §7), one per case.
    Nature {
        Consultation = ("ZX", "咨询"),
        Help = ("QZ", "求助"),
        Complaint = ("TS", "投诉"),
        Report = ("JB", "举报"),
        Suggestion = ("JY", "建议"),
        Praise = ("BY", "表扬"),
        Venting = ("QS", "倾诉"),
        Other = ("QT", "其他"),
    }
}

vocabulary! {
    /// 服务方式 (axis 2 of DOMAIN.md §7), any subset per case.
    Mode {
        Immediate = ("JIBAN", "即办"),
        Expedited = ("JIAJI", "加急"),
        HomeVisit = ("SHANGMEN", "上门"),
        Video = ("SHIPIN", "视频"),
        Consultation = ("HUIZHEN", "会诊"),
        Proxy = ("BANGBAN", "帮办代办"),
    }
}

vocabulary! {
    /// 紧急程度. Ordered: a later value is more urgent, and concurrent changes keep the most urgent (加急 is sticky).
    Priority {
        Normal = ("NORMAL", "一般"),
        Urgent = ("URGENT", "紧急"),
        Critical = ("CRITICAL", "特急"),
    }
}

vocabulary! {
    /// 来源渠道.
    Channel {
        Window = ("WINDOW", "窗口现场"),
        MiniProgram = ("MINI", "小程序"),
        Phone = ("PHONE", "电话"),
        Hotline12345 = ("12345", "12345转办"),
        BadReview = ("HAOCHAPING", "差评转入"),
        Leadership = ("LEADER", "领导交办"),
        HomeVisit = ("VISIT", "上门走访"),
        Video = ("VIDEO", "视频"),
    }
}

vocabulary! {
    /// 办不成原因: the root cause of a "could not be done" case.
    NotDoneReason {
        Materials = ("MATERIALS", "材料问题"),
        Ineligible = ("INELIGIBLE", "条件不符"),
        PolicyGap = ("POLICY", "政策无依据或冲突"),
        SystemFault = ("SYSTEM", "系统故障"),
        CrossDepartment = ("CROSS_DEPT", "跨部门壁垒"),
        Historical = ("HISTORICAL", "历史遗留"),
        Attitude = ("ATTITUDE", "服务态度"),
        Other = ("OTHER", "其他"),
    }
}

vocabulary! {
    /// 督办级别. Ordered: a later value is a stronger level; concurrent issues keep the strongest.
    SupervisionLevel {
        None = ("NONE", "无"),
        Reminder = ("REMIND", "提醒"),
        Urge = ("URGE", "催办"),
        Supervise = ("SUPERVISE", "督办"),
        Listed = ("LISTED", "挂牌督办"),
    }
}

vocabulary! {
    /// 办理结果, recorded when a case is answered.
    CaseResult {
        Done = ("DONE", "已办成"),
        PartlyDone = ("PARTLY", "部分办成"),
        Explained = ("EXPLAINED", "解释说明"),
        OutOfScope = ("OUT_OF_SCOPE", "不属于受理范围"),
        Referred = ("REFERRED", "转其他渠道"),
        Withdrawn = ("WITHDRAWN", "撤回"),
        Duplicate = ("DUPLICATE", "重复件"),
    }
}

vocabulary! {
    /// The role a node (or the citizen channel) acts in; it decides which commands it may author.
    Role {
        Window = ("window", "窗口"),
        Supervision = ("supervision", "督查科"),
        Volunteer = ("volunteer", "志愿者"),
        Admin = ("admin", "管理员"),
        Citizen = ("citizen", "群众"),
    }
}

impl Role {
    /// 工作人员: the people at the hall's windows and offices, who register, dispatch, answer and close cases (not a
    /// volunteer, not a citizen). The one definition every rule uses.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Window | Role::Supervision | Role::Admin)
    }

    /// 督查: the roles that oversee other people's work (改派, 强制办结, 发回重办, 批准延期, 核定冲突).
    pub fn is_oversight(self) -> bool {
        matches!(self, Role::Supervision | Role::Admin)
    }

    /// The lead unit's own desk (签收, 退单, 待补充/恢复, 申请延期): a window, or the admin standing in for one.
    pub fn is_lead_desk(self) -> bool {
        matches!(self, Role::Window | Role::Admin)
    }
}

vocabulary! {
    /// 操作: what a person can do to an existing case, without its payload — one value per lifecycle command (and
    /// per two-case or audit operation: 并案, 查看个人信息). The code is what the desk's forms send; the label is the
    /// button. Who may run which kind in which state is [`CommandKind::permitted`] (crate::command), the one table
    /// that command validation, the transition fold, the desk and the CLI read.
    CommandKind {
        Accept = ("accept", "受理"),
        Reject = ("reject", "不予受理"),
        Dispatch = ("dispatch", "派单"),
        SignIn = ("sign_in", "签收"),
        Return = ("return", "退单"),
        Reassign = ("reassign", "改派"),
        AddNote = ("note", "内部备注"),
        PublishReply = ("reply", "对外答复"),
        HoldConsultation = ("consult", "会诊"),
        LogVisit = ("visit", "上门/走访"),
        AssignVisit = ("assign_visit", "指派上门"),
        RequestExtension = ("extend", "申请延期"),
        ApproveExtension = ("approve_extension", "批准延期"),
        Supervise = ("supervise", "督办"),
        ChangePriority = ("priority", "调整紧急程度"),
        ChangeCategory = ("category", "调整诉求类别"),
        EditField = ("edit", "修改诉求信息"),
        AddTags = ("tags", "添加标签"),
        AddCoUnits = ("co_units", "增加协办单位"),
        Suspend = ("suspend", "待补充材料"),
        Resume = ("resume", "恢复办理"),
        Resolve = ("resolve", "办理完毕"),
        RecordCallback = ("callback", "回访"),
        Close = ("close", "办结"),
        ForceClose = ("force_close", "强制办结"),
        Reopen = ("reopen", "发回重办"),
        MarkDuplicate = ("duplicate", "并案"),
        Unmerge = ("unmerge", "解除并案"),
        Withdraw = ("withdraw", "撤回"),
        Archive = ("archive", "归档"),
        PurgePersonalData = ("purge", "清除个人信息"),
        RevealPersonalData = ("reveal", "查看完整个人信息"),
        ResolveConflict = ("resolve_conflict", "核定冲突"),
        Rate = ("rate", "好差评"),
        BadReviewStep = ("bad_review", "差评核实整改反馈"),
        AppealRating = ("appeal_rating", "申诉复核"),
        DecideAppeal = ("decide_appeal", "复核决定"),
        AddMaterial = ("attach", "上传材料"),
        RemoveMaterial = ("remove_material", "删除材料"),
        PublishMaterial = ("publish_material", "材料公开设置"),
        ViewMaterial = ("view_material", "查看材料"),
    }
}

vocabulary! {
    /// 回访 outcome: was the problem solved, in the citizen's words.
    CallbackOutcome {
        Resolved = ("YES", "已解决"),
        Partly = ("PARTLY", "部分解决"),
        Unresolved = ("NO", "未解决"),
    }
}

vocabulary! {
    /// 好差评: the five levels of the national rating (国办发〔2019〕51号, GB/T 39734-2020), best first. The citizen rates
    /// on the lookup page; a 回访 records the level the citizen said (or none: 未评价).
    Satisfaction {
        VerySatisfied = ("VERY_SATISFIED", "非常满意"),
        Satisfied = ("SATISFIED", "满意"),
        Basic = ("BASIC", "基本满意"),
        Dissatisfied = ("DISSATISFIED", "不满意"),
        VeryDissatisfied = ("VERY_DISSATISFIED", "非常不满意"),
    }
}

impl Satisfaction {
    /// 差评: 不满意 and 非常不满意, which need a reason and open a 督查科 task.
    pub fn is_bad(self) -> bool {
        matches!(self, Satisfaction::Dissatisfied | Satisfaction::VeryDissatisfied)
    }

    /// The 1–5 score of the level (非常满意 = 5), what the statistics sum and a 回访 stores.
    pub fn score(self) -> u8 {
        match self {
            Satisfaction::VerySatisfied => 5,
            Satisfaction::Satisfied => 4,
            Satisfaction::Basic => 3,
            Satisfaction::Dissatisfied => 2,
            Satisfaction::VeryDissatisfied => 1,
        }
    }

    /// The level of a 1–5 score.
    pub fn from_score(score: u8) -> Option<Satisfaction> {
        Satisfaction::ALL.iter().copied().find(|level| level.score() == score)
    }
}

vocabulary! {
    /// 差评原因: what a citizen ticks with 不满意 or 非常不满意, after the evaluation dimensions of GB/T 39734-2020
    /// (服务态度, 办事效率, 办事流程, 办理结果, 告知解释) as the 好差评 forms of the provinces list them.
    BadReviewReason {
        Unresolved = ("UNRESOLVED", "问题没有解决"),
        Slow = ("SLOW", "办理超时、久拖不办"),
        Runs = ("RUNS", "多次跑动、反复提交材料"),
        Unclear = ("UNCLEAR", "告知不清楚、解释不到位"),
        Attitude = ("ATTITUDE", "服务态度差"),
        Process = ("PROCESS", "办事流程繁琐"),
        Other = ("OTHER", "其他"),
    }
}

vocabulary! {
    /// The steps of a 差评 task (督查科), in order: 核实 the facts, 整改 what was wrong, 反馈 to the citizen.
    ReviewStep {
        Verify = ("VERIFY", "核实"),
        Rectify = ("RECTIFY", "整改"),
        Feedback = ("FEEDBACK", "反馈"),
    }
}

vocabulary! {
    /// How a callback was made.
    CallbackMethod {
        Phone = ("PHONE", "电话"),
        Sms = ("SMS", "短信"),
        InPerson = ("IN_PERSON", "当面"),
        MiniProgram = ("MINI", "小程序"),
    }
}

vocabulary! {
    /// 主体类型 of the person behind the case.
    SubjectType {
        Person = ("PERSON", "个人"),
        Enterprise = ("ENTERPRISE", "企业"),
    }
}

vocabulary! {
    /// 回复方式 the citizen prefers.
    ContactPref {
        Phone = ("PHONE", "电话"),
        Sms = ("SMS", "短信"),
        MiniProgram = ("MINI", "小程序消息"),
        InPerson = ("IN_PERSON", "当面"),
    }
}

vocabulary! {
    /// Root-map fields that an `EditField` command may change (per-field last writer wins, concurrent values listed).
    EditableField {
        Summary = ("summary", "诉求摘要"),
        Detail = ("detail", "诉求内容"),
        Expectation = ("expectation", "诉求人期望"),
        Location = ("location", "地点"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_labels_are_unique_and_parse_back() {
        fn check<T: Copy + PartialEq + fmt::Debug>(
            all: &[T],
            code: fn(T) -> &'static str,
            label: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            let mut seen = std::collections::BTreeSet::new();
            for &value in all {
                assert!(seen.insert(code(value)), "duplicate code {}", code(value));
                assert_eq!(parse(code(value)), Some(value));
                assert_eq!(parse(label(value)), Some(value));
            }
        }
        check(Status::ALL, Status::code, Status::label, Status::parse);
        check(Nature::ALL, Nature::code, Nature::label, Nature::parse);
        check(Mode::ALL, Mode::code, Mode::label, Mode::parse);
        check(Priority::ALL, Priority::code, Priority::label, Priority::parse);
        check(Channel::ALL, Channel::code, Channel::label, Channel::parse);
        check(NotDoneReason::ALL, NotDoneReason::code, NotDoneReason::label, NotDoneReason::parse);
        check(SupervisionLevel::ALL, SupervisionLevel::code, SupervisionLevel::label, SupervisionLevel::parse);
        check(CaseResult::ALL, CaseResult::code, CaseResult::label, CaseResult::parse);
        check(Role::ALL, Role::code, Role::label, Role::parse);
        check(CommandKind::ALL, CommandKind::code, CommandKind::label, CommandKind::parse);
        check(Satisfaction::ALL, Satisfaction::code, Satisfaction::label, Satisfaction::parse);
        check(BadReviewReason::ALL, BadReviewReason::code, BadReviewReason::label, BadReviewReason::parse);
        check(ReviewStep::ALL, ReviewStep::code, ReviewStep::label, ReviewStep::parse);
        for &level in Satisfaction::ALL {
            assert_eq!(Satisfaction::from_score(level.score()), Some(level));
        }
        assert_eq!(serde_json::to_string(&Status::InProgress).unwrap(), "\"IN_PROGRESS\"");
        assert!(serde_json::from_str::<Status>("\"NOPE\"").is_err());
        assert!(Priority::Critical > Priority::Urgent && SupervisionLevel::Listed > SupervisionLevel::Urge);
    }
}
