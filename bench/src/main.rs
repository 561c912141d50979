//! `mcbench`: the benchmark harness of issue 7 (run it through `scripts/bench`).
//!
//! `mcbench [--quick] [--no-write] [ITEM...]` runs the items (all by default),
//! prints a table and merges it into docs/performance.md (+ performance.json).
//! Items: `recovery` (1), `reaction` (2), `footprint` (3), `scale-config`,
//! `scale-validation`, `scale-checks`, `scale-start` (4; `scale` = all four).
//! Numbers are never asserted in tests; every figure is written with the time
//! and load of its run.
//!
//! Hidden helper modes (used by the items themselves): `mcbench __serve N`
//! (the check-target server of scale-checks, a separate process so its CPU is
//! not counted) and `mcbench __baseline ...` (the compose-like 1 s polling gate
//! of item 1, run inside the sandbox); `mcbench __gen-config FILE [SERVICES
//! STAGES [random|chain|cycle]]` writes scale-config's generated configuration,
//! with scale-validation's dependency edges when a shape is given (for profiling).

mod daemon;
mod peers;
mod recovery;
mod report;
mod sandbox;
mod scale;
mod validation;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;

use report::Row;

/// Every item, in table order.
pub const ITEMS: &[&str] = &[
    "recovery",
    "reaction",
    "footprint",
    "scale-config",
    "scale-validation",
    "scale-checks",
    "scale-start",
    "peer-gating",
];

#[derive(Parser, Debug)]
#[command(
    name = "mcbench",
    about = "mcrecover benchmarks (issue 7); see docs/performance.md"
)]
struct Cli {
    /// Short variants (each item well under a minute; fewer trials).
    #[arg(long)]
    quick: bool,
    /// Print only; do not touch docs/performance.{md,json}.
    #[arg(long)]
    no_write: bool,
    /// The mcrecover binary under test (default: <target>/release/mcrecover).
    #[arg(long, env = "MCBENCH_MCRECOVER")]
    mcrecover: Option<PathBuf>,
    /// Trials for the repeated items (default: 1 with --quick for recovery, else 5;
    /// reaction: 5 quick / 20).
    #[arg(long)]
    trials: Option<usize>,
    /// Also write the raw measurements as JSON here.
    #[arg(long)]
    raw: Option<PathBuf>,
    /// The sandboxes' base for the items that boot one (recovery, reaction,
    /// footprint, scale-start): `bookworm` (the host's systemd 252 and
    /// podman 4.3) or `trixie` (the testbed's Debian trixie root
    /// filesystem: systemd 257, podman 5.4; `scripts/build-trixie-rootfs`).
    /// Rows measured on trixie are items of their own (`reaction-trixie`,
    /// ...).
    #[arg(long, env = "MCBENCH_BASE", default_value = "bookworm")]
    base: String,
    /// Items to run (default all): recovery reaction footprint scale-config
    /// scale-validation scale-checks scale-start, or 1 2 3 4 / scale.
    items: Vec<String>,
}

/// What every item gets.
pub struct Ctx {
    /// --quick.
    pub quick: bool,
    /// --trials.
    pub trials: Option<usize>,
    /// The mcrecover binary.
    pub mcrecover: PathBuf,
    /// This binary (installed into sandboxes for the baseline).
    pub mcbench: PathBuf,
    /// Raw measurements, by item.
    pub raw: serde_json::Map<String, serde_json::Value>,
    /// The sandboxes' base (`--base`); `None`: the host's own.
    pub base: Option<mcrecover_testbed::Base>,
}

