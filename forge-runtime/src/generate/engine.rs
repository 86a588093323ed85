//! The decode engine: one new token for each of many sequences per step, on a backend that has
//! one (burn's cubecl backend: CUDA, or wgpu), with the model's weights as they are on the device,
//! a KV cache and a workspace allocated once for the whole generation, and eight kernel launches
//! per layer (q/k/v product; attention, which first sums the product's splits and applies the
//! q/k norm, RoPE and the cache write for the new token; o product; residual add with RMSNorm;
//! gate/up product; SwiGLU; down product; residual add with the next RMSNorm). On CUDA each step
//! is replayed as a CUDA graph (`kernels::cuda_graph`) and the products run through cuBLAS on
//! cubecl's stream (`product::CublasProducts`). Tokens are drawn on the device and fed to the
//! next step there, so the generator queues a step before reading the previous one's draws.
//!
//! Why: the generic model decodes through ~3,000 burn operations per step (slices, concatenations
//! of the growing cache, one matmul kernel per projection tuned for large products), 233 ms per
//! step of 64 sequences on an H200; then cubecl's host cost per launch (~6.7 us) bounded the
//! engine's own launches, then the host's round trips between steps (bench/NOTES.md). The
//! prompts' prefill runs through the same step with many positions per sequence
//! ([`DecodeEngine::prefill`]; RoPE and the cache write in their own launch there), writing the
//! cache where decoding reads it.

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

    /// The prefill of equal-length `prompts` through the engine's own step, at most `max_rows`
    /// token rows a launch sequence (earlier positions first): each prompt's keys and values
    /// land in every slot of `slots[b]`, and the logits `[prompts, vocab]` (f32) of each
    /// prompt's last position come back, left on the device. `None` where the engine cannot
    /// (prompts of different or too long lengths): then the generic model's prefill and
    /// [`DecodeEngine::load_prefill`].
    fn prefill(
        &mut self,
        _prompts: &[&[u32]],
        _slots: &[Vec<usize>],
        _max_rows: usize,
    ) -> Option<Tensor<B, 2>> {
        None
    }

    /// Feeds token `tokens[r]` at position `positions[r]` to the sequence in slot `slots[r]` and
    /// returns the next-token logits `[rows, vocab]` in f32.
    fn step(&mut self, tokens: &[u32], positions: &[usize], slots: &[usize]) -> Tensor<B, 2>;

    /// [`DecodeEngine::step`] where row `r`'s token is the one the last [`DecodeEngine::draw`]
    /// drew for its row `feed[r]`, taken on the device: the step can be issued before that
    /// draw has been read back.
    fn step_fed(&mut self, feed: &[usize], positions: &[usize], slots: &[usize]) -> Tensor<B, 2>;

    /// Draws one token per row of `logits` (from [`DecodeEngine::step`]) on the device, without
    /// copying the logits to the host: row `r` with `uniforms[r]` (in [0, 1), from the row's own
    /// random stream, as the host's sampler uses it), or the most likely token when `temperature`
    /// is 0. Each token comes with log softmax(logits / T) at it (T = 1 when greedy). No top-k
    /// or top-p: the caller samples on the host when those are set. Returns once the draw is
    /// queued; the draws stay on the device for [`DecodeEngine::step_fed`], and their copy to
    /// the host is waited for by [`PendingDraws::wait`] (where the runtime allows, without
    /// waiting for work queued after this call).
    fn draw(
        &mut self,
        logits: Tensor<B, 2>,
        uniforms: &[f64],
        temperature: f64,
    ) -> Result<PendingDraws, String>;

    /// [`DecodeEngine::draw`], waited for.
    fn sample(
        &mut self,
        logits: Tensor<B, 2>,
        uniforms: &[f64],
        temperature: f64,
    ) -> Result<Vec<(u32, f64)>, String> {
        self.draw(logits, uniforms, temperature)?.wait()
    }
}

/// Draws of [`DecodeEngine::draw`] on their way to the host.
pub struct PendingDraws(Box<dyn FnOnce() -> DrawResult>);

/// Each row's token with its log-probability, or why they could not be read.
pub type DrawResult = Result<Vec<(u32, f64)>, String>;

impl PendingDraws {
    /// Draws already on the host.
    pub fn ready(draws: Vec<(u32, f64)>) -> Self {
        Self(Box::new(move || Ok(draws)))
    }

    /// Waits for the draws: each row's token with its log-probability.
    pub fn wait(self) -> DrawResult {
        (self.0)()
    }
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
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_cubecl::element::BoolElement;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
    use cubecl::prelude::*;
    use cubecl::server::Handle;

