//! A whole loss batch on a device: the logprob kernel, the loss's generated per-token kernel,
//! aggregation, and the backward kernel. The same computation as `loss::reference`, in f32.
//!
//! Per-token vectors (N floats) go through the host for the aggregation weights and GSPO's
//! sequence means; the vocabulary-sized work (N x V) stays on the device.

#[cfg(feature = "cuda")]
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::prelude::*;
use cubecl::server::Handle;
#[cfg(feature = "wgpu")]
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};

use super::args::array_arg;
use super::fused_token_loss::{FusedLossIo, FusedShape, LogitsElem};
use super::logprob_backward::logprob_backward_kernel;
use super::logprob_forward::{BLOCK, logprob_forward_kernel};
use super::loss_scalars::{SUM_BLOCK, weighted_sum_kernel};
use crate::config::Aggregation;
use crate::loss::reference::{BatchError, LossBatch, LossOutput, Metrics, Normalizer, TokenView};
use crate::loss::registry::{FusedLossLauncher, LossRegistration};

/// Device buffers of the per-token kernel (all f32, `len` elements; `params` has `params_len`).
#[derive(Debug, Clone)]
pub struct TokenLossIo {
    /// Tokens.
    pub len: usize,
    /// Policy log-probabilities.
    pub logprob: Handle,
    /// Generator log-probabilities.
    pub old_logprob: Handle,
    /// Reference log-probabilities.
    pub ref_logprob: Handle,
    /// Advantages.
    pub advantage: Handle,
    /// Per-token copy of the sequence's mean log-ratio.
    pub seq_log_ratio: Handle,
    /// The loss's parameters.
    pub params: Handle,
    /// Number of parameters.
    pub params_len: usize,
    /// Output: per-token loss.
    pub value: Handle,
    /// Output: d loss / d logprob.
    pub d_logprob: Handle,
    /// Output: d loss / d seq_log_ratio.
    pub d_seq_log_ratio: Handle,
}

/// A runtime the loss kernels are built for.
pub trait LossRuntime: Runtime {
    /// Widest vector (elements) the row kernels load at once.
    const MAX_VECTOR: usize;

    /// Layout of the fused kernel when the caller does not choose one.
    const FUSED_SHAPE: FusedShape;

    /// Launches `loss`'s per-token kernel.
    fn launch_token_loss(loss: &LossRegistration, client: &ComputeClient<Self>, io: &TokenLossIo);

    /// `loss`'s fused logprob + loss + gradient launcher, if it is a token-level loss.
    fn fused_launcher(loss: &LossRegistration) -> Option<FusedLossLauncher<Self>>;
}

#[cfg(feature = "wgpu")]
impl LossRuntime for WgpuRuntime {
    const MAX_VECTOR: usize = 4;
    const FUSED_SHAPE: FusedShape = FusedShape {
        units: 256,
        cubes_per_sm: 0,
    };

    fn launch_token_loss(loss: &LossRegistration, client: &ComputeClient<Self>, io: &TokenLossIo) {
        (loss.launch_wgpu)(client, io);
    }

    fn fused_launcher(loss: &LossRegistration) -> Option<FusedLossLauncher<Self>> {
        loss.fused_wgpu
    }
}

#[cfg(feature = "cuda")]
impl LossRuntime for CudaRuntime {
    const MAX_VECTOR: usize = 8;
    // Measured on an H200 at [8192 x 151936] bf16 (bench/NOTES.md): 512 units, one cube per row
    // 2.15-2.16 ms; 256 units 2.21-2.42; 1024 units 2.30-2.32; fewer cubes looping over rows (to
    // keep rows in L2) 2.12-5.9.
    const FUSED_SHAPE: FusedShape = FusedShape {
        units: 512,
        cubes_per_sm: 0,
    };

    fn launch_token_loss(loss: &LossRegistration, client: &ComputeClient<Self>, io: &TokenLossIo) {
        (loss.launch_cuda)(client, io);
    }

    fn fused_launcher(loss: &LossRegistration) -> Option<FusedLossLauncher<Self>> {
        loss.fused_cuda
    }
}

