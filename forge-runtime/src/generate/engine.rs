//! The decode engine: one new token for each of many sequences per step, on a backend that has
//! one (burn's cubecl backend: CUDA, or wgpu), with the model's weights as they are on the device,
//! a KV cache allocated once for the whole generation, and a dozen kernel launches per layer.
//!
//! Why: the generic model decodes through ~3,000 burn operations per step (slices, concatenations
//! of the growing cache, one matmul kernel per projection tuned for large products), 233 ms per
//! step of 64 sequences on an H200 (bench/NOTES.md). The prompts' prefill still runs through the
//! generic model (one forward per prompt), whose cache is then copied into the engine's slots.

use burn::prelude::*;

use crate::model::{CausalLm, KvCache};

/// A backend that may decode through an engine; the default is none (the generic model decodes).
pub trait DecodeBackend: Backend {
    /// An engine decoding `slots` sequences of up to `max_len` positions with `model`'s current
    /// weights (read, not copied, where the layout allows), or `None` to use the generic model.
    fn decode_engine(
        _model: &CausalLm<Self>,
        _slots: usize,
        _max_len: usize,
    ) -> Option<Box<dyn DecodeEngine<Self>>> {
        None
    }
}

/// One generation's decoding state on the device.
pub trait DecodeEngine<B: Backend> {
    /// Copies the cache of a prefill of equal-length prompts into the engine: batch row `b` into
    /// each of `slots[b]` (every row the same number of slots).
    fn load_prefill(&mut self, cache: &KvCache<B>, slots: &[Vec<usize>]);

    /// Feeds token `tokens[r]` at position `positions[r]` to the sequence in slot `slots[r]` and
    /// returns the next-token logits `[rows, vocab]` in f32.
    fn step(&mut self, tokens: &[u32], positions: &[usize], slots: &[usize]) -> Tensor<B, 2>;

    /// Draws one token per row of `logits` (from [`DecodeEngine::step`]) on the device, without
    /// copying the logits to the host: row `r` with `uniforms[r]` (in [0, 1), from the row's own
    /// random stream, as the host's sampler uses it), or the most likely token when `temperature`
    /// is 0. Returns each token with log softmax(logits / T) at it (T = 1 when greedy). No top-k
    /// or top-p: the caller samples on the host when those are set.
    fn sample(
        &mut self,
        logits: Tensor<B, 2>,
        uniforms: &[f64],
        temperature: f64,
    ) -> Result<Vec<(u32, f64)>, String>;
}

impl<E, I, Q> DecodeBackend for burn_ndarray::NdArray<E, I, Q>
where
    E: burn_ndarray::FloatNdArrayElement,
    I: burn_ndarray::IntNdArrayElement,
    Q: burn_ndarray::QuantElement,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<E>>,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<I>>,
{
}

impl<B: DecodeBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    DecodeBackend for burn::backend::Autodiff<B, C>
{
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
    use burn_cubecl::element::BoolElement;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
    use cubecl::prelude::*;
    use cubecl::server::Handle;

    use super::{DecodeBackend, DecodeEngine};
    use crate::kernels::args::{array_arg, optional_array_arg};
    use crate::kernels::decode::decode_attention::{self, decode_attention_kernel};
    use crate::kernels::decode::kv_copy::kv_copy_kernel;
    use crate::kernels::decode::product::{self, Weight};
    use crate::kernels::decode::qkv_rope_cache::qkv_rope_cache_kernel;
    use crate::kernels::decode::rms_norm::{self, rms_norm_kernel};
    use crate::kernels::decode::sample_rows::{self, sample_rows_kernel};
    use crate::kernels::decode::skinny_matmul::epilogue;
    use crate::model::{CausalLm, KvCache, ModelSpec};

    /// Longest cache the attention kernel's shared-memory scores allow (32 KB of f32).
    const MAX_KEYS: usize = 8192;

    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

    struct Layer {
        input_norm: Handle,
        /// q, k and v projections side by side.
        qkv: Weight,
        qkv_bias: Option<Handle>,
        q_norm: Option<Handle>,
        k_norm: Option<Handle>,
        o: Weight,
        post_norm: Handle,
        /// gate and up projections side by side.
        gate_up: Weight,
        down: Weight,
        cache_k: Handle,
        cache_v: Handle,
    }

