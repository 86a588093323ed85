//! Losses registered by `#[forge::loss]`, across every crate linked into the binary.

use schemars::Schema;
use serde_json::{Map, Value};

use cubecl::prelude::ComputeClient;

use super::{TokenGrad, TokenInputs};
use crate::config::Aggregation;
use crate::kernels::device_loss::TokenLossIo;
use crate::kernels::fused_token_loss::FusedLossIo;

/// Parameters from YAML (the keys beside the loss's name).
pub type Params = Map<String, Value>;

/// A loss with its parameters bound: per-token value and derivatives (the f64 reference).
pub type BoundLoss = Box<dyn Fn(&TokenInputs) -> TokenGrad + Send + Sync>;

/// Launches a generated per-token kernel on runtime `R`.
pub type TokenLossLauncher<R> = fn(&ComputeClient<R>, &TokenLossIo);

/// Launches the fused logprob + loss + gradient kernel of a token-level loss on runtime `R`.
pub type FusedLossLauncher<R> = fn(&ComputeClient<R>, &FusedLossIo);

/// The wgpu fused launcher (`()` in a build without the `wgpu` feature).
#[cfg(feature = "wgpu")]
pub type WgpuFusedLauncher = FusedLossLauncher<cubecl::wgpu::WgpuRuntime>;
/// The wgpu fused launcher (`()` in a build without the `wgpu` feature).
#[cfg(not(feature = "wgpu"))]
pub type WgpuFusedLauncher = ();

/// The CUDA fused launcher (`()` in a build without the `cuda` feature).
#[cfg(feature = "cuda")]
pub type CudaFusedLauncher = FusedLossLauncher<cubecl::cuda::CudaRuntime>;
/// The CUDA fused launcher (`()` in a build without the `cuda` feature).
#[cfg(not(feature = "cuda"))]
pub type CudaFusedLauncher = ();

/// The wgpu launcher (`()` in a build without the `wgpu` feature).
#[cfg(feature = "wgpu")]
pub type WgpuLauncher = TokenLossLauncher<cubecl::wgpu::WgpuRuntime>;
/// The wgpu launcher (`()` in a build without the `wgpu` feature).
#[cfg(not(feature = "wgpu"))]
pub type WgpuLauncher = ();

/// The CUDA launcher (`()` in a build without the `cuda` feature).
#[cfg(feature = "cuda")]
pub type CudaLauncher = TokenLossLauncher<cubecl::cuda::CudaRuntime>;
/// The CUDA launcher (`()` in a build without the `cuda` feature).
#[cfg(not(feature = "cuda"))]
pub type CudaLauncher = ();

// The macros' expansions name a runtime only through these, so the runtimes' cargo features are
// decided by Forge's build, not by the user crate the expansion lands in.
#[cfg(feature = "wgpu")]
#[doc(hidden)]
#[macro_export]
macro_rules! __launcher_wgpu {
    ($($launch:tt)*) => { $($launch)*::<$crate::__private::cubecl::wgpu::WgpuRuntime> };
}
#[cfg(not(feature = "wgpu"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __launcher_wgpu {
    ($($launch:tt)*) => {
        ()
    };
}
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __launcher_cuda {
    ($($launch:tt)*) => { $($launch)*::<$crate::__private::cubecl::cuda::CudaRuntime> };
}
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __launcher_cuda {
    ($($launch:tt)*) => {
        ()
    };
}

/// What `#[forge::loss]` records about a loss.
pub struct LossRegistration {
    /// Name YAML selects it by (`loss.name`).
    pub name: &'static str,
    /// First line of the function's doc comment.
    pub summary: &'static str,
    /// Aggregation used when `loss.aggregation` is not set.
    pub default_aggregation: Aggregation,
    /// JSON Schema of the loss's parameters (an object schema with one property per parameter).
    pub params_schema: fn() -> Schema,
    /// Checks parameters from YAML (unknown keys, wrong types).
    pub check_params: fn(&Map<String, Value>) -> Result<(), String>,
    /// The KL coefficient these parameters give (0 for losses without a KL term): above 0, the
    /// experiment needs a reference model.
    pub kl_coef: fn(&Map<String, Value>) -> Result<f64, String>,
    /// Binds parameters from YAML, giving the f64 per-token function with its gradient.
    pub bind: fn(&Map<String, Value>) -> Result<BoundLoss, String>,
    /// The parameters as the kernel reads them: f32, in declaration order.
    pub param_values: fn(&Params) -> Result<Vec<f32>, String>,
    /// Launches the generated per-token kernel through wgpu.
    pub launch_wgpu: WgpuLauncher,
    /// Launches the generated per-token kernel through CUDA.
    pub launch_cuda: CudaLauncher,
    /// Launches the fused logprob + loss + gradient kernel through wgpu; `None` for losses that
    /// read `seq_log_ratio` (a token's gradient then depends on its whole sequence).
    pub fused_wgpu: Option<WgpuFusedLauncher>,
    /// Same, through CUDA.
    pub fused_cuda: Option<CudaFusedLauncher>,
    /// Whether Forge itself defines it (as opposed to user code).
    pub builtin: bool,
}

inventory::collect!(LossRegistration);

impl std::fmt::Debug for LossRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossRegistration")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every registered loss, sorted by name.
pub fn all() -> impl Iterator<Item = &'static LossRegistration> {
    let mut all: Vec<_> = inventory::iter::<LossRegistration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all.into_iter()
}

/// The loss registered under `name`.
pub fn find(name: &str) -> Option<&'static LossRegistration> {
    inventory::iter::<LossRegistration>
        .into_iter()
        .find(|r| r.name == name)
}
