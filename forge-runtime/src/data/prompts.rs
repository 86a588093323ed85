//! Records into prompts: the dataset's prompt template, the system prompt, the chat template.

use super::DataError;
use super::records::field_text;
use crate::config::{DatasetConfig, TokenizerConfig};
use crate::reward::Sample;
use crate::tokenizer::{ChatMessage, Tokenizer};

/// A prompt ready for the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The user prompt before the chat template (what reward functions see as the prompt).
    pub text: String,
    /// Token ids of the full model input (chat template applied).
    pub ids: Vec<u32>,
}

/// Turns records into prompts.
#[derive(Debug)]
pub struct PromptBuilder {
    template: Option<minijinja::Environment<'static>>,
    prompt_field: String,
    system_prompt: Option<String>,
    use_chat_template: bool,
    chat_kwargs: serde_json::Map<String, serde_json::Value>,
}

impl PromptBuilder {
    /// A builder for `dataset` and `tokenizer` settings.
    pub fn new(dataset: &DatasetConfig, tokenizer: &TokenizerConfig) -> Result<Self, DataError> {
        let template = match &dataset.prompt_template {
            Some(source) => {
                let mut env = minijinja::Environment::new();
                env.add_template_owned("prompt", source.clone())
                    .map_err(|e| DataError::Template(e.to_string()))?;
                Some(env)
            }
            None => None,
        };
        Ok(Self {
            template,
            prompt_field: dataset.fields.prompt.clone(),
            system_prompt: dataset.system_prompt.clone(),
            use_chat_template: tokenizer.use_chat_template,
            chat_kwargs: tokenizer.chat_template_kwargs.clone(),
        })
    }

    /// The user prompt of a record: the template rendered with the record's fields, or the prompt
    /// field as is.
    pub fn prompt_text(&self, fields: &Sample) -> Result<String, DataError> {
        match &self.template {
            Some(env) => env
                .get_template("prompt")
                .and_then(|t| t.render(fields))
                .map_err(|e| DataError::Template(e.to_string())),
            None => Ok(field_text(fields, &self.prompt_field)),
        }
    }

    /// The model input for a user prompt. With a chat template (and `use_chat_template`), the
    /// system prompt and the user turn go through it with the generation prompt added; without one,
    /// the system prompt (if any) and the prompt are joined by a newline and tokenized with the
    /// tokenizer's own special tokens (e.g. a BOS).
    pub fn encode(&self, text: &str, tokenizer: &Tokenizer) -> Result<Vec<u32>, DataError> {
        if self.use_chat_template && tokenizer.has_chat_template() {
            let mut messages = Vec::new();
            if let Some(system) = &self.system_prompt {
                messages.push(ChatMessage::new("system", system.clone()));
            }
            messages.push(ChatMessage::new("user", text));
            let rendered = tokenizer.apply_chat_template(&messages, true, &self.chat_kwargs)?;
            Ok(tokenizer.encode(&rendered, false)?)
        } else {
            let full = match &self.system_prompt {
                Some(system) => format!("{system}\n{text}"),
                None => text.to_string(),
            };
            Ok(tokenizer.encode(&full, true)?)
        }
    }

    /// The prompt of a record.
    pub fn build(&self, fields: &Sample, tokenizer: &Tokenizer) -> Result<Prompt, DataError> {
        let text = self.prompt_text(fields)?;
        let ids = self.encode(&text, tokenizer)?;
        Ok(Prompt { text, ids })
    }
}
