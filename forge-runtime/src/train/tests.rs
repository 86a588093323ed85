//! The trainer's gradients through the model against independent references: burn's own autodiff
//! of a cross-entropy written with tensor ops (SFT), and finite differences of the f64 loss path
//! (policy loss), on a tiny random model.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::loss_backend::BoundPolicyLoss;
use super::*;
use crate::config::{Aggregation, Architecture};
use crate::loss::reference::{LossBatch, evaluate};
use crate::model::CausalLm;
use crate::rl::Episode;

type B = Autodiff<NdArray<f32>>;
type Inner = NdArray<f32>;

fn model(seed: u64) -> CausalLm<B> {
    let device = Default::default();
    B::seed(&device, seed);
    let spec = crate::model::tests::tiny_spec(Architecture::Qwen3);
    crate::model::stable_param_ids(CausalLm::new(&spec, &device))
}

/// Gradient of every parameter, flattened in visiting order.
fn flat_grads(model: &CausalLm<B>, grads: &GradientsParams) -> Vec<f32> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
    }
    impl ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let g = self
                .grads
                .get::<Inner, D>(p.id)
                .expect("every parameter has a gradient");
            self.out
                .extend(g.into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

#[test]
fn sft_gradients_match_burn_autodiff_of_cross_entropy() {
    let device = Default::default();
    let model = model(21);
    let examples = vec![
        SftExample {
            prompt_ids: vec![3, 4, 5],
            completion_ids: vec![6, 7],
        },
        SftExample {
            prompt_ids: vec![8],
            completion_ids: vec![9, 10, 11, 1],
        },
    ];
    let total = 6;
    let (grads, loss) = sft_gradients(&model, &examples, total, &device).expect("the loss");
    let ours = flat_grads(&model, &grads);

    // Reference: log_softmax + gather with burn's autodiff, masked mean.
    let batch = TokenBatch::new(
        examples
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (batch.batch, batch.seq);
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(batch.input_ids.clone(), [b, s]), &device);
    let logp = log_softmax(model.forward(ids), 2);
    let targets: Vec<i64> = batch.target_ids.iter().map(|&t| t.max(0)).collect();
    let mask: Vec<f32> = batch
        .target_ids
        .iter()
        .map(|&t| if t >= 0 { 1.0 } else { 0.0 })
        .collect();
    let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [b, s, 1]), &device);
    let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [b, s, 1]), &device);
    let reference_loss = -(logp.gather(2, targets) * mask).sum() / total as f64;
    let reference_value: f32 = reference_loss.clone().into_scalar().elem();
    let reference = flat_grads(
        &model,
        &GradientsParams::from_grads(reference_loss.backward(), &model),
    );

    assert!(
        (loss - f64::from(reference_value)).abs() < 1e-5,
        "{loss} vs {reference_value}"
    );
    let scale = reference.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(scale > 1e-4);
    for (i, (a, r)) in ours.iter().zip(&reference).enumerate() {
        assert!(
            (a - r).abs() <= 1e-4 * scale,
            "parameter element {i}: {a} vs {r}"
        );
    }
}

fn episodes() -> Vec<Episode> {
    let episode = |prompt: Vec<u32>, completion: Vec<u32>, old: Vec<f32>, advantage: f32| Episode {
        generator_logprobs: old,
        ref_logprobs: None,
        prompt_ids: prompt,
        completion_ids: completion,
        reward: 0.0,
        advantage,
        truncated: false,
        policy_version: 0,
        group: 0,
    };
    vec![
        episode(vec![2, 3], vec![4, 5, 6], vec![-3.7, -3.5, -3.6], 1.3),
        episode(vec![7], vec![8, 9], vec![-3.4, -3.9], -0.8),
        episode(vec![10, 11, 12], vec![13], vec![-3.6], 0.5),
    ]
}

