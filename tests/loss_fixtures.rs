//! Every built-in loss against PyTorch autograd (`scripts/make_loss_fixtures.py`, float64, written
//! from the papers independently of Forge): the loss, d loss / d logits and the target
//! log-probabilities over a batch with ignored targets, interleaved masks and an all-masked row.

use std::path::Path;

use forge::config::Aggregation;
use forge::loss::reference::{IGNORE_INDEX, Normalizer, evaluate};
use safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/losses/builtin.safetensors"
);

fn f64s(file: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let view = file
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture lacks `{name}`: {e}"));
    assert_eq!(view.dtype(), Dtype::F64, "{name}");
    view.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // Relative to the tensor's largest entry (entries near zero have no meaningful relative
        // error). Not tighter: loss parameters are f32 (0.2f32 is 0.2 + 3e-9) and PyTorch's f64.
        assert!(
            (g - w).abs() <= 1e-6 * scale,
            "{what}[{i}]: forge {g} vs PyTorch {w} (scale {scale})"
        );
    }
}

#[test]
fn builtin_losses_match_pytorch_autograd() {
    let bytes = std::fs::read(FIXTURE)
        .expect("fixture exists; regenerate with scripts/make_loss_fixtures.py");
    let (_, metadata) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let file = SafeTensors::deserialize(&bytes).expect("safetensors");
    let cases: serde_json::Value = serde_json::from_str(
        metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("cases"))
            .expect("cases in the metadata"),
    )
    .expect("JSON");
    let batch = forge::loss::batch_file::read_batch(Path::new(FIXTURE)).expect("batch");
    assert!(batch.target_ids.contains(&IGNORE_INDEX) && batch.loss_mask.contains(&0.0));

    let cases = cases.as_array().expect("a list");
    assert_eq!(cases.len(), 6);
    for case in cases {
        let key = case["key"].as_str().expect("key");
        let name = case["loss"].as_str().expect("loss");
        let registration = forge::loss::registry::find(name).expect("registered");
        let params = case["params"].as_object().expect("params").clone();
        let loss = (registration.bind)(&params).expect("parameters bind");
        let aggregation: Aggregation =
            serde_json::from_value(case["aggregation"].clone()).expect("aggregation");
        let temperature = case["temperature"].as_f64().expect("temperature");
        let normalizer = Normalizer {
            horizon: batch.seq as f64,
            ..batch.normalizer()
        };
        let out =
            evaluate(&loss, aggregation, &batch, temperature, Some(normalizer)).expect("evaluates");

        let what = |t: &str| format!("{key} ({name}, {}) {t}", aggregation.as_str());
        assert_close(
            &what("loss"),
            &[out.loss],
            &f64s(&file, &format!("{key}.loss")),
        );
        assert_close(
            &what("grad_logits"),
            &out.grad_logits,
            &f64s(&file, &format!("{key}.grad_logits")),
        );
        assert_close(
            &what("logprobs"),
            &out.logprobs,
            &f64s(&file, &format!("{key}.logprobs")),
        );
        // Masked positions get no gradient at all.
        for (i, chunk) in out.grad_logits.chunks(batch.vocab).enumerate() {
            if batch.loss_mask[i] == 0.0 || batch.target_ids[i] == IGNORE_INDEX {
                assert!(
                    chunk.iter().all(|&g| g == 0.0),
                    "{key}: gradient at masked position {i}"
                );
            }
        }
    }
}

#[test]
fn forge_loss_eval_writes_the_loss_gradient_and_metrics() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("out.safetensors");
    let output = forge_tests::forge(
        tmp.path(),
        &[
            "loss",
            "eval",
            "--loss",
            "grpo",
            "--input",
            FIXTURE,
            "--output",
            out.to_str().expect("utf-8"),
            "--set",
            "clip_low=0.2",
            "--set",
            "clip_high=0.28",
            "--set",
            "beta=0.1",
        ],
    );
    let (stdout, stderr) = forge_tests::text(&output);
    assert!(output.status.success(), "{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON summary");
    assert_eq!(
        printed["aggregation"], "fixed_horizon",
        "GRPO's own default"
    );

    let bytes = std::fs::read(&out).expect("output written");
    let file = SafeTensors::deserialize(&bytes).expect("safetensors");
    let f32s = |name: &str| -> Vec<f64> {
        let view = file
            .tensor(name)
            .unwrap_or_else(|e| panic!("`{name}`: {e}"));
        view.data()
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .collect()
    };
    let fixture = std::fs::read(FIXTURE).expect("fixture");
    let fixture = SafeTensors::deserialize(&fixture).expect("safetensors");
    let want_loss = f64s(&fixture, "case0.loss")[0];
    assert!(
        (f32s("loss")[0] - want_loss).abs() <= 1e-5 * want_loss.abs(),
        "loss"
    );
    let want_grad = f64s(&fixture, "case0.grad_logits");
    let scale = want_grad.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    for (g, w) in f32s("grad_logits").iter().zip(&want_grad) {
        assert!((g - w).abs() <= 1e-5 * scale, "grad {g} vs {w}");
    }
    for metric in [
        "loss/ratio_mean",
        "loss/clip_frac_low",
        "loss/clip_frac_high",
        "loss/kl",
        "loss/entropy",
        "loss/active_frac",
    ] {
        assert!(f32s(metric)[0].is_finite(), "{metric}");
        assert!(
            printed["metrics"][metric].is_number(),
            "{metric} not printed"
        );
    }

    // A parameter the loss does not have is a usage error naming it.
    let output = forge_tests::forge(
        tmp.path(),
        &[
            "loss",
            "eval",
            "--loss",
            "dapo",
            "--input",
            FIXTURE,
            "--output",
            "x.safetensors",
            "--set",
            "beta=0.1",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        forge_tests::text(&output)
            .1
            .contains("unknown field `beta`")
    );
}
