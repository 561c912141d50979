//! Live progress of a recovery on stderr: a redrawn table of services with
//! their state and elapsed time on a terminal, one line per transition otherwise.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::{RecoverEvent, StageStatus};

#[derive(Debug, Clone)]
struct Row {
    stage: String,
    state: String,
    detail: String,
    since: Option<Instant>,
    done_after: Option<f64>,
}

/// Progress printer; feed it every [`RecoverEvent`].
#[derive(Debug)]
pub struct Progress {
    table: bool,
    start: Instant,
    order: Vec<String>,
    rows: BTreeMap<String, Row>,
    drawn: usize,
    quiet: bool,
}

impl Progress {
    /// A printer that draws a table when stderr is a terminal that can move
    /// its cursor (not `TERM=dumb`) and `quiet` is false; otherwise plain
    /// lines, without any escape sequence.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            table: use_table(
                std::io::stderr().is_terminal(),
                std::env::var_os("TERM").as_deref(),
            ),
            start: Instant::now(),
            order: Vec::new(),
            rows: BTreeMap::new(),
            drawn: 0,
            quiet,
        }
    }

    /// Handle one event.
    pub fn event(&mut self, ev: &RecoverEvent) {
        if self.quiet {
            return;
        }
        let line = self.apply(ev);
        if self.table {
            self.redraw();
        } else if let Some(line) = line {
            eprintln!(
                "[{:>7.2}s] {}",
                self.start.elapsed().as_secs_f64(),
                printable(&line)
            );
        }
    }

    fn apply(&mut self, ev: &RecoverEvent) -> Option<String> {
        match ev {
            RecoverEvent::StageStarted {
                stage,
                index,
                total,
                services,
            } => {
                for s in services {
                    self.order.push(s.clone());
                    self.rows.insert(
                        s.clone(),
                        Row {
                            stage: stage.clone(),
                            state: "starting".into(),
                            detail: String::new(),
                            since: Some(Instant::now()),
                            done_after: None,
                        },
                    );
                }
                Some(format!(
                    "stage {}/{} {stage}: starting {}",
                    index + 1,
                    total,
                    services.join(", ")
                ))
            }
            RecoverEvent::UnitStarted {
                service,
                unit,
                result,
            } => {
                let row = self.rows.get_mut(service)?;
                match result {
                    Ok((job, active)) => {
                        row.state = if active == "active" {
                            "checking".into()
                        } else {
                            active.clone()
                        };
                        Some(format!("{unit}: start job {job}, unit {active}"))
                    }
                    Err(e) => {
                        row.state = "start failed".into();
                        row.detail = e.clone();
                        Some(format!("{unit}: {e}"))
                    }
                }
            }
            RecoverEvent::Check(st) => {
                let row = self.rows.get_mut(&st.service)?;
                let detail = st
                    .last
                    .as_ref()
                    .map(|o| o.detail.clone())
                    .unwrap_or_default();
                if row.done_after.is_none() {
                    row.detail = format!("{}: {detail}", st.check);
                }
                None
            }
            RecoverEvent::ServiceHealthy { service, at } => {
                let row = self.rows.get_mut(service)?;
                row.state = "healthy".into();
                row.detail.clear();
                row.done_after = row.since.map(|s| s.elapsed().as_secs_f64());
                Some(format!(
                    "{service}: healthy ({:.2}s after recovery start)",
                    at.as_secs_f64()
                ))
            }
            RecoverEvent::StageDone {
                stage,
                status,
                elapsed,
            } => {
                let verdict = match status {
                    StageStatus::Healthy => "healthy",
                    StageStatus::Failed => "FAILED",
                    StageStatus::Blocked => "blocked",
                    StageStatus::Pending => "pending",
                };
                for row in self
                    .rows
                    .values_mut()
                    .filter(|r| &r.stage == stage && r.done_after.is_none())
                {
                    row.state = "unhealthy".into();
                }
                Some(format!(
                    "stage {stage}: {verdict} in {:.2}s",
                    elapsed.as_secs_f64()
                ))
            }
        }
    }

    fn redraw(&mut self) {
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        let mut n = 0;
        for name in &self.order {
            let Some(r) = self.rows.get(name) else {
                continue;
            };
            let t = r
                .done_after
                .or_else(|| r.since.map(|s| s.elapsed().as_secs_f64()))
                .unwrap_or(0.0);
            let detail: String = printable(&r.detail).chars().take(60).collect();
            let _ = writeln!(
                err,
                "\x1b[2K  {:<12} {:<16} {:<12} {:>7.2}s  {detail}",
                r.stage, name, r.state, t
            );
            n += 1;
        }
        self.drawn = n;
        let _ = err.flush();
    }
}

/// Whether to draw the redrawn table (cursor movement): only on a terminal,
/// and not on one that declares it cannot move the cursor (`TERM=dumb`).
fn use_table(terminal: bool, term: Option<&OsStr>) -> bool {
    terminal && term.is_none_or(|t| !t.is_empty() && t != "dumb")
}

/// `text` without control characters (a detail from a unit or a check must
/// not move the cursor or clear the screen; the table's own sequences are
/// the only ones written).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_only_on_a_capable_terminal() {
        assert!(use_table(true, Some(OsStr::new("xterm"))));
        assert!(use_table(true, None));
        assert!(!use_table(false, Some(OsStr::new("xterm"))));
        assert!(!use_table(true, Some(OsStr::new("dumb"))));
        assert!(!use_table(true, Some(OsStr::new(""))));
    }

    #[test]
    fn a_long_multibyte_detail_does_not_panic() {
        let mut p = Progress::new(false);
        p.table = true;
        p.order.push("svc".into());
        p.rows.insert(
            "svc".into(),
            Row {
                stage: "s".into(),
                state: "checking".into(),
                detail: format!("{}é and more", "x".repeat(59)),
                since: None,
                done_after: None,
            },
        );
        p.redraw();
        assert_eq!(p.drawn, 1);
    }

    #[test]
    fn details_cannot_carry_escape_sequences() {
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a [2Jb c");
        assert_eq!(printable("100% ok"), "100% ok");
    }
}
