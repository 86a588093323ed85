//! The pieces of a decoder layer. Field names follow Hugging Face's parameter names, so a
//! module path (`self_attn.q_proj.weight`) is the checkpoint's tensor name.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};

use super::matmul::matmul_2d;
use super::rope::RopeTables;
use super::spec::ModelSpec;

/// Standard deviation of freshly initialised weights (transformers' `initializer_range`).
pub(crate) const INIT_STD: f64 = 0.02;

/// Added to the attention scores of positions a query must not see. Finite, so a row whose every
/// key is masked gives a uniform average instead of NaN.
const MASKED: f32 = -1.0e30;

pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(burn::nn::Initializer::Normal {
            mean: 0.0,
            std: INIT_STD,
        })
        .init(device)
}

/// RMSNorm as transformers computes it: `weight * x / sqrt(mean(x²) + eps)`, in f32.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm of width `d` with unit gain.
    pub fn new(d: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            eps,
        }
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rms = (x.clone().square().mean_dim(D - 1) + self.eps).sqrt();
        let weight = self.weight.val().unsqueeze::<D>();
        x / rms * weight
    }
}

/// Grouped-query self-attention with RoPE (and Qwen3's per-head q/k norms).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub o_proj: Linear<B>,
    /// Qwen3: RMSNorm over each query head.
    pub q_norm: Option<RmsNorm<B>>,
    /// Qwen3: RMSNorm over each key head.
    pub k_norm: Option<RmsNorm<B>>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Keys and values of the positions seen so far, per layer: `[batch, kv_heads, positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// Rotated keys.
    pub keys: Tensor<B, 4>,
    /// Values.
    pub values: Tensor<B, 4>,
}

impl<B: Backend> Attention<B> {
    /// A freshly initialised attention block.
    pub fn new(spec: &ModelSpec, device: &B::Device) -> Self {
        let (h, kv, d) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        let norm = || {
            spec.qk_norm
                .then(|| RmsNorm::new(d, spec.rms_norm_eps, device))
        };
        Self {
            q_proj: linear(spec.hidden_size, h * d, spec.attention_bias, device),
            k_proj: linear(spec.hidden_size, kv * d, spec.attention_bias, device),
            v_proj: linear(spec.hidden_size, kv * d, spec.attention_bias, device),
            o_proj: linear(h * d, spec.hidden_size, false, device),
            q_norm: norm(),
            k_norm: norm(),
            num_heads: h,
            num_kv_heads: kv,
            head_dim: d,
        }
    }

    /// `x` `[batch, seq, hidden]` at `positions` `[batch, seq]`; `bias` `[batch or 1, 1, seq,
    /// keys]` is added to the scores (0 or [`MASKED`]). With a cache, its keys come first and the
    /// new ones are appended to it.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        positions: &Tensor<B, 2, Int>,
        rope: &RopeTables<B>,
        bias: &Tensor<B, 4>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |t: Tensor<B, 3>, n: usize| t.reshape([b, s, n, d]).swap_dims(1, 2);
        let mut q = heads(project(&self.q_proj, x.clone()), h);
        let mut k = heads(project(&self.k_proj, x.clone()), kv);
        let v = heads(project(&self.v_proj, x), kv);
        if let Some(norm) = &self.q_norm {
            q = norm.forward(q);
        }
        if let Some(norm) = &self.k_norm {
            k = norm.forward(k);
        }
        let q = rope.apply(q, positions);
        let k = rope.apply(k, positions);
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some(past) => (
                        Tensor::cat(vec![past.keys, k], 2),
                        Tensor::cat(vec![past.values, v], 2),
                    ),
                    None => (k, v),
                };
                *slot = Some(LayerCache {
                    keys: k.clone(),
                    values: v.clone(),
                });
                (k, v)
            }
            None => (k, v),
        };
        let keys = k.dims()[2];
        let k = contiguous_gradient(k);
        // Grouped-query attention without copying keys: the query heads sharing a key/value head
        // (transformers' `repeat_kv` order: head i reads kv head i / group) become rows of one matmul.
        let group = h / kv;
        let q = q.reshape([b, kv, group * s, d]);
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
        let scores = scores.reshape([b, h, s, keys]) + bias.clone();
        let probs = softmax(scores, 3).reshape([b, kv, group * s, keys]);
        let out = probs.matmul(v).reshape([b, h, s, d]);
        project(&self.o_proj, out.swap_dims(1, 2).reshape([b, s, h * d]))
    }
}