/// A device that cannot run the batch.
#[derive(Debug, thiserror::Error)]
pub enum DeviceLossError {
    /// The batch is malformed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The loss's parameters are invalid.
    #[error("loss parameters: {0}")]
    Params(String),
    /// Reading a result back failed.
    #[error("reading results from the device: {0}")]
    Read(String),
    /// This build of Forge left the runtime out (cargo feature off).
    #[error(
        "this build of Forge has no {0} runtime: rebuild it with `--features {0}` (for the CLI: `cargo build --release -p forge-cli --features {0}`)"
    )]
    NotBuilt(&'static str),
    /// The batch has more rows than one launch dimension allows.
    #[error("{0} tokens exceed the kernel grid ({1} at most)")]
    TooLarge(usize, usize),
}

fn upload<R: Runtime>(client: &ComputeClient<R>, values: &[f32]) -> Handle {
    // Zero-length buffers are not allowed everywhere: keep one element.
    if values.is_empty() {
        client.create_from_slice(f32::as_bytes(&[0.0]))
    } else {
        client.create_from_slice(f32::as_bytes(values))
    }
}

fn upload_i32<R: Runtime>(client: &ComputeClient<R>, values: &[i32]) -> Handle {
    if values.is_empty() {
        client.create_from_slice(i32::as_bytes(&[-1]))
    } else {
        client.create_from_slice(i32::as_bytes(values))
    }
}

fn read<R: Runtime>(
    client: &ComputeClient<R>,
    handle: Handle,
) -> Result<Vec<f32>, DeviceLossError> {
    let [values] = read_all(client, [handle])?;
    Ok(values)
}

/// Reads several f32 buffers with one synchronisation (each read waits for the device).
fn read_all<R: Runtime, const K: usize>(
    client: &ComputeClient<R>,
    handles: [Handle; K],
) -> Result<[Vec<f32>; K], DeviceLossError> {
    let bytes = cubecl::future::block_on(client.read_async(handles.to_vec()))
        .map_err(|e| DeviceLossError::Read(format!("{e:?}")))?;
    let values: Vec<Vec<f32>> = bytes.iter().map(|b| f32::from_bytes(b).to_vec()).collect();
    values
        .try_into()
        .map_err(|_| DeviceLossError::Read("wrong number of buffers read".into()))
}

/// Most rows one launch handles (one cube per row along x).
const MAX_ROWS: usize = 65_535;

/// Per-token inputs of a batch on the host, for [`forward_backward`].
#[derive(Debug, Clone, Copy)]
pub struct TokenInputsHost<'a> {
    /// Target ids, -1 for tokens that do not count (ignored or masked).
    pub targets: &'a [i32],
    /// Sequence of each token (row of the batch), for sequence aggregation and GSPO.
    pub sequence: &'a [usize],
    /// Number of sequences.
    pub sequences: usize,
    /// Generator log-probabilities.
    pub generator_logprobs: &'a [f32],
    /// Reference log-probabilities (zeros without a reference model).
    pub ref_logprobs: &'a [f32],
    /// Advantages.
    pub advantages: &'a [f32],
}

/// The per-token vectors [`TokenInputsHost`] borrows that a batch does not hold as such: the
/// kernels' targets, each position's sequence, and zeros for a missing reference.
#[derive(Debug, Clone)]
pub struct HostTokens {
    /// Target ids as the kernels read them: -1 where the position does not count.
    pub targets: Vec<i32>,
    /// Sequence (row) of each position.
    pub sequence: Vec<usize>,
    zeros: Vec<f32>,
}

impl HostTokens {
    /// Lays out `tokens` (rows are sequences).
    pub fn new(tokens: &TokenView<'_>) -> Self {
        let n = tokens.len();
        Self {
            targets: (0..n)
                .map(|i| {
                    if tokens.is_active(i) {
                        tokens.target_ids[i] as i32
                    } else {
                        -1
                    }
                })
                .collect(),
            sequence: (0..n).map(|i| i / tokens.seq).collect(),
            zeros: vec![0.0; n],
        }
    }

