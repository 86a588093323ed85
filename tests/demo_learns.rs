//! The CPU demo, shortened: `forge run` of the GRPO stage runs the SFT stage it names first, then
//! GRPO; held-out accuracy (greedy, prompts never trained on) must rise, in the metrics file the run
//! wrote. The full demo is the README's main command.

use std::path::Path;

use forge_tests::{forge, text, workspace_root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("listed") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copied");
        }
    }
}

fn accuracies(metrics: &str) -> Vec<(u64, f64)> {
    metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["stage"] == "eval")
        .map(|v| {
            (
                v["step"].as_u64().expect("step"),
                v["eval/accuracy"].as_f64().expect("accuracy"),
            )
        })
        .collect()
}

#[test]
fn grpo_improves_held_out_accuracy_on_the_cpu_demo() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // The examples' `metrics.dir` is `../../runs`: keep that inside the temp dir.
    let demo = tmp.path().join("examples/arith");
    copy_dir(&workspace_root().join("examples/arith"), &demo);
    let output = forge(
        &demo,
        &[
            "run",
            "grpo.yaml",
            "--profile",
            "dev",
            "--set",
            "training.steps=200",
            "--set",
            "dataset.eval.interval=0",
            "--set",
            "checkpoint.interval=0",
        ],
    );
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("running it first"),
        "the SFT stage ran first: {stderr}"
    );
    assert!(
        stderr.contains("reached `sft.stop_at_accuracy`"),
        "the SFT stage stops at its target accuracy: {stderr}"
    );
    assert!(stderr.contains("held-out accuracy"), "{stderr}");
    let runs = tmp.path().join("runs");
    for stage in ["arith-sft", "arith-grpo"] {
        assert!(
            runs.join(stage).join("final/model.safetensors").is_file(),
            "{stage}"
        );
        assert!(runs.join(stage).join("curves.png").is_file(), "{stage}");
    }
    let metrics = std::fs::read_to_string(runs.join("arith-grpo/metrics.jsonl")).expect("metrics");
    let evals = accuracies(&metrics);
    let (first, last) = (
        evals.first().expect("eval before"),
        evals.last().expect("eval after"),
    );
    assert_eq!((first.0, last.0), (0, 200), "{evals:?}");
    // Measured (2026-11-27, session 8, this config): +13, +11.5 and +15 points after 200 steps
    // with GRPO seeds 1-3; +22.5 to +33.5 after the demo's 450. Session 9 (SFT through the loss
    // op: an earlier stop): +21.5 to +30.5 after 450 (200 not measured apart; this test passed).
    assert!(
        last.1 >= first.1 + 0.08,
        "held-out accuracy should rise by 8 points in 200 GRPO steps: {evals:?}"
    );
    let steps = metrics
        .lines()
        .filter(|l| l.contains("\"stage\":\"grpo\""))
        .count();
    assert_eq!(steps, 200);
}
