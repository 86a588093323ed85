//! Logprob, loss and gradient in one kernel, for losses whose tokens do not depend on each other
//! (all but sequence-level ones such as GSPO): each cube reads its row for the log-sum-exp,
//! evaluates the loss at that token, and writes the row's gradient while the row is still in L2.
//! Two passes over the logits' bytes (read, then read again from L2 and write) instead of three
//! from DRAM; the per-token weight of the aggregation is known from the masks beforehand.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;
use cubecl::server::Handle;

use super::args::array_arg;
use super::logprob_row::{
    fast_math, row_element, row_stats, write_row_grad, write_row_grad_in_place,
};
use super::token_loss::TokenLossFn;

/// How a fused launch is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusedShape {
    /// Units per cube, a power of two (the shared-memory tree needs it).
    pub units: usize,
    /// Cubes per streaming multiprocessor, each looping over rows; 0: one cube per row. Few rows
    /// in flight keep each row in L2 between its two passes (a 152k-entry bf16 row is 300 KB; an
    /// H100/H200 has 50 MB of L2).
    pub cubes_per_sm: usize,
}

/// Row `n`: `grad_logits[n] = weight[n] · dL/dlogprob · (onehot - p) / T`, and per token the
/// logprob, entropy, loss value and the loss's derivative with the KL term at its minimum
/// (reference = policy, for the clip metric). Rows whose target is negative get zeros (their
/// statistics are still computed: the barrier inside must be reached by the whole cube).
///
/// Per-token inputs come packed in one array of `4 N` (generator logprob, reference logprob,
/// advantage, aggregation weight) and outputs go to one of `4 N` (logprob, entropy, value,
/// d value / d logprob without KL): one copy each way instead of four.
#[cube(launch, fast_math = fast_math())]
#[allow(clippy::too_many_arguments)]
pub fn fused_token_loss_kernel<F: Float, N: Size, L: TokenLossFn>(
    logits: &Array<Vector<F, N>>,
    logits_scalar: &Array<F>,
    targets: &Array<i32>,
    token_inputs: &Array<f32>,
    params: &Array<f32>,
    inv_temperature: f32,
    vocab: u32,
    grad_logits: &mut Array<Vector<F, N>>,
    token_outputs: &mut Array<f32>,
    #[comptime] block: usize,
) {
    let n = targets.len();
    let mut row = CUBE_POS;
    while row < n {
        let v = vocab as usize;
        let vectors = v / N::value();
        let base = row * vectors;
        let stats = row_stats::<F, N>(logits, base, vectors, inv_temperature, block);
        let target = targets[row];
        let active = target >= 0;
        let column = select(active, target, 0i32) as usize;
        let x = f32::cast_from(logits_scalar[row * v + column]);
        let lp = select(active, x * inv_temperature - stats.lse, 0.0f32);
        let g = token_step::<L>(
            row,
            n,
            lp,
            active,
            stats.entropy,
            token_inputs,
            params,
            inv_temperature,
            token_outputs,
        );
        write_row_grad::<F, N>(
            logits,
            grad_logits,
            base,
            vectors,
            target,
            stats.lse,
            g,
            inv_temperature,
            block,
        );
        row += CUBE_COUNT;
    }
}

/// [`fused_token_loss_kernel`] writing each row's gradient over its logits (see
/// [`write_row_grad_in_place`]): for a caller that owns the logits, no gradient buffer at all.
#[cube(launch, fast_math = fast_math())]
#[allow(clippy::too_many_arguments)]
pub fn fused_token_loss_in_place_kernel<F: Float, N: Size, L: TokenLossFn>(
    logits: &mut Array<Vector<F, N>>,
    targets: &Array<i32>,
    token_inputs: &Array<f32>,
    params: &Array<f32>,
    inv_temperature: f32,
    vocab: u32,
    token_outputs: &mut Array<f32>,
    #[comptime] block: usize,
) {
    let n = targets.len();
    let mut row = CUBE_POS;
    while row < n {
        let vectors = vocab as usize / N::value();
        let base = row * vectors;
        let stats = row_stats::<F, N>(logits, base, vectors, inv_temperature, block);
        let target = targets[row];
        let active = target >= 0;
        let column = select(active, target, 0i32) as usize;
        let x = row_element::<F, N>(logits, base, column);
        // Every unit has the target's logit before any unit overwrites it with its gradient.
        sync_cube();
        let lp = select(active, x * inv_temperature - stats.lse, 0.0f32);
        let g = token_step::<L>(
            row,
            n,
            lp,
            active,
            stats.entropy,
            token_inputs,
            params,
            inv_temperature,
            token_outputs,
        );
        write_row_grad_in_place::<F, N>(
            logits,
            base,
            vectors,
            target,
            stats.lse,
            g,
            inv_temperature,
            block,
        );
        row += CUBE_COUNT;
    }
}

