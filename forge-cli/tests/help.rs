//! The binary starts and documents its commands. (Also makes `cargo test` build `forge` for the
//! end-to-end tests in `tests/`.)

#[test]
fn help_lists_every_command() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_forge"))
        .arg("--help")
        .output()
        .expect("forge runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["validate", "schema", "build", "run", "init"] {
        assert!(help.contains(command), "--help lacks `{command}`:\n{help}");
    }
}

#[test]
fn unknown_subcommands_are_usage_errors() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_forge"))
        .arg("trian")
        .output()
        .expect("forge runs");
    assert_eq!(output.status.code(), Some(2));
}
