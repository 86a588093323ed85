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

/// The backend the generator runs on (no autodiff).
type WgpuInner = <WgpuBackend as AutodiffBackend>::InnerBackend;
type CpuInner = <CpuBackend as AutodiffBackend>::InnerBackend;

/// Last-position logits of the generic model over a whole sequence.
fn last_logits<B: Backend>(model: &CausalLm<B>, ids: &[u32], device: &B::Device) -> Vec<f32> {
    let values: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(values, [1, ids.len()]), device);
    let logits = model.forward(ids);
    let [_, s, v] = logits.dims();
    logits
        .slice([0..1, s - 1..s, 0..v])
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32")
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: the reference is all zeros");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale.max(1.0),
            "{what}, element {i}: engine {g} vs model {w}"
        );
    }
}

/// The decode engine's logits, step by step for five sequences of different lengths in slots out
/// of order, equal the generic model's full forward pass over each sequence. One is 200 tokens
/// long: attention's value loop then runs its unrolled steps (positions beyond four per unit).
/// One is prefilled by the generic model (`DecodeEngine::load_prefill`), the others by the
/// engine (`DecodeEngine::prefill`): two prompts of one length two positions a launch, one of
/// them into two slots; the long one 64 positions a launch. The engine's prefill logits equal
/// the model's too.
fn engine_steps(architecture: &str) {
    use forge::generate::DecodeBackend;
    use forge::model::{KvCache, attention_bias};
    let dir = Path::new(MODELS).join(architecture);
    let device = Default::default();
    let model: CausalLm<WgpuInner> = forge::model::load(&dir, &device).expect("fixture loads");
    let mut engine =
        WgpuInner::decode_engine(&model, 5, 210).expect("the cubecl backend has an engine");
    let (a, e) = (vec![12u32, 40, 7], vec![99u32, 3, 140]);
    let long: Vec<u32> = (0..200u32).map(|i| (i * 37 + 11) % 400).collect();
    let mut sequences = [
        (a.clone(), 2usize),
        (vec![250, 251, 252, 253, 9], 0),
        (long.clone(), 1),
        (a.clone(), 3),
        (e.clone(), 4),
    ];
    {
        let (prompt, slot) = &sequences[1];
        let len = prompt.len();
        let ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<WgpuInner, 2, Int>::from_data(TensorData::new(ids, [1, len]), &device);
        let positions = Tensor::<WgpuInner, 2, Int>::from_data(
            TensorData::new((0..len as i64).collect::<Vec<_>>(), [1, len]),
            &device,
        );
        let bias = attention_bias::<WgpuInner>(1, len, 0, None, &device);
        let mut cache = KvCache::new(model.spec.num_layers);
        let _ = model.hidden(ids, &positions, &bias, Some(&mut cache));
        engine.load_prefill(&cache, &[vec![*slot]]);
    }
    for (prompts, slots, max_rows) in [
        (vec![&a, &e], vec![vec![2, 3], vec![4]], 4),
        (vec![&long], vec![vec![1]], 64),
    ] {
        let views: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let last = engine
            .prefill(&views, &slots, max_rows)
            .expect("the engine prefills equal-length prompts");
        let [rows, vocab] = last.dims();
        assert_eq!(rows, prompts.len());
        let got: Vec<f32> = last.into_data().convert::<f32>().to_vec().expect("f32");
        for (r, prompt) in prompts.iter().enumerate() {
            assert_close(
                &format!("{architecture} prefill of {} tokens, row {r}", prompt.len()),
                &got[r * vocab..(r + 1) * vocab],
                &last_logits(&model, prompt, &device),
                1e-4,
            );
        }
    }
    for step in 0..3u32 {
        let tokens: Vec<u32> = sequences
            .iter()
            .map(|(_, s)| 17 + 31 * step + *s as u32)
            .collect();
        let positions: Vec<usize> = sequences.iter().map(|(p, _)| p.len()).collect();
        let slots: Vec<usize> = sequences.iter().map(|(_, s)| *s).collect();
        let logits = engine.step(&tokens, &positions, &slots);
        let [rows, vocab] = logits.dims();
        assert_eq!(rows, sequences.len());
        let got: Vec<f32> = logits.into_data().convert::<f32>().to_vec().expect("f32");
        for (r, (seq, _)) in sequences.iter_mut().enumerate() {
            seq.push(tokens[r]);
            let want = last_logits(&model, seq, &device);
            assert_close(
                &format!("{architecture} step {step} row {r}"),
                &got[r * vocab..(r + 1) * vocab],
                &want,
                1e-4,
            );
        }
    }
}

#[test]
fn the_decode_engine_computes_what_the_model_computes() {
    if !forge_tests::require_vulkan("the_decode_engine_computes_what_the_model_computes") {
        return;
    }
    for architecture in ["qwen3", "qwen2", "llama"] {
        engine_steps(architecture);
    }
}