    /// The kernels' per-token inputs of `tokens` (the view these were laid out from).
    pub fn inputs<'a>(&'a self, tokens: &TokenView<'a>) -> TokenInputsHost<'a> {
        TokenInputsHost {
            targets: &self.targets,
            sequence: &self.sequence,
            sequences: tokens.batch,
            generator_logprobs: tokens.generator_logprobs,
            ref_logprobs: tokens.ref_logprobs.unwrap_or(&self.zeros),
            advantages: tokens.advantages,
        }
    }
}

/// What [`forward_backward`] returns: the gradient on the device, the loss and per-token values.
#[derive(Debug)]
pub struct DeviceLossResult {
    /// d loss / d logits, [tokens, vocab], in the logits' element type.
    pub grad_logits: Handle,
    /// The loss and per-token values, on the host.
    pub tokens: TokenResults,
}

/// The loss and the per-token values a loss evaluation reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenResults {
    /// The aggregated loss.
    pub loss: f64,
    /// Target log-probabilities (0 for tokens that do not count).
    pub logprobs: Vec<f32>,
    /// Entropies.
    pub entropy: Vec<f32>,
    /// d loss / d logprob with the KL term at its minimum, for the clip metric.
    pub d_logprob_without_kl: Vec<f32>,
    /// Same, for `seq_log_ratio`.
    pub d_seq_without_kl: Vec<f32>,
}

/// How [`forward_backward`] runs a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossPath {
    /// Fused when the loss allows it (token-level losses), else split.
    Auto,
    /// Fused with this layout when the loss allows it, else split.
    Fused(FusedShape),
    /// Forward kernel, per-token loss kernel through the host, backward kernel: three passes over
    /// the logits (what sequence-level losses need).
    Split,
}

/// Forward and backward of a loss over `call.logits` [tokens, vocab] already on the device,
/// element type `E` (f32, or bf16 on CUDA): the vocabulary-sized work stays there, per-token
/// vectors go through the host for aggregation. Token-level losses run as one fused kernel (two
/// passes over the logits); sequence-level ones as three kernels.
pub fn forward_backward<R: LossRuntime, E: Float + CubeElement>(
    client: &ComputeClient<R>,
    loss: &LossRegistration,
    call: &LossCall<'_>,
) -> Result<DeviceLossResult, DeviceLossError> {
    let launched = launch::<R, E>(client, loss, call)?;
    Ok(DeviceLossResult {
        grad_logits: launched.grad_logits,
        tokens: launched.results.read()?,
    })
}

/// [`forward_backward`] without waiting for the device where the path allows it: the fused
/// kernel is queued (over `call.uploaded` per-token inputs when given, writing the gradient over
/// the logits when `call.in_place`) and its per-token results stay on the device until
/// [`PendingResults::read`]; the split path (sequence-level losses) needs them on the host half
/// way, so it has read them when this returns.
pub fn launch<R: LossRuntime, E: Float + CubeElement>(
    client: &ComputeClient<R>,
    loss: &LossRegistration,
    call: &LossCall<'_>,
) -> Result<LaunchedLoss<R>, DeviceLossError> {
    let n = call.tokens.targets.len();
    if n > MAX_ROWS {
        return Err(DeviceLossError::TooLarge(n, MAX_ROWS));
    }
    let shape = match call.path {
        LossPath::Auto => Some(R::FUSED_SHAPE),
        LossPath::Fused(shape) => Some(shape),
        LossPath::Split => None,
    };
    let (grad_logits, pending, in_place) =
        match (R::fused_launcher(loss), shape, logits_elem::<E>()) {
            (Some(launch), Some(shape), Some(elem)) => {
                let (grad, pending) = fused_launch::<R, E>(client, launch, elem, shape, call);
                (grad, pending, call.in_place)
            }
            _ => {
                let result = split_forward_backward::<R, E>(client, loss, call)?;
                (result.grad_logits, Pending::Read(result.tokens), false)
            }
        };
    Ok(LaunchedLoss {
        grad_logits,
        in_place,
        results: PendingResults {
            client: client.clone(),
            pending,
        },
    })
}