fn expand(items: &[String]) -> Result<Vec<String>> {
    if items.is_empty() {
        return Ok(ITEMS.iter().map(|s| s.to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for i in items {
        let add: Vec<&str> = match i.as_str() {
            "1" | "recovery" => vec!["recovery"],
            "2" | "reaction" => vec!["reaction"],
            "3" | "footprint" => vec!["footprint"],
            "4" | "scale" => vec![
                "scale-config",
                "scale-validation",
                "scale-checks",
                "scale-start",
            ],
            "7" | "peer-gating" => vec!["peer-gating"],
            "scale-config" | "scale-validation" | "scale-checks" | "scale-start" => {
                vec![i.as_str()]
            }
            other => bail!(
                "unknown item `{other}` (known: {}, 1-4, scale)",
                ITEMS.join(" ")
            ),
        };
        for a in add {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        }
    }
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("__serve") => scale::serve_main(&args[2..]),
        Some("__baseline") => recovery::baseline_main(&args[2..]),
        Some("__gen-config") => scale::gen_config_main(&args[2..]),
        _ => run(),
    };
    if let Err(e) = result {
        eprintln!("mcbench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let items = expand(&cli.items)?;
    let root = mcrecover_testbed::workspace_root();
    let mcrecover = cli
        .mcrecover
        .clone()
        .unwrap_or_else(|| mcrecover_testbed::target_dir().join("release/mcrecover"));
    if !mcrecover.is_file() {
        bail!(
            "{} missing: build it (scripts/bench does: cargo build --release -p mcrecover) or pass --mcrecover",
            mcrecover.display()
        );
    }
    let mut ctx = Ctx {
        quick: cli.quick,
        trials: cli.trials,
        mcrecover,
        mcbench: std::env::current_exe()?,
        raw: serde_json::Map::new(),
        base: match cli.base.as_str() {
            "bookworm" | "host" => None,
            "trixie" => {
                if let Some(why) = mcrecover_testbed::trixie_missing() {
                    bail!("--base trixie: {why}");
                }
                Some(mcrecover_testbed::Base::trixie().map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            other => bail!("unknown --base `{other}` (bookworm, trixie)"),
        },
    };
    let suffix = if ctx.base.is_some() { "-trixie" } else { "" };
    let items_run: Vec<String> = items.iter().map(|i| format!("{i}{suffix}")).collect();
    eprintln!("mcbench: machine: {}", report::machine());
    let mut rows: Vec<Row> = Vec::new();
    for item in &items {
        eprintln!("mcbench: == {item} ==");
        let t = std::time::Instant::now();
        let got = match item.as_str() {
            "recovery" => recovery::run(&mut ctx),
            "reaction" => daemon::reaction(&mut ctx),
            "footprint" => daemon::footprint(&mut ctx),
            "scale-config" => scale::config(&mut ctx),
            "scale-validation" => validation::run(&mut ctx),
            "scale-checks" => scale::checks(&mut ctx),
            "scale-start" => scale::start(&mut ctx),
            "peer-gating" => peers::run(&mut ctx),
            _ => unreachable!("expanded"),
        };
        let mut got = got.unwrap_or_else(|e| {
            eprintln!("mcbench: {item} failed: {e:#}");
            vec![Row::skipped(item, "(item failed)", "", &format!("{e:#}"))]
        });
        if ctx.base.is_some() {
            for r in &mut got {
                r.item.push_str(suffix);
                r.note = format!(
                    "trixie sandbox (systemd 257, podman 5.4){}{}",
                    if r.note.is_empty() { "" } else { "; " },
                    r.note
                );
            }
        }
        eprintln!("mcbench: {item} took {:.1}s", t.elapsed().as_secs_f64());
        eprint!("{}", report::text_table(&got));
        rows.extend(got);
    }
    println!("{}", report::text_table(&rows));
    if let Some(raw) = &cli.raw {
        std::fs::write(raw, serde_json::to_vec_pretty(&ctx.raw)?)?;
    }
    if !cli.no_write {
        report::write_docs(
            &root.join("docs/performance.md"),
            &root.join("docs/performance.json"),
            &rows,
            &items_run,
            cli.quick,
        )?;
        eprintln!("mcbench: wrote docs/performance.md and docs/performance.json");
    }
    Ok(())
}
