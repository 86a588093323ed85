//! The policy loss as one burn operation with a custom backward: a backend extension.
//!
//! The forward pass computes the aggregated loss and d loss / d logits together (the fused kernel
//! reads the logits twice anyway, and the second read writes the gradient). The gradient stays in
//! the autodiff graph as the operation's state; the backward pass only scales it by the upstream
//! gradient. So `loss.backward()` reaches the model with no further pass over the [tokens, vocab]
//! logits, and the extra memory is the gradient itself.
//!
//! Where the work runs: on a cubecl backend (`CubeBackend` over wgpu or CUDA) the kernels of
//! [`crate::kernels::device_loss`] run where the logits are, in their element type (f32 or bf16);
//! on ndarray the f64 reference ([`crate::loss::reference::evaluate`]) runs on the logits, which are
//! host memory already there.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{ElementConversion, TensorMetadata, TensorPrimitive};

use crate::config::Aggregation;
use crate::kernels::device_loss::{DeviceLossError, DeviceTokens, LossPath};
use crate::loss::reference::{BatchError, Normalizer, TokenView, evaluate};
use crate::loss::registry::{BoundLoss, LossRegistration};

/// A loss bound to its parameters, in both forms: the f64 function (host path) and the f32
/// values the kernels read.
pub struct BoundPolicyLoss {
    /// The registered loss.
    pub registration: &'static LossRegistration,
    /// The f64 per-token function with its gradient.
    pub function: BoundLoss,
    /// The parameters as the kernels read them.
    pub params: Vec<f32>,
}

impl BoundPolicyLoss {
    /// Binds `registration` to its YAML parameters.
    pub fn bind(
        registration: &'static LossRegistration,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, String> {
        Ok(Self {
            registration,
            function: (registration.bind)(params)?,
            params: (registration.param_values)(params)?,
        })
    }
}

impl std::fmt::Debug for BoundPolicyLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundPolicyLoss")
            .field("loss", &self.registration.name)
            .field("params", &self.params)
            .finish()
    }
}

/// What the operation needs besides the logits.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLossInputs<'a> {
    /// The loss and its parameters.
    pub loss: &'a BoundPolicyLoss,
    /// Token aggregation.
    pub aggregation: Aggregation,
    /// Temperature the logits are divided by.
    pub temperature: f64,
    /// Counts of the whole optimiser batch (micro-batches then add up to the batch's loss).
    pub normalizer: Normalizer,
    /// Fused or split kernels (cubecl backends).
    pub path: LossPath,
    /// The per-token inputs.
    pub tokens: TokenView<'a>,
    /// `tokens` already on the device, from [`AutodiffLossBackend::upload_loss_tokens`] on these
    /// same inputs (None: the operation uploads them itself).
    pub uploaded: Option<&'a DeviceTokens>,
}

/// What the operation reports besides the loss tensor, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLossStats {
    /// The aggregated loss.
    pub loss: f64,
    /// Policy log-probability of each position's target (0 where the position does not count).
    pub logprobs: Vec<f64>,
    /// `loss/...` metrics.
    pub metrics: Vec<(String, f64)>,
    /// The gradient was written over the logits' buffer (the operation owned them and the
    /// fused kernel ran), so the gradient cost no memory of its own.
    pub gradient_in_place: bool,
}

/// [`PolicyLossStats`] still on the device: reading them waits for the loss kernels, so a caller
/// reads them after queuing the backward pass, and the device never idles while the host waits.
pub struct PendingLossStats(Box<dyn FnOnce() -> Result<PolicyLossStats, LossOpError>>);

impl PendingLossStats {
    /// Stats already on the host.
    pub fn ready(stats: PolicyLossStats) -> Self {
        Self(Box::new(move || Ok(stats)))
    }

    /// Stats `read` fetches when asked.
    pub fn deferred(read: impl FnOnce() -> Result<PolicyLossStats, LossOpError> + 'static) -> Self {
        Self(Box::new(read))
    }

    /// Waits for the device and returns the stats.
    pub fn read(self) -> Result<PolicyLossStats, LossOpError> {
        (self.0)()
    }
}

