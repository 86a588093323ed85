//! The `forge` command. Logic lives in the `forge` library; each command here is a thin `exec`.

use std::process::ExitCode;

mod args;
mod commands;
mod exit;
mod toolchain;

fn main() -> ExitCode {
    let (argv, dotted) = forge::config::extract_dotted_flags(std::env::args().collect());
    let cli = <args::Cli as clap::Parser>::parse_from(argv);
    commands::dispatch(cli, dotted)
        .unwrap_or_else(|err| {
            eprintln!("error: {err:#}");
            exit::ExitStatus::Failure
        })
        .into()
}
