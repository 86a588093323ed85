//! Where Forge's sources and build outputs are, for `forge build`.

use std::path::PathBuf;

use forge::build::Toolchain;

/// `FORGE_HOME` (a Forge checkout), else the checkout this binary was built from.
pub(crate) fn discover() -> Toolchain {
    let home = std::env::var_os("FORGE_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        PathBuf::from,
    );
    let home = home.canonicalize().unwrap_or(home);
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| home.join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    Toolchain {
        home,
        target_dir,
        cargo,
    }
}
