//! One file per subcommand; each `exec` reads its arguments and calls the `forge` library.

mod build;
mod generate;
mod init;
mod loss_eval;
mod plot;
mod run;
mod schema;
mod validate;

use std::io::IsTerminal;

use forge::config::{self, Diagnostics, LoadOptions, Loaded, Override, OverrideError};

use crate::args::{Cli, Command, ExperimentArgs};
use crate::exit::ExitStatus;

pub(crate) fn dispatch(
    cli: Cli,
    dotted: Vec<Result<Override, OverrideError>>,
) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Validate(args) => validate::exec(&args, dotted),
        Command::Schema(args) => schema::exec(&args),
        Command::Build(args) => build::exec(&args, dotted),
        Command::Run(args) => run::exec(&args, dotted),
        Command::Init(args) => init::exec(&args),
        Command::Loss(crate::args::LossCommand::Eval(args)) => loss_eval::exec(&args),
        Command::Generate(args) => generate::exec(&args),
        Command::Plot(args) => plot::exec(&args),
    }
}

/// An experiment loaded from the command line: the config, its text and the overrides used.
pub(crate) struct Experiment {
    pub loaded: Loaded,
    pub source: String,
    pub overrides: Vec<Override>,
}

/// Parses the overrides and loads the experiment; on any problem, the report (in the error).
pub(crate) fn load(
    args: &ExperimentArgs,
    dotted: Vec<Result<Override, OverrideError>>,
    check_files: bool,
) -> Result<Experiment, Diagnostics> {
    let file = args.file.display().to_string();
    let mut overrides = Vec::new();
    let mut bad = Vec::new();
    for o in args
        .set
        .iter()
        .map(|s| Override::parse_set(s))
        .chain(dotted)
    {
        match o {
            Ok(o) => overrides.push(o),
            Err(e) => bad.push(config::Diagnostic::error(
                e.reason,
                Some(config::Origin::Override(e.text)),
            )),
        }
    }
    if !bad.is_empty() {
        return Err(Diagnostics {
            file,
            source: String::new(),
            items: bad,
        });
    }
    let options = LoadOptions {
        overrides: overrides.clone(),
        check_files,
        user_code_registered: false,
    };
    let loaded = config::load_file(&args.file, &options)?;
    // load_file read it once already; the text is needed again for embedding.
    let source = std::fs::read_to_string(&args.file).unwrap_or_default();
    Ok(Experiment {
        loaded,
        source,
        overrides,
    })
}

/// Prints a report to standard error, styled on a terminal.
pub(crate) fn print_report(report: &Diagnostics) {
    let color = std::io::stderr().is_terminal();
    eprint!("{}", report.render(color));
}
