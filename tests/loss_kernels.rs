//! The loss kernels (the hand-written logprob kernels and every built-in's macro-generated
//! per-token kernel) against the f64 reference, through wgpu: on a machine without a GPU that is
//! Mesa's lavapipe (`apt-get install -y mesa-vulkan-drivers libvulkan1`), so CI runs them.
//! f32 on the device, so the tolerance is 1e-5 relative to each tensor's largest entry.

use std::path::Path;

use forge::config::Aggregation;
use forge::kernels::device_loss::{LossPath, LossRequest, evaluate_wgpu};
use forge::kernels::fused_token_loss::FusedShape;
use forge::loss::reference::{LossBatch, LossOutput, Normalizer, evaluate};
use forge::train::loss_backend::BoundPolicyLoss;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/losses/builtin.safetensors"
);

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{what}[{i}]: kernel {g} vs reference {w} (scale {scale})"
        );
    }
}

/// The loss `name` bound to `params`, the batch's normaliser (horizon: its sequence length) and
/// the f64 reference's result on it.
fn reference(
    batch: &LossBatch,
    name: &str,
    aggregation: Aggregation,
    params: &serde_json::Map<String, serde_json::Value>,
    temperature: f64,
) -> (BoundPolicyLoss, Normalizer, LossOutput) {
    let registration = forge::loss::registry::find(name).expect("registered");
    let loss = BoundPolicyLoss::bind(registration, params).expect("binds");
    let norm = Normalizer {
        horizon: batch.seq as f64,
        ..batch.normalizer()
    };
    let want =
        evaluate(&loss.function, aggregation, batch, temperature, Some(norm)).expect("reference");
    (loss, norm, want)
}

fn check(
    batch: &LossBatch,
    name: &str,
    aggregation: Aggregation,
    params: serde_json::Value,
    temperature: f64,
) {
    let params = params.as_object().expect("object").clone();
    let (loss, norm, want) = reference(batch, name, aggregation, &params, temperature);
    let registration = loss.registration;
    // Token-level losses run fused by default; the split kernels must agree too, and so must a
    // fused launch whose cubes loop over several rows each (lavapipe reports no multiprocessors:
    // two cubes in all).
    let looping = LossPath::Fused(FusedShape {
        units: 128,
        cubes_per_sm: 2,
    });
    for path in [LossPath::Auto, LossPath::Split, looping] {
        let request = LossRequest {
            loss: registration,
            params: &params,
            aggregation,
            batch,
            temperature,
            normalizer: Some(norm),
            path,
        };
        let got = evaluate_wgpu(&request).expect("kernels run");
        let what = |t: &str| format!("{name} ({}, {path:?}) {t}", aggregation.as_str());
        assert_close(&what("loss"), &[got.loss], &[want.loss]);
        assert_close(&what("logprobs"), &got.logprobs, &want.logprobs);
        assert_close(&what("grad_logits"), &got.grad_logits, &want.grad_logits);
        for ((key, g), (_, w)) in got.metrics.iter().zip(&want.metrics) {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{}: {g} vs {w}",
                what(key)
            );
        }
    }
}

#[test]
fn every_builtin_loss_kernel_matches_the_reference_on_wgpu() {
    if !forge_tests::require_vulkan("every_builtin_loss_kernel_matches_the_reference_on_wgpu") {
        return;
    }
    let batch = forge::loss::batch_file::read_batch(Path::new(FIXTURE)).expect("fixture batch");
    check(
        &batch,
        "grpo",
        Aggregation::FixedHorizon,
        serde_json::json!({}),
        1.0,
    );
    check(
        &batch,
        "grpo",
        Aggregation::TokenMean,
        serde_json::json!({"clip_low": 0.05, "clip_high": 0.05, "beta": 0.2}),
        0.7,
    );
    check(
        &batch,
        "dapo",
        Aggregation::TokenMean,
        serde_json::json!({"dual_clip_c": 1.5}),
        1.0,
    );
    check(
        &batch,
        "cispo",
        Aggregation::TokenMean,
        serde_json::json!({"clip_high": 0.2}),
        1.0,
    );
    check(
        &batch,
        "gspo",
        Aggregation::SequenceMean,
        serde_json::json!({"clip_low": 0.05, "clip_high": 0.05}),
        1.0,
    );
    check(
        &batch,
        "sapo",
        Aggregation::SequenceMean,
        serde_json::json!({}),
        1.3,
    );
}

#[test]
fn a_wider_vocabulary_than_the_block_reduces_correctly() {
    if !forge_tests::require_vulkan("a_wider_vocabulary_than_the_block_reduces_correctly") {
        return;
    }
    // Rows longer than the 256 units of a cube and not a multiple of it, read as vectors of 4
    // (1000), 2 (1002) and 1 (1001) elements; and rows long enough for the four-loads-per-unit
    // loop, with (4100) and without (4096) a remainder after it.
    for vocab in [1000, 1002, 1001, 4096, 4100] {
        wide_vocabulary(vocab);
    }
}

fn wide_vocabulary(vocab: usize) {
    let (rows, seq) = (2, 3);
    let n = rows * seq;
    let mut state = 12345u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let batch = LossBatch {
        batch: rows,
        seq,
        vocab,
        logits: (0..n * vocab)
            .map(|_| (uniform() * 20.0 - 10.0) as f32)
            .collect(),
        target_ids: (0..n).map(|i| ((i * 337) % vocab) as i64).collect(),
        generator_logprobs: (0..n).map(|_| (-uniform() * 8.0) as f32).collect(),
        advantages: (0..n).map(|i| if i < seq { 1.0 } else { -0.5 }).collect(),
        loss_mask: vec![1.0; n],
        ref_logprobs: None,
    };
    check(
        &batch,
        "dapo",
        Aggregation::TokenMean,
        serde_json::json!({}),
        1.0,
    );
}