/// A loss whose kernels are queued on the device (see [`launch`]).
#[derive(Debug)]
pub struct LaunchedLoss<R: Runtime> {
    /// d loss / d logits, [tokens, vocab], in the logits' element type (being written). Apart
    /// from the logits' own handle when `in_place`, the only reference to it: an owner may
    /// update it in place.
    pub grad_logits: Handle,
    /// The gradient was written over the logits (the call allowed it and the fused path ran;
    /// the split path of sequence-level losses reads the logits three times and never does).
    pub in_place: bool,
    /// The loss and per-token values, still on the device.
    pub results: PendingResults<R>,
}

/// The loss and per-token values of a [`LaunchedLoss`].
pub struct PendingResults<R: Runtime> {
    client: ComputeClient<R>,
    pending: Pending,
}

impl<R: Runtime> std::fmt::Debug for PendingResults<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingResults")
            .field("read", &matches!(self.pending, Pending::Read(_)))
            .finish_non_exhaustive()
    }
}

/// What a launched loss still has to read.
enum Pending {
    /// The fused kernel's outputs: `token_outputs` holds logprob, entropy, value and d loss /
    /// d logprob without KL (`n` each); `token_inputs` holds, after three other columns, the
    /// aggregation weights, which `weight` keeps in f64 for the host's sum.
    Fused {
        n: usize,
        token_outputs: Handle,
        token_inputs: Handle,
        weight: Vec<f64>,
    },
    /// Everything is on the host already.
    Read(TokenResults),
}

impl<R: Runtime> PendingResults<R> {
    /// The aggregated loss as a one-element device buffer of element type `F`, without waiting for
    /// the device on the fused path (a one-cube sum of weight x value, in f32).
    pub fn loss_value<F: Float + CubeElement>(&self) -> Handle {
        match &self.pending {
            Pending::Fused {
                n,
                token_outputs,
                token_inputs,
                ..
            } => {
                let out = self.client.empty(core::mem::size_of::<F>());
                weighted_sum_kernel::launch::<F, R>(
                    &self.client,
                    CubeCount::Static(1, 1, 1),
                    CubeDim::new_1d(SUM_BLOCK as u32),
                    array_arg::<R, f32>(token_outputs, (4 * n).max(1)),
                    array_arg::<R, f32>(token_inputs, (4 * n).max(1)),
                    (2 * n) as u32,
                    (3 * n) as u32,
                    *n as u32,
                    array_arg::<R, F>(&out, 1),
                    SUM_BLOCK,
                );
                out
            }
            Pending::Read(result) => self
                .client
                .create_from_slice(F::as_bytes(&[F::new(result.loss as f32)])),
        }
    }

    /// Waits for the kernels and reads the per-token results (one synchronisation); the loss is
    /// summed on the host in f64.
    pub fn read(self) -> Result<TokenResults, DeviceLossError> {
        match self.pending {
            Pending::Read(result) => Ok(result),
            Pending::Fused {
                n,
                token_outputs,
                weight,
                ..
            } => {
                let outputs = read(&self.client, token_outputs)?;
                let column = |k: usize| outputs[k * n..(k + 1) * n].to_vec();
                let value = column(2);
                let loss = weight
                    .iter()
                    .zip(&value)
                    .map(|(&w, &v)| w * f64::from(v))
                    .sum();
                Ok(TokenResults {
                    loss,
                    logprobs: column(0),
                    entropy: column(1),
                    d_logprob_without_kl: column(3),
                    d_seq_without_kl: vec![0.0; n],
                })
            }
        }
    }
}

fn logits_elem<E: 'static>() -> Option<LogitsElem> {
    use std::any::TypeId;
    let id = TypeId::of::<E>();
    if id == TypeId::of::<f32>() {
        Some(LogitsElem::F32)
    } else if id == TypeId::of::<half::bf16>() {
        Some(LogitsElem::Bf16)
    } else {
        None
    }
}

/// The widest vector (elements) a runtime loads that divides the row.
fn vector_width<R: LossRuntime>(vocab: usize) -> usize {
    [8usize, 4, 2, 1]
        .into_iter()
        .find(|w| *w <= R::MAX_VECTOR && vocab.is_multiple_of(*w))
        .unwrap_or(1)
}

/// Tokens per sequence that count (the sequence-level aggregation weights need them).
fn active_counts(tokens: &TokenInputsHost<'_>) -> Vec<usize> {
    let mut count = vec![0usize; tokens.sequences];
    for (i, &t) in tokens.targets.iter().enumerate() {
        if t >= 0 {
            count[tokens.sequence[i]] += 1;
        }
    }
    count
}

