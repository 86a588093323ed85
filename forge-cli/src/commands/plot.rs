//! `forge plot RUN_DIR`: metrics.jsonl as PNG curves.

use crate::args::PlotArgs;
use crate::exit::ExitStatus;

pub(crate) fn exec(args: &PlotArgs) -> anyhow::Result<ExitStatus> {
    let jsonl = args.run_dir.join("metrics.jsonl");
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.run_dir.join("curves.png"));
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    let drawn = forge::metrics::plot::plot_metrics(&jsonl, &out, &keys)?;
    eprintln!("{}: {}", out.display(), drawn.join(", "));
    Ok(ExitStatus::Success)
}
