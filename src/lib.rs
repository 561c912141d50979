//! mcrecover: brings a podman container platform back from zero on a systemd
//! machine, in dependency order, health-gated, and keeps it healthy.
//!
//! Data flows one way, one module per step:
//! [`config`] -> [`plan`] -> [`render`] (unit files) -> [`drive`] (systemd over
//! D-Bus) -> [`check`] / [`recover`] (health-gated recovery) -> [`watch`] (the
//! daemon: restart with backoff, hold, escalate, D-Bus API).

pub mod check;
pub mod config;
pub mod diagnose;
pub mod doctor;
pub mod drift;
pub mod drive;
pub mod engine;
pub mod images;
pub mod import;
pub mod metrics;
pub mod plan;
pub mod recover;
pub mod render;
pub mod runner;
pub(crate) mod safe_fs;
pub mod watch;
