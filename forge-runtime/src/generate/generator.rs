//! Batched generation: every prompt's prefill is computed once and its KV cache copied to each of
//! its samples; all samples of all prompts then decode together, left-padded to a common length.

use std::time::Instant;

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::engine::{DecodeBackend, DecodeEngine};
use super::sampling::{SamplingParams, mix_seed, sample};
use crate::model::{CausalLm, KvCache, attention_bias};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token or stop string.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    /// The completion's text (special tokens left out).
    pub text: String,
    /// The prompt it continues.
    pub prompt_ids: Vec<u32>,
    /// The sampled tokens, including the stop token when there is one.
    pub token_ids: Vec<u32>,
    /// log softmax(logits / temperature) of each sampled token over the whole vocabulary, under
    /// the policy that sampled it (see [`sample`]).
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// The version of the weights that generated it.
    pub policy_version: u64,
}

/// What can go wrong while generating.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A prompt has no tokens.
    #[error("prompt {0} is empty")]
    EmptyPrompt(usize),
    /// A prompt id is outside the vocabulary.
    #[error("prompt {prompt} holds token id {id}, outside the model's vocabulary of {vocab}")]
    BadToken {
        /// Which prompt.
        prompt: usize,
        /// The id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// Prompt plus completion would not fit the model's positions.
    #[error(
        "prompt {prompt} has {len} tokens; with {new} new tokens that exceeds the model's {max} positions"
    )]
    TooLong {
        /// Which prompt.
        prompt: usize,
        /// Its length.
        len: usize,
        /// `max_new_tokens`.
        new: usize,
        /// The model's limit.
        max: usize,
    },
    /// The device failed while sampling.
    #[error("sampling on the device: {0}")]
    Device(String),
    /// Decoding the sampled tokens failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// One sample being decoded.
struct Row {
    prompt: usize,
    sample: usize,
    /// Its slot in a decode engine's cache.
    slot: usize,
    rng: StdRng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// Keys this row must not attend to (its left padding), then `false` for each new position.
    padding: Vec<bool>,
}

/// Logits of the last position of `hidden` `[batch, seq, hidden]`, one host row per batch row.
fn last_logits<B: Backend>(model: &CausalLm<B>, hidden: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, s, _] = hidden.dims();
    let logits = model.logits(hidden.narrow(1, s - 1, 1));
    let vocab = logits.dims()[2];
    host_rows(logits.reshape([b, vocab]))
}

/// The rows of `logits` `[batch, vocab]` on the host.
fn host_rows<B: Backend>(logits: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [b, vocab] = logits.dims();
    let flat: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("converted to f32");
    (0..b)
        .map(|r| flat[r * vocab..(r + 1) * vocab].to_vec())
        .collect()
}

/// Token rows of one launch sequence of the decode engine's prefill: `FORGE_PREFILL_ROWS`, else
/// 2,048 (products large enough for cuBLAS's full speed, f32 partials of ~50 MB for a 0.6B
/// model's MLP). `FORGE_PREFILL_ENGINE=0` prefills through the generic model instead.
pub fn prefill_rows() -> usize {
    std::env::var("FORGE_PREFILL_ROWS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&r| r > 0)
        .unwrap_or(2048)
}

/// Elements of logits below which rows are sampled on the calling thread (threads cost more than
/// they save on the CPU demo's 14-token vocabulary).
const PARALLEL_SAMPLING_ELEMENTS: usize = 1 << 20;

/// One draw per row, each from its row's own random stream, so the result does not depend on how
/// rows are split over threads. Large batches run on all cores: a 151,936-token vocabulary at
/// batch 64 took 195 ms a decode step on one core (bench/NOTES.md).
fn sample_rows(logits: &[Vec<f32>], rows: &mut [Row], params: &SamplingParams) -> Vec<(u32, f64)> {
    let elements: usize = logits.iter().map(Vec::len).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows.len());
    if threads <= 1 || elements < PARALLEL_SAMPLING_ELEMENTS {
        return rows
            .iter_mut()
            .zip(logits)
            .map(|(row, l)| sample(l, params, &mut row.rng))
            .collect();
    }
    let chunk = rows.len().div_ceil(threads);
    let mut out = vec![(0u32, 0.0f64); rows.len()];
    std::thread::scope(|scope| {
        for ((rows, logits), out) in rows
            .chunks_mut(chunk)
            .zip(logits.chunks(chunk))
            .zip(out.chunks_mut(chunk))
        {
            scope.spawn(move || {
                for ((row, l), o) in rows.iter_mut().zip(logits).zip(out.iter_mut()) {
                    *o = sample(l, params, &mut row.rng);
                }
            });
        }
    });
    out
}