/// One loss evaluation on the device: what [`forward_backward`] computes on.
#[derive(Debug, Clone, Copy)]
pub struct LossCall<'a> {
    /// The loss's parameters, as its kernels read them.
    pub params: &'a [f32],
    /// Token aggregation.
    pub aggregation: Aggregation,
    /// Logits [tokens, vocab], contiguous, on the device.
    pub logits: &'a Handle,
    /// Vocabulary size (row length).
    pub vocab: usize,
    /// Per-token inputs.
    pub tokens: &'a TokenInputsHost<'a>,
    /// Temperature the logits are divided by.
    pub temperature: f64,
    /// Counts the aggregation divides by.
    pub norm: Normalizer,
    /// Fused or split kernels.
    pub path: LossPath,
    /// The per-token inputs already uploaded by [`upload_tokens`] for this call (the fused path
    /// uses them instead of uploading `tokens`).
    pub uploaded: Option<&'a DeviceTokens>,
    /// The caller owns `logits` and lets the fused path overwrite them with the gradient.
    pub in_place: bool,
}

/// Per-token inputs of a fused loss call on the device, uploaded ahead of it by
/// [`upload_tokens`] (e.g. while the model's forward pass runs), so that the call itself only
/// queues its kernel.
#[derive(Debug, Clone)]
pub struct DeviceTokens {
    n: usize,
    aggregation: Aggregation,
    norm: Normalizer,
    params: Vec<f32>,
    targets: Handle,
    token_inputs: Handle,
    params_handle: Handle,
    /// Each token's aggregation weight, kept for the host's f64 sum of the loss.
    weight: Vec<f64>,
}

impl DeviceTokens {
    /// Whether these were uploaded for `call` (same tokens, aggregation, counts, parameters).
    fn serve(&self, call: &LossCall<'_>) -> bool {
        self.n == call.tokens.targets.len()
            && self.aggregation == call.aggregation
            && self.norm == call.norm
            && self.params == call.params
    }
}

/// Uploads what the fused kernel reads per token: the targets, the packed generator logprobs,
/// reference logprobs, advantages and aggregation weights, and the loss's parameters. Queued on
/// the device's stream; nothing waits.
pub fn upload_tokens<R: Runtime>(
    client: &ComputeClient<R>,
    params: &[f32],
    tokens: &TokenInputsHost<'_>,
    aggregation: Aggregation,
    norm: Normalizer,
) -> DeviceTokens {
    let n = tokens.targets.len();
    let count = active_counts(tokens);
    let weight: Vec<f64> = (0..n)
        .map(|i| {
            if tokens.targets[i] >= 0 {
                norm.weight(aggregation, count[tokens.sequence[i]])
            } else {
                0.0
            }
        })
        .collect();
    let mut packed = Vec::with_capacity(4 * n);
    packed.extend_from_slice(tokens.generator_logprobs);
    packed.extend_from_slice(tokens.ref_logprobs);
    packed.extend_from_slice(tokens.advantages);
    packed.extend(weight.iter().map(|&w| w as f32));
    DeviceTokens {
        n,
        aggregation,
        norm,
        params: params.to_vec(),
        targets: upload_i32(client, tokens.targets),
        token_inputs: upload(client, &packed),
        params_handle: upload(client, params),
        weight,
    }
}

