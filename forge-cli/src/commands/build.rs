//! `forge build`.

use forge::build::{self, BuildOptions, Built};
use forge::config::{Override, OverrideError};

use super::{load, print_report};
use crate::args::BuildArgs;
use crate::exit::ExitStatus;

pub(crate) fn exec(
    args: &BuildArgs,
    dotted: Vec<Result<Override, OverrideError>>,
) -> anyhow::Result<ExitStatus> {
    match build_binary(args, dotted)? {
        Ok(built) => {
            println!("{}", built.binary.display());
            Ok(ExitStatus::Success)
        }
        Err(status) => Ok(status),
    }
}

/// Loads, builds and checks the experiment's binary; `Err(status)` when the experiment was
/// invalid (already reported).
pub(crate) fn build_binary(
    args: &BuildArgs,
    dotted: Vec<Result<Override, OverrideError>>,
) -> anyhow::Result<Result<Built, ExitStatus>> {
    let exp = match load(&args.experiment, dotted, true) {
        Ok(exp) => exp,
        Err(report) => {
            print_report(&report);
            return Ok(Err(ExitStatus::Invalid));
        }
    };
    print_report(&exp.loaded.warnings);
    let toolchain = crate::toolchain::discover();
    let options = BuildOptions {
        profile: args.profile.clone(),
        force: args.force,
    };
    let built = build::build(
        &exp.loaded,
        &args.experiment.file,
        &exp.source,
        &exp.overrides,
        &toolchain,
        &options,
    )?;
    eprintln!(
        "{} `{}` ({})",
        if built.cached { "Up to date" } else { "Built" },
        exp.loaded.experiment.name,
        built.crate_dir.display()
    );
    // The binary knows the user's own losses and rewards: let it check what `forge` could not.
    let status = std::process::Command::new(&built.binary)
        .arg("--check")
        .status()?;
    if !status.success() {
        return Ok(Err(ExitStatus::Invalid));
    }
    Ok(Ok(built))
}
