//! Running cargo on a generated crate.

use std::process::Command;

use super::{BuildError, BuildOptions, GeneratedCrate, Toolchain};

pub(super) fn compile(
    generated: &GeneratedCrate,
    toolchain: &Toolchain,
    options: &BuildOptions,
) -> Result<(), BuildError> {
    let manifest = generated.crate_dir.join("Cargo.toml");
    let mut command = Command::new(&toolchain.cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--package")
        .arg(&generated.package)
        .arg("--target-dir")
        .arg(&toolchain.target_dir)
        .arg("--profile")
        .arg(&options.profile);
    let status = command
        .status()
        .map_err(|source| BuildError::CargoMissing {
            cargo: toolchain.cargo.display().to_string(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Compile { status })
    }
}