    use super::{DecodeBackend, DecodeEngine, PendingDraws};
    use crate::kernels::args::{array_arg, optional_array_arg};
    use crate::kernels::decode::add_rms_norm::{self, add_rms_norm_kernel};
    use crate::kernels::decode::decode_attention::{self, decode_attention_kernel};
    use crate::kernels::decode::embed_rows::{self, embed_rows_kernel};
    use crate::kernels::decode::kv_copy::{kv_copy_kernel, kv_slot_copy_kernel};
    use crate::kernels::decode::launch;
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

    /// The buffers a decode step works in, allocated once per engine for its largest step, so
    /// that a step allocates nothing (what a recorded CUDA graph needs: its buffers must outlive
    /// it and stay where they are).
    struct Workspace {
        /// Rows every buffer holds.
        rows: usize,
        /// Most splits of `k` a product's partials may have here (a decode step's small
        /// products split to fill the GPU; a prefill's large ones need not, and would write
        /// partials many times the product's size).
        max_splits: usize,
        /// The residual stream `[rows, hidden]`, updated in place by the epilogues.
        hidden: Handle,
        /// A normalised copy of the residual stream.
        x: Handle,
        /// Queries after norm and RoPE, `[rows, heads * head_dim]`.
        q: Handle,
        /// Attention's output, same shape.
        attn: Handle,
        /// SwiGLU's output `[rows, intermediate]`.
        act: Handle,
        /// f32 partial products, large enough for any product of a step.
        partials: Handle,
        /// f32 logits `[rows rounded up to 16, vocab]`.
        logits: Handle,
        /// The tokens row `r` of a step reads at `feed[r]`: written by the host, or drawn by
        /// the sampling kernel (which the next step then reads without a trip to the host).
        tokens: Handle,
        /// The step's inputs, one u32 per row: where its token is in `tokens`, its position,
        /// its cache slot.
        feed: Handle,
        positions: Handle,
        slots: Handle,
        /// The sampling kernel's log-probabilities, one f32 per row.
        logprobs: Handle,
    }

    /// The engine on burn's cubecl backend.
    pub struct CubeDecodeEngine<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> {
        client: ComputeClient<R>,
        device: R::Device,
        spec: ModelSpec,
        /// The embedding table `[vocab, hidden]`, contiguous.
        embed: Handle,
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
        /// Value rows in flight per team of the attention kernel's value pass.
        value_batch: usize,
        /// Units per attention cube.
        attention_block: usize,
        /// Whether a decode step's attention computes the new token's q/k/v itself (norms,
        /// RoPE, the cache write: one launch a layer fewer). Needs each key/value head's whole
        /// query group in one cube and a power-of-two head size; `FORGE_DECODE_FUSED_ROPE=0`
        /// keeps the separate kernel (to compare on one build).
        new_token: bool,
        /// Units per sampling cube.
        sample_block: usize,
        /// Positions the RoPE tables cover.
        rope_positions: usize,
        work: Workspace,
        /// The step's launches recorded as CUDA graphs, one per padded row count, where the
        /// runtime is CUDA (`kernels::cuda_graph`).
        #[cfg(feature = "cuda")]
        graphs: Option<crate::kernels::cuda_graph::StepGraphs>,
        /// Device addresses of the workspace's token, feed, position and slot buffers, then its
        /// log-probabilities (with graphs).
        #[cfg(feature = "cuda")]
        input_addresses: [u64; 5],
        /// The products through cuBLAS on cubecl's stream, where the runtime is CUDA (else the
        /// tensor-core or CUDA-core kernels); taken out after a failure, for the rest of the
        /// engine's life (the failed product reruns on the kernels).
        #[cfg(feature = "cuda")]
        cublas: std::cell::Cell<Option<product::CublasProducts>>,
        /// Steps issued so far (the first runs without a graph).
        steps: usize,
        /// The element types the engine's kernels and logits are made for.
        types: core::marker::PhantomData<(F, I, BT)>,
    }

    /// Rows the tensor-core products and the logits are padded to.
    const ROW_TILE: usize = 16;

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

    /// Shared memory a cube may declare here: [`SHARED_LIMIT`], or less where the runtime has
    /// less.
    fn shared_limit<R: CubeRuntime>(client: &ComputeClient<R>) -> usize {
        SHARED_LIMIT.min(client.properties().hardware.max_shared_memory_size)
    }