fn int_tensor<B: Backend>(
    values: Vec<i64>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// What to generate: `n` samples of each prompt.
#[derive(Debug, Clone)]
pub struct GenerateRequest<'a> {
    /// Prompt token ids.
    pub prompts: &'a [Vec<u32>],
    /// Samples per prompt.
    pub n: usize,
    /// How tokens are drawn.
    pub params: &'a SamplingParams,
    /// First random stream: sample `j` of prompt `i` draws from stream `seed_offset + i * n + j`
    /// of `params.seed`, so results do not depend on how prompts are batched.
    pub seed_offset: u64,
    /// Recorded on each completion.
    pub policy_version: u64,
}

/// Where a [`generate_timed`] call spent its wall time, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerateTiming {
    /// Issuing the model's forward passes (on a GPU backend, launching work; on the CPU, the work).
    pub model_s: f64,
    /// Waiting for the GPU and reading back its results: the last position's logits, or the
    /// tokens the decode engine drew on the device.
    pub logits_s: f64,
    /// Sampling on the host (softmax, draws, stop checks, decoding finished completions).
    pub sample_s: f64,
    /// Wall time from the decode engine's set-up through issuing the prompts' prefill and their
    /// first logits (its forward passes and reads are also in `model_s` and `logits_s`). Where
    /// the first token is drawn on the device nothing is read back here, so on a GPU the
    /// forward pass may still be running when this ends.
    pub prefill_s: f64,
}

impl std::ops::AddAssign for GenerateTiming {
    fn add_assign(&mut self, other: Self) {
        self.model_s += other.model_s;
        self.logits_s += other.logits_s;
        self.sample_s += other.sample_s;
        self.prefill_s += other.prefill_s;
    }
}

/// Samples `request.n` completions of each prompt. `stop_token_ids` in the parameters are used
/// together with the tokenizer's and the model config's end-of-sequence ids.
pub fn generate<B: DecodeBackend>(
    model: &CausalLm<B>,
    tokenizer: &Tokenizer,
    request: &GenerateRequest<'_>,
    device: &B::Device,
) -> Result<Vec<Vec<Completion>>, GenerateError> {
    generate_timed(model, tokenizer, request, device).map(|(completions, _)| completions)
}

