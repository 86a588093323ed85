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
use crate::kernels::device_loss::{DeviceLossError, LossPath};
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
}

/// What the operation reports besides the loss tensor, read on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLossStats {
    /// The aggregated loss.
    pub loss: f64,
    /// Policy log-probability of each position's target (0 where the position does not count).
    pub logprobs: Vec<f64>,
    /// `loss/...` metrics.
    pub metrics: Vec<(String, f64)>,
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
    ) -> Result<(FloatTensor<Self>, PolicyLossStats), LossOpError>;
}

/// An autodiff backend with the policy loss as a differentiable operation.
pub trait AutodiffLossBackend: AutodiffBackend {
    /// The loss (a one-element tensor in the graph) of `logits` ([tokens, vocab]).
    fn policy_loss(
        logits: FloatTensor<Self>,
        inputs: &PolicyLossInputs<'_>,
    ) -> Result<(FloatTensor<Self>, PolicyLossStats), LossOpError>;
}

/// The policy loss of `logits` ([tokens, vocab], tokens laid out as `inputs.tokens`), as a
/// one-element tensor whose backward pass reaches whatever produced the logits.
pub fn policy_loss<B: AutodiffLossBackend>(
    logits: Tensor<B, 2>,
    inputs: &PolicyLossInputs<'_>,
) -> Result<(Tensor<B, 1>, PolicyLossStats), LossOpError> {
    let (loss, stats) = B::policy_loss(logits.into_primitive().tensor(), inputs)?;
    Ok((Tensor::from_primitive(TensorPrimitive::Float(loss)), stats))
}

/// The backward step: d loss / d logits, computed in the forward pass, times the upstream
/// gradient. That is 1 when the loss is the objective (`loss.backward()`, or a sum it is part of):
/// reading it costs a synchronisation, where multiplying would be one more pass over the whole
/// [tokens, vocab] gradient.
#[derive(Debug)]
struct PolicyLossBackward;

impl<B: Backend> Backward<B, 1> for PolicyLossBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_logits = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |upstream| {
            let scale: f64 = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(upstream))
                .into_scalar()
                .elem();
            if scale == 1.0 {
                grad_logits
            } else {
                B::float_mul_scalar(grad_logits, scale.into())
            }
        });
    }
}

impl<B: LossBackend, C: CheckpointStrategy> AutodiffLossBackend for Autodiff<B, C> {
    fn policy_loss(
        logits: FloatTensor<Self>,
        inputs: &PolicyLossInputs<'_>,
    ) -> Result<(FloatTensor<Self>, PolicyLossStats), LossOpError> {
        let device = B::float_device(&logits.primitive);
        let dtype = logits.primitive.dtype();
        let prep = PolicyLossBackward
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful();
        let (grad, stats) = B::policy_loss_and_grad(logits.primitive, inputs)?;
        let value = B::float_from_data(
            TensorData::new(vec![stats.loss as f32], [1]).convert_dtype(dtype),
            &device,
        );
        let loss = match prep {
            OpsKind::Tracked(prep) => prep.finish(grad, value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        };
        Ok((loss, stats))
    }
}

/// The host path: the f64 reference on a host copy of the logits, the gradient uploaded back.
fn host_policy_loss<B: Backend>(
    logits: FloatTensor<B>,
    inputs: &PolicyLossInputs<'_>,
) -> Result<(FloatTensor<B>, PolicyLossStats), LossOpError> {
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
    Ok((
        grad.into_primitive().tensor(),
        PolicyLossStats {
            loss: out.loss,
            logprobs: out.logprobs,
            metrics: out.metrics,
        },
    ))
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
    ) -> Result<(FloatTensor<Self>, PolicyLossStats), LossOpError> {
        host_policy_loss::<Self>(logits, inputs)
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::tensor::DType;
    use burn::tensor::ops::FloatTensor;
    use burn_cubecl::element::BoolElement;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};

    use super::{LossBackend, LossOpError, PolicyLossInputs, PolicyLossStats, check_rows};
    use crate::kernels::device_loss::{
        HostTokens, LossCall, LossRuntime, forward_backward, token_metrics,
    };

    impl<R, F, I, BT> LossBackend for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime + LossRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        fn policy_loss_and_grad(
            logits: FloatTensor<Self>,
            inputs: &PolicyLossInputs<'_>,
        ) -> Result<(FloatTensor<Self>, PolicyLossStats), LossOpError> {
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
            };
            let (client, registration) = (&logits.client, inputs.loss.registration);
            let result = match logits.dtype {
                DType::F32 => forward_backward::<R, f32>(client, registration, &call)?,
                DType::BF16 => forward_backward::<R, half::bf16>(client, registration, &call)?,
                other => {
                    return Err(LossOpError::Logits(format!(
                        "element type {other:?}; the loss kernels read f32 or bf16"
                    )));
                }
            };
            let metrics = token_metrics(
                &result,
                &host_tokens.targets,
                tokens.generator_logprobs,
                tokens.advantages,
                tokens.ref_logprobs,
            );
            let grad = CubeTensor::new_contiguous(
                logits.client.clone(),
                logits.device.clone(),
                shape,
                result.grad_logits.clone(),
                logits.dtype,
            );
            // The kernels write 0 for positions that do not count, as the reference does.
            let logprobs = result.logprobs.iter().map(|&l| f64::from(l)).collect();
            Ok((
                grad,
                PolicyLossStats {
                    loss: result.loss,
                    logprobs,
                    metrics,
                },
            ))
        }
    }
}