impl std::fmt::Debug for PendingLossStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLossStats")
    }
}

/// What [`LossBackend::policy_loss_and_grad`] computes.
#[derive(Debug)]
pub struct LossAndGrad<B: Backend> {
    /// The aggregated loss, a one-element tensor in the logits' element type.
    pub value: FloatTensor<B>,
    /// d loss / d logits, in the logits' shape and element type.
    pub grad: FloatTensor<B>,
    /// Per-token results and metrics.
    pub stats: PendingLossStats,
}

/// Why the operation could not run.
#[derive(Debug, thiserror::Error)]
pub enum LossOpError {
    /// The per-token inputs do not fit the logits.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The device kernels failed.
    #[error(transparent)]
    Device(#[from] DeviceLossError),
    /// The logits are not a [tokens, vocab] tensor of a supported element type.
    #[error("logits: {0}")]
    Logits(String),
}

/// A backend that computes the policy loss and its gradient with respect to the logits in one
/// call.
pub trait LossBackend: Backend {
    /// The loss of `logits` ([tokens, vocab]) and d loss / d logits (same shape and element type).
    fn policy_loss_and_grad(
        logits: FloatTensor<Self>,
        inputs: &PolicyLossInputs<'_>,
    ) -> Result<LossAndGrad<Self>, LossOpError>;

    /// Uploads the per-token inputs of `inputs` to `device` ahead of the call, where the backend
    /// has device kernels that read them (None: the call reads the host slices itself).
    fn upload_loss_tokens(
        inputs: &PolicyLossInputs<'_>,
        device: &Self::Device,
    ) -> Option<DeviceTokens> {
        let _ = (inputs, device);
        None
    }

    /// Log-probabilities of `targets` under softmax(`logits` / `temperature`), one per row of
    /// `logits` ([targets.len(), vocab]); 0 where a target is negative (ignored). For the
    /// reference model. By default the host reads the logits; the cubecl backends compute on the
    /// device and read back one number a row.
    fn target_logprobs(
        logits: FloatTensor<Self>,
        targets: &[i32],
        temperature: f64,
    ) -> Result<Vec<f32>, LossOpError> {
        host_target_logprobs::<Self>(logits, targets, temperature)
    }

    /// `grad` times the one element of `upstream`, where that is not 1 (the usual case: the loss
    /// is the objective, or a term of a sum that is). By default the host reads the factor.
    fn scale_by_upstream(
        grad: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        scale_on_host::<Self>(grad, upstream)
    }
}

/// [`LossBackend::target_logprobs`] on the host.
fn host_target_logprobs<B: Backend>(
    logits: FloatTensor<B>,
    targets: &[i32],
    temperature: f64,
) -> Result<Vec<f32>, LossOpError> {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let [rows, vocab] = logits.dims();
    check_target_rows(rows, targets)?;
    let host = logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| LossOpError::Logits(format!("{e:?}")))?;
    Ok(targets
        .iter()
        .enumerate()
        .map(|(row, &target)| match usize::try_from(target) {
            Ok(t) => {
                crate::generate::logprob_of(&host[row * vocab..(row + 1) * vocab], t, temperature)
                    as f32
            }
            Err(_) => 0.0,
        })
        .collect())
}

fn check_target_rows(rows: usize, targets: &[i32]) -> Result<(), LossOpError> {
    if rows != targets.len() {
        return Err(LossOpError::Logits(format!(
            "{rows} rows of logits for {} targets",
            targets.len()
        )));
    }
    Ok(())
}

/// [`LossBackend::scale_by_upstream`] with the factor read on the host: a synchronisation, where
/// multiplying unconditionally would be one more pass over the whole [tokens, vocab] gradient.
fn scale_on_host<B: Backend>(grad: FloatTensor<B>, upstream: FloatTensor<B>) -> FloatTensor<B> {
    let scale: f64 = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(upstream))
        .into_scalar()
        .elem();
    if scale == 1.0 {
        grad
    } else {
        B::float_mul_scalar(grad, scale.into())
    }
}

