//! Result rows, statistics, the machine description, and docs/performance.md:
//! every item appends [`Row`]s; the table is printed and (unless
//! `--no-write`) merged into `docs/performance.json` (rows of the items run
//! now replace that item's old rows) and rendered between the markers of
//! `docs/performance.md`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Median, spread and tail of a sample.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct Summary {
    /// Number of values.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
}

/// Summary of `values` (NaN-free); `None` when empty.
pub(crate) fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        n,
        median,
        min: v[0],
        max: v[n - 1],
        p99: percentile_sorted(&v, 99.0),
    })
}

/// Nearest-rank percentile of sorted `v` (non-empty).
pub(crate) fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// Target met.
    Pass,
    /// Target missed.
    Miss,
    /// No target (context figure).
    Info,
    /// Could not be measured (reason in the row's note).
    Skipped,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    /// Item id (`recovery`, `reaction`, `footprint`, `scale-config`, ...).
    pub item: String,
    /// What is measured.
    pub figure: String,
    /// The target, as text (empty: none).
    pub target: String,
    /// Measured value, as text (median).
    pub measured: String,
    /// Spread, as text (e.g. `min-max, n=5`).
    pub spread: String,
    /// Ratio column (as text, may be empty).
    pub ratio: String,
    /// Pass / miss / info / skipped.
    pub verdict: Verdict,
    /// Free note (why skipped, how measured).
    pub note: String,
    /// UTC time of the measurement and the 1-minute load average then.
    pub when: String,
}

impl Row {
    /// A row with the current time and load.
    pub(crate) fn new(item: &str, figure: &str, target: &str) -> Self {
        Row {
            item: item.into(),
            figure: figure.into(),
            target: target.into(),
            measured: String::new(),
            spread: String::new(),
            ratio: String::new(),
            verdict: Verdict::Info,
            note: String::new(),
            when: now_and_load(),
        }
    }

    /// Sets measured (median) and spread from a summary, formatted with `unit`.
    pub(crate) fn summary(mut self, s: Option<Summary>, unit: &str) -> Self {
        match s {
            Some(s) => {
                self.measured = format!("{} {unit}", fmt_num(s.median));
                self.spread = if s.n > 1 {
                    format!("{}–{} (n={})", fmt_num(s.min), fmt_num(s.max), s.n)
                } else {
                    "n=1".into()
                };
            }
            None => {
                self.measured = "-".into();
                self.verdict = Verdict::Skipped;
            }
        }
        self
    }

    /// Sets the verdict (pass when `ok`).
    pub(crate) fn pass(mut self, ok: bool) -> Self {
        if self.verdict != Verdict::Skipped {
            self.verdict = if ok { Verdict::Pass } else { Verdict::Miss };
        }
        self
    }

    /// Sets the ratio column.
    pub(crate) fn ratio(mut self, r: impl Into<String>) -> Self {
        self.ratio = r.into();
        self
    }

    /// Sets the note.
    pub(crate) fn note(mut self, n: impl Into<String>) -> Self {
        self.note = n.into();
        self
    }

    /// A skipped row with `reason`.
    pub(crate) fn skipped(item: &str, figure: &str, target: &str, reason: &str) -> Self {
        let mut r = Row::new(item, figure, target);
        r.measured = "-".into();
        r.verdict = Verdict::Skipped;
        r.note = reason.into();
        r
    }
}

/// Number formatting: 3 significant-ish digits.
pub(crate) fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `2026-11-26T01:50Z, load 3.2`.
pub(crate) fn now_and_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("{}, load {load}", utc_now())
}

/// Current UTC time, minutes precision (via `date`, no time crate).
pub(crate) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%MZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("({cmd} not found)"))
}

/// The machine: nproc, CPU model, memory, kernel, podman and systemd versions, load.
pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!(
        "{cpus} CPU ({model}), {mem}, kernel {}, {}, {}, load average at report time: {}",
        first_line("uname", &["-r"]),
        first_line("podman", &["--version"]),
        first_line("systemctl", &["--version"]),
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    )
}