#[test]
fn forge_loss_eval_on_wgpu_agrees_with_cpu() {
    if !forge_tests::require_vulkan("forge_loss_eval_on_wgpu_agrees_with_cpu") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let run = |device: &str| -> serde_json::Value {
        let out = tmp.path().join(format!("{device}.safetensors"));
        let args = [
            "loss",
            "eval",
            "--loss",
            "sapo",
            "--input",
            FIXTURE,
            "--output",
            out.to_str().expect("utf-8"),
            "--device",
            device,
        ];
        let output = forge_tests::forge(tmp.path(), &args);
        let (stdout, stderr) = forge_tests::text(&output);
        assert!(output.status.success(), "{device}: {stderr}");
        serde_json::from_str(&stdout).expect("JSON summary")
    };
    let (cpu, wgpu) = (run("cpu"), run("wgpu"));
    let (a, b) = (
        cpu["loss"].as_f64().expect("loss"),
        wgpu["loss"].as_f64().expect("loss"),
    );
    assert!((a - b).abs() <= 1e-5 * a.abs(), "cpu {a} vs wgpu {b}");
}

/// The policy loss as a burn operation on `B`: its value, its metrics and the gradient that
/// `backward()` leaves on the logits (scaled by an upstream factor, which the backward step must
/// carry) agree with the f64 reference. Twice: on logits the caller keeps (a gradient buffer of
/// its own), and on logits made by an operation and handed over, with the per-token inputs
/// uploaded ahead, as the trainer calls it; there the gradient is written over the logits where
/// `in_place_when_owned` (the fused kernels of cubecl backends).
fn check_autodiff_op<B: forge::train::loss_backend::AutodiffLossBackend>(
    device: &B::Device,
    batch: &LossBatch,
    name: &str,
    aggregation: Aggregation,
    in_place_when_owned: bool,
) {
    use burn::prelude::*;
    use forge::train::loss_backend::{PolicyLossInputs, policy_loss};

    let temperature = 0.8;
    let (loss, norm, want) = reference(
        batch,
        name,
        aggregation,
        &serde_json::Map::new(),
        temperature,
    );
    let inputs = PolicyLossInputs {
        loss: &loss,
        aggregation,
        temperature,
        normalizer: norm,
        path: LossPath::Auto,
        tokens: batch.tokens(),
        uploaded: None,
    };
    let uploaded = B::upload_loss_tokens(&inputs, device);
    let n = batch.batch * batch.seq;
    // 1 is the usual upstream factor (nothing to scale: the device path skips the pass);
    // 2.5 checks the scaling.
    for (upstream, owned) in [(1.0, false), (2.5, false), (1.0, true), (2.5, true)] {
        let logits = Tensor::<B, 2>::from_data(
            TensorData::new(batch.logits.clone(), [n, batch.vocab]),
            device,
        )
        .require_grad();
        let (value, pending) = if owned {
            // Logits that only the operation holds, as a model's last layer hands them over.
            let made = logits.clone() * 1.0;
            let inputs = PolicyLossInputs {
                uploaded: uploaded.as_ref(),
                ..inputs
            };
            policy_loss(made, &inputs)
        } else {
            policy_loss(logits.clone(), &inputs)
        }
        .expect("the operation runs");
        let grads = (value.clone() * upstream).backward();
        let stats = pending.read().expect("the stats are read");
        assert_eq!(
            stats.gradient_in_place,
            owned && in_place_when_owned,
            "{name}: gradient in place (logits owned by the operation: {owned})"
        );
        let grad: Vec<f64> = logits
            .grad(&grads)
            .expect("the logits get a gradient")
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64");
        let what = |t: &str| {
            format!(
                "{name} as a burn op on {} ({t}, upstream {upstream}, owned logits {owned})",
                std::any::type_name::<B>()
            )
        };
        let value: Vec<f64> = value.into_data().convert::<f64>().to_vec().expect("f64");
        assert_close(&what("loss tensor"), &value, &[want.loss]);
        assert_close(&what("loss"), &[stats.loss], &[want.loss]);
        assert_close(&what("logprobs"), &stats.logprobs, &want.logprobs);
        let scaled: Vec<f64> = want.grad_logits.iter().map(|g| g * upstream).collect();
        assert_close(&what("grad_logits"), &grad, &scaled);
        for ((key, g), (_, w)) in stats.metrics.iter().zip(&want.metrics) {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{}: {g} vs {w}",
                what(key)
            );
        }
    }
}

#[test]
fn the_loss_is_a_burn_operation_whose_backward_reaches_the_logits() {
    let batch = forge::loss::batch_file::read_batch(Path::new(FIXTURE)).expect("fixture batch");
    type Cpu = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
    for (name, aggregation) in [
        ("grpo", Aggregation::FixedHorizon),
        ("gspo", Aggregation::SequenceMean),
    ] {
        check_autodiff_op::<Cpu>(&Default::default(), &batch, name, aggregation, false);
    }
    if !forge_tests::require_vulkan(
        "the_loss_is_a_burn_operation_whose_backward_reaches_the_logits",
    ) {
        return;
    }
    // Fused (GRPO) and split (GSPO) kernels under burn's cubecl backend.
    for (name, aggregation) in [
        ("grpo", Aggregation::FixedHorizon),
        ("gspo", Aggregation::SequenceMean),
    ] {
        // Token-level losses run fused, which can write over the logits; GSPO's three kernels
        // read them three times and do not.
        check_autodiff_op::<forge::recipes::WgpuBackend>(
            &Default::default(),
            &batch,
            name,
            aggregation,
            name == "grpo",
        );
    }
}