/// An autodiff backend with the policy loss as a differentiable operation.
pub trait AutodiffLossBackend: AutodiffBackend {
    /// The loss (a one-element tensor in the graph) of `logits` ([tokens, vocab]).
    fn policy_loss(
        logits: FloatTensor<Self>,
        inputs: &PolicyLossInputs<'_>,
    ) -> Result<(FloatTensor<Self>, PendingLossStats), LossOpError>;

    /// [`LossBackend::upload_loss_tokens`] of the inner backend: call it before the forward
    /// pass that makes the logits, and the uploads overlap with it.
    fn upload_loss_tokens(
        inputs: &PolicyLossInputs<'_>,
        device: &Self::Device,
    ) -> Option<DeviceTokens>;
}

/// The policy loss of `logits` ([tokens, vocab], tokens laid out as `inputs.tokens`), as a
/// one-element tensor whose backward pass reaches whatever produced the logits. Neither this
/// call nor the backward pass waits for the device; the stats do when read.
pub fn policy_loss<B: AutodiffLossBackend>(
    logits: Tensor<B, 2>,
    inputs: &PolicyLossInputs<'_>,
) -> Result<(Tensor<B, 1>, PendingLossStats), LossOpError> {
    let (loss, stats) = B::policy_loss(logits.into_primitive().tensor(), inputs)?;
    Ok((Tensor::from_primitive(TensorPrimitive::Float(loss)), stats))
}

/// The backward step: d loss / d logits, computed in the forward pass, times the upstream
/// gradient (see [`LossBackend::scale_by_upstream`]).
#[derive(Debug)]
struct PolicyLossBackward;

impl<B: LossBackend> Backward<B, 1> for PolicyLossBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_logits = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |upstream| {
            B::scale_by_upstream(grad_logits, upstream)
        });
    }
}

impl<B: LossBackend, C: CheckpointStrategy> AutodiffLossBackend for Autodiff<B, C> {
    fn policy_loss(
        logits: FloatTensor<Self>,
        inputs: &PolicyLossInputs<'_>,
    ) -> Result<(FloatTensor<Self>, PendingLossStats), LossOpError> {
        let prep = PolicyLossBackward
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful();
        let out = B::policy_loss_and_grad(logits.primitive, inputs)?;
        let loss = match prep {
            OpsKind::Tracked(prep) => prep.finish(out.grad, out.value),
            OpsKind::UnTracked(prep) => prep.finish(out.value),
        };
        Ok((loss, out.stats))
    }

    fn upload_loss_tokens(
        inputs: &PolicyLossInputs<'_>,
        device: &Self::Device,
    ) -> Option<DeviceTokens> {
        B::upload_loss_tokens(inputs, device)
    }
}

/// The host path: the f64 reference on a host copy of the logits, the gradient uploaded back.
fn host_policy_loss<B: Backend>(
    logits: FloatTensor<B>,
    inputs: &PolicyLossInputs<'_>,
) -> Result<LossAndGrad<B>, LossOpError> {
    let dtype = logits.dtype();
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let [rows, vocab] = logits.dims();
    check_rows(rows, inputs)?;
    let device = logits.device();
    let host = logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| LossOpError::Logits(format!("{e:?}")))?;
    let batch = inputs.tokens.with_logits(vocab, host);
    let out = evaluate(
        &inputs.loss.function,
        inputs.aggregation,
        &batch,
        inputs.temperature,
        Some(inputs.normalizer),
    )?;
    let grad: Vec<f32> = out.grad_logits.iter().map(|&g| g as f32).collect();
    let grad = Tensor::<B, 2>::from_data(TensorData::new(grad, [rows, vocab]), &device);
    let value = B::float_from_data(
        TensorData::new(vec![out.loss as f32], [1]).convert_dtype(dtype),
        &device,
    );
    Ok(LossAndGrad {
        value,
        grad: grad.into_primitive().tensor(),
        stats: PendingLossStats::ready(PolicyLossStats {
            loss: out.loss,
            logprobs: out.logprobs,
            metrics: out.metrics,
            gradient_in_place: false,
        }),
    })
}

