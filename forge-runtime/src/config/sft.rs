use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Supervised fine-tuning on prompt/completion pairs (`recipe: sft`). The prompt comes from
/// `dataset.fields.prompt` (through the template and chat template), the target from
/// `dataset.fields.completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Passes over the dataset (training stops at `training.steps` if that comes first).
    #[schemars(range(min = 1))]
    pub epochs: u32,
    /// Train only on completion tokens; prompt tokens get no loss.
    pub mask_prompt: bool,
    /// Stop once held-out accuracy (evaluated every `dataset.eval.interval` steps) reaches this
    /// fraction. A warm start for RL wants a weak policy, and where a fixed step count lands on a
    /// steep learning curve depends on the seed; this lands near the same accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub stop_at_accuracy: Option<f64>,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            mask_prompt: true,
            stop_at_accuracy: None,
        }
    }
}
