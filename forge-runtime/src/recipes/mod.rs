//! The recipes a generated binary runs: GRPO (and its successors, by loss) and SFT. Each is a
//! loop over the pieces in `data`, `generate`, `rl`, `train`, `metrics` and `checkpoint`.
//!
//! The recipes compose the services ([`crate::services`]), which run in one process on the
//! backend the binary was compiled for: GRPO's rollout worker samples and scores the next step's
//! batch while the trainer's ranks train on the current one (off by one,
//! `replay_buffer.max_policy_age` >= 1), or one after the other (strictly on-policy, 0). A
//! generator replica on the trainer's device reads its weights without a copy.

mod checkpoint;
mod eval;
mod grpo;
mod placement;
mod rollouts;
mod session;
mod sft;

pub use checkpoint::{Checkpoint, RunState};
pub use eval::{EvalItem, EvalResult, evaluate};
pub use grpo::run_grpo;
pub use placement::{Placement, PlacementIndices, ReferencePlace};
pub use rollouts::{RolloutBatch, RolloutTiming};
pub use session::{RunError, Session};
pub use sft::run_sft;

/// What a recipe needs of its backend: the policy loss as a burn operation, and (on the inner,
/// non-differentiating backend the generator runs on) a decode engine, if it has one, and
/// AdamW's update.
pub trait RecipeBackend:
    crate::train::loss_backend::AutodiffLossBackend<
        InnerBackend: crate::generate::DecodeBackend
                          + crate::train::adamw::AdamWBackend
                          + crate::train::loss_backend::LossBackend
                          + crate::train::GradientExchange,
    >
{
}

impl<B> RecipeBackend for B
where
    B: crate::train::loss_backend::AutodiffLossBackend,
    B::InnerBackend: crate::generate::DecodeBackend
        + crate::train::adamw::AdamWBackend
        + crate::train::loss_backend::LossBackend
        + crate::train::GradientExchange,
{
}

use burn::backend::{Autodiff, NdArray};

use crate::config::{DType, Experiment};

/// A backend a generated binary can be built for: what the recipes need of it, the device a run
/// uses and the precision it computes in. `forge build` names one of the types below in the
/// binary's `main`, so a binary carries the code of one backend and one precision only.
pub trait TrainingBackend: RecipeBackend {
    /// The precision of the weights and activations (the optimiser state is f32 whatever it is).
    const COMPUTES_IN: DType;
    /// GPU `index` (0 on the CPU backend, whatever the index).
    fn device(index: u32) -> Self::Device;
    /// Process-wide settings the experiment asks of the backend, applied before the run.
    fn configure(_experiment: &Experiment) {}
}

/// The CPU training backend: burn's ndarray with autodiff, in f32 whatever `model.dtype` says
/// (ndarray has no bf16 arithmetic).
pub type CpuBackend = Autodiff<NdArray<f32>>;

impl TrainingBackend for CpuBackend {
    const COMPUTES_IN: DType = DType::F32;
    fn device(_index: u32) -> Self::Device {
        Default::default()
    }
}

/// The wgpu training backend: burn's cubecl backend over wgpu, in f32, with autodiff.
#[cfg(feature = "wgpu")]
pub type WgpuBackend = Autodiff<burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>>;

#[cfg(feature = "wgpu")]
impl TrainingBackend for WgpuBackend {
    const COMPUTES_IN: DType = DType::F32;
    fn device(index: u32) -> Self::Device {
        match index {
            0 => cubecl::wgpu::WgpuDevice::DefaultDevice,
            i => cubecl::wgpu::WgpuDevice::DiscreteGpu(i as usize),
        }
    }
}

/// The CUDA training backend: burn's cubecl backend over CUDA with autodiff, weights and
/// activations in `F` (`f32` or `half::bf16`). AdamW keeps f32 moments, and f32 master copies
/// of bf16 parameters (`train::adamw`).
#[cfg(feature = "cuda")]
pub type CudaBackend<F = f32> =
    Autodiff<burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, F, i32, u8>>;

#[cfg(feature = "cuda")]
macro_rules! cuda_training_backend {
    ($float:ty, $dtype:ident) => {
        impl TrainingBackend for CudaBackend<$float> {
            const COMPUTES_IN: DType = DType::$dtype;
            fn device(index: u32) -> Self::Device {
                cubecl::cuda::CudaDevice::new(index as usize)
            }
            fn configure(experiment: &Experiment) {
                crate::kernels::cublas::allow_tf32(
                    experiment.model.matmul_precision == crate::config::MatmulPrecision::Tf32,
                );
            }
        }
    };
}
#[cfg(feature = "cuda")]
cuda_training_backend!(f32, F32);
#[cfg(feature = "cuda")]
cuda_training_backend!(half::bf16, Bf16);

/// Draws `curves.png` next to the metrics; a failure is reported, never fatal (the metrics are
/// already written, and `forge plot` can retry).
fn draw_curves(jsonl: &std::path::Path, run_dir: &std::path::Path, keys: &[&str]) {
    let png = run_dir.join("curves.png");
    match crate::metrics::plot::plot_metrics(jsonl, &png, keys) {
        Ok(_) => eprintln!("forge: curves in {}", png.display()),
        Err(e) => eprintln!("forge: warning: could not draw {}: {e}", png.display()),
    }
}
