//! The case log of a service hall's "办不成事" window on Automerge: one document per case.
//!
//! Pure: no I/O, no clock, no randomness. Callers pass time (`now_ms`), entropy and the author.
pub mod amjson;
pub mod bundle;
pub mod calendar;
pub mod case;
pub mod command;
pub mod duplicates;
pub mod enrollment;
pub mod event;
pub mod fold;
pub mod fuzzing;
pub mod hall;
pub mod ids;
pub mod intake;
pub mod kpi;
pub mod limits;
pub mod materials;
pub mod messages;
pub mod model;
pub mod pi;
pub mod public_text;
pub mod roster;
pub mod seal;
pub mod signing;
pub mod sync;
pub mod time;
pub mod upload;
pub mod view;
pub mod wire;

pub use case::{CaseDoc, LoadError};
pub use command::{Command, CommandError, ConflictDecision, Ctx, Registration};
pub use event::{Author, Event, EventKind};
pub use hall::{Hall, HallDoc};
pub use ids::{CaseId, EventId, QueryCode, RegNo};
pub use view::{CaseView, PublicCaseView};
