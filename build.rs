//! Build script: links the release `mcrecover` binary with the functions the
//! daemon runs placed first, in the order of `link/mcrecover.order`, when the
//! linker can do that (LLD's `--symbol-ordering-file`, the default linker of
//! Rust's x86_64 Linux toolchains since 1.90).
//!
//! Why: the kernel maps a binary's code 64 KiB around every page a process
//! touches, so with the daemon's functions spread over the whole `.text`
//! nearly all of it was resident (5.8 of 5.9 MiB) although the daemon runs
//! less than half of it. Packed together, the rest stays on disk.
//! docs/performance.md ("The binary's layout") has the measurements;
//! `scripts/symbol-order` regenerates the file from a profiled bench run.
//!
//! Nothing changes but the layout: a linker without the option, another
//! toolchain (its symbol names differ, so no line matches) or
//! `MCRECOVER_NO_SYMBOL_ORDER=1` give the plain layout.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const ORDER_FILE: &str = "link/mcrecover.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MCRECOVER_NO_SYMBOL_ORDER");
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join(ORDER_FILE);
    let wanted = env::var("PROFILE").as_deref() == Ok("release")
        && env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var_os("MCRECOVER_NO_SYMBOL_ORDER").is_none()
        && order.is_file();
    if !wanted {
        return;
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    if linker_accepts(&args) {
        for a in &args {
            println!("cargo:rustc-link-arg-bin=mcrecover={a}");
        }
    } else {
        println!(
            "cargo:warning=the linker does not take --symbol-ordering-file (not LLD?): \
             mcrecover is linked in the plain order (a larger resident set, see docs/performance.md)"
        );
    }
}

/// Whether linking a trivial program with `args` (and this build's own
/// rustc flags and linker) succeeds.
fn linker_accepts(args: &[String]) -> bool {
    let (Some(out), Some(rustc)) = (env::var_os("OUT_DIR"), env::var_os("RUSTC")) else {
        return false;
    };
    let out = PathBuf::from(out);
    let src = out.join("order_probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let mut cmd = Command::new(rustc);
    cmd.arg(&src).arg("-o").arg(out.join("order_probe"));
    if let Ok(target) = env::var("TARGET") {
        cmd.args(["--target", &target]);
    }
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    for a in args {
        cmd.arg(format!("-Clink-arg={a}"));
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}
