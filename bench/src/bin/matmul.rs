//! The model's products on CUDA: Forge's cuBLAS path (`forge::model::matmul_2d`, host-ordered
//! with cubecl's queue) against burn 0.21's own matmul (no autotune: cubek's
//! `SimpleCyclicCmma`) and cubek's fastest strategy in an earlier sweep (`SimpleTmaMma`,
//! forward 126 TFLOP/s; bench/NOTES.md), at the Qwen3-0.6B training products in the layouts a
//! linear layer needs (forward x·W, input gradient g·Wᵀ, weight gradient xᵀ·g, the LM head), in
//! f32 (exact, then TF32). burn's f32 products run on TF32 tensor cores (they differ from exact
//! f32 by ~3e-4 relative). Note: `Tensor::random` on `CubeBackend<_, bf16>` makes f32 tensors,
//! so a bf16 comparison needs explicit casts (not done here). Checks cuBLAS's products and its autodiff gradients against
//! burn's. One JSON line per case; `bench/pytorch_matmul.py` times PyTorch (cuBLAS) on the same
//! products. Usage: `matmul`.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubecl::Runtime;
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::{Strategy, launch_ref};
use cubek::std::InputBinding;
use forge::kernels::cublas::allow_tf32;
use forge::model::matmul_2d;

type Gpu<F> = CubeBackend<CudaRuntime, F, i32, u8>;

/// `lhs · rhs` with one of cubek's strategies, into a fresh output.
fn cubek_matmul(
    strategy: &Strategy,
    lhs: &CubeTensor<CudaRuntime>,
    rhs: &CubeTensor<CudaRuntime>,
    out: &CubeTensor<CudaRuntime>,
) -> Result<(), String> {
    let dtype = lhs.dtype;
    let mut elems = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype.into(),
        rhs: dtype.into(),
        out: dtype.into(),
    });
    launch_ref(
        strategy,
        &out.client,
        InputBinding::new(lhs.clone().binding(), dtype.into()),
        InputBinding::new(rhs.clone().binding(), dtype.into()),
        out.clone().binding(),
        &mut elems,
    )
    .map_err(|e| format!("{e:?}").chars().take(200).collect())
}

fn host<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32")
}

