//! `forge run`: build, then run the binary with the remaining arguments.

use anyhow::Context as _;
use forge::config::{Override, OverrideError};

use super::build::build_binary;
use crate::args::{BuildArgs, ExperimentArgs, RunArgs};
use crate::exit::ExitStatus;

pub(crate) fn exec(
    args: &RunArgs,
    dotted: Vec<Result<Override, OverrideError>>,
) -> anyhow::Result<ExitStatus> {
    // An experiment that starts from another's final model: run that one first if needed.
    if let Some(status) = run_prerequisite(args)? {
        return Ok(status);
    }
    let built = match build_binary(&args.build, dotted)? {
        Ok(built) => built,
        Err(status) => return Ok(status),
    };
    let status = std::process::Command::new(&built.binary)
        .args(&args.binary_args)
        .status()
        .with_context(|| format!("running {}", built.binary.display()))?;
    Ok(match status.code() {
        Some(0) => ExitStatus::Success,
        Some(2) => ExitStatus::Invalid,
        _ => ExitStatus::Failure,
    })
}

/// Runs the experiment named by `model.path` when its final model does not exist yet. Returns a
/// status to stop with when that run fails.
fn run_prerequisite(args: &RunArgs) -> anyhow::Result<Option<ExitStatus>> {
    let options = forge::config::LoadOptions {
        check_files: false,
        ..Default::default()
    };
    // Problems with this file itself are reported by the build below.
    let Ok(loaded) = forge::config::load_file(&args.build.experiment.file, &options) else {
        return Ok(None);
    };
    let source = match loaded.model_source() {
        Ok(source) => source,
        Err(message) => anyhow::bail!(message),
    };
    let forge::config::ModelSource::Experiment {
        file, final_dir, ..
    } = source
    else {
        return Ok(None);
    };
    if final_dir.join("config.json").is_file() {
        eprintln!(
            "forge: starting from {} (the final model of {}; delete it to rerun that stage)",
            final_dir.display(),
            file.display()
        );
        return Ok(None);
    }
    eprintln!(
        "forge: `model.path` names {}: running it first",
        file.display()
    );
    let stage = RunArgs {
        build: BuildArgs {
            experiment: ExperimentArgs {
                file: file.clone(),
                set: Vec::new(),
            },
            profile: args.build.profile.clone(),
            force: args.build.force,
        },
        binary_args: Vec::new(),
    };
    match exec(&stage, Vec::new())? {
        ExitStatus::Success => Ok(None),
        failed => Ok(Some(failed)),
    }
}
