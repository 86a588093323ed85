use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Episodes waiting to be trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayBufferConfig {
    /// Off-by-n: the most policy versions an episode may lag the trainer's weights. 0: strictly
    /// on-policy, each step samples with the current weights and then trains. 1 or more: the next
    /// step's batch is sampled, scored and given reference logprobs on a thread of its own while
    /// the trainer trains on the current one, with the weights of the step's start (so one
    /// version old when trained on; `training.sync_interval`, at most this value, refreshes those
    /// weights less often). The generator never runs further ahead, so no episode is older than
    /// allowed; a batch made ahead under a looser setting and restored from a checkpoint is
    /// evicted and sampled again.
    pub max_policy_age: u32,
    /// Most episodes held: at least `training.batch_size` when `max_policy_age` is 1 or more (the
    /// batch made ahead for the next step).
    #[schemars(range(min = 1))]
    pub capacity: u32,
}

impl Default for ReplayBufferConfig {
    fn default() -> Self {
        Self {
            max_policy_age: 1,
            capacity: 4096,
        }
    }
}