fn fused_launch<R: LossRuntime, E: Float + CubeElement>(
    client: &ComputeClient<R>,
    launch: FusedLossLauncher<R>,
    elem: LogitsElem,
    shape: FusedShape,
    call: &LossCall<'_>,
) -> (Handle, Pending) {
    let (n, vocab) = (call.tokens.targets.len(), call.vocab);
    let fresh;
    let uploaded = match call.uploaded {
        Some(uploaded) if uploaded.serve(call) => uploaded,
        _ => {
            fresh = upload_tokens(
                client,
                call.params,
                call.tokens,
                call.aggregation,
                call.norm,
            );
            &fresh
        }
    };
    let grad_logits = if call.in_place {
        call.logits.clone()
    } else {
        client.empty((n * vocab).max(1) * core::mem::size_of::<E>())
    };
    let io = FusedLossIo {
        rows: n,
        vocab,
        vector: vector_width::<R>(vocab),
        elem,
        shape,
        multiprocessors: client
            .properties()
            .hardware
            .num_streaming_multiprocessors
            .map(|n| n as usize),
        inv_temperature: (1.0 / call.temperature) as f32,
        logits: call.logits.clone(),
        targets: uploaded.targets.clone(),
        token_inputs: uploaded.token_inputs.clone(),
        params: uploaded.params_handle.clone(),
        params_len: uploaded.params.len(),
        grad_logits,
        in_place: call.in_place,
        token_outputs: client.empty((4 * n).max(1) * 4),
    };
    launch(client, &io);
    let pending = Pending::Fused {
        n,
        token_outputs: io.token_outputs,
        token_inputs: io.token_inputs,
        weight: uploaded.weight.clone(),
    };
    (io.grad_logits, pending)
}

/// Launches the row kernel over `logits` ([targets.len(), vocab], element type `E`): per row, the
/// target's log-probability at `temperature` (0 where the target is negative) and the entropy,
/// left on the device, with the row's log-sum-exp and the uploaded targets (the backward pass
/// reads both).
fn launch_row_stats<R: LossRuntime, E: Float + CubeElement>(
    client: &ComputeClient<R>,
    logits: &Handle,
    vocab: usize,
    targets: &[i32],
    temperature: f64,
) -> RowStats {
    let n = targets.len();
    let targets_h = client.create_from_slice(i32::as_bytes(targets));
    let (logprob_h, entropy_h, lse_h) = (
        client.empty(n.max(1) * 4),
        client.empty(n.max(1) * 4),
        client.empty(n.max(1) * 4),
    );
    logprob_forward_kernel::launch::<E, R>(
        client,
        CubeCount::Static(n.max(1) as u32, 1, 1),
        CubeDim::new_1d(BLOCK as u32),
        vector_width::<R>(vocab),
        array_arg::<R, E>(logits, n * vocab),
        array_arg::<R, E>(logits, n * vocab),
        array_arg::<R, i32>(&targets_h, n),
        (1.0 / temperature) as f32,
        vocab as u32,
        array_arg::<R, f32>(&logprob_h, n),
        array_arg::<R, f32>(&entropy_h, n),
        array_arg::<R, f32>(&lse_h, n),
        BLOCK,
    );
    RowStats {
        logprob: logprob_h,
        entropy: entropy_h,
        lse: lse_h,
        targets: targets_h,
    }
}

/// What [`launch_row_stats`] leaves on the device, one element a row.
struct RowStats {
    logprob: Handle,
    entropy: Handle,
    lse: Handle,
    targets: Handle,
}

/// Log-probabilities of `targets` under softmax(`logits` / `temperature`), one per row of
/// `logits` ([targets.len(), vocab], element type `E`, on the device); 0 where a target is
/// negative. Only these numbers come back to the host (the reference model's log-probabilities:
/// the logits themselves would be gigabytes).
pub fn target_logprobs<R: LossRuntime, E: Float + CubeElement>(
    client: &ComputeClient<R>,
    logits: &Handle,
    vocab: usize,
    targets: &[i32],
    temperature: f64,
) -> Result<Vec<f32>, DeviceLossError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let stats = launch_row_stats::<R, E>(client, logits, vocab, targets, temperature);
    let [logprobs] = read_all(client, [stats.logprob])?;
    Ok(logprobs)
}