/// max |a - b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn run_dtype<F: burn_cubecl::FloatElement>(name: &str) {
    let device = CudaDevice::new(0);
    let client = CudaRuntime::client(&device);
    let sync = || cubecl::future::block_on(client.sync()).expect("sync");
    // (case, m, k, n): x [m, k], W [k, n] as burn's Linear stores it, g [m, n].
    let cases = [
        ("mlp_up_forward x·W", 8192, 1024, 3072),
        ("mlp_up_input_grad g·Wt", 8192, 3072, 1024),
        ("mlp_up_weight_grad xt·g", 1024, 8192, 3072),
        ("lm_head_forward x·W", 8192, 1024, 151936),
    ];
    for (case, m, k, n) in cases {
        let rand = |shape: [usize; 2]| {
            Tensor::<Gpu<F>, 2>::random(shape, Distribution::Normal(0.0, 1.0), &device)
        };
        let (lhs, rhs) = if case.ends_with("g·Wt") {
            (rand([m, k]), rand([n, k]).transpose())
        } else if case.ends_with("xt·g") {
            (rand([k, m]).transpose(), rand([k, n]))
        } else {
            (rand([m, k]), rand([k, n]))
        };
        // cuBLAS first, into memory that held something else: a product left unwritten would
        // show (the pool hands a freed buffer to the next allocation of its size).
        drop(host(Tensor::<Gpu<F>, 2>::full([m, n], 7.0, &device)));
        let got = host(matmul_2d(lhs.clone(), rhs.clone()));
        let want = host(lhs.clone().matmul(rhs.clone()));
        let flops = 2.0 * (m * k * n) as f64;
        let time = |f: &mut dyn FnMut()| forge_bench::median_ms(2, 7, f);
        let burn_ms = time(&mut || {
            drop(lhs.clone().matmul(rhs.clone()));
            sync();
        });
        let cublas_ms = time(&mut || {
            drop(matmul_2d(lhs.clone(), rhs.clone()));
            sync();
        });
        let best_cubek = {
            let (l, r) = (
                lhs.clone().into_primitive().tensor(),
                rhs.clone().into_primitive().tensor(),
            );
            let out: CubeTensor<CudaRuntime> = Tensor::<Gpu<F>, 2>::zeros([m, n], &device)
                .into_primitive()
                .tensor();
            let strategy = Strategy::SimpleTmaMma(Default::default());
            match cubek_matmul(&strategy, &l, &r, &out) {
                Ok(()) => {
                    sync();
                    let ms = time(&mut || {
                        cubek_matmul(&strategy, &l, &r, &out).expect("ran once");
                        sync();
                    });
                    serde_json::json!({"ms": ms, "tflops": flops / ms / 1e9})
                }
                Err(e) => serde_json::json!({"error": e}),
            }
        };
        println!(
            "{}",
            serde_json::json!({
                "bench": "matmul", "dtype": name, "case": case, "m": m, "k": k, "n": n,
                "burn_default_ms": burn_ms, "burn_default_tflops": flops / burn_ms / 1e9,
                "forge_cublas_ms": cublas_ms, "forge_cublas_tflops": flops / cublas_ms / 1e9,
                "cublas_max_rel_diff_vs_burn": rel_diff(&got, &want),
                "cubek_simple_tma_mma": best_cubek,
            })
        );
    }

    // Gradients through the autodiff operation against burn's own, on a small product with a
    // random upstream gradient (sum of y * r).
    let (m, k, n) = (96, 160, 224);
    let x = Tensor::<Autodiff<Gpu<F>>, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    let w = Tensor::<Autodiff<Gpu<F>>, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    let r = Tensor::<Autodiff<Gpu<F>>, 2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
    let grads_of = |y: Tensor<Autodiff<Gpu<F>>, 2>| {
        let grads = (y * r.clone()).sum().backward();
        (
            host(x.grad(&grads).expect("x grad")),
            host(w.grad(&grads).expect("w grad")),
        )
    };
    // `w` enters transposed (a view): the tied LM head's case.
    let (gx, gw) = grads_of(matmul_2d(x.clone(), w.clone().transpose()));
    let (wx, ww) = grads_of(x.clone().matmul(w.clone().transpose()));
    println!(
        "{}",
        serde_json::json!({
            "bench": "matmul_gradients", "dtype": name, "m": m, "k": k, "n": n,
            "x_grad_max_rel_diff_vs_burn": rel_diff(&gx, &wx),
            "w_grad_max_rel_diff_vs_burn": rel_diff(&gw, &ww),
        })
    );
}

/// A product small enough to print: [[1, 2, 3], [4, 5, 6]] · [[1, 0], [0, 1], [1, 1]].
fn known_product() {
    let device = CudaDevice::new(0);
    let x = Tensor::<Gpu<f32>, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
    let w = Tensor::<Gpu<f32>, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], &device);
    let wt = Tensor::<Gpu<f32>, 2>::from_floats([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], &device);
    println!(
        "{}",
        serde_json::json!({
            "bench": "matmul_known", "want": [[4.0, 5.0], [10.0, 11.0]],
            "forge_cublas": host(matmul_2d(x.clone(), w.clone())),
            "forge_cublas_w_transposed_view": host(matmul_2d(x, wt.transpose())),
        })
    );
}

fn main() {
    known_product();
    // f32 tensors (what the GRPO benchmark trains in): exact, then TF32.
    run_dtype::<f32>("f32");
    allow_tf32(true);
    run_dtype::<f32>("f32 (TF32 allowed)");
}
