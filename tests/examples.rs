//! Every example experiment validates, and starts with the schema line editors read.

use forge_tests::{forge, text, workspace_root};

fn example_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![workspace_root().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    let files = example_files();
    assert!(files.len() >= 4, "examples: {files:?}");
    for file in files {
        let text_of_file = std::fs::read_to_string(&file).expect("readable");
        assert!(
            text_of_file.starts_with("# yaml-language-server: $schema="),
            "{} must start with the schema line",
            file.display()
        );
        // Examples needing a checkpoint the user brings are checked without file checks.
        let needs_user_files = text_of_file.contains("# needs: ");
        let mut args = vec!["validate", file.to_str().expect("utf-8 path")];
        if needs_user_files {
            args.push("--no-file-checks");
        }
        let output = forge(&workspace_root(), &args);
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "{}:\n{stdout}{stderr}",
            file.display()
        );
    }
}
