//! `forge init DIR`: a new experiment with a custom loss and a custom reward that builds as is.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::args::InitArgs;
use crate::exit::ExitStatus;

/// The scaffold's files: path in the new directory, and contents with `{{name}}` and
/// `{{schema}}` placeholders.
const FILES: &[(&str, &str)] = &[
    (
        "experiment.yaml",
        include_str!("../../templates/init/experiment.yaml"),
    ),
    ("losses.rs", include_str!("../../templates/init/losses.rs")),
    (
        "rewards.rs",
        include_str!("../../templates/init/rewards.rs"),
    ),
    (
        "data/train.jsonl",
        include_str!("../../templates/init/data/train.jsonl"),
    ),
    (
        "model/config.json",
        include_str!("../../templates/init/model/config.json"),
    ),
    ("README.md", include_str!("../../templates/init/README.md")),
];

pub(crate) fn exec(args: &InitArgs) -> anyhow::Result<ExitStatus> {
    let dir = &args.dir;
    if dir.exists()
        && dir
            .read_dir()
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        eprintln!("error: `{}` exists and is not empty", dir.display());
        return Ok(ExitStatus::Invalid);
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(dir)?,
    };
    if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        eprintln!(
            "error: experiment name `{name}` must be letters, digits, `_`, `-` or `.`, starting with a letter or digit"
        );
        eprintln!("help: pass `--name NAME`");
        return Ok(ExitStatus::Invalid);
    }
    let schema = crate::toolchain::discover()
        .home
        .join("schemas/experiment.schema.json");
    let schema = schema.canonicalize().unwrap_or(schema);
    for (path, template) in FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = template
            .replace("{{name}}", &name)
            .replace("{{schema}}", &schema.display().to_string());
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("created experiment `{name}` in {}", dir.display());
    println!(
        "next: forge build {}",
        dir.join("experiment.yaml").display()
    );
    Ok(ExitStatus::Success)
}

fn default_name(dir: &Path) -> anyhow::Result<String> {
    let absolute = std::path::absolute(dir)?;
    match absolute.file_name().and_then(|n| n.to_str()) {
        Some(name) => Ok(name.to_string()),
        None => bail!(
            "cannot name an experiment after `{}`; pass --name",
            dir.display()
        ),
    }
}