    /// Query heads per attention cube: all the heads of a key/value head's group when their
    /// scores fit in shared memory (the cache read once per group), one otherwise.
    /// `FORGE_DECODE_ATTENTION_GROUP=1` keeps one head a cube (to compare on one build).
    fn attention_group<R: CubeRuntime>(
        spec: &ModelSpec,
        block: usize,
        max_keys: usize,
        cache_vector: usize,
        client: &ComputeClient<R>,
    ) -> usize {
        let ratio = spec.num_heads / spec.num_kv_heads.max(1);
        let limit = shared_limit(client);
        let key_vectors = spec.head_dim / cache_vector;
        let fits = decode_attention::shared_bytes(
            block,
            ratio,
            spec.head_dim,
            key_vectors,
            max_keys,
            false,
        ) <= limit;
        let forced_one = std::env::var("FORGE_DECODE_ATTENTION_GROUP").as_deref() == Ok("1");
        if ratio > 1 && fits && !forced_one {
            ratio
        } else {
            1
        }
    }

    /// Units per sampling cube: [`sample_rows::block`], halved until the runtime takes a cube
    /// that large and its shared memory fits.
    fn sample_block<R: CubeRuntime>(vocab: usize, client: &ComputeClient<R>) -> usize {
        let hardware = &client.properties().hardware;
        let limit = shared_limit(client);
        let width = sample_vector(vocab);
        let mut block = sample_rows::block();
        while block > 32
            && (block > hardware.max_units_per_cube as usize
                || sample_rows::shared_bytes(block, width, false) > limit)
        {
            block /= 2;
        }
        block
    }

    /// Logits per vector the sampling kernel reads: four where the vocabulary allows (every
    /// model we load).
    fn sample_vector(vocab: usize) -> usize {
        if vocab.is_multiple_of(4) { 4 } else { 1 }
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
                || spec.head_dim / vector > decode_attention::block()
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
            // One slot more than asked: the scratch slot that padded rows of a recorded step
            // write their keys and values to.
            let cache_bytes = (slots + 1) * spec.num_kv_heads * max_len * spec.head_dim * elem;
            let layers: Vec<Layer> = model
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
            let head = weight_matrix(head, &client);
            let work =
                Workspace::new::<F>(&client, &spec, (&layers, &head), slots, usize::MAX, None);
            #[cfg(feature = "cuda")]
            let graphs = crate::kernels::cuda_graph::StepGraphs::new(&client, &device);
            #[cfg(feature = "cuda")]
            let input_addresses = match &graphs {
                Some(g) => [
                    &work.tokens,
                    &work.feed,
                    &work.positions,
                    &work.slots,
                    &work.logprobs,
                ]
                .map(|h| g.address(h).unwrap_or(0)),
                None => [0; 5],
            };
            #[cfg(feature = "cuda")]
            let graphs = graphs.filter(|_| !input_addresses.contains(&0));
            let attention_block = decode_attention::block();
            let group = attention_group(&spec, attention_block, max_keys, cache_vector, &client);
            let new_token = {
                let limit = shared_limit(&client);
                let bytes = decode_attention::shared_bytes(
                    attention_block,
                    group,
                    spec.head_dim,
                    spec.head_dim / cache_vector,
                    max_keys,
                    true,
                );
                group * spec.num_kv_heads == spec.num_heads
                    && spec.head_dim.is_power_of_two()
                    && bytes <= limit
                    && std::env::var("FORGE_DECODE_FUSED_ROPE").as_deref() != Ok("0")
            };
            #[cfg(feature = "cuda")]
            let cublas =
                std::cell::Cell::new(product::CublasProducts::new::<R, F>(&client, &device));
            Self {
                none: client.empty(elem.max(4)),
                norm: contiguous(model.model.norm.weight.val()),
                head,
                cos: contiguous(model.rope.cos.clone()),
                sin: contiguous(model.rope.sin.clone()),
                max_keys,
                cache_vector,
                attention_group: group,
                attention_block,
                new_token,
                sample_block: sample_block(spec.vocab_size, &client),
                rope_positions: model.rope.len(),
                value_batch: decode_attention::value_batch(),
                embed: contiguous(embed),
                client,
                device,
                spec,
                layers,
                slots,
                max_len,
                work,
                #[cfg(feature = "cuda")]
                graphs,
                #[cfg(feature = "cuda")]
                input_addresses,
                #[cfg(feature = "cuda")]
                cublas,
                steps: 0,
                types: core::marker::PhantomData,
            }
        }

        /// Elements of one layer's key (or value) cache (the scratch slot included).
        fn cache_len(&self) -> usize {
            (self.max_len * self.spec.num_kv_heads * self.spec.head_dim).max(1) * (self.slots + 1)
        }

        fn upload_u32(&self, values: impl Iterator<Item = usize>) -> Handle {
            let values: Vec<u32> = values.map(|v| v as u32).collect();
            self.client.create_from_slice(u32::as_bytes(&values))
        }