/// The loss at one token whose logprob `lp` and entropy are known: writes the token's outputs
/// (unit 0) and returns the gradient factor of its row, `weight · dL/dlogprob / T` (0 where the
/// token does not count).
#[cube]
#[allow(clippy::too_many_arguments)]
fn token_step<L: TokenLossFn>(
    row: usize,
    n: usize,
    lp: f32,
    active: bool,
    entropy: f32,
    token_inputs: &Array<f32>,
    params: &Array<f32>,
    inv_temperature: f32,
    token_outputs: &mut Array<f32>,
) -> f32 {
    let old_logprob = token_inputs[row];
    let advantage = token_inputs[2 * n + row];
    let token = L::eval::<f32>(
        lp,
        old_logprob,
        token_inputs[n + row],
        advantage,
        0.0f32,
        params,
    );
    let no_kl = L::eval::<f32>(lp, old_logprob, lp, advantage, 0.0f32, params);
    let weight = token_inputs[3 * n + row];
    if UNIT_POS == 0 {
        token_outputs[row] = lp;
        token_outputs[n + row] = entropy;
        token_outputs[2 * n + row] = select(active, token.value, 0.0f32);
        token_outputs[3 * n + row] = select(active, no_kl.d_logprob, 0.0f32);
    }
    select(active, weight * token.d_logprob * inv_temperature, 0.0f32)
}

/// Element type of the logits a fused launch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsElem {
    /// f32.
    F32,
    /// bf16 (CUDA).
    Bf16,
}

/// Buffers of one fused launch: `rows` x `vocab` logits and per-token f32 arrays.
#[derive(Debug, Clone)]
pub struct FusedLossIo {
    /// Tokens (rows of the logits).
    pub rows: usize,
    /// Row length.
    pub vocab: usize,
    /// Elements per vector load (divides `vocab`).
    pub vector: usize,
    /// Element type of `logits` and `grad_logits`.
    pub elem: LogitsElem,
    /// Launch layout.
    pub shape: FusedShape,
    /// Streaming multiprocessors of the device, if it says (for `shape.cubes_per_sm`; one if not).
    pub multiprocessors: Option<usize>,
    /// 1 / sampling temperature.
    pub inv_temperature: f32,
    /// Logits [rows, vocab].
    pub logits: Handle,
    /// Target ids (i32), negative where the token does not count.
    pub targets: Handle,
    /// Per token, packed `[generator logprob; reference logprob; advantage; aggregation weight]`
    /// (4 x rows f32; the weight is 0 where the token does not count).
    pub token_inputs: Handle,
    /// The loss's parameters.
    pub params: Handle,
    /// Number of parameters.
    pub params_len: usize,
    /// Output: d loss / d logits [rows, vocab]; `logits` itself when `in_place`.
    pub grad_logits: Handle,
    /// The gradient overwrites the logits (`grad_logits` is `logits`' handle): for callers
    /// that own the logits.
    pub in_place: bool,
    /// Output per token, packed `[logprob; entropy; loss value; d loss / d logprob with the KL
    /// term at its minimum]` (4 x rows f32, unweighted).
    pub token_outputs: Handle,
}

/// Launches [`fused_token_loss_kernel`] for loss `L`.
pub fn launch<L: TokenLossFn, R: Runtime>(client: &ComputeClient<R>, io: &FusedLossIo) {
    match io.elem {
        LogitsElem::F32 => launch_typed::<f32, L, R>(client, io),
        LogitsElem::Bf16 => launch_typed::<half::bf16, L, R>(client, io),
    }
}

fn launch_typed<E: Float + CubeElement, L: TokenLossFn, R: Runtime>(
    client: &ComputeClient<R>,
    io: &FusedLossIo,
) {
    let (n, all) = (io.rows, io.rows * io.vocab);
    let cubes = match io.shape.cubes_per_sm {
        0 => n,
        per_sm => (per_sm * io.multiprocessors.unwrap_or(1)).min(n),
    };
    let (count, dim) = (
        CubeCount::Static(cubes.max(1) as u32, 1, 1),
        CubeDim::new_1d(io.shape.units as u32),
    );
    if io.in_place {
        fused_token_loss_in_place_kernel::launch::<E, L, R>(
            client,
            count,
            dim,
            io.vector,
            array_arg::<R, E>(&io.logits, all),
            array_arg::<R, i32>(&io.targets, n),
            array_arg::<R, f32>(&io.token_inputs, 4 * n),
            array_arg::<R, f32>(&io.params, io.params_len.max(1)),
            io.inv_temperature,
            io.vocab as u32,
            array_arg::<R, f32>(&io.token_outputs, 4 * n),
            io.shape.units,
        );
        return;
    }
    fused_token_loss_kernel::launch::<E, L, R>(
        client,
        count,
        dim,
        io.vector,
        array_arg::<R, E>(&io.logits, all),
        array_arg::<R, E>(&io.logits, all),
        array_arg::<R, i32>(&io.targets, n),
        array_arg::<R, f32>(&io.token_inputs, 4 * n),
        array_arg::<R, f32>(&io.params, io.params_len.max(1)),
        io.inv_temperature,
        io.vocab as u32,
        array_arg::<R, E>(&io.grad_logits, all),
        array_arg::<R, f32>(&io.token_outputs, 4 * n),
        io.shape.units,
    );
}
