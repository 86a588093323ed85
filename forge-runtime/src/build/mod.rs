//! `forge build`: turn a loaded experiment into a crate whose `main.rs` names the concrete
//! backend, dtype, architecture, loss and rewards, embeds the experiment, and includes the user's
//! code; then compile it into the Forge workspace's target directory, so only that small crate
//! compiles.
//!
//! Layout of `<target>/forge/<name>-<hash>/`: a copy of Forge's workspace manifest and lockfile,
//! links to Forge's crates, and the crate itself in `experiment/` (see [`workspace`] for why).

mod cargo;
mod generate;
mod workspace;

use std::path::{Path, PathBuf};

pub use generate::{GeneratedCrate, Selection};

use crate::config::{Loaded, Override};

/// Where Forge's own sources and build outputs are.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The Forge checkout: its workspace `Cargo.toml` and `Cargo.lock` (which generated workspaces
    /// copy, so they resolve the same versions and reuse the compiled crates) and its crates.
    pub home: PathBuf,
    /// Cargo target directory shared with the Forge workspace.
    pub target_dir: PathBuf,
    /// The `cargo` program.
    pub cargo: PathBuf,
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Cargo profile: `release` for training runs, `dev` for quick checks.
    pub profile: String,
    /// Rebuild even when nothing changed.
    pub force: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            profile: "release".into(),
            force: false,
        }
    }
}

/// A built experiment binary.
#[derive(Debug, Clone)]
pub struct Built {
    /// The executable.
    pub binary: PathBuf,
    /// The generated crate.
    pub crate_dir: PathBuf,
    /// True when nothing had changed and cargo was not run.
    pub cached: bool,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The experiment names something the build cannot resolve (checkpoint architecture...).
    #[error("{0}")]
    Experiment(String),
    /// Reading or writing build files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// cargo could not be started.
    #[error("cannot run `{cargo}`: {source}")]
    CargoMissing {
        /// The program tried.
        cargo: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// cargo ran and failed (its errors were printed, against the user's own file paths).
    #[error("compiling the experiment binary failed (cargo exited with {status})")]
    Compile {
        /// cargo's exit status.
        status: std::process::ExitStatus,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// Generates the experiment's crate and compiles it, unless an identical build exists.
///
/// `file` and `source` are the experiment file and its text; `overrides` those given on the
/// command line, embedded so that the binary resolves the same configuration.
pub fn build(
    loaded: &Loaded,
    file: &Path,
    source: &str,
    overrides: &[Override],
    toolchain: &Toolchain,
    options: &BuildOptions,
) -> Result<Built, BuildError> {
    let generated = generate::generate(loaded, file, source, overrides, toolchain)?;
    let binary = generated.binary_path(toolchain, options);
    let stamp = generated.crate_dir.join("build.stamp");
    let fingerprint = generated.fingerprint()?;
    if !options.force
        && binary.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == fingerprint)
    {
        return Ok(Built {
            binary,
            crate_dir: generated.crate_dir,
            cached: true,
        });
    }
    let _ = std::fs::remove_file(&stamp);
    cargo::compile(&generated, toolchain, options)?;
    if !binary.is_file() {
        return Err(BuildError::Experiment(format!(
            "cargo succeeded but `{}` is missing",
            binary.display()
        )));
    }
    std::fs::write(&stamp, format!("{fingerprint}\n"))
        .map_err(io(format!("writing {}", stamp.display())))?;
    Ok(Built {
        binary,
        crate_dir: generated.crate_dir,
        cached: false,
    })
}
