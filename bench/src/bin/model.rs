//! Benchmarks 2 and 3 on the model: bf16 parity with transformers, rollout decode throughput, and
//! a train step (forward + backward + AdamW), on a random Qwen3-0.6B-shaped checkpoint that
//! `bench/pytorch_model.py` wrote and timed with PyTorch in the same run.
//!
//! Usage: `model DIR` (DIR holds `model/`, `parity.safetensors` and `torch.json`). Prints one JSON
//! object: the Forge side, next to the PyTorch numbers it read.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData, activation};
use forge::generate::{GenerateRequest, GenerateTiming, SamplingParams, generate_timed};
use forge::model::CausalLm;
use forge::tokenizer::Tokenizer;
use half::bf16;
use safetensors::SafeTensors;
use serde_json::json;

use cubecl::cuda::{CudaDevice, CudaRuntime};

/// burn's cubecl backend over CUDA as the training binaries use it: no autotuning, no fusion (both
/// compiled hundreds of kernels, and the matmul autotuner panicked, bench/NOTES.md).
type Gpu = burn_cubecl::CubeBackend<CudaRuntime, bf16, i32, u8>;
type GpuTrain = Autodiff<Gpu>;

fn f32s(file: &SafeTensors<'_>, name: &str) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let view = file
        .tensor(name)
        .with_context(|| format!("tensor {name}"))?;
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((view.shape().to_vec(), values))
}

fn i64s(file: &SafeTensors<'_>, name: &str) -> anyhow::Result<(Vec<usize>, Vec<i64>)> {
    let view = file
        .tensor(name)
        .with_context(|| format!("tensor {name}"))?;
    let values = view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Ok((view.shape().to_vec(), values))
}

fn ids<B: Backend>(values: Vec<i64>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A deterministic stream of token ids (the prompts need not match PyTorch's: both sides are
/// timed on random tokens of the same shape).
fn random_ids(count: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab as u64) as i64
        })
        .collect()
}

/// Logits of the parity batch: max |Forge - HF bf16|, max |Forge - HF f32|, max |HF bf16 - HF
/// f32|, and how often Forge's argmax equals HF f32's.
fn parity(
    model: &CausalLm<Gpu>,
    dir: &std::path::Path,
    device: &CudaDevice,
) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(dir.join("parity.safetensors")).context("parity.safetensors")?;
    let file = SafeTensors::deserialize(&bytes)?;
    let (shape, input) = i64s(&file, "input_ids")?;
    let (_, hf_bf16) = f32s(&file, "logits_bf16")?;
    let (_, hf_f32) = f32s(&file, "logits_f32")?;
    let logits = model.forward(ids::<Gpu>(input, [shape[0], shape[1]], device));
    let vocab = logits.dims()[2];
    let ours: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if ours.len() != hf_f32.len() {
        bail!("logit count {} vs {}", ours.len(), hf_f32.len());
    }
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0)
    };
    let rows = ours.len() / vocab;
    let agree = (0..rows)
        .filter(|&r| {
            argmax(&ours[r * vocab..(r + 1) * vocab]) == argmax(&hf_f32[r * vocab..(r + 1) * vocab])
        })
        .count();
    let hf_agree = (0..rows)
        .filter(|&r| {
            argmax(&hf_bf16[r * vocab..(r + 1) * vocab])
                == argmax(&hf_f32[r * vocab..(r + 1) * vocab])
        })
        .count();
    Ok(json!({
        "rows": rows,
        "max_abs_logit_f32": hf_f32.iter().fold(0.0f32, |m, x| m.max(x.abs())),
        "forge_bf16_vs_hf_bf16": max_diff(&ours, &hf_bf16),
        "forge_bf16_vs_hf_f32": max_diff(&ours, &hf_f32),
        "hf_bf16_vs_hf_f32": max_diff(&hf_bf16, &hf_f32),
        "argmax_agree_forge_vs_f32": agree as f64 / rows as f64,
        "argmax_agree_hf_bf16_vs_f32": hf_agree as f64 / rows as f64,
    }))
}