        /// `x [m, w.k] · w` as f32 partials in `work`, in at most its `max_splits`.
        fn partials(
            &self,
            work: &Workspace,
            x: &Handle,
            w: &Weight,
            m: usize,
        ) -> product::Partials {
            self.partials_into(x, w, m, work.max_splits, work.partials.clone())
        }

        /// `x [m, w.k] · w` as at most `max_splits` f32 partials in `out`: through cuBLAS where
        /// the engine has it, else the decode kernels.
        fn partials_into(
            &self,
            x: &Handle,
            w: &Weight,
            m: usize,
            max_splits: usize,
            out: Handle,
        ) -> product::Partials {
            #[cfg(feature = "cuda")]
            if let Some(cublas) = self.cublas.get() {
                let splits = w.cublas_splits_within(max_splits);
                match cublas.partials(&self.client, x, w, m, splits, out.clone()) {
                    Ok(partials) => return partials,
                    Err(e) => {
                        eprintln!(
                            "decode engine: cuBLAS products off for this engine ({e}); \
                             the decode kernels run them"
                        );
                        self.cublas.set(None);
                    }
                }
            }
            product::partials_into::<R, F>(
                &self.client,
                x,
                w,
                m,
                max_splits,
                product::MmaLaunch::DEFAULT,
                out,
            )
        }

        /// `work`'s residual stream plus the summed `partials`, then its RMSNorm with `weight`
        /// into `work.x` ([`add_rms_norm_kernel`]).
        fn add_rms_norm(
            &self,
            work: &Workspace,
            partials: &product::Partials,
            weight: &Handle,
            m: usize,
        ) {
            let d = self.spec.hidden_size;
            let block = add_rms_norm::block(d);
            launch!(add_rms_norm_kernel::<F, R>(
                &self.client,
                CubeCount::Static(m as u32, 1, 1),
                CubeDim::new_1d(block as u32),
                array_arg::<R, f32>(&partials.handle, partials.splits * partials.rows * d),
                array_arg::<R, F>(&work.hidden, m * d),
                array_arg::<R, F>(weight, d),
                array_arg::<R, F>(&work.x, m * d),
                partials.rows as u32,
                d as u32,
                self.spec.rms_norm_eps as f32,
                partials.splits,
                block,
                add_rms_norm::per_unit(d),
            ));
        }

        /// `out = RMSNorm(x) * weight`, row by row.
        fn rms_norm(&self, x: &Handle, weight: &Handle, rows: usize, width: usize, out: &Handle) {
            launch!(rms_norm_kernel::<F, R>(
                &self.client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(rms_norm::BLOCK as u32),
                array_arg::<R, F>(x, rows * width),
                array_arg::<R, F>(weight, width),
                array_arg::<R, F>(out, rows * width),
                rows as u32,
                width as u32,
                self.spec.rms_norm_eps as f32,
                rms_norm::BLOCK,
            ));
        }

