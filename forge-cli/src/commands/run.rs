//! `forge run`: build, then run the binary with the remaining arguments.

use anyhow::Context as _;
use forge::config::{Override, OverrideError};

use super::build::build_binary;
use crate::args::RunArgs;
use crate::exit::ExitStatus;

pub(crate) fn exec(
    args: &RunArgs,
    dotted: Vec<Result<Override, OverrideError>>,
) -> anyhow::Result<ExitStatus> {
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