/// Rollout decode: `batch` prompts of `prompt_len` random tokens, `new_tokens` sampled each at
/// temperature 1 with no stop tokens (every row runs to the end, as HF's `min_new_tokens`).
fn decode(
    model: &CausalLm<Gpu>,
    tokenizer: &Tokenizer,
    device: &CudaDevice,
    (batch, prompt_len, new_tokens): (usize, usize, usize),
) -> anyhow::Result<serde_json::Value> {
    let vocab = model.spec.vocab_size;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|i| {
            random_ids(prompt_len, vocab, i as u64 + 1)
                .into_iter()
                .map(|t| t as u32)
                .collect()
        })
        .collect();
    let run = |max_new_tokens: usize| -> anyhow::Result<(f64, usize, GenerateTiming, u64)> {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            seed: 3,
        };
        let request = GenerateRequest {
            prompts: &prompts,
            n: 1,
            params: &params,
            seed_offset: 0,
            policy_version: 0,
        };
        let start = Instant::now();
        let (out, timing) = generate_timed(model, tokenizer, &request, device)?;
        let elapsed = start.elapsed().as_secs_f64();
        let tokens = out.iter().flatten().map(|c| c.token_ids.len()).sum();
        // FNV-1a over every token id, prompt by prompt: equal digests, equal generations.
        let digest = out
            .iter()
            .flatten()
            .flat_map(|c| &c.token_ids)
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
                (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3)
            });
        Ok((elapsed, tokens, timing, digest))
    };
    // Warm-up: compiles the kernels and tunes the GEMMs for the cache lengths met.
    // `DECODE_WARMUPS` (comma-separated new-token counts, empty for none) replaces the default
    // three (bench/profile_decode_step.sh profiles a run without them).
    let warmups: Vec<usize> = match std::env::var("DECODE_WARMUPS") {
        Ok(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .context("DECODE_WARMUPS: new-token counts separated by commas")?,
        Err(_) => vec![8, 64, new_tokens],
    };
    let mut warm_s = Vec::new();
    for warm in warmups {
        let (s, _, _, _) = run(warm)?;
        eprintln!("decode warm-up, {warm} new tokens: {s:.2} s");
        warm_s.push(s);
    }
    let (seconds, tokens, timing, digest) = run(new_tokens)?;
    let prefill = prefill_parts(model, &prompts, new_tokens, device)?;
    // The first token comes from the prefill's logits; each later one from a decode step.
    let decode_s = seconds - timing.prefill_s;
    Ok(json!({
        "prefill_s": timing.prefill_s,
        "prefill_parts": prefill,
        "decode_step_ms": decode_s / new_tokens.saturating_sub(1).max(1) as f64 * 1e3,
        "host_wait_s": timing.logits_s,
        "host_issue_s": timing.model_s,
        "host_sample_s": timing.sample_s,
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "tokens": tokens,
        "seconds": seconds,
        "tok_s": tokens as f64 / seconds,
        "tokens_digest": format!("{digest:016x}"),
        "warm_up_seconds": warm_s,
    }))
}

/// Where the generation's prefill goes, each part waited for: setting up the decode engine for
/// the batch, then the prompts' prefill through it (one group: equal lengths, as many token rows
/// a launch sequence as the generator takes); then [`engine_steps`] on that engine.
fn prefill_parts(
    model: &CausalLm<Gpu>,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    device: &CudaDevice,
) -> anyhow::Result<serde_json::Value> {
    use forge::generate::DecodeBackend;
    let (batch, len) = (prompts.len(), prompts.first().map_or(0, Vec::len));
    let sync = || Gpu::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"));
    sync()?;
    let t = Instant::now();
    let Some(mut engine) = Gpu::decode_engine(model, batch, len + new_tokens) else {
        return Ok(json!("no decode engine for this model"));
    };
    sync()?;
    let engine_s = t.elapsed().as_secs_f64();
    let views: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let slots: Vec<Vec<usize>> = (0..batch).map(|b| vec![b]).collect();
    let t = Instant::now();
    let last = engine
        .prefill(&views, &slots, forge::generate::prefill_rows())
        .context("the engine's prefill took no equal-length prompts")?;
    sync()?;
    let prefill_s = t.elapsed().as_secs_f64();
    drop(last);
    let steps = engine_steps(
        engine.as_mut(),
        batch,
        len,
        new_tokens,
        model.spec.vocab_size,
        device,
    )?;
    Ok(json!({
        "engine_s": engine_s,
        "engine_prefill_s": prefill_s,
        "engine_steps": steps,
    }))
}

