//! Generated binaries running user code on a tiny Hugging Face checkpoint (the qwen3 parity
//! fixture) on the CPU: a custom loss and custom rewards train for a few steps; rewards that panic
//! or time out, a loss that is not finite and bad dataset lines are reported while training goes
//! on; a run killed with SIGKILL and resumed writes the same metrics as one never interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use forge_tests::{forge, text, workspace_root};
use serde_json::Value;

/// User code: the custom-loss example's loss, a reward with signal, and rewards and a loss that
/// fail on purpose.
const USER_CODE: &str = concat!(
    include_str!("../examples/custom-loss/losses.rs"),
    r#"
/// A policy gradient that is NaN whenever `poison` is above 0.5 (ln of a negative number).
#[forge::loss]
pub fn poisoned_pg(
    logprob: f32,
    advantage: f32,
    #[param(default = 1.0, doc = "Above 0.5 the loss is NaN.")] poison: f32,
) -> f32 {
    let nan = if poison > 0.5 { (0.0 - poison).ln() } else { 0.0 };
    -(logprob * advantage) + nan
}

/// Rewards completions by the count of a character: scores that differ within a group.
#[forge::reward]
pub fn count_of(
    completion: &str,
    #[param(default = "a", doc = "The character counted.")] character: String,
) -> f32 {
    completion.matches(character.as_str()).count() as f32
}

/// Always panics.
#[forge::reward]
pub fn always_panics(completion: &str) -> f32 {
    panic!("a reward bug on {} characters", completion.len())
}

/// Takes longer than its time limit.
#[forge::reward]
pub fn too_slow(completion: &str) -> f32 {
    std::thread::sleep(std::time::Duration::from_millis(400));
    completion.len() as f32
}
"#
);

/// Twelve prompts, with two lines that are not records.
fn data() -> String {
    let mut lines: Vec<String> = (0..12)
        .map(|i| {
            serde_json::json!({"question": format!("What is {i} plus {}?", i * 3 % 7), "answer": format!("{}", i + i * 3 % 7)})
                .to_string()
        })
        .collect();
    lines.insert(3, "{\"question\": \"cut short".into());
    lines.insert(8, "{\"no_question\": 1, \"answer\": \"2\"}".into());
    lines.join("\n") + "\n"
}

/// A temp directory with the data, the user code and an experiment using `loss` and `rewards`.
fn experiment(
    name: &str,
    loss: &str,
    rewards: &str,
    training: &str,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let model = workspace_root().join("tests/fixtures/models/qwen3");
    std::fs::write(tmp.path().join("data.jsonl"), data()).expect("data");
    std::fs::write(tmp.path().join("user.rs"), USER_CODE).expect("code");
    let yaml = format!(
        r#"name: {name}
backend: cpu
model:
  path: {model}
  dtype: f32
dataset:
  path: data.jsonl
  fields: {{prompt: question, answer: answer}}
  on_bad_record: skip
sampling:
  n: 4
  max_tokens: 6
  temperature: 1.0
loss:
{loss}
rewards:
{rewards}
training:
  batch_size: 8
  seq_len: 64
  lr: 1.0e-3
{training}
metrics:
  dir: runs
  sinks: [jsonl]
code:
  - user.rs
"#,
        model = model.display(),
    );
    let file = tmp.path().join("experiment.yaml");
    std::fs::write(&file, yaml).expect("experiment");
    (tmp, file)
}

/// `forge build --profile dev`, returning the binary.
fn build(file: &Path) -> PathBuf {
    let dir = file.parent().expect("dir");
    let output = forge(dir, &["build", "experiment.yaml", "--profile", "dev"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "build failed:\n{stdout}\n{stderr}");
    PathBuf::from(stdout.trim())
}

/// Runs the binary to completion with `args`, returning its standard error.
fn run(binary: &Path, dir: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("binary runs");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "run failed:\n{stdout}\n{stderr}");
    stderr
}

/// The `grpo` lines of a metrics file, by step.
fn grpo_steps(metrics: &Path) -> BTreeMap<u64, serde_json::Map<String, Value>> {
    std::fs::read_to_string(metrics)
        .unwrap_or_else(|e| panic!("{}: {e}", metrics.display()))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Map<String, Value>>(l).expect("JSON line"))
        .filter(|m| m["stage"] == "grpo")
        .map(|m| (m["step"].as_u64().expect("step"), m))
        .collect()
}