/// Generation through the engine (wgpu) draws the same tokens, with the same log-probabilities, as
/// the generic model on the CPU: prompts of different lengths and of the same length, several
/// samples each;
/// sampled on the device (temperature 1), greedy on the device (temperature 0), and on the host
/// from the engine's logits (top-p).
#[test]
fn generation_through_the_decode_engine_matches_the_cpu() {
    if !forge_tests::require_vulkan("generation_through_the_decode_engine_matches_the_cpu") {
        return;
    }
    use forge::generate::{GenerateRequest, SamplingParams, generate};
    for architecture in ["qwen3", "qwen2", "llama"] {
        let dir = Path::new(MODELS).join(architecture);
        let tokenizer = forge::tokenizer::Tokenizer::from_dir(&dir, None).expect("tokenizer");
        // Two prompts of one length: the engine prefills them in one batch.
        let prompts = vec![
            vec![12u32, 40, 7],
            vec![3],
            vec![250, 251, 252, 253, 9],
            vec![5, 6, 8],
        ];
        let params_at = |temperature: f64, top_p: f64| SamplingParams {
            temperature,
            top_p,
            max_new_tokens: 7,
            seed: 11,
            ..SamplingParams::default()
        };
        fn request<'a>(prompts: &'a [Vec<u32>], params: &'a SamplingParams) -> GenerateRequest<'a> {
            GenerateRequest {
                prompts,
                n: 2,
                params,
                seed_offset: 3,
                policy_version: 0,
            }
        }
        for (temperature, top_p) in [(1.0, 1.0), (0.0, 1.0), (0.8, 0.9)] {
            let params = params_at(temperature, top_p);
            let request = request(&prompts, &params);
            let cpu: CausalLm<CpuInner> =
                forge::model::load(&dir, &Default::default()).expect("loads");
            let gpu: CausalLm<WgpuInner> =
                forge::model::load(&dir, &Default::default()).expect("loads");
            let want = generate(&cpu, &tokenizer, &request, &Default::default()).expect("cpu");
            let got = generate(&gpu, &tokenizer, &request, &Default::default()).expect("wgpu");
            let mut tokens = 0;
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert_eq!(
                    g.token_ids, w.token_ids,
                    "{architecture} T={temperature} top_p={top_p}: tokens"
                );
                assert_eq!(g.stop_reason, w.stop_reason);
                for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
                    assert!((a - b).abs() <= 1e-3, "{architecture}: logprob {a} vs {b}");
                }
                tokens += g.token_ids.len();
            }
            assert_eq!(got.iter().flatten().count(), 8);
            assert!(
                tokens > 8,
                "{architecture}: completions are not all one token"
            );
        }
        // Rows ending on stop tokens at different steps, while the engine has the next step
        // queued: the tokens the CPU's run drew second and fourth for two completions stop it.
        let params = params_at(1.0, 1.0);
        let cpu: CausalLm<CpuInner> = forge::model::load(&dir, &Default::default()).expect("loads");
        let gpu: CausalLm<WgpuInner> =
            forge::model::load(&dir, &Default::default()).expect("loads");
        let free = generate(
            &cpu,
            &tokenizer,
            &request(&prompts, &params),
            &Default::default(),
        )
        .expect("cpu");
        let long: Vec<&Vec<u32>> = free
            .iter()
            .flatten()
            .map(|c| &c.token_ids)
            .filter(|t| t.len() >= 4)
            .collect();
        assert!(long.len() >= 2, "{architecture}: too few long completions");
        let stopping = SamplingParams {
            stop_token_ids: vec![long[0][1], long[1][3]],
            ..params.clone()
        };
        let request = request(&prompts, &stopping);
        let want = generate(&cpu, &tokenizer, &request, &Default::default()).expect("cpu");
        let got = generate(&gpu, &tokenizer, &request, &Default::default()).expect("wgpu");
        let mut stopped = 0;
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert_eq!(g.token_ids, w.token_ids, "{architecture} with stop tokens");
            assert_eq!(g.stop_reason, w.stop_reason);
            stopped += usize::from(w.stop_reason == forge::generate::StopReason::Stop);
        }
        assert!(
            stopped >= 2,
            "{architecture}: {stopped} completions stopped"
        );
    }
}