/// The loss of `episodes` under `model`, by the f64 reference path.
fn reference_loss(model: &CausalLm<Inner>, episodes: &[Episode], loss: &PolicyLoss) -> f64 {
    let batch = TokenBatch::new(
        episodes
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (batch.batch, batch.seq);
    let ids = Tensor::<Inner, 2, Int>::from_data(
        TensorData::new(batch.input_ids.clone(), [b, s]),
        &Default::default(),
    );
    let logits: Vec<f32> = model
        .forward(ids)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    let per = |f: &dyn Fn(&Episode, usize) -> f32| -> Vec<f32> {
        (0..b * s)
            .map(|i| batch.completion_index[i].map_or(0.0, |k| f(&episodes[i / s], k)))
            .collect()
    };
    let lb = LossBatch {
        batch: b,
        seq: s,
        vocab: model.spec.vocab_size,
        logits,
        target_ids: batch.target_ids.clone(),
        generator_logprobs: per(&|e, k| e.generator_logprobs[k]),
        advantages: per(&|e, _| e.advantage),
        loss_mask: per(&|_, _| 1.0),
        ref_logprobs: None,
    };
    let normalizer = batch_normalizer(episodes, 8, false);
    let value = evaluate(
        &loss.loss.function,
        loss.aggregation,
        &lb,
        loss.temperature,
        Some(normalizer),
    )
    .unwrap()
    .loss;
    value - loss.entropy_coef * entropy_sum(&lb, loss.temperature) / normalizer.tokens
}

/// Sum of the entropies of the active positions' distributions at `temperature`, in f64.
fn entropy_sum(batch: &LossBatch, temperature: f64) -> f64 {
    let v = batch.vocab;
    (0..batch.batch * batch.seq)
        .filter(|&i| batch.is_active(i))
        .map(|i| {
            let z: Vec<f64> = batch.logits[i * v..(i + 1) * v]
                .iter()
                .map(|&x| f64::from(x) / temperature)
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            -z.iter().map(|x| (x - lse).exp() * (x - lse)).sum::<f64>()
        })
        .sum()
}

#[test]
fn policy_gradients_match_finite_differences_and_split_into_micro_batches() {
    check_policy_gradients(0.0);
}

#[test]
fn the_entropy_bonus_has_the_gradient_of_its_value() {
    check_policy_gradients(0.05);
}

fn check_policy_gradients(entropy_coef: f64) {
    let device = Default::default();
    let model = model(22);
    let registration = crate::loss::registry::find("grpo").unwrap();
    let loss = PolicyLoss {
        loss: BoundPolicyLoss::bind(registration, &serde_json::Map::new()).unwrap(),
        aggregation: Aggregation::TokenMean,
        temperature: 0.9,
        entropy_coef,
        mask_truncated: false,
    };
    let eps = episodes();
    let normalizer = batch_normalizer(&eps, 8, false);
    let (grads, stats) = policy_gradients(&model, &eps, &loss, normalizer, &device).unwrap();
    assert!((stats.loss - reference_loss(&model.valid(), &eps, &loss)).abs() < 1e-5);
    let whole = flat_grads(&model, &grads);
    // Micro-batches with the batch-wide normaliser add up to the same loss and gradients.
    let (g1, s1) = policy_gradients(&model, &eps[..1], &loss, normalizer, &device).unwrap();
    let (g2, s2) = policy_gradients(&model, &eps[1..], &loss, normalizer, &device).unwrap();
    assert!((s1.loss + s2.loss - stats.loss).abs() < 1e-6);
    let parts: Vec<f32> = flat_grads(&model, &g1)
        .iter()
        .zip(flat_grads(&model, &g2))
        .map(|(a, b)| a + b)
        .collect();
    let scale = whole.iter().fold(0f32, |m, g| m.max(g.abs()));
    for (a, b) in whole.iter().zip(&parts) {
        assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b} (scale {scale})");
    }
    // Finite differences on the final norm's weights (they touch every logit).
    let inner = model.valid();
    let base = inner
        .model
        .norm
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    let analytic = grads
        .get::<Inner, 1>(model.model.norm.weight.id)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    let h = 1e-2f32;
    let mut checked = 0;
    for j in [0usize, 5, 17, 31] {
        let shifted = |delta: f32| {
            let mut w = base.clone();
            w[j] += delta;
            let mut m = inner.clone();
            m.model.norm.weight = Param::initialized(
                m.model.norm.weight.id,
                Tensor::from_data(TensorData::new(w, [base.len()]), &device),
            );
            reference_loss(&m, &eps, &loss)
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * f64::from(h));
        let a = f64::from(analytic[j]);
        assert!(
            (a - numeric).abs() <= 2e-3 * a.abs().max(1e-2),
            "weight {j}: {a} vs {numeric}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn the_gradient_norm_is_the_l2_norm_of_every_gradient_element() {
    let device = Default::default();
    let model = model(5);
    let examples = vec![SftExample {
        prompt_ids: vec![3, 4, 5],
        completion_ids: vec![6, 7, 2],
    }];
    let (grads, _) = sft_gradients(&model, &examples, 3, &device).expect("the loss");
    let flat = flat_grads(&model, &grads);
    let want = flat
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt();
    assert!(want > 1e-3, "the gradients are not all zero");
    let got = gradient_norm(&model, &grads);
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    // No gradients at all: norm 0, not an error.
    assert_eq!(gradient_norm(&model, &GradientsParams::new()), 0.0);
}