/// The decode engine's step on its own, after the prefill of `batch` prompts of `len` tokens:
/// `new_tokens - 1` steps issued back to back with nothing read (`steps_only_ms`, the GPU's
/// time a step where the host keeps ahead), then as many each followed by the device sampling
/// kernel and its read (`step_and_sample_ms`, one step at a time without the generator's
/// bookkeeping).
fn engine_steps(
    engine: &mut dyn forge::generate::DecodeEngine<Gpu>,
    batch: usize,
    len: usize,
    new_tokens: usize,
    vocab: usize,
    device: &CudaDevice,
) -> anyhow::Result<serde_json::Value> {
    let sync = || Gpu::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"));
    let slots: Vec<usize> = (0..batch).collect();
    let tokens: Vec<u32> = random_ids(batch, vocab, 7)
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let steps = new_tokens.saturating_sub(1).max(2);
    let mut time = |sample: bool| -> anyhow::Result<f64> {
        sync()?;
        let t = Instant::now();
        for s in 0..steps {
            let positions = vec![len + s % new_tokens; batch];
            let logits = engine.step(&tokens, &positions, &slots);
            if sample {
                engine
                    .sample(logits, &vec![0.5; batch], 1.0)
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
        }
        sync()?;
        Ok(t.elapsed().as_secs_f64() / steps as f64 * 1e3)
    };
    // The first steps record the graphs and compile; not timed.
    time(true)?;
    let steps_only_ms = time(false)?;
    let step_and_sample_ms = time(true)?;
    Ok(json!({
        "steps": steps,
        "steps_only_ms": steps_only_ms,
        "step_and_sample_ms": step_and_sample_ms,
    }))
}

/// `op` once (warm), then `reps` times back to back: microseconds per call to issue them and
/// until the device is done with them.
fn time_ops(
    client: &cubecl::client::ComputeClient<CudaRuntime>,
    reps: usize,
    op: &mut dyn FnMut(),
) -> anyhow::Result<(f64, f64)> {
    op();
    cubecl::future::block_on(client.sync())?;
    let start = Instant::now();
    for _ in 0..reps {
        op();
    }
    let issue = start.elapsed().as_secs_f64();
    cubecl::future::block_on(client.sync())?;
    let done = start.elapsed().as_secs_f64();
    Ok((issue / reps as f64 * 1e6, done / reps as f64 * 1e6))
}

/// GPU microseconds per call of `op(i)`: calls `0..reps` recorded as one CUDA graph (the host's
/// launch cost off the clock), replayed five times after one warm replay.
fn time_graph(
    client: &cubecl::client::ComputeClient<CudaRuntime>,
    device: &CudaDevice,
    reps: usize,
    op: &mut dyn FnMut(usize),
) -> anyhow::Result<f64> {
    use forge::kernels::cuda_graph::StepGraphs;
    op(0);
    cubecl::future::block_on(client.sync())?;
    let mut graphs = StepGraphs::new(client, device)
        .context("no CUDA graphs here (CUPTI not on LD_LIBRARY_PATH, or a profiler holds it)")?;
    graphs.record(0, || (0..reps).for_each(&mut *op))?;
    graphs.replay(0)?;
    cubecl::future::block_on(client.sync())?;
    let replays = 5;
    let start = Instant::now();
    for _ in 0..replays {
        graphs.replay(0)?;
    }
    cubecl::future::block_on(client.sync())?;
    Ok(start.elapsed().as_secs_f64() / (replays * reps) as f64 * 1e6)
}

/// The decode engine's products at the shapes a decode step runs (and odd ones: rows not a
/// multiple of 16, a single row): the tensor-core and CUDA-core kernels and cuBLAS (f32 out, as
/// the engine runs it), each checked against an f64 product of the same bf16 inputs, then timed
/// on the GPU's clock (CUDA graphs of `reps` calls) over enough copies of the weights that they
/// come from DRAM as in a decode step, not from L2. `partials_us` is the product alone (what
/// the engine's next kernel then sums), `with_sum_us` adds a launch summing it into bf16; the
/// tensor-core kernel's launch shapes are swept on the GPU's clock too.
fn products(device: &CudaDevice, reps: usize) -> anyhow::Result<serde_json::Value> {
    use cubecl::prelude::*;
    use forge::kernels::decode::product::{
        CublasProducts, MmaLaunch, Partials, Weight, finish, partials_into,
    };
    use forge::kernels::decode::skinny_matmul::epilogue;
    let client = CudaRuntime::client(device);
    let cublas = CublasProducts::new::<CudaRuntime, bf16>(&client, device)
        .context("cuBLAS products unavailable (CUPTI not on LD_LIBRARY_PATH?)")?;
    let mut rows = Vec::new();
    // (m, k, n): Qwen3-0.6B's q/k/v, o, gate/up and down at 64 rows, then odd shapes.
    for (m, k, n) in [
        (64, 1024, 4096),
        (64, 2048, 1024),
        (64, 1024, 6144),
        (64, 3072, 1024),
        (37, 1024, 6144),
        (1, 1024, 1024),
        (100, 2048, 272),
    ] {
        let to_bf16 = |v: Vec<i64>| -> Vec<bf16> {
            v.into_iter()
                .map(|r| bf16::from_f32((r % 2001) as f32 / 1000.0 - 1.0))
                .collect()
        };
        let x = to_bf16(random_ids(m * k, 1 << 30, 11 + m as u64));
        let w = to_bf16(random_ids(k * n, 1 << 30, 12 + n as u64));
        let mut want = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..k {
                let a = f64::from(x[r * k + j].to_f32());
                for c in 0..n {
                    want[r * n + c] += a * f64::from(w[j * n + c].to_f32());
                }
            }
        }
        let scale = want.iter().fold(0f64, |a, b| a.max(b.abs()));
        let x_h = client.create_from_slice(bf16::as_bytes(&x));
        let none = client.empty(4);
        // Copies of the weights, 256 MB in all (five times H100's L2), used round robin;
        // `PRODUCTS_COPIES=1` keeps one (read from L2 after the first call: what a product
        // whose weight was fetched ahead would take).
        let copies = match std::env::var("PRODUCTS_COPIES") {
            Ok(v) => v
                .parse::<usize>()
                .context("PRODUCTS_COPIES: a count")?
                .max(1),
            Err(_) => (256usize << 20).div_ceil(k * n * 2),
        };
        let weight_copies: Vec<Weight> = (0..copies)
            .map(|_| {
                Weight::new::<CudaRuntime, bf16>(
                    &client,
                    client.create_from_slice(bf16::as_bytes(&w)),
                    k,
                    n,
                )
            })
            .collect();
        // Large enough for any split count the sweep makes (one split per 16 of `k`).
        let partials_buffer = client.empty((k / 16).max(1) * m.next_multiple_of(16) * n * 4);
        let out = client.empty(m * n * 2);
        let mut row = json!({ "m": m, "k": k, "n": n, "weight_copies": copies });
        // cuBLAS with the engine's cut of `k`, then with 1-8 chunks (where they divide `k`).
        for path in [
            "tensor_cores",
            "cuda_cores",
            "cublas",
            "cublas_1",
            "cublas_2",
            "cublas_4",
            "cublas_8",
        ] {
            if path == "tensor_cores" && !weight_copies[0].tensor_cores {
                row[path] = json!("not supported for this shape or card");
                continue;
            }
            let blas_splits = match path.strip_prefix("cublas_") {
                Some(s) => s.parse::<usize>()?,
                None => weight_copies[0].cublas_splits,
            };
            if path.starts_with("cublas") && !k.is_multiple_of(blas_splits) {
                continue;
            }
            let partials = |i: usize| -> anyhow::Result<Partials> {
                let mut weight = Weight {
                    handle: weight_copies[i % copies].handle.clone(),
                    ..weight_copies[0]
                };
                Ok(match path {
                    _ if path.starts_with("cublas") => cublas.partials(
                        &client,
                        &x_h,
                        &weight,
                        m,
                        blas_splits,
                        partials_buffer.clone(),
                    )?,
                    _ => {
                        weight.tensor_cores = path == "tensor_cores";
                        partials_into::<CudaRuntime, bf16>(
                            &client,
                            &x_h,
                            &weight,
                            m,
                            usize::MAX,
                            MmaLaunch::DEFAULT,
                            partials_buffer.clone(),
                        )
                    }
                })
            };
            let sum = |p: &Partials| {
                finish::<CudaRuntime, bf16>(
                    &client,
                    p,
                    &weight_copies[0],
                    m,
                    None,
                    &none,
                    epilogue::WRITE,
                    &out,
                )
            };
            let p = partials(0)?;
            sum(&p);
            let got = bf16::from_bytes(&client.read_one(out.clone())?).to_vec();
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |e, (g, w)| e.max((f64::from(g.to_f32()) - w).abs()));
            // bf16 output rounding is 2^-8 relative; anything past a few of those is a wrong sum.
            if err / scale > 1e-2 {
                bail!(
                    "decode product {m}x{k}x{n} ({path}): error {:.3e} of the largest value",
                    err / scale
                );
            }
            let mut failed = None;
            let alone = time_graph(&client, device, reps, &mut |i| {
                if let Err(e) = partials(i) {
                    failed = Some(e);
                }
            })?;
            let with_sum = time_graph(&client, device, reps, &mut |i| match partials(i) {
                Ok(p) => sum(&p),
                Err(e) => failed = Some(e),
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            row[path] = json!({
                "splits": p.splits,
                "partials_us": alone,
                "with_sum_us": with_sum,
                "weight_gb_s": (k * n * 2) as f64 / alone / 1e3,
                "max_err_rel": err / scale,
            });
        }
        // Other ways of cutting the tensor-core product into cubes, the product alone
        // (`PRODUCTS_SWEEP=1`; session 14 found the default within 0.3 us of the best).
        if row["tensor_cores"].is_object() && std::env::var("PRODUCTS_SWEEP").as_deref() == Ok("1")
        {
            let mut sweep = Vec::new();
            for planes in [2, 4, 8] {
                for target_cubes in [132, 264, 528, 1056] {
                    for min_stages in [1, 2, 4, 8] {
                        let launch = MmaLaunch {
                            planes,
                            target_cubes,
                            min_stages,
                        };
                        let us = time_graph(&client, device, reps, &mut |i| {
                            partials_into::<CudaRuntime, bf16>(
                                &client,
                                &x_h,
                                &weight_copies[i % copies],
                                m,
                                usize::MAX,
                                launch,
                                partials_buffer.clone(),
                            );
                        })?;
                        sweep.push((us, format!("{planes}/{target_cubes}/{min_stages}")));
                    }
                }
            }
            sweep.sort_by(|a, b| a.0.total_cmp(&b.0));
            row["sweep_planes_target_minstages"] = json!(
                sweep
                    .iter()
                    .take(8)
                    .map(|(us, what)| format!("{what}: {us:.2} us"))
                    .collect::<Vec<_>>()
            );
        }
        eprintln!("products: {row}");
        rows.push(row);
    }
    // The LM head as the engine runs it: one split, the f32 logits written directly (no f64
    // check at this size: 10 G multiply-adds; the engine check covers it).
    let (m, k, n) = (64, 1024, 151_936);
    let head = Weight::new::<CudaRuntime, bf16>(
        &client,
        client.create_from_slice(bf16::as_bytes(&vec![bf16::from_f32(0.01); k * n])),
        k,
        n,
    );
    let x_h = client.create_from_slice(bf16::as_bytes(&vec![bf16::ONE; m * k]));
    let logits = client.empty(m * n * 4);
    let ours = time_graph(&client, device, reps / 10, &mut |_| {
        partials_into::<CudaRuntime, bf16>(
            &client,
            &x_h,
            &head,
            m,
            1,
            MmaLaunch::DEFAULT,
            logits.clone(),
        );
    })?;
    let mut failed = None;
    let blas = time_graph(&client, device, reps / 10, &mut |_| {
        if let Err(e) = cublas.partials(&client, &x_h, &head, m, 1, logits.clone()) {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let gb_s = |us: f64| (k * n * 2) as f64 / us / 1e3;
    let row = json!({ "m": m, "k": k, "n": n, "head": {
        "tensor_cores": { "us": ours, "weight_gb_s": gb_s(ours) },
        "cublas": { "us": blas, "weight_gb_s": gb_s(blas) },
    } });
    eprintln!("products: {row}");
    rows.push(row);
    Ok(json!(rows))
}

/// What the host spends per operation the decode engine issues, on their own: a kernel launch
/// (the engine's RMSNorm on one 64-element row, so the GPU side is as short as a launch gets), a
/// buffer from cubecl's pool, a small upload, and a decode product (two launches). Each timed
/// over `reps` back to back: the issuing alone, then until the device is done.
fn host_costs(device: &CudaDevice, reps: usize) -> anyhow::Result<serde_json::Value> {
    use cubecl::prelude::*;
    use forge::kernels::args::array_arg;
    use forge::kernels::decode::product::{Weight, product};
    use forge::kernels::decode::rms_norm::{self, rms_norm_kernel};
    use forge::kernels::decode::skinny_matmul::epilogue;
    let client = CudaRuntime::client(device);
    let x = client.create_from_slice(bf16::as_bytes(&vec![bf16::ONE; 64 * 1024]));
    let w = client.create_from_slice(bf16::as_bytes(&vec![bf16::ONE; 1024 * 1024]));
    let out = client.empty(64 * 1024 * 2);
    let none = client.empty(4);
    let weight = Weight::new::<CudaRuntime, bf16>(&client, w.clone(), 1024, 1024);
    let timed = |name: &str, op: &mut dyn FnMut()| -> anyhow::Result<serde_json::Value> {
        let (issue_us, done_us) = time_ops(&client, reps, op)?;
        let row = json!({ "op": name, "issue_us": issue_us, "done_us": done_us });
        eprintln!("host: {row}");
        Ok(row)
    };
    let launch = timed("launch (RMSNorm, 1 x 64)", &mut || {
        rms_norm_kernel::launch::<bf16, CudaRuntime>(
            &client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(rms_norm::BLOCK as u32),
            array_arg::<CudaRuntime, bf16>(&x, 64),
            array_arg::<CudaRuntime, bf16>(&w, 64),
            array_arg::<CudaRuntime, bf16>(&out, 64),
            1,
            64,
            1e-6,
            rms_norm::BLOCK,
        );
    })?;
    let empty = timed("client.empty (128 KB)", &mut || {
        drop(client.empty(64 * 1024 * 2));
    })?;
    let upload = timed("create_from_slice (64 u32)", &mut || {
        drop(client.create_from_slice(u32::as_bytes(&[7u32; 64])));
    })?;
    let prod = timed("decode product 64 x 1024 x 1024 (2 launches)", &mut || {
        product::<CudaRuntime, bf16>(&client, &x, &weight, 64, None, &none, epilogue::WRITE, &out);
    })?;
    Ok(json!([launch, empty, upload, prod]))
}

/// The decode engine's logits at this model's shape against the generic model's full forward
/// pass over the same tokens (both bf16 on the GPU): four prompts of different lengths, then
/// three decode steps. Reports the largest difference relative to the largest logit.
fn engine_check(model: &CausalLm<Gpu>, device: &CudaDevice) -> anyhow::Result<serde_json::Value> {
    use forge::generate::DecodeBackend;
    use forge::model::{KvCache, attention_bias};
    let vocab = model.spec.vocab_size;
    let mut engine = Gpu::decode_engine(model, 4, 64).context("the CUDA backend has an engine")?;
    let mut sequences: Vec<Vec<u32>> = [5usize, 17, 9, 30]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            random_ids(len, vocab, 40 + i as u64)
                .into_iter()
                .map(|t| t as u32)
                .collect()
        })
        .collect();
    let last_logits = |seq: &[u32]| -> anyhow::Result<Vec<f32>> {
        let values: Vec<i64> = seq.iter().map(|&t| i64::from(t)).collect();
        let logits = model.forward(ids::<Gpu>(values, [1, seq.len()], device));
        let [_, s, v] = logits.dims();
        logits
            .slice([0..1, s - 1..s, 0..v])
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    for (slot, seq) in sequences.iter().enumerate() {
        let len = seq.len();
        let values: Vec<i64> = seq.iter().map(|&t| i64::from(t)).collect();
        let positions = (0..len as i64).collect::<Vec<_>>();
        let bias = attention_bias::<Gpu>(1, len, 0, None, device);
        let mut cache = KvCache::new(model.spec.num_layers);
        let _ = model.hidden(
            ids::<Gpu>(values, [1, len], device),
            &ids::<Gpu>(positions, [1, len], device),
            &bias,
            Some(&mut cache),
        );
        engine.load_prefill(&cache, &[vec![slot]]);
    }
    let mut worst = 0f64;
    let mut agree = 0usize;
    let mut total = 0usize;
    for step in 0..3u32 {
        let tokens: Vec<u32> = (0..sequences.len() as u32)
            .map(|r| 100 + 977 * step + 13 * r)
            .collect();
        let positions: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let slots: Vec<usize> = (0..sequences.len()).collect();
        let got: Vec<f32> = engine
            .step(&tokens, &positions, &slots)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (r, seq) in sequences.iter_mut().enumerate() {
            seq.push(tokens[r]);
            let want = last_logits(seq)?;
            let row = &got[r * vocab..(r + 1) * vocab];
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = row
                .iter()
                .zip(&want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            worst = worst.max(f64::from(diff / scale));
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold(0, |b, (i, x)| if *x > v[b] { i } else { b })
            };
            agree += usize::from(argmax(row) == argmax(&want));
            total += 1;
        }
    }
    Ok(json!({
        "tensor_cores": std::env::var("FORGE_DECODE_TENSOR_CORES").map_or(true, |v| v != "0"),
        "max_diff_rel": worst,
        "argmax_agree": agree as f64 / total as f64,
    }))
}

/// One train step: forward over [batch, seq] tokens, mean next-token cross-entropy, backward,
/// AdamW. Median of `reps` after one warm-up step.
fn train_step(
    dir: &std::path::Path,
    device: &CudaDevice,
    (batch, seq): (usize, usize),
    reps: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut model = forge::model::load::<GpuTrain>(dir, device)?;
    let vocab = model.spec.vocab_size;
    let params: usize = model.valid().num_params();
    let input = random_ids(batch * seq, vocab, 99);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .init::<GpuTrain, CausalLm<GpuTrain>>();
    let mut times = Vec::new();
    let mut loss_value = 0.0;
    for rep in 0..=reps {
        let start = Instant::now();
        let tokens = ids::<GpuTrain>(input.clone(), [batch, seq], device);
        let logits = model.forward(tokens.clone());
        let logprobs = activation::log_softmax(logits.slice([0..batch, 0..seq - 1]), 2);
        let targets = tokens.slice([0..batch, 1..seq]).unsqueeze_dim::<3>(2);
        let loss = logprobs.gather(2, targets).mean().neg();
        let grads = loss.backward();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(1e-6, model, grads);
        // Reading the loss waits for the whole step.
        loss_value = loss
            .into_scalar()
            .to_string()
            .parse::<f64>()
            .unwrap_or(f64::NAN);
        let elapsed = start.elapsed().as_secs_f64();
        eprintln!("train step {rep}: {elapsed:.3} s (loss {loss_value:.4})");
        if rep > 0 {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    let tokens = (batch * seq) as f64;
    Ok(json!({
        "batch": batch,
        "seq": seq,
        "params": params,
        "step_ms": seconds * 1e3,
        "tok_s": tokens / seconds,
        "mfu_vs_800TF": 6.0 * params as f64 * tokens / seconds / 800e12,
        "loss": loss_value,
    }))
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: model DIR")?);
    let what: Vec<String> = std::env::args().skip(2).collect();
    let wants = |part: &str| what.is_empty() || what.iter().any(|w| w == part);
    let device = CudaDevice::new(0);
    if what == ["host"] {
        // Needs no checkpoint: DIR is unused.
        println!(
            "{}",
            serde_json::to_string_pretty(&host_costs(&device, 20_000)?)?
        );
        return Ok(());
    }
    let model_dir = dir.join("model");
    let torch: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("torch.json")).context("torch.json")?,
    )?;
    let mut out = json!({ "torch": torch });
    {
        let t = Instant::now();
        let model = forge::model::load::<Gpu>(&model_dir, &device)?;
        out["load_s"] = json!(t.elapsed().as_secs_f64());
        eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());
        if wants("parity") {
            out["parity"] = parity(&model, &dir, &device)?;
            eprintln!("parity: {}", out["parity"]);
        }
        if wants("engine") {
            out["engine"] = engine_check(&model, &device)?;
            eprintln!("engine: {}", out["engine"]);
        }
        if wants("decode") {
            let tokenizer = Tokenizer::from_dir(&model_dir, None)?;
            // `DECODE_NEW_TOKENS` shortens the run (for profilers); benchmark 2 is 256.
            let new_tokens = match std::env::var("DECODE_NEW_TOKENS") {
                Ok(v) => v.parse().context("DECODE_NEW_TOKENS: a count")?,
                Err(_) => 256,
            };
            out["decode"] = decode(&model, &tokenizer, &device, (64, 128, new_tokens))?;
            eprintln!("decode: {}", out["decode"]);
        }
    }
    if wants("products") {
        out["products"] = products(&device, 200)?;
    }
    if wants("train") {
        out["train"] = train_step(&model_dir, &device, (8, 1024), 3)?;
        eprintln!("train: {}", out["train"]);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