/// Three AdamW steps on burn's cubecl backend (one fused launch per parameter) against the CPU
/// (burn's tensor operations), on random parameters and gradients long enough to need the
/// kernel's grid-stride loop.
#[test]
fn adamw_on_burns_cubecl_backend_matches_the_cpu() {
    use forge::train::adamw::{AdamWBackend, AdamWConfig, MomentState};
    type Gpu = <WgpuBackend as AutodiffBackend>::InnerBackend;
    type Cpu = <CpuBackend as AutodiffBackend>::InnerBackend;

    if !forge_tests::require_vulkan("adamw_on_burns_cubecl_backend_matches_the_cpu") {
        return;
    }
    fn run<B: AdamWBackend>(device: &B::Device, params: &[f32], grads: &[Vec<f32>]) -> Vec<f32> {
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let n = params.len();
        let tensor =
            |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [n]), device);
        let mut param = tensor(params);
        let mut state = MomentState::new(&param);
        for (t, g) in grads.iter().enumerate() {
            (param, state) =
                B::adamw_update(param, tensor(g), state, &config.scalars(3e-3, t as u64 + 1));
        }
        param.into_data().to_vec::<f32>().expect("f32")
    }
    // More elements than 4096 cubes of 256 units: each unit visits several.
    let n = 4096 * 256 + 1001;
    let mut seed = 11u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let params: Vec<f32> = (0..n).map(|_| next() * 2.0).collect();
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..n).map(|_| next() * 0.01).collect())
        .collect();
    let cpu = run::<Cpu>(&Default::default(), &params, &grads);
    let gpu = run::<Gpu>(&Default::default(), &params, &grads);
    let mut moved = 0;
    for (i, ((c, g), p)) in cpu.iter().zip(&gpu).zip(&params).enumerate() {
        assert!(
            (c - g).abs() <= 1e-6 * (1.0 + c.abs()),
            "[{i}]: cpu {c} vs gpu {g}"
        );
        moved += usize::from((c - p).abs() > 1e-4);
    }
    assert!(
        moved > n / 2,
        "the updates moved the parameters ({moved} of {n})"
    );
}

/// The reference model's log-probabilities on the device (the row kernel, one number back per
/// row) against an f64 log-softmax on the host: random logits, temperature 0.7, ignored rows.
#[test]
fn target_logprobs_on_burns_cubecl_backend_match_an_f64_reference() {
    use burn::tensor::TensorPrimitive;
    use forge::train::loss_backend::LossBackend;
    use rand::{RngExt, SeedableRng};

    let (rows, vocab, temperature) = (37, 1000, 0.7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.random_range(-8.0f32..8.0))
        .collect();
    let targets: Vec<i32> = (0..rows)
        .map(|r| {
            if r % 5 == 3 {
                -100
            } else {
                rng.random_range(0..vocab as i32)
            }
        })
        .collect();
    let tensor = |device| {
        Tensor::<WgpuInner, 2>::from_data(TensorData::new(logits.clone(), [rows, vocab]), device)
            .into_primitive()
    };
    let device = Default::default();
    let TensorPrimitive::Float(on_device) = tensor(&device) else {
        unreachable!("a float tensor")
    };
    let got = WgpuInner::target_logprobs(on_device, &targets, temperature).expect("logprobs");
    let cpu = Tensor::<CpuInner, 2>::from_data(
        TensorData::new(logits.clone(), [rows, vocab]),
        &Default::default(),
    );
    let on_host = CpuInner::target_logprobs(cpu.into_primitive().tensor(), &targets, temperature)
        .expect("host logprobs");
    for (r, &target) in targets.iter().enumerate() {
        let row = &logits[r * vocab..(r + 1) * vocab];
        let want = match usize::try_from(target) {
            Err(_) => 0.0,
            Ok(t) => {
                let z: Vec<f64> = row.iter().map(|&x| f64::from(x) / temperature).collect();
                let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                z[t] - lse
            }
        };
        for (side, value) in [("wgpu", got[r]), ("host", on_host[r])] {
            assert!(
                (f64::from(value) - want).abs() <= 1e-4 * want.abs().max(1.0),
                "row {r} ({side}): {value} vs {want}"
            );
        }
    }
    assert!(got.iter().any(|&x| x < -1.0), "not a trivial batch");
    // A wrong number of targets is an error, not a panic.
    let TensorPrimitive::Float(short) = tensor(&device) else {
        unreachable!("a float tensor")
    };
    assert!(WgpuInner::target_logprobs(short, &targets[1..], temperature).is_err());
}

