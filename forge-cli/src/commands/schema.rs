//! `forge schema`.

use anyhow::Context as _;

use crate::args::SchemaArgs;
use crate::exit::ExitStatus;

pub(crate) fn exec(args: &SchemaArgs) -> anyhow::Result<ExitStatus> {
    let text = forge::config::schema_text();
    if args.output.as_os_str() == "-" {
        print!("{text}");
        return Ok(ExitStatus::Success);
    }
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&args.output, text)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(ExitStatus::Success)
}
