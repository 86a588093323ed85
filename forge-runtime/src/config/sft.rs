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
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            mask_prompt: true,
        }
    }
}