/// [`generate`], also reporting where the time went.
pub fn generate_timed<B: DecodeBackend>(
    model: &CausalLm<B>,
    tokenizer: &Tokenizer,
    request: &GenerateRequest<'_>,
    device: &B::Device,
) -> Result<(Vec<Vec<Completion>>, GenerateTiming), GenerateError> {
    let mut timing = GenerateTiming::default();
    let GenerateRequest {
        prompts,
        n,
        params,
        seed_offset,
        policy_version,
    } = *request;
    let vocab = model.spec.vocab_size;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(GenerateError::EmptyPrompt(i));
        }
        if let Some(&id) = p.iter().find(|&&id| id as usize >= vocab) {
            return Err(GenerateError::BadToken {
                prompt: i,
                id,
                vocab,
            });
        }
        if p.len() + params.max_new_tokens > model.max_positions() {
            return Err(GenerateError::TooLong {
                prompt: i,
                len: p.len(),
                new: params.max_new_tokens,
                max: model.max_positions(),
            });
        }
    }
    let mut stop_ids: Vec<u32> = tokenizer.eos_token_ids().to_vec();
    stop_ids.extend(&params.stop_token_ids);
    stop_ids.extend(&model.spec.eos_token_ids);
    let mut out: Vec<Vec<Option<Completion>>> = prompts.iter().map(|_| vec![None; n]).collect();
    if prompts.is_empty() || n == 0 || params.max_new_tokens == 0 {
        return Ok((prompts.iter().map(|_| Vec::new()).collect(), timing));
    }

    // Prefill each prompt once.
    let prefill = Instant::now();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut engine = B::decode_engine(model, prompts.len() * n, longest + params.max_new_tokens);
    let mut caches = Vec::with_capacity(prompts.len());
    // One forward per group of equal-length prompts where the engine decodes (its cache has a slot
    // per sample, so no row needs padding): 64 prompts' prefill one at a time took over a third
    // of a decode benchmark (bench/NOTES.md). One per prompt for the generic model.
    let groups: Vec<Vec<usize>> = if engine.is_some() {
        equal_length_groups(prompts)
    } else {
        (0..prompts.len()).map(|i| vec![i]).collect()
    };
    let mut firsts: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
    // Where the engine samples on the device, so does the first token (no 64 x 151,936 logits
    // read back and drawn on the host): each group's last-position logits, and the prompts
    // they belong to, in that order.
    let device_sampling = params.top_k == 0 && params.top_p >= 1.0;
    let first_on_device = engine.is_some() && device_sampling;
    let mut device_firsts: Vec<Tensor<B, 2>> = Vec::new();
    let mut device_order: Vec<usize> = Vec::new();
    let engine_prefill = std::env::var("FORGE_PREFILL_ENGINE").as_deref() != Ok("0");
    for group in &groups {
        // The engine's cache slots of each prompt's samples.
        let slots: Vec<Vec<usize>> = group
            .iter()
            .map(|&i| (i * n..(i + 1) * n).collect())
            .collect();
        // The engine's own prefill where it has one: its products and attention, the cache
        // written where decoding reads it (no copy), no generic-model graph.
        if let Some(engine) = engine.as_mut().filter(|_| engine_prefill) {
            let group_prompts: Vec<&[u32]> = group.iter().map(|&i| prompts[i].as_slice()).collect();
            let t = Instant::now();
            let last = engine.prefill(&group_prompts, &slots, prefill_rows());
            timing.model_s += t.elapsed().as_secs_f64();
            if let Some(last) = last {
                if first_on_device {
                    device_firsts.push(last);
                    device_order.extend(group);
                } else {
                    let t = Instant::now();
                    for (&i, row) in group.iter().zip(host_rows(last)) {
                        firsts[i] = row;
                    }
                    timing.logits_s += t.elapsed().as_secs_f64();
                }
                continue;
            }
        }
        let (g, len) = (group.len(), prompts[group[0]].len());
        let ids: Vec<i64> = group
            .iter()
            .flat_map(|&i| prompts[i].iter().map(|&t| i64::from(t)))
            .collect();
        let positions: Vec<i64> = (0..g).flat_map(|_| 0..len as i64).collect();
        let bias = attention_bias::<B>(1, len, 0, None, device);
        let mut cache = KvCache::new(model.spec.num_layers);
        let t = Instant::now();
        let hidden = model.hidden(
            int_tensor::<B>(ids, [g, len], device),
            &int_tensor::<B>(positions, [g, len], device),
            &bias,
            Some(&mut cache),
        );
        timing.model_s += t.elapsed().as_secs_f64();
        if first_on_device {
            // The first token is drawn where the later ones are: the logits stay on the device.
            let [g, s, _] = hidden.dims();
            let last = model.logits(hidden.narrow(1, s - 1, 1));
            let vocab = last.dims()[2];
            device_firsts.push(last.reshape([g, vocab]));
            device_order.extend(group);
        } else {
            let t = Instant::now();
            for (&i, last) in group.iter().zip(last_logits(model, hidden)) {
                firsts[i] = last;
            }
            timing.logits_s += t.elapsed().as_secs_f64();
        }
        match engine.as_mut() {
            Some(engine) => engine.load_prefill(&cache, &slots),
            None => caches.push(
                cache
                    .left_pad(longest - len)
                    .select_rows(&vec![0; n], device),
            ),
        }
    }
    timing.prefill_s = prefill.elapsed().as_secs_f64();
    let mut rows = Vec::with_capacity(prompts.len() * n);
    let mut logits = Vec::with_capacity(prompts.len() * n);
    for (i, prompt) in prompts.iter().enumerate() {
        let len = prompt.len();
        for j in 0..n {
            let stream = seed_offset + (i * n + j) as u64;
            let mut padding = vec![true; longest - len];
            padding.resize(longest, false);
            rows.push(Row {
                prompt: i,
                sample: j,
                slot: i * n + j,
                rng: StdRng::seed_from_u64(mix_seed(params.seed, stream)),
                tokens: Vec::new(),
                logprobs: Vec::new(),
                padding,
            });
            logits.push(firsts[i].clone());
        }
    }
    let mut cache = KvCache::concat(caches);
    // The engine's logits, left on the device; drawn from there when no top-k / top-p needs the
    // host's sort.
    let mut on_device: Option<Tensor<B, 2>> = None;
    if first_on_device && !device_firsts.is_empty() {
        // Row `r` (prompt `i`, sample `j`) reads its prompt's row of the groups' logits.
        let mut at = vec![0usize; prompts.len()];
        for (k, &i) in device_order.iter().enumerate() {
            at[i] = k;
        }
        let picks: Vec<i64> = rows.iter().map(|r| at[r.prompt] as i64).collect();
        let count = picks.len();
        let firsts = Tensor::cat(device_firsts, 0)
            .select(
                0,
                int_tensor::<B>(picks, [1, count], device).reshape([count]),
            )
            .cast(burn::tensor::FloatDType::F32);
        on_device = Some(firsts);
    }

    let ends = Ends {
        stop_ids: &stop_ids,
        params,
        tokenizer,
        prompts,
        policy_version,
    };
    // Where the engine draws on the device, the loop that keeps a step queued ahead of the host
    // (`FORGE_DECODE_AHEAD=0`: one step at a time, to compare on one build).
    let ahead = device_sampling && std::env::var("FORGE_DECODE_AHEAD").as_deref() != Ok("0");
    if let (true, Some(engine)) = (ahead, engine.as_mut())
        && let Some(first) = on_device.take()
    {
        decode_ahead(engine.as_mut(), first, rows, &ends, &mut out, &mut timing)?;
        rows = Vec::new();
    }
    while !rows.is_empty() {
        // Sample one token per live row; finished rows leave the batch.
        let draws = match (on_device.take(), engine.as_mut()) {
            (Some(next), Some(engine)) if device_sampling => {
                let t = Instant::now();
                let all = 0..rows.len();
                let uniforms = uniforms(&mut rows, all, params.temperature);
                let draws = engine
                    .sample(next, &uniforms, params.temperature)
                    .map_err(GenerateError::Device)?;
                timing.logits_s += t.elapsed().as_secs_f64();
                draws
            }
            (next, _) => {
                if let Some(next) = next {
                    let t = Instant::now();
                    logits = host_rows(next);
                    timing.logits_s += t.elapsed().as_secs_f64();
                }
                let t = Instant::now();
                let draws = sample_rows(&logits, &mut rows, params);
                timing.sample_s += t.elapsed().as_secs_f64();
                draws
            }
        };
        let t = Instant::now();
        let mut keep = Vec::with_capacity(rows.len());
        let mut live = Vec::with_capacity(rows.len());
        debug_assert_eq!(draws.len(), rows.len());
        for (r, mut row) in rows.drain(..).enumerate() {
            let (token, logprob) = draws[r];
            match row.push(token, logprob, &ends)? {
                Some(completion) => out[row.prompt][row.sample] = Some(completion),
                None => {
                    keep.push(r);
                    live.push(row);
                }
            }
        }
        timing.sample_s += t.elapsed().as_secs_f64();
        rows = live;
        if rows.is_empty() {
            break;
        }
        // Feed the sampled tokens.
        if let Some(engine) = engine.as_mut() {
            let tokens: Vec<u32> = rows
                .iter()
                .map(|r| *r.tokens.last().expect("one token sampled"))
                .collect();
            let positions: Vec<usize> = rows
                .iter()
                .map(|r| prompts[r.prompt].len() + r.tokens.len() - 1)
                .collect();
            let slots: Vec<usize> = rows.iter().map(|r| r.slot).collect();
            let t = Instant::now();
            let next = engine.step(&tokens, &positions, &slots);
            timing.model_s += t.elapsed().as_secs_f64();
            on_device = Some(next);
            continue;
        }
        if keep.len() < cache.batch() {
            cache = cache.select_rows(&keep, device);
        }
        let batch = rows.len();
        let past = cache.len();
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| i64::from(*r.tokens.last().expect("one token sampled")))
            .collect();
        let positions: Vec<i64> = rows
            .iter()
            .map(|r| (prompts[r.prompt].len() + r.tokens.len() - 1) as i64)
            .collect();
        let mut padding = Vec::with_capacity(batch * (past + 1));
        for row in &mut rows {
            row.padding.push(false);
            padding.extend_from_slice(&row.padding);
        }
        let t = Instant::now();
        let bias = attention_bias::<B>(batch, 1, past, Some(&padding), device);
        let hidden = model.hidden(
            int_tensor::<B>(ids, [batch, 1], device),
            &int_tensor::<B>(positions, [batch, 1], device),
            &bias,
            Some(&mut cache),
        );
        timing.model_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        logits = last_logits(model, hidden);
        timing.logits_s += t.elapsed().as_secs_f64();
    }
    // Completions finish in any order; each went to its sample's slot.
    let completions = out
        .into_iter()
        .map(|samples| samples.into_iter().flatten().collect())
        .collect();
    Ok((completions, timing))
}

