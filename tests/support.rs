//! Helpers for the end-to-end tests: locating and running the real `forge` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Forge workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root exists")
}

/// The `forge` binary cargo built beside this test (`cargo test --workspace` builds it, since
/// forge-cli has an integration test).
pub fn forge_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let forge = profile_dir.join(format!("forge{}", std::env::consts::EXE_SUFFIX));
    assert!(
        forge.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        forge.display()
    );
    forge
}

/// Runs `forge` with `args` in `dir`.
pub fn forge(dir: &Path, args: &[&str]) -> Output {
    Command::new(forge_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("forge runs")
}

/// Standard output and error of a finished command, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
