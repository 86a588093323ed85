//! AdamW's update of one parameter in one launch (burn's tensor operations take about fourteen):
//! reads the parameter, its gradient and the two moments, writes the new parameter and moments.
//! With a master copy (parameters stored in bf16 or f16) the update runs on the f32 master and
//! the stored parameter is its rounding.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Units per cube of the update.
pub const ADAMW_BLOCK: usize = 256;

/// Per-step constants of the update, computed on the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// 1 - lr · weight_decay: the decoupled decay factor.
    pub decay: f32,
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// 1 / sqrt(1 - β2^t): the second moment's bias correction under the root.
    pub inv_sqrt_bias2: f32,
    /// ε.
    pub eps: f32,
    /// lr / (1 - β1^t): the step size with the first moment's bias correction.
    pub step_size: f32,
}

/// `param_out[i]` = the AdamW update of `param_in[i]` (or of `master[i]`, then rounded, when
/// `has_master`), with `exp_avg` and `exp_avg_sq` updated in place. Grid-stride: any length
/// fits the grid.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn adamw_kernel<P: Float>(
    param_in: &Array<P>,
    grad: &Array<P>,
    param_out: &mut Array<P>,
    master: &mut Array<f32>,
    exp_avg: &mut Array<f32>,
    exp_avg_sq: &mut Array<f32>,
    decay: f32,
    beta1: f32,
    beta2: f32,
    inv_sqrt_bias2: f32,
    eps: f32,
    step_size: f32,
    #[comptime] has_master: bool,
) {
    let n = exp_avg.len();
    let stride = CUBE_COUNT_X as usize * CUBE_DIM_X as usize;
    let mut i = ABSOLUTE_POS;
    while i < n {
        let g = f32::cast_from(grad[i]);
        let p = if comptime![has_master] {
            master[i]
        } else {
            f32::cast_from(param_in[i])
        };
        let mut p = p * decay;
        let m = beta1 * exp_avg[i] + (1.0f32 - beta1) * g;
        let v = beta2 * exp_avg_sq[i] + (1.0f32 - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        p -= step_size * m / (v.sqrt() * inv_sqrt_bias2 + eps);
        if comptime![has_master] {
            master[i] = p;
        }
        param_out[i] = P::cast_from(p);
        i += stride;
    }
}
