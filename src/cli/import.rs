//! `import-mcp`: MCP service definitions into a configuration (needs none).

use anyhow::Context;

use mcrecover::import;

use super::common::{sys, Exit, EXIT_CONFIG};
use super::ImportMcpArgs;

/// Convert, print the warnings, write the validated text.
pub(super) fn run(args: &ImportMcpArgs) -> Result<u8, Exit> {
    let imported = import::import_paths(
        &args.dirs,
        args.merge.as_deref(),
        args.node.as_deref(),
        args.out.as_deref(),
    )
    .map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
    for w in &imported.warnings {
        eprintln!("mcrecover: warning: {w}");
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &imported.text)
                .with_context(|| format!("writing {}", path.display()))
                .map_err(sys)?;
            eprintln!(
                "{}: {} containers imported, {} warnings",
                path.display(),
                imported.converted.len(),
                imported.warnings.len()
            );
        }
        None => print!("{}", imported.text),
    }
    Ok(0)
}