fn split_forward_backward<R: LossRuntime, E: Float + CubeElement>(
    client: &ComputeClient<R>,
    loss: &LossRegistration,
    call: &LossCall<'_>,
) -> Result<DeviceLossResult, DeviceLossError> {
    let LossCall {
        params,
        aggregation,
        logits,
        vocab,
        tokens,
        temperature,
        norm,
        path: _,
        uploaded: _,
        in_place: _,
    } = *call;
    let n = tokens.targets.len();
    let active: Vec<bool> = tokens.targets.iter().map(|&t| t >= 0).collect();
    let RowStats {
        logprob: logprob_h,
        entropy: entropy_h,
        lse: lse_h,
        targets: targets_h,
    } = launch_row_stats::<R, E>(client, logits, vocab, tokens.targets, temperature);
    let [logprobs, entropy] = read_all(client, [logprob_h.clone(), entropy_h])?;

    // GSPO's per-sequence mean log-ratio, repeated on every token of the sequence.
    let count = active_counts(tokens);
    let mut seq_mean = vec![0.0f64; tokens.sequences];
    for i in (0..n).filter(|&i| active[i]) {
        seq_mean[tokens.sequence[i]] +=
            f64::from(logprobs[i]) - f64::from(tokens.generator_logprobs[i]);
    }
    for (mean, &c) in seq_mean.iter_mut().zip(&count) {
        if c > 0 {
            *mean /= c as f64;
        }
    }
    let seq_log_ratio: Vec<f32> = (0..n)
        .map(|i| seq_mean[tokens.sequence[i]] as f32)
        .collect();

    let old_h = upload(client, tokens.generator_logprobs);
    let adv_h = upload(client, tokens.advantages);
    let seq_h = upload(client, &seq_log_ratio);
    let params_h = upload(client, params);
    let launch_tokens = |reference: Handle| -> [Handle; 3] {
        let io = TokenLossIo {
            len: n,
            logprob: logprob_h.clone(),
            old_logprob: old_h.clone(),
            ref_logprob: reference,
            advantage: adv_h.clone(),
            seq_log_ratio: seq_h.clone(),
            params: params_h.clone(),
            params_len: params.len(),
            value: client.empty(n.max(1) * 4),
            d_logprob: client.empty(n.max(1) * 4),
            d_seq_log_ratio: client.empty(n.max(1) * 4),
        };
        R::launch_token_loss(loss, client, &io);
        [io.value, io.d_logprob, io.d_seq_log_ratio]
    };
    let [value_h, d_lp_h, d_seq_h] = launch_tokens(upload(client, tokens.ref_logprobs));
    // The clip metric takes the KL term at its minimum (reference = policy).
    let [_, d_lp0_h, d_seq0_h] = launch_tokens(logprob_h.clone());
    let [value, d_lp, d_seq, d_lp0, d_seq0] =
        read_all(client, [value_h, d_lp_h, d_seq_h, d_lp0_h, d_seq0_h])?;

    let mut total = 0.0;
    let mut d_total = vec![0.0f64; n];
    let mut d_seq_row = vec![0.0f64; tokens.sequences];
    for i in (0..n).filter(|&i| active[i]) {
        let w = norm.weight(aggregation, count[tokens.sequence[i]]);
        total += w * f64::from(value[i]);
        d_total[i] += w * f64::from(d_lp[i]);
        d_seq_row[tokens.sequence[i]] += w * f64::from(d_seq[i]);
    }
    for i in (0..n).filter(|&i| active[i]) {
        d_total[i] += d_seq_row[tokens.sequence[i]] / count[tokens.sequence[i]] as f64;
    }
    let d_total: Vec<f32> = d_total.iter().map(|&d| d as f32).collect();
    let d_h = upload(client, &d_total);
    let grad_h = client.empty((n * vocab).max(1) * core::mem::size_of::<E>());
    logprob_backward_kernel::launch::<E, R>(
        client,
        CubeCount::Static(n.max(1) as u32, 1, 1),
        CubeDim::new_1d(BLOCK as u32),
        vector_width::<R>(vocab),
        array_arg::<R, E>(logits, n * vocab),
        array_arg::<R, i32>(&targets_h, n),
        array_arg::<R, f32>(&lse_h, n),
        array_arg::<R, f32>(&d_h, n),
        (1.0 / temperature) as f32,
        vocab as u32,
        array_arg::<R, E>(&grad_h, n * vocab),
        BLOCK,
    );
    Ok(DeviceLossResult {
        grad_logits: grad_h,
        tokens: TokenResults {
            loss: total,
            logprobs,
            entropy,
            d_logprob_without_kl: d_lp0,
            d_seq_without_kl: d_seq0,
        },
    })
}

