use serde_json::{Map, Value};

/// What a reward function sees of one episode.
#[derive(Debug, Clone, Copy)]
pub struct RewardInput<'a> {
    /// The prompt as shown to the model (after templates).
    pub prompt: &'a str,
    /// The generated completion.
    pub completion: &'a str,
    /// The reference answer (`dataset.fields.answer`), empty when the record has none.
    pub answer: &'a str,
    /// Every field of the dataset record.
    pub sample: &'a Sample,
}

/// A reward function with its parameters bound, ready to score episodes.
pub trait RewardFn: Send + Sync {
    /// Scores one episode.
    fn score(&self, input: &RewardInput<'_>) -> f32;
}

/// A dataset record: its fields by name.
pub type Sample = Map<String, Value>;
