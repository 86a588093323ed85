//! Rotary position embeddings in Hugging Face's `rotate_half` layout (the first and second halves
//! of a head rotate together), with Llama 3's frequency scaling.

use burn::prelude::*;

use super::spec::{Llama3RopeScaling, ModelSpec};

/// The inverse frequencies of one head, as transformers computes them.
pub fn inverse_frequencies(spec: &ModelSpec) -> Vec<f64> {
    let d = spec.head_dim;
    let base: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / spec.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    match spec.rope_scaling {
        None => base,
        Some(s) => base.into_iter().map(|f| llama3_scale(f, &s)).collect(),
    }
}

/// Llama 3: long wavelengths are stretched by `factor`, short ones kept, the band between them
/// interpolated.
fn llama3_scale(freq: f64, s: &Llama3RopeScaling) -> f64 {
    let low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / s.factor
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

/// cos and sin tables, `[positions, head_dim]`, each frequency repeated over both halves.
#[derive(Module, Debug)]
pub struct RopeTables<B: Backend> {
    /// cos(position * frequency).
    pub cos: Tensor<B, 2>,
    /// sin(position * frequency).
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> RopeTables<B> {
    /// Tables for positions `0..positions`.
    pub fn new(spec: &ModelSpec, positions: usize, device: &B::Device) -> Self {
        let freqs = inverse_frequencies(spec);
        let d = spec.head_dim;
        let mut cos = Vec::with_capacity(positions * d);
        let mut sin = Vec::with_capacity(positions * d);
        for p in 0..positions {
            for _half in 0..2 {
                for &f in &freqs {
                    // transformers multiplies in f32; so do we, so long contexts agree too.
                    let angle = (p as f32) * (f as f32);
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [positions, d]), device),
            sin: Tensor::from_data(TensorData::new(sin, [positions, d]), device),
        }
    }

    /// Number of positions covered.
    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Whether the tables are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` at `positions` `[batch, seq]`.
    pub fn apply(&self, x: Tensor<B, 4>, positions: &Tensor<B, 2, Int>) -> Tensor<B, 4> {
        let [b, _, s, d] = x.dims();
        let flat = positions.clone().reshape([b * s]);
        let cos = self
            .cos
            .clone()
            .select(0, flat.clone())
            .reshape([b, 1, s, d]);
        let sin = self.sin.clone().select(0, flat).reshape([b, 1, s, d]);
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Architecture;

    fn spec(scaling: Option<Llama3RopeScaling>) -> ModelSpec {
        ModelSpec {
            architecture: Architecture::Llama,
            vocab_size: 8,
            hidden_size: 64,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 64,
            rms_norm_eps: 1e-6,
            rope_theta: 500_000.0,
            rope_scaling: scaling,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
            eos_token_ids: vec![],
            bos_token_id: None,
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32.0,
        };
        let plain = inverse_frequencies(&spec(None));
        let scaled = inverse_frequencies(&spec(Some(s)));
        assert_eq!(plain[0], scaled[0]); // wavelength 2π < 8: kept
        let last = plain.len() - 1; // wavelength far above 32: divided by the factor
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-18);
        // In the band, between the two.
        let mid = plain
            .iter()
            .position(|&f| {
                let w = 2.0 * std::f64::consts::PI / f;
                (8.0..=32.0).contains(&w)
            })
            .unwrap();
        assert!(scaled[mid] < plain[mid] && scaled[mid] > plain[mid] / 8.0);
    }
}