/// One number in [0, 1) for each row of `ids` from the row's own stream, as the host's sampler draws it, for
/// the device's draw; none when greedy.
fn uniforms(rows: &mut [Row], ids: impl Iterator<Item = usize>, temperature: f64) -> Vec<f64> {
    if temperature > 0.0 {
        ids.map(|i| rows[i].rng.random::<f64>()).collect()
    } else {
        Vec::new()
    }
}

/// What ends a row, and what a finished row becomes.
struct Ends<'a> {
    stop_ids: &'a [u32],
    params: &'a SamplingParams,
    tokenizer: &'a Tokenizer,
    prompts: &'a [Vec<u32>],
    policy_version: u64,
}

impl Row {
    /// Appends a drawn token; the row's completion where it ends the row.
    fn push(
        &mut self,
        token: u32,
        logprob: f64,
        ends: &Ends<'_>,
    ) -> Result<Option<Completion>, GenerateError> {
        self.tokens.push(token);
        self.logprobs.push(logprob as f32);
        let params = ends.params;
        let reason = if ends.stop_ids.contains(&token)
            || (!params.stop_strings.is_empty()
                && stop_string_hit(ends.tokenizer, &self.tokens, &params.stop_strings)?)
        {
            StopReason::Stop
        } else if self.tokens.len() >= params.max_new_tokens {
            StopReason::Length
        } else {
            return Ok(None);
        };
        Ok(Some(Completion {
            text: ends.tokenizer.decode(&self.tokens, true)?,
            prompt_ids: ends.prompts[self.prompt].clone(),
            token_ids: std::mem::take(&mut self.tokens),
            logprobs: std::mem::take(&mut self.logprobs),
            stop_reason: reason,
            policy_version: ends.policy_version,
        }))
    }
}

