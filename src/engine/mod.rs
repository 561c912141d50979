//! The reconciliation engine's sans-IO core: one state machine for boot
//! recovery (`mcrecover recover`), stage gates (`mcrecover gate`) and the
//! daemon, which differ only in their [`Goal`]. Events in, effects out
//! ([`step`]); every service's and stage's lifecycle is an enum
//! ([`Life`], [`StagePhase`]); no I/O and no clock inside (`now` is passed
//! in), so every rule is testable without systemd. The effects are carried
//! out by [`crate::runner`]; the daemon shell is [`crate::watch`].
//!
//! Layout: [`model`] (the world), [`step`] (transitions), [`probe`] (the one
//! check scheduler), [`policy`] (backoff and escalation arithmetic,
//! upstreams), [`history`] (what is persisted and what survives a restart),
//! [`drill`] (recovery drills: stop a scope, recover it, measure the RTO).

pub mod drill;
pub mod history;
pub mod model;
pub mod policy;
pub mod probe;
pub mod step;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_nodes;

pub use drill::{DrillOutcome, DrillResult, DrillScope, ServiceRto};
pub use model::{Goal, Life, StageId, StagePhase, Svc, SvcId, World};
pub use step::{next_deadline, step, Effect, Event, Note};
