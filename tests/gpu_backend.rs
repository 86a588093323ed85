//! The trainer on burn's cubecl backend, the one GPU runs use, against the CPU backend: the same
//! checkpoint, the same episodes, the same loss value, metrics and gradients for every weight.
//! Through wgpu: on a machine without a GPU that is Mesa's lavapipe, so CI runs it.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use forge::config::Aggregation;
use forge::model::CausalLm;
use forge::recipes::{CpuBackend, WgpuBackend};
use forge::rl::Episode;
use forge::train::loss_backend::{AutodiffLossBackend, BoundPolicyLoss};
use forge::train::{PolicyLoss, PolicyStats, batch_normalizer, policy_gradients};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/models");

/// Gradient of every parameter, flattened in visiting order, with each parameter's shape.
fn flat_grads<B: AutodiffBackend>(
    model: &CausalLm<B>,
    grads: &GradientsParams,
) -> (Vec<f32>, Vec<Vec<usize>>) {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
        shapes: Vec<Vec<usize>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let g = self
                .grads
                .get::<B::InnerBackend, D>(p.id)
                .expect("every parameter has a gradient");
            self.shapes.push(g.dims().to_vec());
            self.out
                .extend(g.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
        }
    }
    let mut c = Collect {
        grads,
        out: Vec::new(),
        shapes: Vec::new(),
    };
    model.visit(&mut c);
    (c.out, c.shapes)
}

fn episodes() -> Vec<Episode> {
    let episode = |prompt: Vec<u32>, completion: Vec<u32>, advantage: f32| Episode {
        generator_logprobs: completion.iter().map(|&t| -4.0 - 0.01 * t as f32).collect(),
        ref_logprobs: Some(completion.iter().map(|&t| -5.0 + 0.02 * t as f32).collect()),
        prompt_ids: prompt,
        completion_ids: completion,
        reward: 0.0,
        advantage,
        truncated: false,
        policy_version: 0,
        group: 0,
    };
    vec![
        episode(vec![12, 40, 7], vec![101, 55, 9, 300], 1.2),
        episode(vec![3], vec![77, 78], -0.7),
        episode(vec![250, 251, 252, 253], vec![5], 0.4),
    ]
}

type Grads = (Vec<f32>, Vec<Vec<usize>>);

fn run<B: AutodiffLossBackend>(architecture: &str, device: &B::Device) -> (Grads, PolicyStats) {
    let dir = Path::new(MODELS).join(architecture);
    let model: CausalLm<B> = forge::model::load(&dir, device).expect("fixture loads");
    let registration = forge::loss::registry::find("grpo").expect("registered");
    let loss = PolicyLoss {
        loss: BoundPolicyLoss::bind(registration, &serde_json::Map::new()).expect("binds"),
        aggregation: Aggregation::FixedHorizon,
        temperature: 0.9,
        entropy_coef: 0.01,
        mask_truncated: false,
    };
    let eps = episodes();
    let normalizer = batch_normalizer(&eps, 8, false);
    let (grads, stats) =
        policy_gradients(&model, &eps, &loss, normalizer, device).expect("gradients");
    (flat_grads(&model, &grads), stats)
}

#[test]
fn policy_gradients_on_burns_cubecl_backend_match_the_cpu() {
    if !forge_tests::require_vulkan("policy_gradients_on_burns_cubecl_backend_match_the_cpu") {
        return;
    }
    for architecture in ["qwen3", "qwen2", "llama"] {
        compare(architecture);
    }
}

fn compare(architecture: &str) {
    let ((cpu, shapes), cpu_stats) = run::<CpuBackend>(architecture, &Default::default());
    let ((gpu, _), gpu_stats) = run::<WgpuBackend>(architecture, &Default::default());
    assert!(
        (cpu_stats.loss - gpu_stats.loss).abs() <= 1e-4 * cpu_stats.loss.abs().max(1e-3),
        "{architecture} loss: cpu {} vs wgpu {}",
        cpu_stats.loss,
        gpu_stats.loss
    );
    assert_eq!(cpu_stats.active_tokens, gpu_stats.active_tokens);
    for ((key, c), (_, g)) in cpu_stats.metrics.iter().zip(&gpu_stats.metrics) {
        assert!(
            (c - g).abs() <= 1e-4 * (1.0 + c.abs()),
            "{architecture} {key}: cpu {c} vs wgpu {g}"
        );
    }
    assert_eq!(cpu.len(), gpu.len());
    let scale = cpu.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "the gradients are not all zero");
    let mut start = 0;
    for (k, shape) in shapes.iter().enumerate() {
        let len: usize = shape.iter().product();
        for i in start..start + len {
            let (c, g) = (cpu[i], gpu[i]);
            assert!(
                (c - g).abs() <= 1e-3 * scale,
                "{architecture} parameter {k} {shape:?}, element {}: cpu {c} vs wgpu {g} (scale {scale})",
                i - start
            );
        }
        start += len;
    }
}
