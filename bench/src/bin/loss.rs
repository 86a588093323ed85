//! Benchmark 1: fused logprob + GRPO loss, forward and backward, over bf16 logits [N, V] on CUDA.
//!
//! Reads the inputs `bench/pytorch_loss.py` wrote (same tensors PyTorch timed), runs Forge's
//! kernels, checks the loss and sampled gradient rows against PyTorch's, times it, and prints one
//! JSON object. Usage: `loss DIR` (DIR holds inputs.safetensors and torch.json).

use std::path::PathBuf;

use anyhow::{Context, bail};
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::prelude::*;
use forge::config::Aggregation;
use forge::kernels::args::array_arg;
use forge::kernels::device_loss::{
    LossCall, LossPath, LossRuntime, TokenInputsHost, forward_backward,
};
use forge::kernels::fused_token_loss::{FusedLossIo, FusedShape, LogitsElem};
use forge::kernels::logprob_backward::logprob_backward_kernel;
use forge::kernels::logprob_forward::{BLOCK, logprob_forward_kernel};
use forge::loss::reference::{Normalizer, TokenView};
use half::bf16;
use safetensors::SafeTensors;

/// burn's cubecl backend over CUDA in bf16, as the trainer's tensors are.
type Inner = burn_cubecl::CubeBackend<CudaRuntime, bf16, i32, u8>;

