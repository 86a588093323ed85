//! `schemas/experiment.schema.json` must be what `forge schema` generates now.

use forge_tests::{forge, workspace_root};

#[test]
fn checked_in_schema_is_up_to_date() {
    let path = workspace_root().join("schemas/experiment.schema.json");
    let generated = forge::config::schema_text();
    if std::env::var_os("FORGE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale: run `FORGE_UPDATE_SCHEMA=1 cargo test -p forge-tests --test schema` (or `forge schema`) and commit it",
        path.display()
    );
}

#[test]
fn forge_schema_writes_the_same_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = forge(dir.path(), &["schema"]);
    assert!(output.status.success(), "{output:?}");
    let written = std::fs::read_to_string(dir.path().join("schemas/experiment.schema.json"))
        .expect("written");
    assert_eq!(written, forge::config::schema_text());
}
