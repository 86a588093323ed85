//! The recipes a generated binary runs: GRPO (and its successors, by loss) and SFT. Each is a
//! loop over the pieces in `data`, `generate`, `rl`, `train`, `metrics` and `checkpoint`.
//!
//! Services here run in one process on the backend the binary was compiled for: GRPO samples and
//! scores the next step's batch on a thread of its own while the trainer trains on the current
//! one (off by one, `replay_buffer.max_policy_age` >= 1), or one after the other (strictly
//! on-policy, 0). The generator reads the trainer's weights without a copy.

mod checkpoint;
mod eval;
mod grpo;
mod rollouts;
mod session;
mod sft;

pub use checkpoint::{Checkpoint, RunState};
pub use eval::{EvalItem, EvalResult, evaluate};
pub use grpo::run_grpo;
pub use rollouts::{RolloutBatch, RolloutTiming};
pub use session::{RunError, Session};
pub use sft::run_sft;

/// What a recipe needs of its backend: the policy loss as a burn operation, and (on the inner,
/// non-differentiating backend the generator runs on) a decode engine, if it has one, and
/// AdamW's update.
pub trait RecipeBackend:
    crate::train::loss_backend::AutodiffLossBackend<
        InnerBackend: crate::generate::DecodeBackend + crate::train::adamw::AdamWBackend,
    >
{
}

impl<B> RecipeBackend for B
where
    B: crate::train::loss_backend::AutodiffLossBackend,
    B::InnerBackend: crate::generate::DecodeBackend + crate::train::adamw::AdamWBackend,
{
}

use burn::backend::{Autodiff, NdArray};

/// The CPU training backend: burn's ndarray with autodiff.
pub type CpuBackend = Autodiff<NdArray<f32>>;

/// The wgpu training backend: burn's cubecl backend over wgpu, in f32, with autodiff.
#[cfg(feature = "wgpu")]
pub type WgpuBackend = Autodiff<burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>>;

/// The CUDA training backend: burn's cubecl backend over CUDA, in f32 (bf16 weights with f32
/// master copies are not built yet), with autodiff.
#[cfg(feature = "cuda")]
pub type CudaBackend = Autodiff<burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>>;

/// Draws `curves.png` next to the metrics; a failure is reported, never fatal (the metrics are
/// already written, and `forge plot` can retry).
fn draw_curves(jsonl: &std::path::Path, run_dir: &std::path::Path, keys: &[&str]) {
    let png = run_dir.join("curves.png");
    match crate::metrics::plot::plot_metrics(jsonl, &png, keys) {
        Ok(_) => eprintln!("forge: curves in {}", png.display()),
        Err(e) => eprintln!("forge: warning: could not draw {}: {e}", png.display()),
    }
}