fn f32s(file: &SafeTensors<'_>, name: &str) -> anyhow::Result<Vec<f32>> {
    let view = file
        .tensor(name)
        .with_context(|| format!("tensor {name}"))?;
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: loss DIR")?);
    let bytes = std::fs::read(dir.join("inputs.safetensors")).context("inputs.safetensors")?;
    let file = SafeTensors::deserialize(&bytes)?;
    let torch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("torch.json"))?)?;

    let logits = file.tensor("logits")?;
    let (n, vocab) = (logits.shape()[0], logits.shape()[1]);
    if logits.dtype() != safetensors::Dtype::BF16 {
        bail!("logits must be bf16");
    }
    let targets: Vec<i32> = file
        .tensor("targets")?
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as i32)
        .collect();
    let mask = f32s(&file, "mask")?;
    let old = f32s(&file, "old")?;
    let reference = f32s(&file, "ref")?;
    let adv = f32s(&file, "adv")?;
    // Masked tokens do not count: target -1.
    let targets: Vec<i32> = targets
        .iter()
        .zip(&mask)
        .map(|(&t, &m)| if m > 0.0 { t } else { -1 })
        .collect();
    let sequence = vec![0usize; n];
    let active = targets.iter().filter(|&&t| t >= 0).count();

    let client = CudaRuntime::client(&CudaDevice::new(0));
    let logits_h = client.create_from_slice(logits.data());
    // The logits as a burn tensor sharing that buffer, and a fresh copy of them (made and waited
    // for, for steps that overwrite their input).
    let logits_tensor = || {
        burn::tensor::Tensor::<Inner, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(
            burn_cubecl::tensor::CubeTensor::new_contiguous(
                client.clone(),
                CudaDevice::new(0),
                burn::tensor::Shape::new([n, vocab]),
                logits_h.clone(),
                burn::tensor::DType::BF16,
            ),
        ))
    };
    let copy_logits = || {
        let copy = logits_tensor() * 1.0;
        cubecl::future::block_on(client.sync()).expect("sync");
        copy
    };
    let loss = forge::loss::registry::find("grpo").context("grpo")?;
    let params = serde_json::json!({"clip_low": 0.2, "clip_high": 0.28, "beta": 0.1});
    let param_values =
        (loss.param_values)(params.as_object().expect("object")).map_err(anyhow::Error::msg)?;
    let tokens = TokenInputsHost {
        targets: &targets,
        sequence: &sequence,
        sequences: 1,
        generator_logprobs: &old,
        ref_logprobs: &reference,
        advantages: &adv,
    };
    let norm = Normalizer {
        tokens: active as f64,
        sequences: 1.0,
        nonempty_sequences: 1.0,
        horizon: n as f64,
    };
    let run_path = |path: LossPath| {
        let call = LossCall {
            params: &param_values,
            aggregation: Aggregation::TokenMean,
            logits: &logits_h,
            vocab,
            tokens: &tokens,
            temperature: 1.0,
            norm,
            path,
            uploaded: None,
            in_place: false,
        };
        let result = forward_backward::<CudaRuntime, bf16>(&client, loss, &call).expect("runs");
        cubecl::future::block_on(client.sync()).expect("sync");
        result
    };
    let run = || run_path(LossPath::Auto);

    // Correctness against PyTorch on the same inputs; the memory the call adds, measured by
    // cubecl's pool (in use while the result is held; reserved growth bounds the peak).
    let usage = || client.memory_usage().expect("memory usage");
    let before = usage();
    let result = run();
    let after = usage();
    let extra_in_use = after.bytes_in_use.saturating_sub(before.bytes_in_use);
    let reserved_growth = after.bytes_reserved.saturating_sub(before.bytes_reserved);
    let torch_loss = torch["loss"].as_f64().context("torch loss")?;
    let loss_rel = (result.tokens.loss - torch_loss).abs() / torch_loss.abs();
    let grad = client
        .read_one(result.grad_logits.clone())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let grad: &[bf16] = bf16::from_bytes(&grad);
    let rows: Vec<usize> = torch["grad_rows"]
        .as_array()
        .context("grad_rows")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .map(|r| r as usize)
        .collect();
    let sample = f32s(&file, "grad_sample")?;
    let (mut max_err, mut max_ref) = (0.0f32, 0.0f32);
    for (k, &row) in rows.iter().enumerate() {
        for j in 0..vocab {
            let got = grad[row * vocab + j].to_f32();
            let want = sample[k * vocab + j];
            max_err = max_err.max((got - want).abs());
            max_ref = max_ref.max(want.abs());
        }
    }

    let ms = forge_bench::median_ms(3, 10, || {
        let _ = run();
    });
    // The same loss as the trainer calls it: a burn operation on the logits (a tracked leaf of
    // burn's cubecl backend), `backward()`, and the gradient taken from the graph.
    let (burn_op_ms, burn_op_with_stats_ms, burn_op_loss_rel, trainer_op) = {
        use burn::prelude::*;
        use forge::train::loss_backend::{BoundPolicyLoss, PolicyLossInputs, policy_loss};
        type Train = burn::backend::Autodiff<Inner>;
        let logits_t = Tensor::<Train, 2>::from_inner(logits_tensor()).require_grad();
        let bound = BoundPolicyLoss::bind(loss, params.as_object().expect("object"))
            .map_err(anyhow::Error::msg)?;
        let target_ids: Vec<i64> = targets.iter().map(|&t| i64::from(t.max(0))).collect();
        // Masked tokens are the ones whose target the kernels see as -1.
        let loss_mask: Vec<f32> = targets
            .iter()
            .map(|&t| if t >= 0 { 1.0 } else { 0.0 })
            .collect();
        let inputs = PolicyLossInputs {
            loss: &bound,
            aggregation: Aggregation::TokenMean,
            temperature: 1.0,
            normalizer: norm,
            path: LossPath::Auto,
            uploaded: None,
            tokens: TokenView {
                batch: 1,
                seq: n,
                target_ids: &target_ids,
                generator_logprobs: &old,
                advantages: &adv,
                loss_mask: &loss_mask,
                ref_logprobs: Some(&reference),
            },
        };
        let step = || {
            let (value, pending) = policy_loss(logits_t.clone(), &inputs).expect("runs");
            let grads = value.backward();
            let grad = logits_t.grad(&grads).expect("gradient");
            cubecl::future::block_on(client.sync()).expect("sync");
            drop(grad);
            pending
        };
        // The trainer reads the per-token results after queuing the backward pass; timed with
        // and without that read.
        let value = step().read().expect("stats").loss;
        let rel = (value - torch_loss).abs() / torch_loss.abs();
        let op_ms = forge_bench::median_ms(3, 10, || {
            drop(step());
        });
        let op_and_stats_ms = forge_bench::median_ms(3, 10, || {
            let _ = step().read().expect("stats");
        });
        // As the trainer calls it: the per-token inputs uploaded before the forward pass (as
        // PyTorch's are on the device before its timed step), and logits that only the
        // operation holds (a model's output), so the gradient is written over them. Each
        // call gets a fresh copy of the logits, made untimed.
        let uploaded =
            <Train as forge::train::loss_backend::AutodiffLossBackend>::upload_loss_tokens(
                &inputs,
                &CudaDevice::new(0),
            );
        let owned_inputs = PolicyLossInputs {
            uploaded: uploaded.as_ref(),
            ..inputs
        };
        let fresh_logits = || Tensor::<Train, 2>::from_inner(copy_logits()).require_grad();
        let owned_step = |logits: Tensor<Train, 2>| {
            let (value, pending) = policy_loss(logits, &owned_inputs).expect("runs");
            let grads = value.backward();
            cubecl::future::block_on(client.sync()).expect("sync");
            drop(grads);
            pending
        };
        let stats = owned_step(fresh_logits()).read().expect("stats");
        let owned_rel = (stats.loss - torch_loss).abs() / torch_loss.abs();
        let owned_ms = forge_bench::median_ms_with_setup(3, 10, fresh_logits, |logits| {
            drop(owned_step(logits));
        });
        // Which part makes the difference: owned logits with the op uploading its inputs, and
        // kept logits with the inputs uploaded ahead.
        let owned_no_upload_ms = forge_bench::median_ms_with_setup(3, 10, fresh_logits, |logits| {
            let (value, pending) = policy_loss(logits, &inputs).expect("runs");
            let grads = value.backward();
            cubecl::future::block_on(client.sync()).expect("sync");
            drop((grads, pending));
        });
        let kept_uploaded_ms = forge_bench::median_ms(3, 10, || {
            let (value, pending) = policy_loss(logits_t.clone(), &owned_inputs).expect("runs");
            let grads = value.backward();
            let grad = logits_t.grad(&grads).expect("gradient");
            cubecl::future::block_on(client.sync()).expect("sync");
            drop((grad, pending));
        });
        // The owned path in phases, each ended by a device sync (medians over 10 calls):
        // the operation, the backward pass, dropping the gradients.
        let mut phases = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..13 {
            let logits = fresh_logits();
            let sync = || cubecl::future::block_on(client.sync()).expect("sync");
            let start = std::time::Instant::now();
            let (value, pending) = policy_loss(logits, &owned_inputs).expect("runs");
            sync();
            let t_op = start.elapsed().as_secs_f64() * 1e3;
            let grads = value.backward();
            sync();
            let t_backward = start.elapsed().as_secs_f64() * 1e3;
            drop((grads, pending));
            sync();
            let t_drop = start.elapsed().as_secs_f64() * 1e3;
            for (k, t) in [t_op, t_backward - t_op, t_drop - t_backward]
                .into_iter()
                .enumerate()
            {
                phases[k].push(t);
            }
        }
        // The first three calls are warm-up.
        let median = |k: usize| forge_bench::median(phases[k][3..].to_vec());
        let owned_phases = serde_json::json!({
            "op_ms": median(0),
            "backward_ms": median(1),
            "drop_ms": median(2),
        });
        let fresh_dtype = format!("{:?}", fresh_logits().dtype());
        let owned = serde_json::json!({
            "ms": owned_ms,
            "owned_logits_op_uploads_ms": owned_no_upload_ms,
            "kept_logits_uploaded_ahead_ms": kept_uploaded_ms,
            "fresh_logits_dtype": fresh_dtype,
            "owned_phases": owned_phases,
            "over_floor": owned_ms / torch["floor_ms"].as_f64().unwrap_or(f64::NAN),
            "gradient_in_place": stats.gradient_in_place,
            "loss_rel_err": owned_rel,
        });
        (op_ms, op_and_stats_ms, rel, owned)
    };
    // The fused kernel alone (inputs already on the device, no host round trip): what the call
    // adds on top of it is host work (uploads, reading the per-token results back).
    let kernel_ms = {
        let (rows, packed_len) = (n, 4 * n);
        let io = FusedLossIo {
            rows,
            vocab,
            vector: 8,
            elem: LogitsElem::Bf16,
            shape: <CudaRuntime as LossRuntime>::FUSED_SHAPE,
            multiprocessors: client
                .properties()
                .hardware
                .num_streaming_multiprocessors
                .map(|s| s as usize),
            inv_temperature: 1.0,
            logits: logits_h.clone(),
            targets: client.create_from_slice(i32::as_bytes(&targets)),
            token_inputs: client.create_from_slice(f32::as_bytes(
                &[
                    &old[..],
                    &reference[..],
                    &adv[..],
                    &vec![1.0 / active as f32; rows][..],
                ]
                .concat(),
            )),
            params: client.create_from_slice(f32::as_bytes(&param_values)),
            params_len: param_values.len(),
            grad_logits: client.empty(rows * vocab * 2),
            in_place: false,
            token_outputs: client.empty(packed_len * 4),
        };
        let launch = <CudaRuntime as LossRuntime>::fused_launcher(loss).context("fused grpo")?;
        let sync = || cubecl::future::block_on(client.sync()).expect("sync");
        let alone = forge_bench::median_ms(3, 10, || {
            launch(&client, &io);
            sync();
        });
        // Where the call's extra time goes: a fresh gradient buffer from the pool each time (as
        // the call allocates it), the uploads of the per-token inputs, the read of the results.
        let fresh_grad = forge_bench::median_ms(3, 10, || {
            let io = FusedLossIo {
                grad_logits: client.empty(rows * vocab * 2),
                ..io.clone()
            };
            launch(&client, &io);
            sync();
        });
        // The in-place kernel against the out-of-place one, each on a fresh copy of the logits
        // (made untimed: the in-place one overwrites its input).
        let fresh_copy = || copy_logits().into_primitive().tensor().handle;
        let in_place = forge_bench::median_ms_with_setup(3, 10, fresh_copy, |copy| {
            let io = FusedLossIo {
                logits: copy.clone(),
                grad_logits: copy,
                in_place: true,
                ..io.clone()
            };
            launch(&client, &io);
            sync();
        });
        let out_of_place_fresh = forge_bench::median_ms_with_setup(3, 10, fresh_copy, |copy| {
            let io = FusedLossIo {
                logits: copy,
                ..io.clone()
            };
            launch(&client, &io);
            sync();
        });
        let packed = [&old[..], &reference[..], &adv[..], &vec![1.0f32; rows][..]].concat();
        let uploads = forge_bench::median_ms(3, 10, || {
            let a = client.create_from_slice(i32::as_bytes(&targets));
            let b = client.create_from_slice(f32::as_bytes(&packed));
            let c = client.create_from_slice(f32::as_bytes(&param_values));
            sync();
            drop((a, b, c));
        });
        let read = forge_bench::median_ms(3, 10, || {
            let bytes = cubecl::future::block_on(client.read_async(vec![io.token_outputs.clone()]))
                .expect("read");
            drop(bytes);
        });
        let sync_only = forge_bench::median_ms(3, 10, sync);
        serde_json::json!({
            "fused_kernel_only_ms": alone,
            "fused_kernel_fresh_grad_buffer_ms": fresh_grad,
            "fused_kernel_in_place_fresh_input_ms": in_place,
            "fused_kernel_fresh_input_ms": out_of_place_fresh,
            "uploads_and_sync_ms": uploads,
            "read_token_outputs_ms": read,
            "empty_sync_ms": sync_only,
        })
    };
    // Other layouts of the fused kernel, each checked against PyTorch's loss.
    let mut shapes = Vec::new();
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    for units in if quick {
        vec![]
    } else {
        vec![256usize, 512, 1024]
    } {
        for cubes_per_sm in [0usize, 1, 2, 4] {
            let shape = FusedShape {
                units,
                cubes_per_sm,
            };
            let r = run_path(LossPath::Fused(shape));
            let rel = (r.tokens.loss - torch_loss).abs() / torch_loss.abs();
            drop(r);
            let t = forge_bench::median_ms(2, 5, || {
                let _ = run_path(LossPath::Fused(shape));
            });
            shapes.push(serde_json::json!({
                "units": units, "cubes_per_sm": cubes_per_sm, "ms": t, "loss_rel_err": rel
            }));
        }
    }
    // The three-kernel path (what sequence-level losses such as GSPO run), for comparison.
    let split = run_path(LossPath::Split);
    let split_loss_rel = (split.tokens.loss - torch_loss).abs() / torch_loss.abs();
    drop(split);
    let split_ms = forge_bench::median_ms(3, 10, || {
        let _ = run_path(LossPath::Split);
    });
    // Each row kernel alone, device-synchronised, to split the total.
    let vector = if vocab.is_multiple_of(8) { 8 } else { 1 };
    let n_u32 = n as u32;
    let targets_h = client.create_from_slice(i32::as_bytes(&targets));
    let per_token = || client.empty(n * 4);
    let (lp_h, ent_h, lse_h, d_h) = (
        per_token(),
        per_token(),
        per_token(),
        client.create_from_slice(f32::as_bytes(&vec![1e-4f32; n])),
    );
    let grad_h = client.empty(n * vocab * 2);
    let sync = || cubecl::future::block_on(client.sync()).expect("sync");
    let forward_ms = forge_bench::median_ms(3, 10, || {
        logprob_forward_kernel::launch::<bf16, CudaRuntime>(
            &client,
            CubeCount::Static(n_u32, 1, 1),
            CubeDim::new_1d(BLOCK as u32),
            vector,
            array_arg::<CudaRuntime, bf16>(&logits_h, n * vocab),
            array_arg::<CudaRuntime, bf16>(&logits_h, n * vocab),
            array_arg::<CudaRuntime, i32>(&targets_h, n),
            1.0,
            vocab as u32,
            array_arg::<CudaRuntime, f32>(&lp_h, n),
            array_arg::<CudaRuntime, f32>(&ent_h, n),
            array_arg::<CudaRuntime, f32>(&lse_h, n),
            BLOCK,
        );
        sync();
    });
    let backward_ms = forge_bench::median_ms(3, 10, || {
        logprob_backward_kernel::launch::<bf16, CudaRuntime>(
            &client,
            CubeCount::Static(n_u32, 1, 1),
            CubeDim::new_1d(BLOCK as u32),
            vector,
            array_arg::<CudaRuntime, bf16>(&logits_h, n * vocab),
            array_arg::<CudaRuntime, i32>(&targets_h, n),
            array_arg::<CudaRuntime, f32>(&lse_h, n),
            array_arg::<CudaRuntime, f32>(&d_h, n),
            1.0,
            vocab as u32,
            array_arg::<CudaRuntime, bf16>(&grad_h, n * vocab),
            BLOCK,
        );
        sync();
    });
    let copy_tbps = torch["copy_TBps"].as_f64().unwrap_or(f64::NAN);
    let row_bytes = (n * vocab * 2) as f64;

    let floor_ms = torch["floor_ms"].as_f64().unwrap_or(f64::NAN);
    let out = serde_json::json!({
        "bench": "loss_fwd_bwd",
        "shape": [n, vocab],
        "dtype": "bf16",
        "forge_ms": ms,
        "forge_burn_op_ms": burn_op_ms,
        "forge_burn_op_over_floor": burn_op_ms / floor_ms,
        "forge_burn_op_with_stats_read_ms": burn_op_with_stats_ms,
        "forge_burn_op_loss_rel_err": burn_op_loss_rel,
        "forge_burn_op_as_trainer_calls_it": trainer_op,
        "torch_eager_ms": torch["eager_ms"],
        "torch_compiled_ms": torch["compiled_ms"],
        "floor_ms": floor_ms,
        "forge_over_floor": ms / floor_ms,
        "fused_shape": format!("{:?}", <CudaRuntime as LossRuntime>::FUSED_SHAPE),
        "fused_kernel_breakdown": kernel_ms,
        "fused_shapes": shapes,
        "split_ms": split_ms,
        "split_over_floor": split_ms / floor_ms,
        "split_loss_rel_err": split_loss_rel,
        "forward_kernel_ms": forward_ms,
        "forward_kernel_TBps": row_bytes / forward_ms / 1e9,
        "backward_kernel_ms": backward_ms,
        "backward_kernel_TBps": 2.0 * row_bytes / backward_ms / 1e9,
        "copy_TBps": copy_tbps,
        "gradient_bytes": n * vocab * 2,
        "forge_extra_bytes_in_use": extra_in_use,
        "forge_reserved_growth_bytes": reserved_growth,
        "torch_eager_peak_extra_bytes": torch["eager_peak_extra_bytes"],
        "loss_forge": result.tokens.loss,
        "loss_torch": torch_loss,
        "loss_rel_err": loss_rel,
        "grad_rows_checked": rows.len(),
        "grad_max_abs_err": max_err,
        "grad_max_abs": max_ref,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
