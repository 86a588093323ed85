//! Choosing the next token from one row of logits.

use rand::RngExt;
use rand::rngs::StdRng;

/// How tokens are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches `top_p` (1: off).
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (0: off).
    pub top_k: usize,
    /// Most new tokens per completion.
    pub max_new_tokens: usize,
    /// Ids that end a completion (kept as its last token).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end a completion once its text contains them.
    pub stop_strings: Vec<String>,
    /// Seed of the run; each sample draws from its own stream derived from it.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 64,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// The temperature the recorded logprobs are under: the sampling temperature, or 1 when
    /// greedy.
    pub fn logprob_temperature(&self) -> f64 {
        if self.temperature > 0.0 {
            self.temperature
        } else {
            1.0
        }
    }
}

/// SplitMix64: turns (seed, stream) into well-spread seeds for independent streams.
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// log softmax(logits / temperature) at `token`, in f64.
pub fn logprob_of(logits: &[f32], token: usize, temperature: f64) -> f64 {
    let max = logits
        .iter()
        .map(|&x| f64::from(x) / temperature)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits
        .iter()
        .map(|&x| (f64::from(x) / temperature - max).exp())
        .sum();
    f64::from(logits[token]) / temperature - max - sum.ln()
}

/// Draws a token from `logits` and returns it with its log-probability under
/// softmax(logits / T) over the whole vocabulary (T: [`SamplingParams::logprob_temperature`]).
/// top-k and top-p change which tokens can be drawn, not the recorded log-probability: that is the
/// quantity the trainer recomputes from its own forward pass.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut StdRng) -> (u32, f64) {
    let t = params.logprob_temperature();
    let token = if params.temperature <= 0.0 {
        argmax(logits)
    } else {
        draw(logits, params, rng)
    };
    (token as u32, logprob_of(logits, token, t))
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

fn draw(logits: &[f32], params: &SamplingParams, rng: &mut StdRng) -> usize {
    let t = params.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut candidates: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i, (f64::from(x - max) / t).exp()))
        .collect();
    let truncating = params.top_k > 0 || params.top_p < 1.0;
    if truncating {
        // Descending probability; ties by id, so results do not depend on the sort's stability.
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if params.top_k > 0 {
            candidates.truncate(params.top_k);
        }
        if params.top_p < 1.0 {
            let total: f64 = candidates.iter().map(|c| c.1).sum();
            let mut acc = 0.0;
            let mut keep = candidates.len();
            for (i, c) in candidates.iter().enumerate() {
                acc += c.1 / total;
                if acc >= params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep);
        }
    }
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    let mut u = rng.random::<f64>() * total;
    for &(i, w) in &candidates {
        if u < w {
            return i;
        }
        u -= w;
    }
    candidates.last().map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn greedy_takes_the_largest_logit_and_reports_its_logprob() {
        let logits = [0.5f32, 2.0, -1.0, 1.0];
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        let (tok, lp) = sample(&logits, &p, &mut rng);
        assert_eq!(tok, 1);
        let z: f64 = logits.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((lp - (2.0 - z.ln())).abs() < 1e-12);
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, 1.0, 2.0];
        let p = SamplingParams {
            temperature: 2.0,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0usize; 3];
        let draws = 60_000;
        for _ in 0..draws {
            counts[sample(&logits, &p, &mut rng).0 as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let expected = logprob_of(&logits, i, 2.0).exp();
            let got = c as f64 / draws as f64;
            assert!(
                (got - expected).abs() < 0.01,
                "token {i}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support_not_the_logprob() {
        let logits = [3.0f32, 2.95, 0.0, -1.0, -2.0];
        let mut rng = StdRng::seed_from_u64(2);
        let k = SamplingParams {
            top_k: 2,
            ..Default::default()
        };
        let p = SamplingParams {
            top_p: 0.5,
            ..Default::default()
        };
        for _ in 0..2000 {
            let (tok, lp) = sample(&logits, &k, &mut rng);
            assert!(tok < 2);
            assert!((lp - logprob_of(&logits, tok as usize, 1.0)).abs() < 1e-12);
            // The first token alone has ~0.48 < 0.5, so top-p keeps two.
            assert!(sample(&logits, &p, &mut rng).0 < 2);
        }
    }

    #[test]
    fn streams_are_distinct() {
        assert_ne!(mix_seed(1, 0), mix_seed(1, 1));
        assert_ne!(mix_seed(1, 0), mix_seed(2, 0));
    }
}
