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

/// Whether a Vulkan driver (for wgpu kernel tests) is installed: the loader and at least one ICD.
///
/// Kernel tests call [`require_vulkan`]: without a driver they are skipped with a message on a
/// developer machine, but fail under CI (`CI` set), where `.ci/run` installs Mesa's lavapipe.
pub fn vulkan_available() -> bool {
    let loader = [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
        "/usr/lib/libvulkan.so.1",
        "/usr/lib64/libvulkan.so.1",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    let icd = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|dir| {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
        });
    loader && icd
}

/// True when the kernel tests can run; false (after saying why) when they must be skipped.
///
/// # Panics
/// Under CI (`CI` set) when no Vulkan driver is installed: there the tests must run.
pub fn require_vulkan(test: &str) -> bool {
    if vulkan_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: no Vulkan driver under CI; .ci/run installs mesa-vulkan-drivers libvulkan1"
    );
    eprintln!(
        "{test}: SKIPPED, no Vulkan driver: `apt-get install -y mesa-vulkan-drivers libvulkan1` to run the kernel tests"
    );
    false
}