/// One loss evaluation: which loss, its parameters, how to aggregate, on what batch.
#[derive(Debug, Clone, Copy)]
pub struct LossRequest<'a> {
    /// The registered loss.
    pub loss: &'a LossRegistration,
    /// Its parameters (the keys beside its name in YAML).
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    /// Token aggregation.
    pub aggregation: Aggregation,
    /// The batch.
    pub batch: &'a LossBatch,
    /// Sampling temperature of the logits.
    pub temperature: f64,
    /// Global counts; default: the batch's own.
    pub normalizer: Option<Normalizer>,
    /// Fused or split kernels.
    pub path: LossPath,
}

/// Evaluates a request on the device of `client` (f32), reading everything back: what
/// `forge loss eval --device` runs.
pub fn evaluate_on<R: LossRuntime>(
    client: &ComputeClient<R>,
    request: &LossRequest<'_>,
) -> Result<LossOutput, DeviceLossError> {
    let LossRequest {
        loss,
        params,
        aggregation,
        batch,
        temperature,
        normalizer,
        path,
    } = *request;
    batch.validate()?;
    let (seq, vocab) = (batch.seq, batch.vocab);
    let n = batch.batch * seq;
    let norm = normalizer.unwrap_or_else(|| batch.normalizer());
    let param_values = (loss.param_values)(params).map_err(DeviceLossError::Params)?;
    let view = batch.tokens();
    let host_tokens = HostTokens::new(&view);
    let tokens = host_tokens.inputs(&view);
    let logits = upload(client, &batch.logits);
    let call = LossCall {
        params: &param_values,
        aggregation,
        logits: &logits,
        vocab,
        tokens: &tokens,
        temperature,
        norm,
        path,
        uploaded: None,
        // The logits were uploaded for this call alone: the gradient may replace them.
        in_place: true,
    };
    let result = forward_backward::<R, f32>(client, loss, &call)?;
    let grad = read(client, result.grad_logits.clone())?;
    let metrics = token_metrics(
        &result.tokens,
        &host_tokens.targets,
        &batch.generator_logprobs,
        &batch.advantages,
        batch.ref_logprobs.as_deref(),
    );
    Ok(LossOutput {
        loss: result.tokens.loss,
        grad_logits: grad.iter().take(n * vocab).map(|&g| f64::from(g)).collect(),
        logprobs: result
            .tokens
            .logprobs
            .iter()
            .map(|&l| f64::from(l))
            .collect(),
        metrics,
    })
}

/// The `loss/...` metrics of a device result, as the f64 reference computes them: `targets` are
/// the kernels' (-1 where a position does not count).
pub fn token_metrics(
    result: &TokenResults,
    targets: &[i32],
    generator_logprobs: &[f32],
    advantages: &[f32],
    ref_logprobs: Option<&[f32]>,
) -> Vec<(String, f64)> {
    let mut metrics = Metrics::default();
    for i in (0..targets.len()).filter(|&i| targets[i] >= 0) {
        let clipped = result.d_logprob_without_kl[i] == 0.0
            && result.d_seq_without_kl[i] == 0.0
            && advantages[i] != 0.0;
        metrics.add(
            f64::from(result.logprobs[i]),
            f64::from(generator_logprobs[i]),
            ref_logprobs.map(|r| f64::from(r[i])),
            f64::from(result.entropy[i]),
            clipped,
        );
    }
    metrics.finish(targets.len(), ref_logprobs.is_some())
}

/// [`evaluate_on`] on the default wgpu device (a GPU, or lavapipe on a CPU-only machine).
pub fn evaluate_wgpu(request: &LossRequest<'_>) -> Result<LossOutput, DeviceLossError> {
    #[cfg(feature = "wgpu")]
    return evaluate_on(&WgpuRuntime::client(&WgpuDevice::default()), request);
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = request;
        Err(DeviceLossError::NotBuilt("wgpu"))
    }
}

/// [`evaluate_on`] on CUDA device 0.
pub fn evaluate_cuda(request: &LossRequest<'_>) -> Result<LossOutput, DeviceLossError> {
    #[cfg(feature = "cuda")]
    return evaluate_on(&CudaRuntime::client(&CudaDevice::new(0)), request);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = request;
        Err(DeviceLossError::NotBuilt("cuda"))
    }
}