    /// The engine on burn's cubecl backend.
    pub struct CubeDecodeEngine<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> {
        client: ComputeClient<R>,
        device: R::Device,
        spec: ModelSpec,
        embed: Tensor<Cube<R, F, I, BT>, 2>,
        layers: Vec<Layer>,
        norm: Handle,
        head: Weight,
        cos: Handle,
        sin: Handle,
        /// Stands in for an absent bias or norm weight.
        none: Handle,
        slots: usize,
        max_len: usize,
        max_keys: usize,
        /// Elements per vector in which attention reads the caches.
        cache_vector: usize,
        /// Query heads per attention cube: a key/value head's whole query group where its
        /// scores fit in shared memory, else 1.
        attention_group: usize,
        /// Positions the RoPE tables cover.
        rope_positions: usize,
    }

    /// Elements per vector in which attention reads the caches: the widest load the runtime
    /// makes of `elem`-byte elements that divides `head_dim` (16 bytes: 8 bf16 on CUDA, 4 f32 on
    /// wgpu). `FORGE_DECODE_CACHE_VECTOR` caps it (to compare widths on one build).
    fn cache_vector<R: CubeRuntime>(
        head_dim: usize,
        elem: usize,
        client: &ComputeClient<R>,
    ) -> usize {
        let cap = std::env::var("FORGE_DECODE_CACHE_VECTOR")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        client
            .io_optimized_vector_sizes(elem)
            .find(|&w| w <= cap && head_dim.is_multiple_of(w))
            .unwrap_or(1)
    }

    /// Static shared memory a cube may declare on every runtime we run (CUDA's limit without
    /// opting in).
    const SHARED_LIMIT: usize = 48 * 1024;

    /// Query heads per attention cube: all the heads of a key/value head's group when their
    /// scores fit in shared memory (the cache read once per group), one otherwise.
    /// `FORGE_DECODE_ATTENTION_GROUP=1` keeps one head a cube (to compare on one build).
    fn attention_group<R: CubeRuntime>(
        spec: &ModelSpec,
        max_keys: usize,
        cache_vector: usize,
        client: &ComputeClient<R>,
    ) -> usize {
        let ratio = spec.num_heads / spec.num_kv_heads.max(1);
        let limit = SHARED_LIMIT.min(client.properties().hardware.max_shared_memory_size);
        let key_vectors = spec.head_dim / cache_vector;
        let fits =
            decode_attention::shared_bytes(ratio, spec.head_dim, key_vectors, max_keys) <= limit;
        let forced_one = std::env::var("FORGE_DECODE_ATTENTION_GROUP").as_deref() == Ok("1");
        if ratio > 1 && fits && !forced_one {
            ratio
        } else {
            1
        }
    }