fn check_rows(rows: usize, inputs: &PolicyLossInputs<'_>) -> Result<(), LossOpError> {
    let tokens = inputs.tokens.len();
    if rows != tokens {
        return Err(LossOpError::Logits(format!(
            "{rows} rows of logits for {tokens} token positions ({} x {})",
            inputs.tokens.batch, inputs.tokens.seq
        )));
    }
    Ok(())
}

impl<E, I, Q> LossBackend for burn_ndarray::NdArray<E, I, Q>
where
    E: burn_ndarray::FloatNdArrayElement,
    I: burn_ndarray::IntNdArrayElement,
    Q: burn_ndarray::QuantElement,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<E>>,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<I>>,
{
    fn policy_loss_and_grad(
        logits: FloatTensor<Self>,
        inputs: &PolicyLossInputs<'_>,
    ) -> Result<LossAndGrad<Self>, LossOpError> {
        host_policy_loss::<Self>(logits, inputs)
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{DType, Shape};
    use burn_cubecl::element::BoolElement;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
    use cubecl::prelude::*;
    use half::{bf16, f16};

    use super::{
        LossAndGrad, LossBackend, LossOpError, PendingLossStats, PolicyLossInputs, PolicyLossStats,
        check_rows, check_target_rows, scale_on_host,
    };
    use crate::kernels::args::array_arg;
    use crate::kernels::device_loss::{
        DeviceTokens, HostTokens, LaunchedLoss, LossCall, LossPath, LossRuntime, launch,
        target_logprobs, token_metrics, upload_tokens,
    };
    use crate::kernels::loss_scalars::{SCALE_BLOCK, scale_unless_one_kernel};

    /// Cubes of the scaling launch: enough to keep a GPU busy when the factor is not 1.
    const SCALE_CUBES: u32 = 1024;

    impl<R, F, I, BT> LossBackend for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime + LossRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        fn target_logprobs(
            logits: FloatTensor<Self>,
            targets: &[i32],
            temperature: f64,
        ) -> Result<Vec<f32>, LossOpError> {
            let logits: CubeTensor<R> = burn_cubecl::kernel::into_contiguous(logits);
            let [rows, vocab] = logits.meta.shape().dims::<2>();
            check_target_rows(rows, targets)?;
            let (client, handle) = (&logits.client, &logits.handle);
            Ok(match logits.dtype {
                DType::F32 => {
                    target_logprobs::<R, f32>(client, handle, vocab, targets, temperature)?
                }
                DType::BF16 => {
                    target_logprobs::<R, bf16>(client, handle, vocab, targets, temperature)?
                }
                DType::F16 => {
                    target_logprobs::<R, f16>(client, handle, vocab, targets, temperature)?
                }
                other => {
                    return Err(LossOpError::Logits(format!(
                        "element type {other:?}; the row kernel reads f32, bf16 or f16"
                    )));
                }
            })
        }

        fn policy_loss_and_grad(
            logits: FloatTensor<Self>,
            inputs: &PolicyLossInputs<'_>,
        ) -> Result<LossAndGrad<Self>, LossOpError> {
            let logits: CubeTensor<R> = burn_cubecl::kernel::into_contiguous(logits);
            let shape = logits.meta.shape().clone();
            let [rows, vocab] = shape.dims::<2>();
            check_rows(rows, inputs)?;
            let tokens = &inputs.tokens;
            let host_tokens = HostTokens::new(tokens);
            let host = host_tokens.inputs(tokens);
            let call = LossCall {
                params: &inputs.loss.params,
                aggregation: inputs.aggregation,
                logits: &logits.handle,
                vocab,
                tokens: &host,
                temperature: inputs.temperature,
                norm: inputs.normalizer,
                path: inputs.path,
                uploaded: inputs.uploaded,
                // Nothing else holds the logits (the graph keeps no copy of them: this
                // operation's backward needs only its gradient): they may become it.
                in_place: logits.can_mut(),
            };
            let (client, registration) = (&logits.client, inputs.loss.registration);
            let (launched, value): (LaunchedLoss<R>, _) = match logits.dtype {
                DType::F32 => {
                    let launched = launch::<R, f32>(client, registration, &call)?;
                    let value = launched.results.loss_value::<f32>();
                    (launched, value)
                }
                DType::BF16 => {
                    let launched = launch::<R, bf16>(client, registration, &call)?;
                    let value = launched.results.loss_value::<bf16>();
                    (launched, value)
                }
                other => {
                    return Err(LossOpError::Logits(format!(
                        "element type {other:?}; the loss kernels read f32 or bf16"
                    )));
                }
            };
            let tensor = |handle, shape| {
                CubeTensor::new_contiguous(
                    logits.client.clone(),
                    logits.device.clone(),
                    shape,
                    handle,
                    logits.dtype,
                )
            };
            let LaunchedLoss {
                grad_logits,
                in_place,
                results,
            } = launched;
            // The graph holds the only reference: the backward pass may scale it in place.
            let grad = tensor(grad_logits, shape);
            let value = tensor(value, Shape::new([1]));
            // What the metrics need, owned: they are computed when the stats are read.
            let targets = host_tokens.targets;
            let generator_logprobs = tokens.generator_logprobs.to_vec();
            let advantages = tokens.advantages.to_vec();
            let ref_logprobs = tokens.ref_logprobs.map(<[f32]>::to_vec);
            let stats = PendingLossStats::deferred(move || {
                let result = results.read()?;
                let metrics = token_metrics(
                    &result,
                    &targets,
                    &generator_logprobs,
                    &advantages,
                    ref_logprobs.as_deref(),
                );
                // The kernels write 0 for positions that do not count, as the reference does.
                let logprobs = result.logprobs.iter().map(|&l| f64::from(l)).collect();
                Ok(PolicyLossStats {
                    loss: result.loss,
                    logprobs,
                    metrics,
                    gradient_in_place: in_place,
                })
            });
            Ok(LossAndGrad { value, grad, stats })
        }

        fn upload_loss_tokens(
            inputs: &PolicyLossInputs<'_>,
            device: &Self::Device,
        ) -> Option<DeviceTokens> {
            // Only the fused kernel reads uploaded inputs: sequence-level losses (three kernels)
            // would upload them for nothing.
            let fused = R::fused_launcher(inputs.loss.registration).is_some();
            if !fused || inputs.path == LossPath::Split {
                return None;
            }
            let host_tokens = HostTokens::new(&inputs.tokens);
            Some(upload_tokens(
                &R::client(device),
                &inputs.loss.params,
                &host_tokens.inputs(&inputs.tokens),
                inputs.aggregation,
                inputs.normalizer,
            ))
        }

        /// The factor stays on the device: one small launch that leaves the gradient untouched
        /// when the factor is 1 (no synchronisation), and scales it in place otherwise.
        fn scale_by_upstream(
            grad: FloatTensor<Self>,
            upstream: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            if !grad.can_mut() || !grad.is_contiguous() || grad.dtype != upstream.dtype {
                return scale_on_host::<Self>(grad, upstream);
            }
            match grad.dtype {
                DType::F32 => scale_on_device::<R, f32>(&grad, &upstream),
                DType::BF16 => scale_on_device::<R, bf16>(&grad, &upstream),
                DType::F16 => scale_on_device::<R, f16>(&grad, &upstream),
                _ => return scale_on_host::<Self>(grad, upstream),
            }
            grad
        }
    }

    /// `grad *= upstream[0]` in place unless the factor is 1, elements of type `E`.
    fn scale_on_device<R: CubeRuntime, E: Float + CubeElement>(
        grad: &CubeTensor<R>,
        upstream: &CubeTensor<R>,
    ) {
        let len = grad.meta.shape().num_elements();
        scale_unless_one_kernel::launch::<E, R>(
            &grad.client,
            CubeCount::Static(SCALE_CUBES, 1, 1),
            CubeDim::new_1d(SCALE_BLOCK as u32),
            array_arg::<R, E>(&grad.handle, len),
            array_arg::<R, E>(&upstream.handle, 1),
        );
    }
}