/// The decode loop where the engine draws every token on the device, from the prefill's logits
/// `first` (one row per row of `rows`) on: each step is issued before the draws of the step
/// before it are read, its tokens taken on the device ([`DecodeEngine::step_fed`]), so the GPU
/// never waits for the host's read, bookkeeping and launches. A row that ends on a stop token
/// is in the step already queued once more; that step's draw for it is dropped. Rows ending by
/// length are known ahead and left out. Each row draws its uniforms in the same order as the
/// one-step-at-a-time loop (one per token; a row that has ended may draw one more, from its own
/// stream), so the tokens are the same.
fn decode_ahead<B: DecodeBackend>(
    engine: &mut dyn DecodeEngine<B>,
    first: Tensor<B, 2>,
    mut rows: Vec<Row>,
    ends: &Ends<'_>,
    out: &mut [Vec<Option<Completion>>],
    timing: &mut GenerateTiming,
) -> Result<(), GenerateError> {
    let params = ends.params;
    let temperature = params.temperature;
    let t = Instant::now();
    let all: Vec<usize> = (0..rows.len()).collect();
    let u = uniforms(&mut rows, all.iter().copied(), temperature);
    let draw = engine
        .draw(first, &u, temperature)
        .map_err(GenerateError::Device)?;
    timing.model_s += t.elapsed().as_secs_f64();
    // The draw in flight and its rows (indices into `rows`), in the order it drew them.
    let mut pending = Some((draw, all));
    // Tokens each row has once every queued draw is read.
    let mut issued = vec![1usize; rows.len()];
    let mut ended = vec![false; rows.len()];
    while let Some((draw, order)) = pending.take() {
        // The next step first: the rows of `order` still going that need another token, each
        // fed the token this draw gives it.
        let t = Instant::now();
        let feed: Vec<usize> = (0..order.len())
            .filter(|&k| !ended[order[k]] && issued[order[k]] < params.max_new_tokens)
            .collect();
        if !feed.is_empty() {
            let ids: Vec<usize> = feed.iter().map(|&k| order[k]).collect();
            let positions: Vec<usize> = ids
                .iter()
                .map(|&i| ends.prompts[rows[i].prompt].len() + issued[i] - 1)
                .collect();
            let slots: Vec<usize> = ids.iter().map(|&i| rows[i].slot).collect();
            let logits = engine.step_fed(&feed, &positions, &slots);
            for &i in &ids {
                issued[i] += 1;
            }
            let u = uniforms(&mut rows, ids.iter().copied(), temperature);
            let next = engine
                .draw(logits, &u, temperature)
                .map_err(GenerateError::Device)?;
            pending = Some((next, ids));
        }
        timing.model_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let draws = draw.wait().map_err(GenerateError::Device)?;
        timing.logits_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (&i, &(token, logprob)) in order.iter().zip(&draws) {
            if ended[i] {
                continue;
            }
            if let Some(completion) = rows[i].push(token, logprob, ends)? {
                out[rows[i].prompt][rows[i].sample] = Some(completion);
                ended[i] = true;
            }
        }
        timing.sample_s += t.elapsed().as_secs_f64();
    }
    Ok(())
}