/// The table as markdown.
pub(crate) fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| item | figure | target | measured (median) | spread | ratio | result | measured at | note |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let verdict = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Miss => "**miss**",
            Verdict::Info => "info",
            Verdict::Skipped => "skipped",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.item,
            r.figure,
            r.target,
            r.measured,
            r.spread,
            r.ratio,
            verdict,
            r.when,
            r.note.replace('|', "\\|").replace('\n', " ")
        ));
    }
    s
}

/// The table as plain text for the terminal.
pub(crate) fn text_table(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let verdict = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
            Verdict::Skipped => "skip",
        };
        s.push_str(&format!(
            "{verdict:4}  {:13} {:48} {:>14}  [{}]  target {}  {}\n",
            r.item, r.figure, r.measured, r.spread, r.target, r.ratio
        ));
        if !r.note.is_empty() && matches!(r.verdict, Verdict::Skipped | Verdict::Miss) {
            s.push_str(&format!("      note: {}\n", r.note));
        }
    }
    s
}

/// Begin/end markers of the generated part of docs/performance.md.
pub(crate) const BEGIN: &str =
    "<!-- mcbench:begin (generated by scripts/bench; edit outside the markers) -->";
/// See [`BEGIN`].
pub(crate) const END: &str = "<!-- mcbench:end -->";

/// Merges `rows` (replacing earlier rows of the same items) into `json`, and
/// renders the whole table with the machine description between the markers
/// of `md` (appending the markers when absent).
pub(crate) fn write_docs(
    md: &Path,
    json: &Path,
    rows: &[Row],
    items_run: &[String],
    quick: bool,
) -> Result<()> {
    let mut all: Vec<Row> = std::fs::read(json)
        .ok()
        .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
        .map(|s| s.rows)
        .unwrap_or_default();
    all.retain(|r| !items_run.contains(&r.item));
    all.extend(rows.iter().cloned());
    let order = crate::ITEMS;
    // Each item, then its trixie rows (`ITEM-trixie`).
    all.sort_by_key(|r| {
        let (base, trixie) = match r.item.strip_suffix("-trixie") {
            Some(b) => (b, 1),
            None => (r.item.as_str(), 0),
        };
        order
            .iter()
            .position(|i| *i == base)
            .map_or(usize::MAX, |p| 2 * p + trixie)
    });
    let machine = machine();
    let stored = Stored {
        machine: machine.clone(),
        rows: all.clone(),
    };
    std::fs::write(json, serde_json::to_vec_pretty(&stored)?)
        .with_context(|| format!("write {}", json.display()))?;
    let mut gen = format!(
        "{BEGIN}\n\nMachine: {machine}.\nLast run: `scripts/bench{}{}` at {}. Rows keep the time and load of their own run.\n\n",
        if quick { " --quick" } else { "" },
        if items_run.len() == crate::ITEMS.len() && !items_run[0].ends_with("-trixie") {
            String::new()
        } else {
            format!(" {}", items_run.join(" "))
        },
        utc_now()
    );
    gen.push_str(&markdown_table(&all));
    gen.push('\n');
    gen.push_str(END);
    let text = std::fs::read_to_string(md).unwrap_or_default();
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &text[..b], gen, &text[e + END.len()..]),
        _ => format!("{text}\n{gen}\n"),
    };
    std::fs::write(md, new).with_context(|| format!("write {}", md.display()))?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Stored {
    machine: String,
    rows: Vec<Row>,
}

#[cfg(test)]
// A failed unwrap is the test failure (as in the root crate's test modules).
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.p99), (3.0, 1.0, 5.0, 5.0));
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.median, 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&v, 99.0), 99.0);
        assert_eq!(percentile_sorted(&v, 50.0), 50.0);
        assert!(summarize(&[]).is_none());
    }
}