#[test]
fn custom_loss_and_rewards_train_and_failures_are_reported() {
    let (tmp, file) = experiment(
        "user-code",
        "  name: asymmetric_ppo\n  clip_positive: 0.3",
        "  - name: count_of\n    character: \" \"\n  - name: always_panics\n    weight: 0.5\n    fallback: -1.0\n  - name: too_slow\n    timeout_s: 0.05\n    fallback: 0.25",
        "  steps: 3",
    );
    let binary = build(&file);
    let stderr = run(&binary, tmp.path(), &[]);
    // Bad lines: skipped with their line numbers (1-based: the 4th and 9th lines).
    assert!(stderr.contains("data.jsonl:4: skipped"), "{stderr}");
    assert!(stderr.contains("data.jsonl:9: skipped"), "{stderr}");

    let steps = grpo_steps(&tmp.path().join("runs/user-code/metrics.jsonl"));
    assert_eq!(steps.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    for (step, m) in &steps {
        let get = |k: &str| {
            m.get(k)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("step {step}: `{k}` missing or not a number: {m:?}"))
        };
        // Eight completions a step; every one makes both failing rewards fail.
        assert_eq!(get("reward/failures_panic"), 8.0, "step {step}");
        assert_eq!(get("reward/failures_timeout"), 8.0, "step {step}");
        assert_eq!(get("reward/always_panics/mean"), -1.0, "fallback scored");
        assert_eq!(get("reward/too_slow/mean"), 0.25, "fallback scored");
        assert_eq!(get("data/skipped_records"), 2.0);
        assert_eq!(get("train/episodes"), 8.0);
        assert_eq!(get("train/skipped"), 0.0, "step {step}: {m:?}");
        assert!(get("loss/value").is_finite());
        assert!(
            get("train/grad_norm") > 0.0,
            "the custom reward gives signal"
        );
        for key in ["loss/ratio_mean", "loss/clip_frac_low", "loss/entropy"] {
            assert!(get(key).is_finite(), "{key}");
        }
        // Off by one by default: the first batch is sampled with the starting weights before
        // training, each later one during the previous step with that step's starting weights.
        let age = if *step == 1 { 0.0 } else { 1.0 };
        assert_eq!(get("rollout/policy_age"), age, "step {step}");
        // Trained on, those episodes do not match the trainer's weights exactly any more.
        let gap = get("loss/logprob_gap_max");
        assert!(
            if *step == 1 { gap < 1e-3 } else { gap > 1e-3 },
            "step {step}: logprob gap {gap}"
        );
    }
    let model = tmp.path().join("runs/user-code/final/model.safetensors");
    assert!(model.is_file(), "the final model is written");

    // Strictly on-policy: every batch sampled with the weights it trains.
    run(
        &binary,
        tmp.path(),
        &[
            "--set",
            "replay_buffer.max_policy_age=0",
            "--set",
            "metrics.dir=on-policy",
        ],
    );
    let steps = grpo_steps(&tmp.path().join("on-policy/user-code/metrics.jsonl"));
    assert_eq!(steps.len(), 3);
    for (step, m) in &steps {
        assert_eq!(m["rollout/policy_age"], 0.0, "step {step}");
        let gap = m["loss/logprob_gap_max"].as_f64().expect("number");
        assert!(gap < 1e-3, "step {step}: on-policy logprob gap {gap}");
    }
}

