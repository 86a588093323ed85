//! The decoder-only causal language model (Llama 3, Qwen2, Qwen3), generic over the burn backend.

use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::prelude::*;

use super::layers::{
    DecoderLayer, INIT_STD, LayerCache, RmsNorm, attention_bias, linear, linear_2d,
};
use super::matmul::matmul_2d;
use super::rope::RopeTables;
use super::spec::ModelSpec;

/// Embedding, decoder layers and final norm (`model.*` in a checkpoint).
#[derive(Module, Debug)]
pub struct DecoderModel<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Norm after the last layer.
    pub norm: RmsNorm<B>,
}

/// A causal language model: the decoder plus the output projection.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// The decoder (`model.*`).
    pub model: DecoderModel<B>,
    /// Output projection, absent when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// RoPE tables (constants, not parameters).
    pub rope: RopeTables<B>,
    /// The checkpoint's shape.
    pub spec: ModelSpec,
}

/// Keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerCache<B>>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
        }
    }

    /// Cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.keys.dims()[2])
    }

    /// Layer `i`'s keys and values, if anything is cached.
    pub fn layer(&self, i: usize) -> Option<&LayerCache<B>> {
        self.layers.get(i).and_then(Option::as_ref)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the cache.
    pub fn batch(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.keys.dims()[0])
    }

    fn map(self, f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>) -> Self {
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|l| {
                    l.map(|l| LayerCache {
                        keys: f(l.keys),
                        values: f(l.values),
                    })
                })
                .collect(),
        }
    }

    /// Keeps rows `rows` (in that order; a row may repeat, e.g. to share a prompt's prefill
    /// between its samples).
    pub fn select_rows(self, rows: &[usize], device: &B::Device) -> Self {
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), device);
        self.map(|t| t.select(0, idx.clone()))
    }

    /// Prepends `count` zero positions (left padding; mask them with the key padding).
    pub fn left_pad(self, count: usize) -> Self {
        if count == 0 {
            return self;
        }
        self.map(|t| {
            let [b, h, _, d] = t.dims();
            let zeros = Tensor::zeros([b, h, count, d], &t.device());
            Tensor::cat(vec![zeros, t], 2)
        })
    }

    /// Stacks caches of the same length along the batch.
    pub fn concat(caches: Vec<Self>) -> Self {
        let layers = caches.first().map_or(0, |c| c.layers.len());
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            let parts: Vec<&LayerCache<B>> =
                caches.iter().filter_map(|c| c.layers[l].as_ref()).collect();
            out.push((!parts.is_empty()).then(|| LayerCache {
                keys: Tensor::cat(parts.iter().map(|p| p.keys.clone()).collect(), 0),
                values: Tensor::cat(parts.iter().map(|p| p.values.clone()).collect(), 0),
            }));
        }
        Self { layers: out }
    }
}

impl<B: Backend> CausalLm<B> {
    /// A model with freshly initialised weights (normal, std 0.02; unit norms), as transformers
    /// initialises one from a config. Seed the backend first for a reproducible model.
    pub fn new(spec: &ModelSpec, device: &B::Device) -> Self {
        let embed_tokens = EmbeddingConfig::new(spec.vocab_size, spec.hidden_size)
            .with_initializer(burn::nn::Initializer::Normal {
                mean: 0.0,
                std: INIT_STD,
            })
            .init(device);
        Self {
            model: DecoderModel {
                embed_tokens,
                layers: (0..spec.num_layers)
                    .map(|_| DecoderLayer::new(spec, device))
                    .collect(),
                norm: RmsNorm::new(spec.hidden_size, spec.rms_norm_eps, device),
            },
            lm_head: (!spec.tie_word_embeddings)
                .then(|| linear(spec.hidden_size, spec.vocab_size, false, device)),
            rope: RopeTables::new(spec, spec.max_position_embeddings.max(1), device),
            spec: spec.clone(),
        }
    }

    /// Hidden states after the final norm, `[batch, seq, hidden]`, for `ids` `[batch, seq]` at
    /// `positions`. `bias` comes from [`attention_bias`]; a cache is read and extended.
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: &Tensor<B, 2, Int>,
        bias: &Tensor<B, 4>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let mut x = self.model.embed_tokens.forward(ids);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, positions, &self.rope, bias, slot);
        }
        self.model.norm.forward(x)
    }

    /// Logits `[batch, seq, vocab]` of hidden states.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, h] = hidden.dims();
        // One [b * s, hidden] x [hidden, vocab] product (see `layers::project`).
        let rows = hidden.reshape([b * s, h]);
        let logits = match &self.lm_head {
            Some(head) => linear_2d(head, rows),
            None => matmul_2d(rows, self.model.embed_tokens.weight.val().transpose()),
        };
        let vocab = logits.dims()[1];
        logits.reshape([b, s, vocab])
    }

    /// Logits of whole sequences from position 0 (training and scoring): causal attention only, so
    /// right padding never changes the logits of the tokens before it.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, s] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..s as i64, &device)
            .unsqueeze::<2>()
            .expand([b, s]);
        let bias = attention_bias::<B>(1, s, 0, None, &device);
        let hidden = self.hidden(ids, &positions, &bias, None);
        self.logits(hidden)
    }

    /// The longest sequence the RoPE tables cover.
    pub fn max_positions(&self) -> usize {
        self.rope.len()
    }
}
