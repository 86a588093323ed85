//! One trainable episode: a prompt, a completion, its score and where it came from.

/// A scored completion with its advantage, as the trainer consumes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Completion token ids.
    pub completion_ids: Vec<u32>,
    /// The generator's log-probabilities of the completion tokens.
    pub generator_logprobs: Vec<f32>,
    /// The reference model's log-probabilities of the completion tokens (when KL is on).
    pub ref_logprobs: Option<Vec<f32>>,
    /// The summed reward.
    pub reward: f32,
    /// The group-relative advantage.
    pub advantage: f32,
    /// The completion hit the token limit.
    pub truncated: bool,
    /// Weights version that generated it.
    pub policy_version: u64,
    /// Which group (prompt) it belongs to.
    pub group: usize,
}
