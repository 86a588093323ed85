//! The shape of a checkpoint, read from Hugging Face's `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::config::Architecture;

/// Llama 3's RoPE frequency scaling (`rope_scaling` with `rope_type: llama3`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// Overall wavelength stretch.
    pub factor: f64,
    /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled.
    pub low_freq_factor: f64,
    /// Wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context length the model was pre-trained with.
    pub original_max_position_embeddings: f64,
}

/// Everything the transformer needs to know about a checkpoint's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Which family's layer details apply.
    pub architecture: Architecture,
    /// Rows of the embedding and of the output projection.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama 3 RoPE scaling, if the checkpoint uses it.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Longest position the RoPE tables cover.
    pub max_position_embeddings: usize,
    /// The output projection reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (Qwen2; Llama's `attention_bias`).
    pub attention_bias: bool,
    /// RMSNorm over each query and key head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// End-of-sequence ids named by `config.json`.
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence id named by `config.json`.
    pub bos_token_id: Option<u32>,
}

/// `config.json` as transformers writes it (the fields Forge reads).
#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5 folds `rope_theta` and `rope_scaling` into this.
    rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    eos_token_id: Option<IdOrIds>,
    bos_token_id: Option<IdOrIds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdOrIds {
    One(u32),
    Many(Vec<u32>),
}

impl IdOrIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            IdOrIds::One(id) => vec![id],
            IdOrIds::Many(ids) => ids,
        }
    }
}

fn default_eps() -> f64 {
    1e-6
}

fn default_max_positions() -> usize {
    4096
}

impl ModelSpec {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&text).map_err(|message| ModelError::Config { path, message })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let hf: HfConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let architecture = Architecture::from_model_type(&hf.model_type).ok_or_else(|| {
            format!(
                "model_type `{}` is not supported (Forge implements llama, qwen2, qwen3)",
                hf.model_type
            )
        })?;
        if hf.num_attention_heads == 0
            || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) && hf.head_dim.is_none()
        {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        if num_kv_heads == 0 || !hf.num_attention_heads.is_multiple_of(num_kv_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({num_kv_heads})",
                hf.num_attention_heads
            ));
        }
        // transformers 5 moves the RoPE settings into `rope_parameters`; 4.x has them at the top.
        let rope = hf.rope_parameters.as_ref().or(hf.rope_scaling.as_ref());
        let rope_theta = hf
            .rope_theta
            .or_else(|| {
                rope.and_then(|r| r.get("rope_theta"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(10_000.0);
        let rope_scaling = match rope {
            Some(r) => parse_rope_scaling(r)?,
            None => None,
        };
        Ok(Self {
            architecture,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: hf.max_position_embeddings,
            // transformers' default is tied; Llama and Qwen2 configs say so explicitly when not.
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(true),
            attention_bias: match architecture {
                Architecture::Qwen2 => true,
                _ => hf.attention_bias.unwrap_or(false),
            },
            qk_norm: architecture == Architecture::Qwen3,
            eos_token_ids: hf.eos_token_id.map(IdOrIds::into_vec).unwrap_or_default(),
            bos_token_id: hf.bos_token_id.and_then(|b| b.into_vec().first().copied()),
        })
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// `config.json` text that transformers loads back into the same model.
    pub fn to_hf_json(&self) -> String {
        let (model_type, class) = match self.architecture {
            Architecture::Llama => ("llama", "LlamaForCausalLM"),
            Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            _ => ("qwen3", "Qwen3ForCausalLM"),
        };
        let mut config = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        let object = config.as_object_mut().expect("a JSON object literal");
        if self.architecture == Architecture::Llama {
            object.insert("attention_bias".into(), self.attention_bias.into());
            object.insert("mlp_bias".into(), false.into());
        }
        if let Some(s) = self.rope_scaling {
            object.insert(
                "rope_scaling".into(),
                serde_json::json!({
                    "rope_type": "llama3",
                    "factor": s.factor,
                    "low_freq_factor": s.low_freq_factor,
                    "high_freq_factor": s.high_freq_factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                }),
            );
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                object.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                object.insert("eos_token_id".into(), many.into());
            }
        }
        if let Some(bos) = self.bos_token_id {
            object.insert("bos_token_id".into(), bos.into());
        }
        serde_json::to_string_pretty(&config).expect("JSON values serialise")
    }
}

fn parse_rope_scaling(r: &serde_json::Value) -> Result<Option<Llama3RopeScaling>, String> {
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let field = |name: &str| {
                r.get(name)
                    .and_then(|v| v.as_f64())
                    .ok_or_else(|| format!("rope_scaling of type llama3 needs a number `{name}`"))
            };
            Ok(Some(Llama3RopeScaling {
                factor: field("factor")?,
                low_freq_factor: field("low_freq_factor")?,
                high_freq_factor: field("high_freq_factor")?,
                original_max_position_embeddings: field("original_max_position_embeddings")?,
            }))
        }
        other => Err(format!(
            "rope_scaling type `{other}` is not supported (Forge implements default and llama3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qwen3_and_llama_configs() {
        let q = ModelSpec::from_json(
            r#"{"model_type":"qwen3","vocab_size":512,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
            "rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":true,"eos_token_id":3}"#,
        )
        .unwrap();
        assert_eq!((q.group_size(), q.head_dim, q.qk_norm), (2, 16, true));
        assert_eq!(q.eos_token_ids, vec![3]);
        let l = ModelSpec::from_json(
            r#"{"model_type":"llama","vocab_size":512,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"tie_word_embeddings":false,
            "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":32}}"#,
        )
        .unwrap();
        assert_eq!(l.rope_theta, 500000.0);
        assert_eq!(l.head_dim, 16);
        assert_eq!(l.num_kv_heads, 4);
        assert!(l.rope_scaling.is_some());
        // Round trip through the JSON Forge writes.
        assert_eq!(ModelSpec::from_json(&l.to_hf_json()).unwrap(), l);
        assert_eq!(ModelSpec::from_json(&q.to_hf_json()).unwrap(), q);
    }

    #[test]
    fn rejects_unknown_families_and_bad_heads() {
        let e = ModelSpec::from_json(
            r#"{"model_type":"gpt2","vocab_size":5,"hidden_size":4,"intermediate_size":4,
            "num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(e.contains("gpt2"), "{e}");
        let e = ModelSpec::from_json(
            r#"{"model_type":"llama","vocab_size":5,"hidden_size":4,"intermediate_size":4,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3}"#,
        )
        .unwrap_err();
        assert!(e.contains("multiple"), "{e}");
    }
}