    /// A weight `[k, n]` as the products read it.
    fn weight_matrix<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        t: Tensor<Cube<R, F, I, BT>, 2>,
        client: &ComputeClient<R>,
    ) -> Weight {
        let [k, n] = t.dims();
        Weight::new::<R, F>(client, contiguous(t), k, n)
    }

    fn contiguous<
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
        const D: usize,
    >(
        t: Tensor<Cube<R, F, I, BT>, D>,
    ) -> Handle {
        burn_cubecl::kernel::into_contiguous(t.into_primitive().tensor()).handle
    }

    impl<R, F, I, BT> DecodeBackend for Cube<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        fn decode_engine(
            model: &CausalLm<Self>,
            slots: usize,
            max_len: usize,
        ) -> Option<Box<dyn DecodeEngine<Self>>> {
            let spec = &model.spec;
            let float_ok = matches!(F::dtype(), DType::F32 | DType::BF16 | DType::F16);
            let client = model
                .model
                .embed_tokens
                .weight
                .val()
                .into_primitive()
                .tensor()
                .client;
            let vector = cache_vector(spec.head_dim, core::mem::size_of::<F>(), &client);
            if !float_ok
                || max_len > MAX_KEYS
                || !spec.head_dim.is_multiple_of(2)
                || spec.head_dim / vector > decode_attention::BLOCK
            {
                return None;
            }
            Some(Box::new(CubeDecodeEngine::new(
                model, slots, max_len, vector,
            )))
        }
    }

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>
        CubeDecodeEngine<R, F, I, BT>
    {
        /// `cache_vector`: the width [`cache_vector`] chose for this model and runtime.
        fn new(
            model: &CausalLm<Cube<R, F, I, BT>>,
            slots: usize,
            max_len: usize,
            cache_vector: usize,
        ) -> Self {
            let spec = model.spec.clone();
            let embed = model.model.embed_tokens.weight.val();
            let device = embed.device();
            let client = embed.clone().into_primitive().tensor().client.clone();
            let elem = core::mem::size_of::<F>();
            let max_keys = max_len
                .next_multiple_of(decode_attention::BLOCK)
                .max(decode_attention::BLOCK);
            let cache_bytes = slots * spec.num_kv_heads * max_len * spec.head_dim * elem;
            let layers = model
                .model
                .layers
                .iter()
                .map(|layer| {
                    let attn = &layer.self_attn;
                    let weight = |l: &burn::nn::Linear<Cube<R, F, I, BT>>| l.weight.val();
                    let qkv = Tensor::cat(
                        vec![
                            weight(&attn.q_proj),
                            weight(&attn.k_proj),
                            weight(&attn.v_proj),
                        ],
                        1,
                    );
                    let qkv_bias = match (&attn.q_proj.bias, &attn.k_proj.bias, &attn.v_proj.bias) {
                        (Some(q), Some(k), Some(v)) => {
                            Some(contiguous(Tensor::cat(vec![q.val(), k.val(), v.val()], 0)))
                        }
                        _ => None,
                    };
                    let gate_up = Tensor::cat(
                        vec![weight(&layer.mlp.gate_proj), weight(&layer.mlp.up_proj)],
                        1,
                    );
                    Layer {
                        input_norm: contiguous(layer.input_layernorm.weight.val()),
                        qkv: weight_matrix(qkv, &client),
                        qkv_bias,
                        q_norm: attn.q_norm.as_ref().map(|n| contiguous(n.weight.val())),
                        k_norm: attn.k_norm.as_ref().map(|n| contiguous(n.weight.val())),
                        o: weight_matrix(weight(&attn.o_proj), &client),
                        post_norm: contiguous(layer.post_attention_layernorm.weight.val()),
                        gate_up: weight_matrix(gate_up, &client),
                        down: weight_matrix(weight(&layer.mlp.down_proj), &client),
                        cache_k: client.empty(cache_bytes.max(elem)),
                        cache_v: client.empty(cache_bytes.max(elem)),
                    }
                })
                .collect();
            // The tied head is the embedding transposed, laid out [hidden, vocab] once per
            // generation (the weights change between generations).
            let head = match &model.lm_head {
                Some(head) => head.weight.val(),
                None => embed.clone().transpose(),
            };
            Self {
                none: client.empty(elem.max(4)),
                norm: contiguous(model.model.norm.weight.val()),
                head: weight_matrix(head, &client),
                cos: contiguous(model.rope.cos.clone()),
                sin: contiguous(model.rope.sin.clone()),
                max_keys,
                cache_vector,
                attention_group: attention_group(&spec, max_keys, cache_vector, &client),
                rope_positions: model.rope.len(),
                client,
                device,
                spec,
                embed,
                layers,
                slots,
                max_len,
            }
        }

        /// Elements of one layer's key (or value) cache.
        fn cache_len(&self) -> usize {
            (self.max_len * self.spec.num_kv_heads * self.spec.head_dim).max(1) * self.slots
        }

        fn upload_u32(&self, values: impl Iterator<Item = usize>) -> Handle {
            let values: Vec<u32> = values.map(|v| v as u32).collect();
            self.client.create_from_slice(u32::as_bytes(&values))
        }

        /// `out = epilogue(x [m, w.k] · w)` ([`product::product`]).
        fn product(
            &self,
            x: &Handle,
            w: &Weight,
            m: usize,
            bias: Option<&Handle>,
            mode: u32,
            out: &Handle,
        ) {
            product::product::<R, F>(&self.client, x, w, m, bias, &self.none, mode, out);
        }

        fn rms_norm(&self, x: &Handle, weight: &Handle, rows: usize, width: usize) -> Handle {
            let out = self.client.empty(rows * width * core::mem::size_of::<F>());
            rms_norm_kernel::launch::<F, R>(
                &self.client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(rms_norm::BLOCK as u32),
                array_arg::<R, F>(x, rows * width),
                array_arg::<R, F>(weight, width),
                array_arg::<R, F>(&out, rows * width),
                rows as u32,
                width as u32,
                self.spec.rms_norm_eps as f32,
                rms_norm::BLOCK,
            );
            out
        }
    }

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>
        DecodeEngine<Cube<R, F, I, BT>> for CubeDecodeEngine<R, F, I, BT>
    {
        fn load_prefill(&mut self, cache: &KvCache<Cube<R, F, I, BT>>, slots: &[Vec<usize>]) {
            let per_row = slots.first().map_or(0, Vec::len);
            debug_assert!(slots.iter().all(|s| s.len() == per_row));
            let slots_h = self.upload_u32(slots.iter().flatten().copied());
            let (kv, hd) = (self.spec.num_kv_heads, self.spec.head_dim);
            for (i, layer) in self.layers.iter().enumerate() {
                let Some(past) = cache.layer(i) else { continue };
                let [rows, _, len, _] = past.keys.dims();
                for (src, dst) in [(&past.keys, &layer.cache_k), (&past.values, &layer.cache_v)] {
                    let src = contiguous(src.clone());
                    let count = rows * kv * len * hd;
                    kv_copy_kernel::launch::<F, R>(
                        &self.client,
                        CubeCount::Static(count.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
                        CubeDim::new_1d(256),
                        array_arg::<R, F>(&src, count),
                        array_arg::<R, F>(dst, self.cache_len()),
                        array_arg::<R, u32>(&slots_h, (rows * per_row).max(1)),
                        per_row as u32,
                        kv as u32,
                        len as u32,
                        self.max_len as u32,
                        hd as u32,
                    );
                }
            }
        }

        fn step(
            &mut self,
            tokens: &[u32],
            positions: &[usize],
            slots: &[usize],
        ) -> Tensor<Cube<R, F, I, BT>, 2> {
            let m = tokens.len();
            let spec = &self.spec;
            let (h, kv, hd, d) = (
                spec.num_heads,
                spec.num_kv_heads,
                spec.head_dim,
                spec.hidden_size,
            );
            let elem = core::mem::size_of::<F>();
            let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
            let ids = Tensor::<Cube<R, F, I, BT>, 1, Int>::from_data(
                TensorData::new(ids, [m]),
                &self.device,
            );
            // The residual stream, updated in place by the epilogues.
            let hidden = contiguous(self.embed.clone().select(0, ids));
            let positions_h = self.upload_u32(positions.iter().copied());
            let slots_h = self.upload_u32(slots.iter().copied());
            let block = hd.next_power_of_two();
            let key_vector = self.cache_vector;
            let cache_len = self.cache_len();
            for layer in &self.layers {
                let x = self.rms_norm(&hidden, &layer.input_norm, m, d);
                let qkv = self.client.empty(m * layer.qkv.n * elem);
                self.product(
                    &x,
                    &layer.qkv,
                    m,
                    layer.qkv_bias.as_ref(),
                    epilogue::WRITE,
                    &qkv,
                );
                let q = self.client.empty(m * h * hd * elem);
                qkv_rope_cache_kernel::launch::<F, R>(
                    &self.client,
                    CubeCount::Static((h + 2 * kv) as u32, m as u32, 1),
                    CubeDim::new_1d(block as u32),
                    array_arg::<R, F>(&qkv, m * layer.qkv.n),
                    optional_array_arg::<R, F>(layer.q_norm.as_ref(), hd, &self.none),
                    optional_array_arg::<R, F>(layer.k_norm.as_ref(), hd, &self.none),
                    array_arg::<R, F>(&self.cos, self.rope_positions * hd),
                    array_arg::<R, F>(&self.sin, self.rope_positions * hd),
                    array_arg::<R, u32>(&positions_h, m),
                    array_arg::<R, u32>(&slots_h, m),
                    array_arg::<R, F>(&q, m * h * hd),
                    array_arg::<R, F>(&layer.cache_k, cache_len),
                    array_arg::<R, F>(&layer.cache_v, cache_len),
                    h as u32,
                    kv as u32,
                    self.max_len as u32,
                    spec.rms_norm_eps as f32,
                    hd,
                    block,
                    layer.q_norm.is_some(),
                );
                let attn = self.client.empty(m * h * hd * elem);
                decode_attention_kernel::launch::<F, R>(
                    &self.client,
                    CubeCount::Static((h / self.attention_group) as u32, m as u32, 1),
                    CubeDim::new_1d(decode_attention::BLOCK as u32),
                    key_vector,
                    array_arg::<R, F>(&q, m * h * hd),
                    array_arg::<R, F>(&layer.cache_k, cache_len),
                    array_arg::<R, F>(&layer.cache_v, cache_len),
                    array_arg::<R, u32>(&positions_h, m),
                    array_arg::<R, u32>(&slots_h, m),
                    array_arg::<R, F>(&attn, m * h * hd),
                    h as u32,
                    kv as u32,
                    self.max_len as u32,
                    1.0 / (hd as f32).sqrt(),
                    hd,
                    hd / key_vector,
                    self.max_keys,
                    self.attention_group,
                );
                self.product(&attn, &layer.o, m, None, epilogue::ADD, &hidden);
                let x = self.rms_norm(&hidden, &layer.post_norm, m, d);
                let act = self.client.empty(m * layer.gate_up.n / 2 * elem);
                self.product(&x, &layer.gate_up, m, None, epilogue::SWIGLU, &act);
                self.product(&act, &layer.down, m, None, epilogue::ADD, &hidden);
            }
            let x = self.rms_norm(&hidden, &self.norm, m, d);
            // One split: the partial product is the f32 logits (its rows past `m`, if any, cut).
            let partials = product::partials::<R, F>(&self.client, &x, &self.head, m, 1);
            let extra_rows = partials.rows - m;
            let logits = partials
                .handle
                .offset_end((extra_rows * self.head.n * 4) as u64);
            let tensor = CubeTensor::new_contiguous(
                self.client.clone(),
                self.device.clone(),
                [m, self.head.n].into(),
                logits,
                DType::F32,
            );
            Tensor::from_primitive(TensorPrimitive::Float(tensor))
        }

        fn sample(
            &mut self,
            logits: Tensor<Cube<R, F, I, BT>, 2>,
            uniforms: &[f64],
            temperature: f64,
        ) -> Result<Vec<(u32, f64)>, String> {
            let [rows, vocab] = logits.dims();
            let logits = contiguous(logits);
            let greedy = temperature <= 0.0;
            let uniforms: Vec<f32> = if greedy {
                vec![0.0; rows]
            } else {
                uniforms.iter().map(|&u| u as f32).collect()
            };
            let uniforms_h = self.client.create_from_slice(f32::as_bytes(&uniforms));
            let tokens_h = self.client.empty(rows.max(1) * 4);
            let logprobs_h = self.client.empty(rows.max(1) * 4);
            let inv_temperature = if greedy {
                1.0
            } else {
                (1.0 / temperature) as f32
            };
            sample_rows_kernel::launch::<R>(
                &self.client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(sample_rows::BLOCK as u32),
                array_arg::<R, f32>(&logits, rows * vocab),
                array_arg::<R, f32>(&uniforms_h, rows),
                array_arg::<R, u32>(&tokens_h, rows),
                array_arg::<R, f32>(&logprobs_h, rows),
                vocab as u32,
                inv_temperature,
                greedy,
            );
            let bytes =
                cubecl::future::block_on(self.client.read_async(vec![tokens_h, logprobs_h]))
                    .map_err(|e| format!("reading the sampled tokens: {e:?}"))?;
            let tokens = u32::from_bytes(&bytes[0]);
            let logprobs = f32::from_bytes(&bytes[1]);
            Ok(tokens
                .iter()
                .zip(logprobs)
                .take(rows)
                .map(|(&t, &l)| (t, f64::from(l)))
                .collect())
        }
    }
}