/// `linear` applied to `x` `[batch, seq, in]` as one `[batch * seq, in]` product. burn applies a
/// linear layer to a 3-d input as a batched product with the weight broadcast over the batch, and
/// its weight gradient then materialises one `[in, out]` product per batch row before summing them:
/// for the tied LM head of a Qwen3-0.6B shape at batch 64 that is a 39.8 GB buffer (it failed to
/// allocate on an H200, bench/NOTES.md); flattened, it is one product.
fn project<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, s, n] = x.dims();
    let y = linear_2d(linear, x.reshape([b * s, n]));
    let out = y.dims()[1];
    y.reshape([b, s, out])
}

/// `linear` applied to rows `x` [rows, in]: the product through [`matmul_2d`] (cuBLAS on CUDA).
pub(super) fn linear_2d<B: Backend>(linear: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let y = matmul_2d(x, linear.weight.val());
    match &linear.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    }
}

/// The identity, whose backward pass writes the gradient into a fresh contiguous tensor (a full
/// slice: its backward is `slice_assign(zeros, grad)`). Why: the keys' gradient arrives permuted
/// from `k.swap_dims(2, 3)`, and burn-cubecl 0.21 without autotuning (cubek-reduce 0.2.0's unit
/// routine) sums a permuted tensor wrongly, which gave Qwen3's k-norm weights wrong gradients on
/// wgpu (`tests/gpu_backend.rs` caught it). On ndarray it costs one copy of the keys' gradient.
fn contiguous_gradient<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    let dims = t.dims();
    t.slice(dims.map(|n| 0..n))
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: Linear<B>,
    /// Up projection.
    pub up_proj: Linear<B>,
    /// Down projection.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// A freshly initialised MLP.
    pub fn new(spec: &ModelSpec, device: &B::Device) -> Self {
        Self {
            gate_proj: linear(spec.hidden_size, spec.intermediate_size, false, device),
            up_proj: linear(spec.hidden_size, spec.intermediate_size, false, device),
            down_proj: linear(spec.intermediate_size, spec.hidden_size, false, device),
        }
    }

    /// Applies the MLP to the last dimension.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(project(&self.gate_proj, x.clone()));
        project(&self.down_proj, gate * project(&self.up_proj, x))
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// The MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// A freshly initialised layer.
    pub fn new(spec: &ModelSpec, device: &B::Device) -> Self {
        Self {
            input_layernorm: RmsNorm::new(spec.hidden_size, spec.rms_norm_eps, device),
            self_attn: Attention::new(spec, device),
            post_attention_layernorm: RmsNorm::new(spec.hidden_size, spec.rms_norm_eps, device),
            mlp: Mlp::new(spec, device),
        }
    }

    /// Residual attention then residual MLP.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        positions: &Tensor<B, 2, Int>,
        rope: &RopeTables<B>,
        bias: &Tensor<B, 4>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let attn = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            positions,
            rope,
            bias,
            cache,
        );
        let x = x + attn;
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + mlp
    }
}

/// Additive attention bias `[batch, 1, seq, past + seq]`: causal, plus `key_padding` `[batch,
/// past + seq]` (true: a padding key nobody may attend to).
pub fn attention_bias<B: Backend>(
    batch: usize,
    seq: usize,
    past: usize,
    key_padding: Option<&[bool]>,
    device: &B::Device,
) -> Tensor<B, 4> {
    let keys = past + seq;
    let mut bias = vec![0f32; batch * seq * keys];
    for r in 0..batch {
        for i in 0..seq {
            for j in 0..keys {
                let future = j > past + i;
                let padding = key_padding.is_some_and(|p| p[r * keys + j]);
                if future || padding {
                    bias[(r * seq + i) * keys + j] = MASKED;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(bias, [batch, 1, seq, keys]), device)
}