/// Decode attention against an f64 reference, one query head a cube and a key/value head's whole
/// query group a cube (grouped-query attention, 2 query heads per key/value head), with several
/// value batches: rows in cache slots out of order, one attending to a single position and one
/// to 251 (the value loop's unrolled steps and its remainder).
#[test]
fn decode_attention_matches_an_f64_reference() {
    use burn::tensor::TensorPrimitive;
    use cubecl::prelude::{CubeCount, CubeDim};
    use forge::kernels::args::array_arg;
    use forge::kernels::decode::decode_attention::{self, decode_attention_kernel};
    use rand::{RngExt, SeedableRng};

    if !forge_tests::require_vulkan("decode_attention_matches_an_f64_reference") {
        return;
    }
    type R = cubecl::wgpu::WgpuRuntime;
    let device = Default::default();
    let upload = |values: &[f32]| {
        let t = Tensor::<WgpuInner, 1>::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &device,
        );
        let TensorPrimitive::Float(t) = t.into_primitive() else {
            unreachable!("a float tensor")
        };
        t
    };
    let upload_u32 = |values: &[u32]| {
        let t = Tensor::<WgpuInner, 1, Int>::from_data(
            TensorData::new(
                values.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                [values.len()],
            ),
            &device,
        );
        t.into_primitive()
    };
    let (heads, kv_heads, hd, slots, max_len) = (4usize, 2usize, 16usize, 3usize, 300usize);
    let positions = [40u32, 0, 250];
    let row_slots = [2u32, 0, 1];
    let rows = positions.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let q = random(rows * heads * hd);
    let cache_len = slots * kv_heads * max_len * hd;
    let (k, v) = (random(cache_len), random(cache_len));
    let scale = 1.0 / (hd as f64).sqrt();
    let mut want = vec![0.0f64; rows * heads * hd];
    for r in 0..rows {
        for h in 0..heads {
            let base = (row_slots[r] as usize * kv_heads + h / (heads / kv_heads)) * max_len * hd;
            let len = positions[r] as usize + 1;
            let scores: Vec<f64> = (0..len)
                .map(|p| {
                    (0..hd)
                        .map(|d| {
                            f64::from(q[(r * heads + h) * hd + d]) * f64::from(k[base + p * hd + d])
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for d in 0..hd {
                want[(r * heads + h) * hd + d] = (0..len)
                    .map(|p| e[p] * f64::from(v[base + p * hd + d]))
                    .sum::<f64>()
                    / total;
            }
        }
    }
    let q_t = upload(&q);
    let client = q_t.client.clone();
    let (k_t, v_t) = (upload(&k), upload(&v));
    let (pos_t, slot_t) = (upload_u32(&positions), upload_u32(&row_slots));
    let vector = 4usize;
    let max_keys = max_len.next_multiple_of(decode_attention::BLOCK);
    // (query heads a cube, value rows in flight per team, units a cube)
    for (group, value_batch, block) in [
        (
            1usize,
            decode_attention::VALUE_BATCH,
            decode_attention::BLOCK,
        ),
        (2, 3, 128),
        (2, 8, 256),
        (2, 2, 64),
    ] {
        let out = client.empty(rows * heads * hd * 4);
        decode_attention_kernel::launch::<f32, R>(
            &client,
            CubeCount::Static((heads / group) as u32, rows as u32, 1),
            CubeDim::new_1d(block as u32),
            vector,
            array_arg::<R, f32>(&q_t.handle, q.len()),
            array_arg::<R, f32>(&k_t.handle, cache_len),
            array_arg::<R, f32>(&v_t.handle, cache_len),
            array_arg::<R, u32>(&pos_t.handle, rows),
            array_arg::<R, u32>(&slot_t.handle, rows),
            array_arg::<R, f32>(&out, rows * heads * hd),
            // The new token's inputs, unread here (`new_token` off: q and the caches hold it;
            // the engine test covers attention computing it).
            array_arg::<R, f32>(&q_t.handle, 1),
            array_arg::<R, f32>(&q_t.handle, 1),
            array_arg::<R, f32>(&q_t.handle, 1),
            array_arg::<R, f32>(&q_t.handle, 1),
            array_arg::<R, f32>(&q_t.handle, 1),
            array_arg::<R, f32>(&q_t.handle, 1),
            heads as u32,
            kv_heads as u32,
            max_len as u32,
            scale as f32,
            1e-6,
            1,
            rows as u32,
            hd,
            hd / vector,
            max_keys,
            group,
            value_batch,
            block,
            false,
            false,
            false,
        );
        let bytes = client.read_one(out).expect("read");
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5,
                "{group} heads a cube, {value_batch} value rows in flight, {block} units, element {i}: {g} vs {w}"
            );
        }
    }
}

/// The device sampler against an f64 reference on random logits of two vocabulary sizes (one a
/// multiple of four, read as vectors; one not, whose 274-logit chunks take two rounds of the
/// staged walk): each drawn token's cumulative-weight interval
/// holds the uniform's share of the total (up to f32 summation over ~150k weights), its
/// log-probability is log softmax(x / T) at it; greedy picks the first of two equal maxima.
#[test]
fn device_sampling_matches_an_f64_reference() {
    use burn::tensor::TensorPrimitive;
    use cubecl::prelude::{CubeCount, CubeDim};
    use forge::kernels::args::array_arg;
    use forge::kernels::decode::sample_rows::{self, sample_rows_kernel};
    use rand::{RngExt, SeedableRng};

    if !forge_tests::require_vulkan("device_sampling_matches_an_f64_reference") {
        return;
    }
    type R = cubecl::wgpu::WgpuRuntime;
    let device = Default::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (vocab, vector) in [(151_936usize, 4usize), (70_001, 1)] {
        let rows = 3;
        let mut logits: Vec<f32> = (0..rows * vocab)
            .map(|_| rng.random_range(-6.0f32..6.0))
            .collect();
        // Row 1: two equal maxima, the first greedy's answer.
        logits[vocab + 777] = 9.0;
        logits[vocab + vocab - 5] = 9.0;
        let uniforms: Vec<f32> = (0..rows).map(|_| rng.random_range(0.0f32..1.0)).collect();
        let t = Tensor::<WgpuInner, 1>::from_data(
            TensorData::new(logits.clone(), [logits.len()]),
            &device,
        );
        let TensorPrimitive::Float(t) = t.into_primitive() else {
            unreachable!("a float tensor")
        };
        let client = t.client.clone();
        let u = client.create_from_slice(&bytemuck_f32(&uniforms));
        // The old cube size and the largest this runtime launches (1,024 where it can).
        let hardware = &client.properties().hardware;
        let largest = [1024usize, 512]
            .into_iter()
            .find(|&b| {
                b <= hardware.max_units_per_cube as usize
                    && sample_rows::shared_bytes(b, vector, false)
                        <= hardware.max_shared_memory_size
            })
            .unwrap_or(256);
        for (temperature, block) in [1.0f64, 0.7, 0.0]
            .into_iter()
            .flat_map(|t| [(t, 256usize), (t, largest)])
        {
            let greedy = temperature == 0.0;
            let inv_t = if greedy { 1.0 } else { 1.0 / temperature };
            let (tokens, logprobs) = (client.empty(rows * 4), client.empty(rows * 4));
            sample_rows_kernel::launch::<R>(
                &client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(block as u32),
                vector,
                array_arg::<R, f32>(&t.handle, rows * vocab),
                array_arg::<R, f32>(&u, rows),
                array_arg::<R, u32>(&tokens, rows),
                array_arg::<R, f32>(&logprobs, rows),
                vocab as u32,
                inv_t as f32,
                greedy,
                block,
            );
            let words = |h| -> Vec<[u8; 4]> {
                client
                    .read_one(h)
                    .expect("read")
                    .chunks_exact(4)
                    .map(|b| [b[0], b[1], b[2], b[3]])
                    .collect()
            };
            let tokens: Vec<usize> = words(tokens)
                .into_iter()
                .map(|b| u32::from_le_bytes(b) as usize)
                .collect();
            let logprobs: Vec<f64> = words(logprobs)
                .into_iter()
                .map(|b| f64::from(f32::from_le_bytes(b)))
                .collect();
            for r in 0..rows {
                let row = &logits[r * vocab..(r + 1) * vocab];
                let max = row.iter().fold(f64::MIN, |m, &x| m.max(f64::from(x)));
                let w: Vec<f64> = row
                    .iter()
                    .map(|&x| ((f64::from(x) - max) * inv_t).exp())
                    .collect();
                let total: f64 = w.iter().sum();
                let token = tokens[r];
                let what = format!(
                    "vocab {vocab}, T={temperature}, {block} units, row {r}: token {token}"
                );
                assert!(token < vocab, "{what}");
                let want_logprob = (f64::from(row[token]) - max) * inv_t - total.ln();
                assert!(
                    (logprobs[r] - want_logprob).abs() <= 1e-4,
                    "{what}: logprob {} vs {want_logprob}",
                    logprobs[r]
                );
                if greedy {
                    let first = row.iter().position(|&x| f64::from(x) == max).expect("max");
                    assert_eq!(token, first, "{what}");
                    if r == 1 {
                        assert_eq!(token, 777, "{what}: the first of two maxima");
                    }
                } else {
                    let before: f64 = w[..token].iter().sum();
                    let target = f64::from(uniforms[r]) * total;
                    // Well under one token's weight (up to ~1e-4 of the total here): f32 sums in order.
                    let slack = 1e-6 * total;
                    assert!(
                        before - slack <= target && target <= before + w[token] + slack,
                        "{what}: target {target} outside [{before}, {}]",
                        before + w[token]
                    );
                }
            }
        }
    }
}

/// `values` as their little-endian bytes.
fn bytemuck_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The decode engine's products against an f64 reference, through every epilogue (bias, residual
/// add, SwiGLU), at row counts that are not whole tiles and a `k` that is not a whole chunk. On
/// lavapipe the CUDA-core kernel runs (no tensor cores); on a runtime with them, both do.
#[test]
fn decode_products_match_an_f64_reference() {
    use burn::tensor::TensorPrimitive;
    use forge::kernels::decode::product::{Weight, product};
    use forge::kernels::decode::skinny_matmul::epilogue;
    use rand::{RngExt, SeedableRng};

    if !forge_tests::require_vulkan("decode_products_match_an_f64_reference") {
        return;
    }
    let device = Default::default();
    let upload = |values: &[f32]| {
        let t = Tensor::<WgpuInner, 1>::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &device,
        );
        let TensorPrimitive::Float(t) = t.into_primitive() else {
            unreachable!("a float tensor")
        };
        t
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for (m, k, n) in [(1, 64, 32), (37, 200, 48), (70, 128, 96)] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let w: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let residual: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let y: Vec<f64> = (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|j| f64::from(x[i / n * k + j]) * f64::from(w[j * n + i % n]))
                    .sum()
            })
            .collect();
        let x_t = upload(&x);
        let client = x_t.client.clone();
        let weight = Weight::new::<_, f32>(&client, upload(&w).handle, k, n);
        let kernels: &[bool] = if weight.tensor_cores {
            &[true, false]
        } else {
            &[false]
        };
        for &tensor_cores in kernels {
            let weight = Weight {
                tensor_cores,
                ..Weight::new::<_, f32>(&client, upload(&w).handle, k, n)
            };
            let cases: [(u32, Vec<f32>, Vec<f64>); 3] = [
                (
                    epilogue::WRITE,
                    vec![0.0; m * n],
                    (0..m * n).map(|i| y[i] + f64::from(bias[i % n])).collect(),
                ),
                (
                    epilogue::ADD,
                    residual.clone(),
                    (0..m * n).map(|i| y[i] + f64::from(residual[i])).collect(),
                ),
                (
                    epilogue::SWIGLU,
                    vec![0.0; m * n / 2],
                    (0..m * n / 2)
                        .map(|i| {
                            let (r, c) = (i / (n / 2), i % (n / 2));
                            let (g, u) = (y[r * n + c], y[r * n + n / 2 + c]);
                            g / (1.0 + (-g).exp()) * u
                        })
                        .collect(),
                ),
            ];
            for (mode, start, want) in cases {
                let out = upload(&start);
                let bias_h = upload(&bias);
                let with_bias = (mode == epilogue::WRITE).then_some(&bias_h.handle);
                product::<_, f32>(
                    &client,
                    &x_t.handle,
                    &weight,
                    m,
                    with_bias,
                    &bias_h.handle,
                    mode,
                    &out.handle,
                );
                let got = Tensor::<WgpuInner, 1>::from_primitive(TensorPrimitive::Float(out))
                    .into_data()
                    .to_vec::<f32>()
                    .expect("f32");
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{m}x{k}x{n}, epilogue {mode}, tensor cores {tensor_cores}, element {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

/// Six sums with their answers as a JSONL dataset in `dir`: `sums.jsonl`, its path.
fn write_sums(dir: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let data = dir.join("sums.jsonl");
    let mut file = std::fs::File::create(&data).expect("data file");
    for (a, b) in [(12, 34), (5, 7), (40, 2), (9, 9), (23, 11), (3, 60)] {
        writeln!(file, r#"{{"prompt": "{a}+{b}=", "answer": "{}"}}"#, a + b).expect("write");
    }
    data
}

/// Loads `yaml` (an experiment writing its metrics under `dir`), runs it with `run`, and returns
/// the metric rows of `stage`.
fn run_for_metrics<E: std::fmt::Debug>(
    dir: &Path,
    name: &str,
    yaml: &str,
    stage: &str,
    run: impl FnOnce(forge::config::Loaded) -> Result<(), E>,
) -> Vec<serde_json::Value> {
    let options = forge::config::LoadOptions::default();
    let loaded = forge::config::load_str("exp.yaml", yaml, dir, &options)
        .unwrap_or_else(|report| panic!("{}", report.render(false)));
    run(loaded).expect("the run");
    let text = std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).expect("metrics");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .filter(|row| row["stage"] == stage)
        .collect()
}

/// `rows` steps each, `keys` equal step by step within `rel` (relative, floored at 1e-3).
fn assert_same_metrics(
    what: &str,
    a: &[serde_json::Value],
    b: &[serde_json::Value],
    rows: usize,
    keys: &[&str],
    rel: f64,
) {
    assert_eq!((a.len(), b.len()), (rows, rows), "{what}");
    for (x, y) in a.iter().zip(b) {
        for key in keys {
            let (Some(u), Some(v)) = (x[key].as_f64(), y[key].as_f64()) else {
                panic!("{what}: `{key}` missing: {x} / {y}")
            };
            assert!(
                (u - v).abs() <= rel * u.abs().max(1e-3),
                "{what}, step {}: `{key}` {u} vs {v}",
                x["step"]
            );
        }
    }
}

/// A GRPO run on two data-parallel trainer ranks, resumed from its checkpoint of step 2 (as if
/// killed after it), trains steps 3 and 4 exactly as it did uninterrupted: the second rank starts again
/// from rank 0's restored weights and optimiser state (a rank restarted with fresh AdamW moments
/// would update its copy differently, and its gradients would show at step 4).
#[test]
fn two_trainer_ranks_resume_as_uninterrupted() {
    use forge::recipes::{Placement, ReferencePlace, run_grpo};

    let dir = tempfile::tempdir().expect("temp dir");
    let data = write_sums(dir.path());
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/arith/assets");
    type WgpuDevice = burn::tensor::Device<WgpuBackend>;
    let (default, other) = (WgpuDevice::DefaultDevice, WgpuDevice::Cpu);
    let run = |name: &str, steps: u32| {
        let yaml = format!(
            "name: {name}\nrecipe: grpo\nbackend: wgpu\n\
             model: {{path: {assets}, init: random, dtype: f32}}\n\
             dataset: {{path: {}, fields: {{prompt: prompt, answer: answer}}}}\n\
             sampling: {{n: 4, max_tokens: 3, temperature: 1.0}}\n\
             loss: {{name: grpo, beta: 0.0}}\n\
             rewards: [{{name: exact_match}}]\n\
             training: {{batch_size: 8, lr: 1.0e-2, steps: {steps}, seq_len: 12, seed: 4, entropy_coef: 0.05}}\n\
             checkpoint: {{interval: 1}}\n\
             metrics: {{dir: {}}}\n",
            data.display(),
            dir.path().display()
        );
        let placement = Placement {
            trainers: vec![default.clone(), other.clone()],
            generators: vec![default.clone()],
            reference: vec![ReferencePlace::Device(default.clone())],
        };
        run_for_metrics(dir.path(), name, &yaml, "grpo", |loaded| {
            run_grpo::<WgpuBackend>(loaded, placement).map(|_| ())
        })
    };
    let later = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .filter(|r| r["step"].as_u64() > Some(2))
            .collect()
    };
    // Four steps, a checkpoint after each; then as if killed after step 2: the later
    // checkpoints gone, and the same run started again resumes from step 2's (which holds the
    // batch made ahead for step 3).
    let full = later(run("run", 4));
    let checkpoints = dir.path().join("run").join("checkpoints");
    for step in [3, 4] {
        std::fs::remove_dir_all(checkpoints.join(format!("step-{step}"))).expect("checkpoint");
    }
    let resumed = later(run("run", 4));
    assert_same_metrics(
        "uninterrupted vs resumed",
        &full,
        &resumed,
        2,
        &["loss/value", "loss/entropy", "train/grad_norm"],
        1e-5,
    );
}

/// SFT with two data-parallel trainer ranks (a second wgpu client; gradients summed through the
/// host) trains exactly as one rank accumulating the same two micro-batches.
#[test]
fn sft_on_two_trainer_ranks_trains_as_one_accumulating() {
    use forge::recipes::run_sft;

    let dir = tempfile::tempdir().expect("temp dir");
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/arith/assets");
    type WgpuDevice = burn::tensor::Device<WgpuBackend>;
    let run = |name: &str, devices: &[WgpuDevice], accumulation: u32| {
        let yaml = format!(
            "name: {name}\nrecipe: sft\nbackend: wgpu\n\
             model: {{path: {assets}, init: random, dtype: f32}}\n\
             dataset: {{path: {assets}/sft.jsonl, fields: {{prompt: prompt, completion: completion, answer: answer}}}}\n\
             training: {{batch_size: 8, lr: 1.0e-2, steps: 3, seq_len: 16, seed: 3, gradient_accumulation_steps: {accumulation}}}\n\
             checkpoint: {{interval: 0}}\n\
             metrics: {{dir: {}}}\n",
            dir.path().display()
        );
        run_for_metrics(dir.path(), name, &yaml, "sft", |loaded| {
            run_sft::<WgpuBackend>(loaded, devices).map(|_| ())
        })
    };
    let (default, other) = (WgpuDevice::DefaultDevice, WgpuDevice::Cpu);
    let one = run("one-rank", std::slice::from_ref(&default), 2);
    let two = run("two-ranks", &[default, other], 1);
    assert_same_metrics(
        "two trainer ranks",
        &one,
        &two,
        3,
        &["loss/value", "train/grad_norm"],
        1e-5,
    );
    // The weights moved, so a rank left behind would show.
    assert_ne!(one[0]["loss/value"], one[2]["loss/value"]);
}

/// GRPO with its generator on another device (a second wgpu client: lavapipe as the `Cpu`
/// device, so weights are copied to it at every sync), or with two generator replicas splitting
/// the prompts, trains exactly as with every model on the trainer's device; with its reference
/// model on the CPU backend too, it trains the same up to the two backends' rounding; with two
/// data-parallel trainer ranks (gradients summed through the host), exactly as one rank
/// accumulating the same micro-batches; with every service replicated (reward worker threads,
/// reference and generator replicas), exactly as with one of each. An entropy bonus makes every
/// step change the weights (the random policy earns no reward), so a stale copy would show.
#[test]
fn grpo_with_services_on_other_devices_trains_as_colocated() {
    use forge::recipes::{Placement, ReferencePlace, run_grpo};

    let dir = tempfile::tempdir().expect("temp dir");
    let data = write_sums(dir.path());
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/arith/assets");
    type WgpuDevice = burn::tensor::Device<WgpuBackend>;
    let run_with = |name: &str,
                    placement: Placement<WgpuDevice>,
                    accumulation: u32,
                    reward_workers: u32| {
        let yaml = format!(
            "name: {name}\nrecipe: grpo\nbackend: wgpu\n\
             model: {{path: {assets}, init: random, dtype: f32}}\n\
             dataset: {{path: {}, fields: {{prompt: prompt, answer: answer}}}}\n\
             sampling: {{n: 4, max_tokens: 3, temperature: 1.0}}\n\
             loss: {{name: grpo, beta: 0.1}}\n\
             rewards: [{{name: exact_match}}]\n\
             services: {{ref_model: {{with_gpus: false}}, reward: {{procs: {reward_workers}}}}}\n\
             training: {{batch_size: 8, lr: 1.0e-2, steps: 3, seq_len: 12, seed: 3, entropy_coef: 0.05, gradient_accumulation_steps: {accumulation}}}\n\
             checkpoint: {{interval: 1000}}\n\
             metrics: {{dir: {}}}\n",
            data.display(),
            dir.path().display()
        );
        run_for_metrics(dir.path(), name, &yaml, "grpo", |loaded| {
            run_grpo::<WgpuBackend>(loaded, placement).map(|_| ())
        })
    };
    let run = |name: &str, placement: Placement<WgpuDevice>| run_with(name, placement, 1, 1);
    let (default, other) = (WgpuDevice::DefaultDevice, WgpuDevice::Cpu);
    let colocated = run(
        "colocated",
        Placement {
            trainers: vec![default.clone()],
            generators: vec![default.clone()],
            reference: vec![ReferencePlace::Device(default.clone())],
        },
    );
    let generator_apart = run(
        "generator-apart",
        Placement {
            trainers: vec![default.clone()],
            generators: vec![other.clone()],
            reference: vec![ReferencePlace::Device(default.clone())],
        },
    );
    // Two replicas, one sharing the trainer's device and one on its own: each samples half the
    // prompts, at the same time. The reference model on the other device too (a copy).
    let two_replicas = run(
        "two-replicas",
        Placement {
            trainers: vec![default.clone()],
            generators: vec![default.clone(), other.clone()],
            reference: vec![ReferencePlace::Device(other.clone())],
        },
    );
    let reference_on_cpu = run(
        "reference-on-cpu",
        Placement {
            trainers: vec![default.clone()],
            generators: vec![other.clone()],
            reference: vec![ReferencePlace::Cpu],
        },
    );
    // Two data-parallel trainer ranks, each with one micro-batch of four episodes, against one
    // rank accumulating the same two micro-batches: the same sums, in the same order.
    let accumulating = run_with(
        "accumulating",
        Placement {
            trainers: vec![default.clone()],
            generators: vec![default.clone()],
            reference: vec![ReferencePlace::Device(default.clone())],
        },
        2,
        1,
    );
    // Every service replicated: three reward worker threads, two reference replicas (one a
    // copy on the other device), two generator replicas.
    let replicated = run_with(
        "replicated",
        Placement {
            trainers: vec![default.clone()],
            generators: vec![default.clone(), other.clone()],
            reference: vec![
                ReferencePlace::Device(default.clone()),
                ReferencePlace::Device(other.clone()),
            ],
        },
        1,
        3,
    );
    let two_ranks = run(
        "two-trainer-ranks",
        Placement {
            trainers: vec![default.clone(), other.clone()],
            generators: vec![default.clone()],
            reference: vec![ReferencePlace::Device(default.clone())],
        },
    );
    let keys = [
        "reward/mean",
        "response/length_mean",
        "loss/kl",
        "loss/value",
        "loss/ratio_mean",
        "loss/entropy",
        "train/grad_norm",
    ];
    let compare = |what: &str, a: &[serde_json::Value], b: &[serde_json::Value], rel: f64| {
        assert_same_metrics(what, a, b, 3, &keys, rel)
    };
    compare("generator apart", &colocated, &generator_apart, 1e-5);
    compare("two generator replicas", &colocated, &two_replicas, 1e-5);
    compare("reference on the CPU", &colocated, &reference_on_cpu, 1e-3);
    compare("two trainer ranks", &accumulating, &two_ranks, 1e-5);
    compare("replicated services", &colocated, &replicated, 1e-5);
    // The weights moved (so the copies mattered), and were copied only where the generator has
    // a device of its own, every step that sampled (the last samples nothing ahead).
    assert!(
        colocated
            .iter()
            .skip(1)
            .all(|r| r["loss/kl"].as_f64() > Some(0.0))
    );
    assert!(colocated.iter().all(|r| r["time/weight_sync_s"] == 0.0));
    assert!(
        generator_apart
            .iter()
            .take(2)
            .all(|r| r["time/weight_sync_s"].as_f64() > Some(0.0))
    );
}