#[test]
fn a_non_finite_loss_skips_the_update_and_keeps_the_weights() {
    let (tmp, file) = experiment(
        "poisoned",
        "  name: poisoned_pg",
        "  - name: count_of\n    character: \" \"",
        "  steps: 2",
    );
    let binary = build(&file);
    let stderr = run(&binary, tmp.path(), &[]);
    assert!(stderr.contains("non-finite loss or gradients"), "{stderr}");
    let steps = grpo_steps(&tmp.path().join("runs/poisoned/metrics.jsonl"));
    assert_eq!(steps.len(), 2, "training went on to the end");
    for m in steps.values() {
        assert_eq!(m["train/skipped"], 1.0, "{m:?}");
        assert_eq!(
            m["loss/value"],
            Value::Null,
            "non-finite values are written as null"
        );
    }
    // Weights intact: the final model is the starting checkpoint.
    let read = |path: PathBuf| std::fs::read(path).expect("safetensors");
    let (start, end) = (
        read(workspace_root().join("tests/fixtures/models/qwen3/model.safetensors")),
        read(tmp.path().join("runs/poisoned/final/model.safetensors")),
    );
    let (start, end) = (
        safetensors::SafeTensors::deserialize(&start).expect("start"),
        safetensors::SafeTensors::deserialize(&end).expect("end"),
    );
    let mut names = start.names();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let (a, b) = (
            start.tensor(name).expect("start tensor"),
            end.tensor(name).expect("saved tensor"),
        );
        assert_eq!(a.dtype(), b.dtype(), "{name}");
        assert_eq!(a.data(), b.data(), "{name} changed");
    }
}

#[test]
fn a_run_killed_and_resumed_matches_an_uninterrupted_one() {
    let (tmp, file) = experiment(
        "resumable",
        "  name: asymmetric_ppo",
        "  - name: count_of\n    character: \" \"",
        "  steps: 10\ncheckpoint:\n  interval: 2\n  keep: 0",
    );
    let binary = build(&file);
    // The same seed, never interrupted, into its own run directory.
    run(&binary, tmp.path(), &["--set", "metrics.dir=straight"]);
    let straight = grpo_steps(&tmp.path().join("straight/resumable/metrics.jsonl"));
    assert_eq!(straight.len(), 10);

    let run_dir = tmp.path().join("runs/resumable");
    let mut child = Command::new(&binary)
        .current_dir(tmp.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    let marker = run_dir.join("checkpoints/step-4/state.json");
    let started = Instant::now();
    while !marker.is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no checkpoint at step 4"
        );
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(
        !run_dir.join("final").exists(),
        "the run was killed before it finished"
    );
    // A checkpoint write cut short (no state.json): resuming must pass over it.
    let partial = run_dir.join("checkpoints/.step-98.tmp");
    std::fs::create_dir_all(partial.join("model")).expect("mkdir");
    std::fs::write(partial.join("model/model.safetensors"), b"\x10\x00").expect("partial");

    let stderr = run(&binary, tmp.path(), &[]);
    assert!(stderr.contains("resumed from"), "{stderr}");
    let resumed = grpo_steps(&run_dir.join("metrics.jsonl"));
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        straight.keys().collect::<Vec<_>>()
    );
    for (step, a) in &straight {
        let b = &resumed[step];
        for (key, value) in a {
            if key.starts_with("time/") || key.starts_with("throughput/") {
                continue;
            }
            assert_eq!(Some(value), b.get(key), "step {step}: `{key}`");
        }
    }
}

#[test]
fn a_batch_made_ahead_older_than_a_resumed_run_allows_is_evicted() {
    let (tmp, file) = experiment(
        "evicting",
        "  name: asymmetric_ppo",
        "  - name: count_of\n    character: \" \"",
        "  steps: 3\ncheckpoint:\n  interval: 2\n  keep: 0",
    );
    let binary = build(&file);
    // Off by one: the checkpoint of step 2 holds the batch made ahead for step 3.
    run(&binary, tmp.path(), &[]);
    let state = tmp
        .path()
        .join("runs/evicting/checkpoints/step-2/state.json");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("JSON");
    assert_eq!(state["pending_batch"]["step"], 2, "{state}");
    assert_eq!(state["pending_batch"]["policy_version"], 1, "{state}");
    // Resumed strictly on-policy, that batch (one version old) is too old: sampled again.
    let stderr = run(
        &binary,
        tmp.path(),
        &["--set", "replay_buffer.max_policy_age=0"],
    );
    assert!(stderr.contains("resumed from"), "{stderr}");
    assert!(stderr.contains("evicted, sampling it again"), "{stderr}");
    let steps = grpo_steps(&tmp.path().join("runs/evicting/metrics.jsonl"));
    assert_eq!(steps[&3]["rollout/policy_age"], 0.0, "{:?}", steps[&3]);
}