/// Most prompts prefilled in one forward pass (bounds the attention scores' memory).
const PREFILL_GROUP: usize = 64;

/// Indices of `prompts` grouped by length, at most [`PREFILL_GROUP`] per group.
fn equal_length_groups(prompts: &[Vec<u32>]) -> Vec<Vec<usize>> {
    let mut by_length: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, p) in prompts.iter().enumerate() {
        by_length.entry(p.len()).or_default().push(i);
    }
    by_length
        .into_values()
        .flat_map(|group| {
            group
                .chunks(PREFILL_GROUP)
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether the decoded tail of `tokens` contains a stop string. Only the text the last token
/// could have completed is searched.
fn stop_string_hit(
    tokenizer: &Tokenizer,
    tokens: &[u32],
    stops: &[String],
) -> Result<bool, TokenizerError> {
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    // A token spans at least one byte, so `longest` tokens back covers any match ending now.
    let from = tokens.len().saturating_sub(longest + 1);
    let text = tokenizer.decode(&tokens[from..], false)?;
    Ok(stops
        .iter()
        .any(|s| !s.is_empty() && text.contains(s.as_str())))
}

/// A checkpoint loaded for sampling on the CPU, as `forge generate` does. Not generic, so a caller
/// in another crate links this crate's compiled model instead of instantiating it again.
pub struct CpuGenerator {
    model: CausalLm<burn::backend::NdArray<f32>>,
}

impl CpuGenerator {
    /// Loads a Hugging Face checkpoint directory in f32.
    pub fn load(dir: &std::path::Path) -> Result<Self, crate::model::ModelError> {
        Ok(Self {
            model: crate::model::load(dir, &Default::default())?,
        })
    }

    /// [`generate`] with this model.
    pub fn generate(
        &self,
        tokenizer: &Tokenizer,
        request: &GenerateRequest<'_>,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        generate(&self.model, tokenizer, request, &Default::default())
    }
}

#[cfg(test)]
mod sampling_rows_tests {
    use super::*;

    fn rows(count: usize) -> Vec<Row> {
        (0..count)
            .map(|i| Row {
                prompt: 0,
                sample: i,
                slot: i,
                rng: StdRng::seed_from_u64(mix_seed(7, i as u64)),
                tokens: Vec::new(),
                logprobs: Vec::new(),
                padding: Vec::new(),
            })
            .collect()
    }

    /// Rows large enough for the threaded path draw what one thread draws, row by row.
    #[test]
    fn threaded_sampling_draws_what_one_thread_draws() {
        let vocab = 150_000;
        let logits: Vec<Vec<f32>> = (0..9)
            .map(|r| {
                (0..vocab)
                    .map(|j| ((j * 7919 + r * 104_729) % 1000) as f32 / 97.0)
                    .collect()
            })
            .collect();
        assert!(logits.len() * vocab >= PARALLEL_SAMPLING_ELEMENTS);
        let params = SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            ..SamplingParams::default()
        };
        let threaded = sample_rows(&logits, &mut rows(9), &params);
        let mut one = rows(9);
        let sequential: Vec<(u32, f64)> = one
            .iter_mut()
            .zip(&logits)
            .map(|(row, l)| sample(l, &params, &mut row.rng))
            .collect();
        assert_eq!(threaded, sequential);
        let distinct: std::collections::HashSet<u32> = threaded.iter().map(|d| d.0).collect();
        assert!(distinct.len() > 1, "rows draw from their own streams");
    }
}
