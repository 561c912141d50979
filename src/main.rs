//! The `mcrecover` command line: parses flags, loads the configuration and
//! runs one step of the flow (config -> plan -> render -> drive -> check ->
//! watch), or talks to the running daemon over D-Bus (status, ack, ...).
//! Errors get context here (anyhow); the library's errors are typed.
//!
//! The commands live in `cli/`: `cli/mod.rs` holds the clap definitions and
//! the dispatch, one file per command (or small group) does the work.
//!
//! Exit codes: 0 success, 1 some check/service failed, 2 configuration or
//! usage error, 3 recovery blocked by a `block` stage, 4 system error (D-Bus,
//! I/O, permissions).

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