        /// Issues one decode step over `w` for its first `m` rows: the inputs are in its feed
        /// (where each row's token is in its token buffer), position and slot buffers; the logits of its first `head_rows` rows land in its
        /// logits buffer. Allocates, uploads and reads nothing, so it can be recorded as a
        /// graph. Every row attends to its slot's cache up to its own position, written by this
        /// step where the position is one of its rows': so a step may also hold many positions
        /// of one sequence (a prefill, [`DecodeEngine::prefill`]). Where `distinct_slots` (no
        /// two rows of one sequence, a decode step), attention computes each row's new q/k/v
        /// itself when the engine can (`new_token`).
        fn issue(&self, w: &Workspace, m: usize, head_rows: usize, distinct_slots: bool) {
            let spec = &self.spec;
            let (h, kv, hd, d) = (
                spec.num_heads,
                spec.num_kv_heads,
                spec.head_dim,
                spec.hidden_size,
            );
            launch!(embed_rows_kernel::<F, R>(
                &self.client,
                CubeCount::Static((m * d).div_ceil(embed_rows::BLOCK).max(1) as u32, 1, 1),
                CubeDim::new_1d(embed_rows::BLOCK as u32),
                array_arg::<R, F>(&self.embed, spec.vocab_size * d),
                array_arg::<R, u32>(&w.tokens, (w.tokens.size_in_used() / 4) as usize),
                array_arg::<R, u32>(&w.feed, m),
                array_arg::<R, F>(&w.hidden, m * d),
                m as u32,
                d as u32,
            ));
            let block = hd.next_power_of_two();
            let key_vector = self.cache_vector;
            let cache_len = self.cache_len();
            // The first layer's input norm; every later norm is fused with the residual add
            // before it.
            if let Some(first) = self.layers.first() {
                self.rms_norm(&w.hidden, &first.input_norm, m, d, &w.x);
            }
            for (i, layer) in self.layers.iter().enumerate() {
                // q/k/v: partials only; their sum (and bias) is taken by attention itself, or
                // by the RoPE kernel before it.
                let qkv = self.partials(w, &w.x, &layer.qkv, m);
                let qkv_len = qkv.splits * qkv.rows * layer.qkv.n;
                let new_token = self.new_token && distinct_slots;
                if !new_token {
                    launch!(qkv_rope_cache_kernel::<F, R>(
                        &self.client,
                        CubeCount::Static((h + 2 * kv) as u32, m as u32, 1),
                        CubeDim::new_1d(block as u32),
                        array_arg::<R, f32>(&qkv.handle, qkv_len),
                        optional_array_arg::<R, F>(
                            layer.qkv_bias.as_ref(),
                            layer.qkv.n,
                            &self.none
                        ),
                        optional_array_arg::<R, F>(layer.q_norm.as_ref(), hd, &self.none),
                        optional_array_arg::<R, F>(layer.k_norm.as_ref(), hd, &self.none),
                        array_arg::<R, F>(&self.cos, self.rope_positions * hd),
                        array_arg::<R, F>(&self.sin, self.rope_positions * hd),
                        array_arg::<R, u32>(&w.positions, m),
                        array_arg::<R, u32>(&w.slots, m),
                        array_arg::<R, F>(&w.q, m * h * hd),
                        array_arg::<R, F>(&layer.cache_k, cache_len),
                        array_arg::<R, F>(&layer.cache_v, cache_len),
                        h as u32,
                        kv as u32,
                        self.max_len as u32,
                        spec.rms_norm_eps as f32,
                        qkv.splits as u32,
                        qkv.rows as u32,
                        hd,
                        block,
                        layer.q_norm.is_some(),
                        layer.qkv_bias.is_some(),
                    ));
                }
                launch!(decode_attention_kernel::<F, R>(
                    &self.client,
                    CubeCount::Static((h / self.attention_group) as u32, m as u32, 1),
                    CubeDim::new_1d(self.attention_block as u32),
                    key_vector,
                    array_arg::<R, F>(&w.q, m * h * hd),
                    array_arg::<R, F>(&layer.cache_k, cache_len),
                    array_arg::<R, F>(&layer.cache_v, cache_len),
                    array_arg::<R, u32>(&w.positions, m),
                    array_arg::<R, u32>(&w.slots, m),
                    array_arg::<R, F>(&w.attn, m * h * hd),
                    array_arg::<R, f32>(&qkv.handle, qkv_len),
                    optional_array_arg::<R, F>(layer.qkv_bias.as_ref(), layer.qkv.n, &self.none),
                    optional_array_arg::<R, F>(layer.q_norm.as_ref(), hd, &self.none),
                    optional_array_arg::<R, F>(layer.k_norm.as_ref(), hd, &self.none),
                    array_arg::<R, F>(&self.cos, self.rope_positions * hd),
                    array_arg::<R, F>(&self.sin, self.rope_positions * hd),
                    h as u32,
                    kv as u32,
                    self.max_len as u32,
                    1.0 / (hd as f32).sqrt(),
                    spec.rms_norm_eps as f32,
                    qkv.splits as u32,
                    qkv.rows as u32,
                    hd,
                    hd / key_vector,
                    self.max_keys,
                    self.attention_group,
                    self.value_batch,
                    self.attention_block,
                    new_token,
                    layer.q_norm.is_some(),
                    layer.qkv_bias.is_some(),
                ));
                // o: the residual add fused with the post-attention norm.
                let o = self.partials(w, &w.attn, &layer.o, m);
                self.add_rms_norm(w, &o, &layer.post_norm, m);
                let gate_up = self.partials(w, &w.x, &layer.gate_up, m);
                product::finish::<R, F>(
                    &self.client,
                    &gate_up,
                    &layer.gate_up,
                    m,
                    None,
                    &self.none,
                    epilogue::SWIGLU,
                    &w.act,
                );
                // down: the residual add fused with the next layer's input norm (the final
                // norm after the last layer).
                let down = self.partials(w, &w.act, &layer.down, m);
                let next_norm = self
                    .layers
                    .get(i + 1)
                    .map_or(&self.norm, |next| &next.input_norm);
                self.add_rms_norm(w, &down, next_norm, m);
            }
            if self.layers.is_empty() {
                self.rms_norm(&w.hidden, &self.norm, m, d, &w.x);
            }
            // One split: the partial product is the f32 logits.
            if head_rows > 0 {
                self.partials_into(&w.x, &self.head, head_rows, 1, w.logits.clone());
            }
        }

