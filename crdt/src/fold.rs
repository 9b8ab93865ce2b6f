//! The case state as a deterministic fold over the event set (DOMAIN.md §6.3).
//!
//! Events are sorted by `(hlc, node, id)`. Transitions are applied one by one onto a stack of applied transitions that
//! is always a causal chain. A transition whose `parents` do not reach the top of the stack is concurrent with the
//! transitions above its branch point; it wins only if its precedence class is strictly stronger than all of them, in
//! which case they (and what was built on them) are superseded, else it is superseded itself. A superseded transition
//! stays in the log and is listed as a conflict. Because the input is a set and the order total, every node holding
//! the same events computes the same state.

use crate::event::{Event, EventKind, precedence, transition};
use crate::ids::{CaseId, EventId};
use crate::model::{Priority, Status, SupervisionLevel};
use std::collections::{BTreeMap, BTreeSet};

/// Why a transition did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SupersededBy {
    /// A concurrent transition of a stronger (or equal and earlier) precedence class won.
    Concurrent { winner: EventId },
    /// The transition it was built on lost, or it does not start from the state the merge produced.
    InvalidAfterMerge { state: Status },
    /// The two cases were marked duplicates of each other concurrently; the older case stays the master.
    DuplicateCycle { master: CaseId },
}

/// The outcome of arbitrating the transitions of one case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Arbitration {
    /// Applied transitions in order, with the state each produced.
    pub applied: Vec<(EventId, Status)>,
    pub superseded: BTreeMap<EventId, SupersededBy>,
    /// The state after the last applied transition.
    pub status: Option<Status>,
}

/// Sorts events into the fold's total order.
pub fn sort_events(events: &mut [Event]) {
    events.sort_by(|a, b| (a.hlc, &a.node, &a.id).cmp(&(b.hlc, &b.node, &b.id)));
}

/// Ancestry of the events of one case, from their `parents`.
#[derive(Debug)]
pub struct Ancestry {
    parents: BTreeMap<EventId, Vec<EventId>>,
}

impl Ancestry {
    pub fn new(events: &[Event]) -> Ancestry {
        Ancestry { parents: events.iter().map(|event| (event.id.clone(), event.parents.clone())).collect() }
    }

    /// Every event reachable from `id` through `parents` (not including `id`).
    pub fn ancestors(&self, id: &EventId) -> BTreeSet<EventId> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&EventId> = self.parents.get(id).map(|p| p.iter().collect()).unwrap_or_default();
        while let Some(next) = stack.pop() {
            if seen.insert(next.clone())
                && let Some(parents) = self.parents.get(next)
            {
                stack.extend(parents.iter());
            }
        }
        seen
    }

    /// The heads: events that no other event names as a parent.
    pub fn heads(&self) -> Vec<EventId> {
        let named: BTreeSet<&EventId> = self.parents.values().flatten().collect();
        self.parents.keys().filter(|id| !named.contains(id)).cloned().collect()
    }
}

/// Arbitrates the transitions of a case. `events` must be sorted with [`sort_events`].
pub fn arbitrate(case_id: &CaseId, events: &[Event], ancestry: &Ancestry) -> Arbitration {
    let mut result = Arbitration::default();
    let Some(registered) = events.iter().find(|event| matches!(event.kind, EventKind::Registered { .. })) else {
        return result;
    };
    let initial = match registered.kind {
        EventKind::Registered { submitted: true, .. } => Status::Submitted,
        _ => Status::Registered,
    };
    // Cases that this case was marked a duplicate *of*, seen from the other side (for the cycle rule).
    let attached: BTreeSet<&CaseId> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::DuplicateAttached { duplicate } => Some(duplicate),
            _ => None,
        })
        .collect();
    let detached: BTreeSet<&CaseId> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::DuplicateDetached { duplicate } => Some(duplicate),
            _ => None,
        })
        .collect();

    // The stack of applied transitions: (event index, state after it).
    let mut stack: Vec<(usize, Status)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if !event.kind.is_transition() {
            continue;
        }
        if let EventKind::MarkedDuplicate { master } = &event.kind
            && attached.contains(master)
            && !detached.contains(master)
            && case_id < master
        {
            result.superseded.insert(event.id.clone(), SupersededBy::DuplicateCycle { master: case_id.clone() });
            continue;
        }
        let ancestors = ancestry.ancestors(&event.id);
        // The applied stack is a causal chain, so the ancestors of `event` on it form a prefix.
        let branch = stack.iter().take_while(|(i, _)| ancestors.contains(&events[*i].id)).count();
        let concurrent = &stack[branch..];
        let class = precedence(&event.kind, event.role);
        if let Some(&(first, _)) = concurrent.first() {
            let strongest =
                concurrent.iter().map(|&(i, _)| precedence(&events[i].kind, events[i].role)).min().unwrap_or(u8::MAX);
            if class >= strongest {
                result
                    .superseded
                    .insert(event.id.clone(), SupersededBy::Concurrent { winner: events[first].id.clone() });
                continue;
            }
        }
        let from = if branch == 0 { initial } else { stack[branch - 1].1 };
        match transition(&event.kind, from, event.role) {
            Ok(to) => {
                for &(loser, _) in &stack[branch..] {
                    result
                        .superseded
                        .insert(events[loser].id.clone(), SupersededBy::Concurrent { winner: event.id.clone() });
                }
                stack.truncate(branch);
                stack.push((index, to));
            }
            Err(_) => {
                result.superseded.insert(event.id.clone(), SupersededBy::InvalidAfterMerge { state: from });
            }
        }
    }
    result.status = Some(stack.last().map_or(initial, |&(_, status)| status));
    result.applied = stack.into_iter().map(|(i, status)| (events[i].id.clone(), status)).collect();
    result
}

/// A value that follows the last writer along causal order, but keeps the maximum of concurrent writes (加急 is sticky,
/// a stronger 督办 level is not lost to a concurrent weaker one).
#[derive(Debug, Clone)]
pub struct CausalMax<T: Ord + Copy> {
    value: T,
    writers: Vec<EventId>,
}

impl<T: Ord + Copy> CausalMax<T> {
    pub fn new(value: T) -> CausalMax<T> {
        CausalMax { value, writers: Vec::new() }
    }

    pub fn write(&mut self, ancestry: &Ancestry, id: &EventId, value: T) {
        let ancestors = ancestry.ancestors(id);
        if self.writers.iter().all(|writer| ancestors.contains(writer)) {
            self.value = value;
        } else {
            self.value = self.value.max(value);
        }
        self.writers.retain(|writer| !ancestors.contains(writer));
        self.writers.push(id.clone());
    }

    pub fn get(&self) -> T {
        self.value
    }
}

pub type PriorityFold = CausalMax<Priority>;
pub type SupervisionFold = CausalMax<SupervisionLevel>;
