//! `forge init`, `forge build` and the generated binary, end to end: the scaffold builds as is,
//! the binary echoes its resolved config, an unchanged experiment is not rebuilt, and errors in
//! user code are reported against the user's own files.

use std::path::Path;
use std::process::Command;

use forge_tests::{forge, text};

fn build(dir: &Path, file: &str) -> std::process::Output {
    forge(dir, &["build", file, "--profile", "dev"])
}

#[test]
fn scaffold_builds_prints_its_config_and_is_cached() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = forge(tmp.path(), &["init", "scaffold", "--name", "e2e-scaffold"]);
    assert!(output.status.success(), "{output:?}");

    let output = build(tmp.path(), "scaffold/experiment.yaml");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "build failed:\n{stdout}\n{stderr}");
    let binary = stdout.trim().to_string();
    assert!(Path::new(&binary).is_file(), "`{binary}` is not the binary");
    assert!(stderr.contains("Built `e2e-scaffold`"), "{stderr}");

    let printed = Command::new(&binary)
        .arg("--print-config")
        .output()
        .expect("binary runs");
    let (config, err) = text(&printed);
    assert!(printed.status.success(), "{err}");
    let root = tmp.path().canonicalize().expect("canonical");
    for needle in [
        "name: e2e-scaffold".to_string(),
        "name: clipped_reinforce".to_string(),
        "max_weight: 2.0".to_string(),
        "name: last_number".to_string(),
        "architecture: qwen3".to_string(),
        format!("path: {}", root.join("scaffold/model").display()),
        "batch_size: 16".to_string(),
        // A default the file does not state.
        "adam_beta2: 0.999".to_string(),
    ] {
        assert!(
            config.contains(&needle),
            "--print-config lacks `{needle}`:\n{config}"
        );
    }

    // Overrides at run time go through the same validation, against the same file.
    let printed = Command::new(&binary)
        .args(["--set", "training.steps=7", "--print-config"])
        .output()
        .expect("runs");
    assert!(text(&printed).0.contains("steps: 7"), "{printed:?}");
    let rejected = Command::new(&binary)
        .args(["--set", "loss.max_weight=0.5", "--check"])
        .output()
        .expect("runs");
    let (_, err) = text(&rejected);
    assert_eq!(rejected.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`loss.max_weight` must be at least 1")
            && err.contains("--set loss.max_weight=0.5"),
        "{err}"
    );
    // What was compiled in cannot change at run time.
    let rejected = Command::new(&binary)
        .args(["--set", "backend=cuda", "--check"])
        .output()
        .expect("runs");
    assert_eq!(rejected.status.code(), Some(2));
    assert!(
        text(&rejected).1.contains("built for `cpu`"),
        "{rejected:?}"
    );

    let output = build(tmp.path(), "scaffold/experiment.yaml");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("Up to date `e2e-scaffold`"),
        "second build was not cached:\n{stderr}"
    );
    assert_eq!(stdout.trim(), binary);

    // `forge run` builds (cached) and passes arguments after `--` to the binary.
    let output = forge(
        tmp.path(),
        &[
            "run",
            "scaffold/experiment.yaml",
            "--profile",
            "dev",
            "--",
            "--print-config",
        ],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("name: e2e-scaffold"), "{stdout}");
}

#[test]
fn errors_in_user_code_point_at_the_users_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = forge(tmp.path(), &["init", "broken", "--name", "e2e-broken-code"]);
    assert!(output.status.success(), "{output:?}");
    let losses = tmp.path().join("broken/losses.rs");
    let source = std::fs::read_to_string(&losses).expect("losses.rs");
    std::fs::write(
        &losses,
        source.replace(
            "    advantage: f32,\n",
            "    advantage: f32,\n    entropy: f32,\n",
        ),
    )
    .expect("write");
    let rewards = tmp.path().join("broken/rewards.rs");
    let source = std::fs::read_to_string(&rewards).expect("rewards.rs");
    std::fs::write(&rewards, source.replace("=> 1.0,", "=> \"one\",")).expect("write");

    let output = build(tmp.path(), "broken/experiment.yaml");
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let root = tmp.path().canonicalize().expect("canonical");
    let losses = root.join("broken/losses.rs").display().to_string();
    let rewards = root.join("broken/rewards.rs").display().to_string();
    assert!(stderr.contains("unknown input `entropy`"), "{stderr}");
    assert!(
        stderr.contains(&format!("{losses}:10:5")),
        "the macro error is not at losses.rs:10:5:\n{stderr}"
    );
    assert!(
        stderr.contains(&rewards),
        "the type error is not shown in rewards.rs:\n{stderr}"
    );
}

#[test]
fn a_user_crate_listed_under_code_registers_its_loss() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = forge(tmp.path(), &["init", "exp", "--name", "e2e-user-crate"]);
    assert!(output.status.success(), "{output:?}");
    // Move the custom loss into a crate of its own and list the crate instead of the file.
    let krate = tmp.path().join("my-losses");
    std::fs::create_dir_all(krate.join("src")).expect("mkdir");
    let runtime = forge_tests::workspace_root().join("forge-runtime");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"my-losses\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nforge = {{ package = \"forge-runtime\", path = {:?} }}\n",
            runtime.display().to_string()
        ),
    )
    .expect("write");
    std::fs::rename(tmp.path().join("exp/losses.rs"), krate.join("src/lib.rs")).expect("move");
    let yaml = tmp.path().join("exp/experiment.yaml");
    let experiment = std::fs::read_to_string(&yaml).expect("read");
    std::fs::write(
        &yaml,
        experiment.replace("  - losses.rs\n", "  - ../my-losses\n"),
    )
    .expect("write");

    let output = build(tmp.path(), "exp/experiment.yaml");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let printed = Command::new(stdout.trim())
        .arg("--print-schema")
        .output()
        .expect("binary runs");
    let schema = text(&printed).0;
    assert!(
        schema.contains("clipped_reinforce") && schema.contains("max_weight"),
        "the crate's loss is not registered"
    );
}