        /// Rows a step of `m` sequences runs: `m` rounded up to a multiple of 16 (the
        /// tensor-core products' row tile, so the padding costs their products nothing; with
        /// graphs, one graph per padded count, at most `slots / 16` of them). The extra rows
        /// decode token 0 at position 0 into the scratch slot.
        fn padded_rows(&self, m: usize) -> usize {
            m.next_multiple_of(ROW_TILE).min(self.work.rows)
        }

        /// A step of [`DecodeEngine::step`] (`tokens` written by the host) or
        /// [`DecodeEngine::step_fed`] (`tokens` as the last draw left them).
        fn run_step(
            &mut self,
            tokens: Option<&[u32]>,
            feed: &[usize],
            positions: &[usize],
            slots: &[usize],
        ) -> Tensor<Cube<R, F, I, BT>, 2> {
            let m = feed.len();
            let rows = self.padded_rows(m);
            // Padded rows decode token 0 (a host-written token buffer's padding, or whatever the
            // first row drew) at position 0 into the scratch slot.
            let pad = |values: Vec<u32>, fill: u32| {
                let mut values = values;
                values.resize(rows, fill);
                values
            };
            let inputs = [
                tokens.map(|t| pad(t.to_vec(), 0)),
                Some(pad(feed.iter().map(|&f| f as u32).collect(), 0)),
                Some(pad(positions.iter().map(|&p| p as u32).collect(), 0)),
                Some(pad(
                    slots.iter().map(|&s| s as u32).collect(),
                    self.slots as u32,
                )),
            ];
            #[cfg(feature = "cuda")]
            let ran = self.run_graph(rows, &inputs);
            #[cfg(not(feature = "cuda"))]
            let ran = false;
            if !ran {
                self.work.upload_inputs(&self.client, inputs);
                self.issue(&self.work, rows, rows, true);
            }
            self.steps += 1;
            // Valid until the next step.
            self.logits_view(&self.work, m)
        }

        /// The f32 logits of `work`'s first `m` rows, a view of its logits buffer.
        fn logits_view(&self, work: &Workspace, m: usize) -> Tensor<Cube<R, F, I, BT>, 2> {
            let vocab = self.head.n;
            let logits = work.logits.clone();
            let bytes = logits.size_in_used();
            let view = logits.offset_end(bytes - (m * vocab * 4) as u64);
            let tensor = CubeTensor::new_contiguous(
                self.client.clone(),
                self.device.clone(),
                [m, vocab].into(),
                view,
                DType::F32,
            );
            Tensor::from_primitive(TensorPrimitive::Float(tensor))
        }

