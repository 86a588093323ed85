use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the generator samples completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Group size: completions sampled per prompt. Group-relative advantages need at least 2.
    #[schemars(range(min = 1, max = 4096))]
    pub n: u32,
    /// Most new tokens per completion; longer ones stop with reason `length`.
    #[schemars(range(min = 1))]
    pub max_tokens: u32,
    /// Softmax temperature. The logprobs the generator records, and the trainer recomputes, are
    /// under this temperature.
    #[schemars(range(min = 0.0001, max = 100.0))]
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    #[schemars(range(min = 0.0001, max = 1.0))]
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (0: no limit).
    pub top_k: u32,
    /// Strings that end a completion when generated (the string is kept in the text).
    pub stop: Vec<String>,
    /// Token ids that end a completion, in addition to the tokenizer's end-of-sequence tokens.
    pub stop_token_ids: Vec<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            n: 8,
            max_tokens: 512,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
        }
    }
}