        /// Writes the step's inputs into the workspace and issues it: through a recorded graph
        /// where there is one (recording it first if this row count has none yet), else through
        /// cubecl's launches. Returns whether a graph ran it.
        #[cfg(feature = "cuda")]
        fn run_graph(&mut self, rows: usize, inputs: &[Option<Vec<u32>>; 4]) -> bool {
            let Some(mut graphs) = self.graphs.take() else {
                return false;
            };
            let copies = self
                .input_addresses
                .iter()
                .zip(inputs)
                .filter_map(|(&a, v)| v.as_ref().map(|v| (a, u32::as_bytes(v).to_vec())))
                .collect();
            let mut ran = graphs.write(copies).map(|()| false);
            if self.steps > 0 {
                ran = ran.and_then(|_| {
                    if !graphs.has(rows) {
                        graphs.record(rows, || self.issue(&self.work, rows, rows, true))?;
                    }
                    graphs.replay(rows).map(|()| true)
                });
            }
            match ran {
                Ok(true) => {
                    self.graphs = Some(graphs);
                    true
                }
                Ok(false) => {
                    // The first step: through cubecl, settling the buffers' streams.
                    self.graphs = Some(graphs);
                    self.issue(&self.work, rows, rows, true);
                    true
                }
                Err(e) => {
                    eprintln!(
                        "decode engine: CUDA graphs off for this generation ({e}); \
                         set FORGE_DECODE_GRAPHS=0 to skip them"
                    );
                    false
                }
            }
        }
    }

    impl Workspace {
        /// Uploads a step's inputs (token, feed, position, slot; `None` keeps a buffer as it
        /// is) into new buffers of this workspace: where no graph holds its buffers' addresses.
        /// The token buffer gets a row for every row of the workspace (a later draw may write
        /// any of them; rows past the values are token 0).
        fn upload_inputs(
            &mut self,
            client: &ComputeClient<impl CubeRuntime>,
            [tokens, feed, positions, slots]: [Option<Vec<u32>>; 4],
        ) {
            let tokens = tokens.map(|mut t| {
                t.resize(self.rows.max(t.len()), 0);
                t
            });
            for (buffer, values) in [
                (&mut self.tokens, tokens),
                (&mut self.feed, feed),
                (&mut self.positions, positions),
                (&mut self.slots, slots),
            ] {
                if let Some(values) = values {
                    *buffer = client.create_from_slice(u32::as_bytes(&values));
                }
            }
        }

        /// Buffers for steps of up to `slots` rows (rounded up to 16) of `spec`'s model, their
        /// products in at most `max_splits` splits, logits for up to `logit_rows` rows (all
        /// rows where `None`).
        fn new<F: FloatElement>(
            client: &ComputeClient<impl CubeRuntime>,
            spec: &ModelSpec,
            (layers, head): (&[Layer], &Weight),
            slots: usize,
            max_splits: usize,
            logit_rows: Option<usize>,
        ) -> Self {
            let rows = slots.max(1).next_multiple_of(ROW_TILE);
            let logit_rows = logit_rows.map_or(rows, |r| r.next_multiple_of(ROW_TILE).min(rows));
            let elem = core::mem::size_of::<F>();
            let buffer = |elements: usize| client.empty(elements.max(1) * elem);
            let u32s = || client.empty(rows * 4);
            // Fewer rows can mean more splits: the largest need over every row count a step
            // may have (a multiple of 16, `padded_rows`), for every product.
            let partials = layers
                .iter()
                .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
                .flat_map(|w| {
                    (ROW_TILE..=rows)
                        .step_by(ROW_TILE)
                        .map(move |m| product::partials_bytes(w, m, max_splits))
                })
                .max()
                .unwrap_or(4);
            let act_n = layers.first().map_or(1, |l| l.gate_up.n / 2);
            let q = rows * spec.num_heads * spec.head_dim;
            Self {
                rows,
                max_splits,
                hidden: buffer(rows * spec.hidden_size),
                x: buffer(rows * spec.hidden_size),
                q: buffer(q),
                attn: buffer(q),
                act: buffer(rows * act_n),
                partials: client.empty(partials),
                logits: client.empty(product::partials_bytes(head, logit_rows, 1)),
                tokens: u32s(),
                feed: u32s(),
                positions: u32s(),
                slots: u32s(),
                logprobs: u32s(),
            }
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
                    launch!(kv_copy_kernel::<F, R>(
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
                    ));
                }
            }
        }

        fn prefill(
            &mut self,
            prompts: &[&[u32]],
            slots: &[Vec<usize>],
            max_rows: usize,
        ) -> Option<Tensor<Cube<R, F, I, BT>, 2>> {
            let g = prompts.len();
            let len = prompts.first()?.len();
            let fits = |s: &Vec<usize>| !s.is_empty() && s.iter().all(|&s| s < self.slots);
            if len == 0
                || len > self.max_len
                || prompts.iter().any(|p| p.len() != len)
                || slots.len() != g
                || !slots.iter().all(fits)
            {
                return None;
            }
            // Positions a launch sequence holds, each for every prompt.
            let per_chunk = (max_rows / g).clamp(1, len);
            let mut work = Workspace::new::<F>(
                &self.client,
                &self.spec,
                (&self.layers, &self.head),
                g * per_chunk,
                1,
                Some(g),
            );
            let mut start = 0;
            while start < len {
                let end = (start + per_chunk).min(len);
                // Last position first: in the last chunk the first `g` rows are the prompts'
                // last positions, the rows the head's product reads.
                let (mut tokens, mut positions, mut row_slots) =
                    (Vec::new(), Vec::new(), Vec::new());
                for p in (start..end).rev() {
                    for (prompt, s) in prompts.iter().zip(slots) {
                        tokens.push(prompt[p]);
                        positions.push(p as u32);
                        row_slots.push(s[0] as u32);
                    }
                }
                // Padded rows decode token 0 at position 0 into the scratch slot, as a step's.
                let rows = tokens.len().next_multiple_of(ROW_TILE).min(work.rows);
                positions.resize(rows, 0);
                row_slots.resize(rows, self.slots as u32);
                let feed: Vec<u32> = (0..rows as u32).collect();
                work.upload_inputs(
                    &self.client,
                    [Some(tokens), Some(feed), Some(positions), Some(row_slots)],
                );
                self.issue(&work, rows, if end == len { g } else { 0 }, false);
                start = end;
            }
            // The other samples' slots get a copy of the first's cache.
            let pairs: Vec<u32> = slots
                .iter()
                .flat_map(|s| s[1..].iter().flat_map(move |&t| [s[0] as u32, t as u32]))
                .collect();
            if !pairs.is_empty() {
                let count = pairs.len() / 2;
                let pairs_h = self.client.create_from_slice(u32::as_bytes(&pairs));
                let (kv, hd) = (self.spec.num_kv_heads, self.spec.head_dim);
                let elements = count * kv * len * hd;
                for layer in &self.layers {
                    for cache in [&layer.cache_k, &layer.cache_v] {
                        launch!(kv_slot_copy_kernel::<F, R>(
                            &self.client,
                            CubeCount::Static(elements.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
                            CubeDim::new_1d(256),
                            array_arg::<R, F>(cache, self.cache_len()),
                            array_arg::<R, u32>(&pairs_h, pairs.len()),
                            count as u32,
                            kv as u32,
                            len as u32,
                            self.max_len as u32,
                            hd as u32,
                        ));
                    }
                }
            }
            Some(self.logits_view(&work, g))
        }

        fn step(
            &mut self,
            tokens: &[u32],
            positions: &[usize],
            slots: &[usize],
        ) -> Tensor<Cube<R, F, I, BT>, 2> {
            let feed: Vec<usize> = (0..tokens.len()).collect();
            self.run_step(Some(tokens), &feed, positions, slots)
        }

        fn step_fed(
            &mut self,
            feed: &[usize],
            positions: &[usize],
            slots: &[usize],
        ) -> Tensor<Cube<R, F, I, BT>, 2> {
            self.run_step(None, feed, positions, slots)
        }

        fn draw(
            &mut self,
            logits: Tensor<Cube<R, F, I, BT>, 2>,
            uniforms: &[f64],
            temperature: f64,
        ) -> Result<PendingDraws, String> {
            let [rows, vocab] = logits.dims();
            if rows > self.work.rows {
                return Err(format!(
                    "{rows} rows to draw for an engine of {} slots",
                    self.work.rows
                ));
            }
            let logits = contiguous(logits);
            let greedy = temperature <= 0.0;
            let uniforms: Vec<f32> = if greedy {
                vec![0.0; rows]
            } else {
                uniforms.iter().map(|&u| u as f32).collect()
            };
            let uniforms_h = self.client.create_from_slice(f32::as_bytes(&uniforms));
            // Into the workspace: the next step reads its tokens there.
            let (tokens_h, logprobs_h) = (self.work.tokens.clone(), self.work.logprobs.clone());
            let inv_temperature = if greedy {
                1.0
            } else {
                (1.0 / temperature) as f32
            };
            let vector = sample_vector(vocab);
            launch!(sample_rows_kernel::<R>(
                &self.client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(self.sample_block as u32),
                vector,
                array_arg::<R, f32>(&logits, rows * vocab),
                array_arg::<R, f32>(&uniforms_h, rows),
                array_arg::<R, u32>(&tokens_h, rows),
                array_arg::<R, f32>(&logprobs_h, rows),
                vocab as u32,
                inv_temperature,
                greedy,
                self.sample_block,
            ));
            let pair = move |tokens: &[u32], logprobs: &[f32]| -> Vec<(u32, f64)> {
                tokens
                    .iter()
                    .zip(logprobs)
                    .take(rows)
                    .map(|(&t, &l)| (t, f64::from(l)))
                    .collect()
            };
            // On CUDA with graphs: a copy queued on the stream, waited for alone.
            #[cfg(feature = "cuda")]
            if let Some(graphs) = self.graphs.as_mut() {
                let [tokens_at, .., logprobs_at] = self.input_addresses;
                let bytes = rows * 4;
                match graphs.queue_read(&[(tokens_at, bytes), (logprobs_at, bytes)]) {
                    Ok(read) => {
                        return Ok(PendingDraws(Box::new(move || {
                            let bytes = read
                                .wait()
                                .map_err(|e| format!("reading the sampled tokens: {e}"))?;
                            let (t, l) = bytes.split_at(rows * 4);
                            Ok(pair(u32::from_bytes(t), f32::from_bytes(l)))
                        })));
                    }
                    Err(e) => return Err(format!("queueing the sampled tokens' read: {e}")),
                }
            }
            let bytes =
                cubecl::future::block_on(self.client.read_async(vec![tokens_h, logprobs_h]))
                    .map_err(|e| format!("reading the sampled tokens: {e:?}"))?;
            Ok(PendingDraws::ready(pair(
                u32::from_bytes(&bytes[0]),
                f32::from_bytes(&bytes[1]),
            )))
        }
    }
}
