//! Tokenizers and chat templates of Hugging Face model directories.
//!
//! [`Tokenizer::from_dir`] reads what `transformers`' `AutoTokenizer` reads: `tokenizer.json` (the
//! `tokenizers` pipeline), `tokenizer_config.json` (chat template and special tokens),
//! `special_tokens_map.json` (older special-token declarations), `chat_template.jinja` (newer
//! checkpoints keep the template there) and `generation_config.json` (extra end-of-sequence ids).
//! [`Tokenizer::apply_chat_template`] renders a conversation the way `apply_chat_template(...,
//! tokenize=False)` does; see [`chat_template`] for the environment templates run in.
//!
//! [`train_char_tokenizer`] builds a character-level tokenizer in code, for small synthetic tasks.

pub mod chat_template;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use tokenizers::AddedToken;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::fixed_length::FixedLength;

pub use chat_template::ChatTemplate;

/// Why a tokenizer could not be loaded or built, or could not encode, decode or render.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required file does not exist.
    #[error("{}: file not found", path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `tokenizer.json` could not be parsed by the `tokenizers` crate.
    #[error("{}: cannot load tokenizer: {source}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// What `tokenizers` said.
        source: tokenizers::Error,
    },
    /// A JSON configuration file is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A configuration file is valid JSON but a field has an unexpected shape.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Encoding text failed (for example a character outside the vocabulary and no unknown token).
    #[error("encoding failed: {0}")]
    Encode(#[source] tokenizers::Error),
    /// Decoding token ids failed.
    #[error("decoding failed: {0}")]
    Decode(#[source] tokenizers::Error),
    /// A tokenizer could not be built from the given parts.
    #[error("cannot build tokenizer: {0}")]
    Build(String),
    /// [`Tokenizer::apply_chat_template`] was called on a tokenizer without a chat template.
    #[error("the tokenizer has no chat template")]
    NoChatTemplate,
    /// The chat templates are all named, and none is named `default`.
    #[error("no chat template is named `default` (found: {})", names.join(", "))]
    NoDefaultChatTemplate {
        /// The names there are.
        names: Vec<String>,
    },
    /// A chat template does not compile.
    #[error("chat template `{name}` is invalid: {source}")]
    TemplateSyntax {
        /// The template's name (`default` for a single template).
        name: String,
        /// The compile error, with its line.
        source: minijinja::Error,
    },
    /// Rendering a chat template failed.
    #[error("rendering the chat template failed: {0}")]
    TemplateRender(#[source] minijinja::Error),
    /// The chat template called `raise_exception(message)`, rejecting the conversation.
    #[error("the chat template rejected the conversation: {0}")]
    TemplateException(String),
    /// An extra template argument uses a name the renderer binds itself.
    #[error("`{0}` cannot be passed as an extra chat template argument")]
    ReservedTemplateArgument(String),
}

/// One message of a conversation, as `transformers` chat templates expect it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    /// Who speaks: `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// What they say.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special tokens a chat template sees (as `bos_token`, `eos_token`, ...), as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning-of-sequence token.
    pub bos_token: Option<String>,
    /// End-of-sequence token.
    pub eos_token: Option<String>,
    /// Padding token.
    pub pad_token: Option<String>,
    /// Unknown token.
    pub unk_token: Option<String>,
}

impl SpecialTokens {
    /// The tokens with the names templates know them by.
    fn named(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("bos_token", self.bos_token.as_deref()),
            ("eos_token", self.eos_token.as_deref()),
            ("pad_token", self.pad_token.as_deref()),
            ("unk_token", self.unk_token.as_deref()),
        ]
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            "bos_token" => Some(&mut self.bos_token),
            "eos_token" => Some(&mut self.eos_token),
            "pad_token" => Some(&mut self.pad_token),
            "unk_token" => Some(&mut self.unk_token),
            _ => None,
        }
    }
}

/// A Hugging Face tokenizer with its chat template, special tokens and end-of-sequence ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<ChatTemplate>,
    special_tokens: SpecialTokens,
    eos_token_ids: Vec<u32>,
    pad_token_id: Option<u32>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("chat_template", &self.chat_template)
            .field("special_tokens", &self.special_tokens)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("pad_token_id", &self.pad_token_id)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a tokenizer from a Hugging Face model directory.
    ///
    /// Reads `tokenizer.json` (required); `tokenizer_config.json` for `chat_template` (a string, or a
    /// list of `{"name", "template"}` objects of which `default` is used) and `bos_token`,
    /// `eos_token`, `pad_token`, `unk_token` (strings or `{"content": ...}` objects);
    /// `special_tokens_map.json` for special tokens the config lacks; and `generation_config.json`
    /// for `eos_token_id` (an id or a list) and `pad_token_id`. All but `tokenizer.json` are
    /// optional.
    ///
    /// The chat template comes from, in order of preference: `chat_template_override` (a Jinja
    /// file, or a `.json` file with a `chat_template` field), `chat_template.jinja` in `dir`,
    /// `tokenizer_config.json`, `chat_template.json` in `dir`.
    pub fn from_dir(
        dir: &Path,
        chat_template_override: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(TokenizerError::MissingFile {
                path: tokenizer_path,
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|source| {
            TokenizerError::Load {
                path: tokenizer_path.clone(),
                source,
            }
        })?;

        let mut special_tokens = SpecialTokens::default();
        let mut config_template = None;
        let config_path = dir.join("tokenizer_config.json");
        if let Some(config) = read_json_if_exists(&config_path)? {
            read_special_tokens(&config, &config_path, &mut special_tokens)?;
            config_template = parse_chat_template(&config, &config_path)?;
        }
        let map_path = dir.join("special_tokens_map.json");
        if let Some(map) = read_json_if_exists(&map_path)? {
            read_special_tokens(&map, &map_path, &mut special_tokens)?;
        }

        let template = match chat_template_override {
            Some(path) => Some(read_template_file(path)?),
            None => {
                let jinja_path = dir.join("chat_template.jinja");
                if jinja_path.is_file() {
                    Some(read_template_file(&jinja_path)?)
                } else if config_template.is_some() {
                    config_template
                } else {
                    let json_path = dir.join("chat_template.json");
                    match read_json_if_exists(&json_path)? {
                        Some(json) => parse_chat_template(&json, &json_path)?,
                        None => None,
                    }
                }
            }
        };

        let mut generation_eos = Vec::new();
        let mut generation_pad = None;
        let generation_path = dir.join("generation_config.json");
        if let Some(generation) = read_json_if_exists(&generation_path)? {
            generation_eos = token_ids(&generation, "eos_token_id", &generation_path)?;
            generation_pad = token_ids(&generation, "pad_token_id", &generation_path)?
                .first()
                .copied();
        }

        let chat_template = template.map(ChatTemplate::from_named).transpose()?;
        let mut tokenizer = Self::assemble(inner, chat_template, special_tokens);
        tokenizer.add_eos_token_ids(generation_eos);
        if tokenizer.pad_token_id.is_none() {
            tokenizer.pad_token_id = generation_pad;
        }
        Ok(tokenizer)
    }

    /// Builds a tokenizer in code from a `tokenizers` pipeline, an optional chat template and
    /// special tokens. The end-of-sequence and padding ids are those of `special_tokens`' tokens
    /// that are in the vocabulary; add more end-of-sequence ids with
    /// [`Tokenizer::add_eos_token_ids`].
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        chat_template: Option<&str>,
        special_tokens: SpecialTokens,
    ) -> Result<Self, TokenizerError> {
        let chat_template = chat_template.map(ChatTemplate::new).transpose()?;
        Ok(Self::assemble(inner, chat_template, special_tokens))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        chat_template: Option<ChatTemplate>,
        special_tokens: SpecialTokens,
    ) -> Self {
        let eos_token_ids = special_tokens
            .eos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .into_iter()
            .collect();
        let pad_token_id = special_tokens
            .pad_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t));
        Self {
            inner,
            chat_template,
            special_tokens,
            eos_token_ids,
            pad_token_id,
        }
    }

    /// Adds end-of-sequence ids (for example a `generation_config.json`'s), skipping ones already
    /// present.
    pub fn add_eos_token_ids(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            if !self.eos_token_ids.contains(&id) {
                self.eos_token_ids.push(id);
            }
        }
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes `text` to token ids; `add_special_tokens` applies the pipeline's post-processor (for
    /// example a leading BOS), as in `transformers`. Special tokens written in `text` are always
    /// recognised.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(TokenizerError::Encode)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes token ids to text, leaving special tokens out if `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(TokenizerError::Decode)
    }

    /// The number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (added tokens included), if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of `id`, if there is one.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The ids that end generation: `tokenizer_config.json`'s `eos_token` followed by
    /// `generation_config.json`'s `eos_token_id`(s), without duplicates.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// The padding id: `pad_token`'s, or else `generation_config.json`'s `pad_token_id`.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// The beginning-of-sequence token, as text.
    pub fn bos_token(&self) -> Option<&str> {
        self.special_tokens.bos_token.as_deref()
    }

    /// The end-of-sequence token, as text.
    pub fn eos_token(&self) -> Option<&str> {
        self.special_tokens.eos_token.as_deref()
    }

    /// The special tokens templates see.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special_tokens
    }

    /// Whether there is a chat template that [`Tokenizer::apply_chat_template`] can render.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template
            .as_ref()
            .is_some_and(ChatTemplate::has_default)
    }

    /// The chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Renders `messages` like `transformers`' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=..., **extra)`. The template sees `messages`, `add_generation_prompt`,
    /// `tools` and `documents` (`None` unless in `extra`), the special tokens that are set, and every
    /// entry of `extra`.
    ///
    /// Templates write special tokens such as BOS themselves, so encode the result with
    /// `add_special_tokens = false`, as `transformers` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, JsonValue>,
    ) -> Result<String, TokenizerError> {
        self.render(messages, add_generation_prompt, extra)
    }

    /// [`Tokenizer::apply_chat_template`] for messages given as JSON, for fields beyond `role` and
    /// `content` (`tool_calls`, `name`, list-valued `content`, ...).
    pub fn apply_chat_template_json(
        &self,
        messages: &[JsonValue],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, JsonValue>,
    ) -> Result<String, TokenizerError> {
        self.render(messages, add_generation_prompt, extra)
    }

    fn render<M: Serialize + ?Sized>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, JsonValue>,
    ) -> Result<String, TokenizerError> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        template.render(messages, add_generation_prompt, &self.special_tokens, extra)
    }
}

/// Builds a character-level tokenizer: one token per distinct character of `alphabet`, after the
/// `special_tokens` (ids `0..special_tokens.len()`, in order), which are matched whole in text and
/// dropped by `decode(.., true)`.
///
/// Decoding concatenates tokens, so text made of the alphabet and special tokens (spaces and
/// newlines included) round-trips exactly. A character outside the alphabet encodes to `<unk>` if
/// that is one of `special_tokens`, and is an encoding error otherwise. The result saves with
/// `tokenizer.save(path, false)` and loads back with `tokenizers::Tokenizer::from_file`.
pub fn train_char_tokenizer(
    alphabet: &str,
    special_tokens: &[&str],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let mut vocab: Vec<String> = Vec::with_capacity(special_tokens.len() + alphabet.len());
    for token in special_tokens {
        if token.is_empty() {
            return Err(TokenizerError::Build("a special token is empty".to_owned()));
        }
        if vocab.iter().any(|t| t == token) {
            return Err(TokenizerError::Build(format!(
                "special token {token:?} is given twice"
            )));
        }
        vocab.push((*token).to_owned());
    }
    let mut chars = 0usize;
    for c in alphabet.chars() {
        let token = c.to_string();
        if special_tokens.contains(&token.as_str()) {
            return Err(TokenizerError::Build(format!(
                "character {c:?} is both in the alphabet and a special token"
            )));
        }
        if !vocab.contains(&token) {
            vocab.push(token);
            chars += 1;
        }
    }
    if chars == 0 {
        return Err(TokenizerError::Build("the alphabet is empty".to_owned()));
    }
    let size = u32::try_from(vocab.len())
        .map_err(|_| TokenizerError::Build("too many tokens".to_owned()))?;

    let model = WordLevel::builder()
        .vocab(vocab.into_iter().zip(0..size).collect())
        .unk_token("<unk>".to_owned())
        .build()
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(FixedLength::new(1)));
    tokenizer.with_decoder(Some(Fuse::new()));
    let added: Vec<AddedToken> = special_tokens
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer.add_special_tokens(&added);
    Ok(tokenizer)
}

/// Reads and parses a JSON file, or `None` if it does not exist.
fn read_json_if_exists(path: &Path) -> Result<Option<JsonValue>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.to_owned(),
            source,
        })
}

/// Reads a chat template file: Jinja text, or a `.json` file with a `chat_template` field.
fn read_template_file(path: &Path) -> Result<Vec<(String, String)>, TokenizerError> {
    if path.extension().is_some_and(|e| e == "json") {
        let json = read_json_if_exists(path)?.ok_or_else(|| TokenizerError::MissingFile {
            path: path.to_owned(),
        })?;
        return parse_chat_template(&json, path)?.ok_or_else(|| TokenizerError::Config {
            path: path.to_owned(),
            message: "no `chat_template` field".to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TokenizerError::MissingFile {
            path: path.to_owned(),
        },
        _ => TokenizerError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    Ok(vec![(
        chat_template::DEFAULT_TEMPLATE_NAME.to_owned(),
        text,
    )])
}

/// The `chat_template` field of a config: a string (named `default`), a list of `{"name",
/// "template"}` objects, or absent/null.
fn parse_chat_template(
    config: &JsonValue,
    path: &Path,
) -> Result<Option<Vec<(String, String)>>, TokenizerError> {
    let bad = |message: String| TokenizerError::Config {
        path: path.to_owned(),
        message,
    };
    match config.get("chat_template") {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(vec![(
            chat_template::DEFAULT_TEMPLATE_NAME.to_owned(),
            s.clone(),
        )])),
        Some(JsonValue::Array(items)) => items
            .iter()
            .map(|item| {
                let name = item.get("name").and_then(JsonValue::as_str);
                let template = item.get("template").and_then(JsonValue::as_str);
                match (name, template) {
                    (Some(name), Some(template)) => Ok((name.to_owned(), template.to_owned())),
                    _ => Err(bad(format!(
                        "`chat_template` list entries need string `name` and `template` fields, found {item}"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(bad(format!(
            "`chat_template` must be a string or a list, found {other}"
        ))),
    }
}

/// Fills the unset special tokens of `tokens` from a config's `bos_token`, `eos_token`,
/// `pad_token`, `unk_token` (strings or `{"content": ...}` objects).
fn read_special_tokens(
    config: &JsonValue,
    path: &Path,
    tokens: &mut SpecialTokens,
) -> Result<(), TokenizerError> {
    for name in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        let Some(slot) = tokens.slot(name) else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        *slot = match config.get(name) {
            None | Some(JsonValue::Null) => None,
            Some(JsonValue::String(s)) => Some(s.clone()),
            Some(value) => match value.get("content").and_then(JsonValue::as_str) {
                Some(content) => Some(content.to_owned()),
                None => {
                    return Err(TokenizerError::Config {
                        path: path.to_owned(),
                        message: format!(
                            "`{name}` must be a string or an object with a string `content`, found {value}"
                        ),
                    });
                }
            },
        };
    }
    Ok(())
}

/// A config's token id field: an id, a list of ids, or absent/null (no ids).
fn token_ids(config: &JsonValue, field: &str, path: &Path) -> Result<Vec<u32>, TokenizerError> {
    let bad = |found: &JsonValue| TokenizerError::Config {
        path: path.to_owned(),
        message: format!("`{field}` must be a token id or a list of token ids, found {found}"),
    };
    let id = |v: &JsonValue| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(v))
    };
    match config.get(field) {
        None | Some(JsonValue::Null) => Ok(Vec::new()),
        Some(JsonValue::Array(items)) => items.iter().map(id).collect(),
        Some(value) => Ok(vec![id(value)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const QWEN_STYLE_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzHI0123456789+-*=?., \n";

    fn char_tokenizer() -> tokenizers::Tokenizer {
        train_char_tokenizer(ALPHABET, &QWEN_STYLE_SPECIALS).unwrap()
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// A model directory with a character-level `tokenizer.json`.
    fn model_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        char_tokenizer()
            .save(dir.path().join("tokenizer.json"), false)
            .unwrap();
        dir
    }

    #[test]
    fn char_tokenizer_round_trips_text_and_special_tokens() {
        let tok = Tokenizer::from_parts(
            char_tokenizer(),
            None,
            SpecialTokens {
                eos_token: Some("<|im_end|>".to_owned()),
                pad_token: Some("<|endoftext|>".to_owned()),
                ..SpecialTokens::default()
            },
        )
        .unwrap();
        let text = "<|im_start|>user\n12+30=?<|im_end|>\n";
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[ids.len() - 2], 2);
        assert_eq!(ids.len(), 2 + "user\n12+30=?\n".len());
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        assert_eq!(tok.decode(&ids, true).unwrap(), "user\n12+30=?\n");
        assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
        assert_eq!(tok.token_to_id("a"), Some(3));
        assert_eq!(tok.id_to_token(3).as_deref(), Some("a"));
        assert_eq!(tok.vocab_size(), 3 + ALPHABET.chars().count());
        assert_eq!(tok.eos_token_ids(), [2]);
        assert_eq!(tok.pad_token_id(), Some(0));
        assert_eq!(tok.bos_token(), None);
        assert!(!tok.has_chat_template());
        assert!(matches!(
            tok.apply_chat_template(&[], true, &serde_json::Map::new()),
            Err(TokenizerError::NoChatTemplate)
        ));
    }

    #[test]
    fn char_tokenizer_rejects_unknown_characters_without_unk() {
        let tok = Tokenizer::from_parts(char_tokenizer(), None, SpecialTokens::default()).unwrap();
        assert!(matches!(
            tok.encode("ABC", false),
            Err(TokenizerError::Encode(_))
        ));

        let with_unk = train_char_tokenizer("ab", &["<unk>"]).unwrap();
        let tok = Tokenizer::from_parts(with_unk, None, SpecialTokens::default()).unwrap();
        assert_eq!(tok.encode("aZb", false).unwrap(), [1, 0, 2]);
    }

    #[test]
    fn char_tokenizer_save_and_reload_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let original = char_tokenizer();
        original.save(&path, false).unwrap();
        let reloaded = tokenizers::Tokenizer::from_file(&path).unwrap();
        let text = "what is 7*6?\n  42 = 6*7.\n<|im_end|>";
        let a = original.encode(text, false).unwrap();
        let b = reloaded.encode(text, false).unwrap();
        assert_eq!(a.get_ids(), b.get_ids());
        assert_eq!(reloaded.decode(b.get_ids(), false).unwrap(), text);
        assert_eq!(reloaded.get_vocab_size(true), original.get_vocab_size(true));
    }

    #[test]
    fn char_tokenizer_validates_input() {
        assert!(train_char_tokenizer("", &["<s>"]).is_err());
        assert!(train_char_tokenizer("ab", &["<s>", "<s>"]).is_err());
        assert!(train_char_tokenizer("ab", &[""]).is_err());
        assert!(train_char_tokenizer("ab", &["a"]).is_err());
        // Repeated characters are one token.
        let tok = train_char_tokenizer("abab", &[]).unwrap();
        assert_eq!(tok.get_vocab_size(true), 2);
    }

    #[test]
    fn word_level_tokenizer_built_in_code() {
        use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
        let vocab = ["[UNK]", "hello", "world", "<|im_start|>", "<|im_end|>"];
        let model = WordLevel::builder()
            .vocab(vocab.iter().map(|t| t.to_string()).zip(0..).collect())
            .unk_token("[UNK]".to_owned())
            .build()
            .unwrap();
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(WhitespaceSplit));
        inner.add_special_tokens(&[
            AddedToken::from("<|im_start|>", true),
            AddedToken::from("<|im_end|>", true),
        ]);
        let tok = Tokenizer::from_parts(
            inner,
            Some("{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"),
            SpecialTokens {
                eos_token: Some("<|im_end|>".to_owned()),
                ..SpecialTokens::default()
            },
        )
        .unwrap();
        let prompt = tok
            .apply_chat_template(
                &[ChatMessage::new("user", "hello world")],
                false,
                &serde_json::Map::new(),
            )
            .unwrap();
        assert_eq!(prompt, "<|im_start|>hello world<|im_end|>");
        let ids = tok.encode(&prompt, false).unwrap();
        assert_eq!(ids, [3, 1, 2, 4]);
        assert_eq!(tok.encode("hello there", false).unwrap(), [1, 0]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "hello world");
        assert_eq!(tok.eos_token_ids(), [4]);
        assert_eq!(tok.vocab_size(), 5);
    }

    #[test]
    fn missing_tokenizer_json_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
        let expected = dir.path().join("tokenizer.json");
        assert!(
            matches!(&err, TokenizerError::MissingFile { path } if *path == expected),
            "{err:?}"
        );
        assert!(err.to_string().contains(&expected.display().to_string()));
    }

    #[test]
    fn broken_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "tokenizer.json", "{\"not\": \"a tokenizer\"}");
        let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
        assert!(matches!(err, TokenizerError::Load { .. }), "{err:?}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");

        let dir = model_dir();
        write(dir.path(), "tokenizer_config.json", "{ nope");
        let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
        assert!(matches!(err, TokenizerError::Json { .. }), "{err:?}");
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");

        write(dir.path(), "tokenizer_config.json", r#"{"eos_token": 5}"#);
        let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
        assert!(matches!(err, TokenizerError::Config { .. }), "{err:?}");

        write(
            dir.path(),
            "tokenizer_config.json",
            r#"{"chat_template": "{% if %}"}"#,
        );
        let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
        assert!(
            matches!(err, TokenizerError::TemplateSyntax { .. }),
            "{err:?}"
        );

        write(dir.path(), "tokenizer_config.json", "{}");
        let missing = dir.path().join("nope.jinja");
        let err = Tokenizer::from_dir(dir.path(), Some(&missing)).unwrap_err();
        assert!(
            matches!(&err, TokenizerError::MissingFile { path } if *path == missing),
            "{err:?}"
        );
    }

    #[test]
    fn loads_a_qwen_style_directory() {
        let dir = model_dir();
        let config = json!({
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": false},
            "unk_token": null,
            "chat_template": chat_template::tests::QWEN25_TEMPLATE,
        });
        write(dir.path(), "tokenizer_config.json", &config.to_string());
        write(
            dir.path(),
            "generation_config.json",
            r#"{"eos_token_id": [2, 0], "pad_token_id": 0}"#,
        );
        let tok = Tokenizer::from_dir(dir.path(), None).unwrap();
        assert!(tok.has_chat_template());
        assert_eq!(tok.bos_token(), None);
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        assert_eq!(tok.eos_token_ids(), [2, 0]);
        assert_eq!(tok.pad_token_id(), Some(0));
        let prompt = tok
            .apply_chat_template(
                &[ChatMessage::new("user", "Hi")],
                true,
                &serde_json::Map::new(),
            )
            .unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn loads_eos_as_object_and_chat_template_as_list() {
        let dir = model_dir();
        let config = json!({
            "bos_token": {"content": "<|im_start|>", "lstrip": false, "normalized": false},
            "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>"},
            "chat_template": [
                {"name": "tool_use", "template": "TOOLS {{ tools | length }}"},
                {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{{ eos_token }}"},
            ],
        });
        write(dir.path(), "tokenizer_config.json", &config.to_string());
        write(
            dir.path(),
            "generation_config.json",
            r#"{"eos_token_id": 2}"#,
        );
        let tok = Tokenizer::from_dir(dir.path(), None).unwrap();
        assert_eq!(tok.bos_token(), Some("<|im_start|>"));
        assert_eq!(tok.eos_token_ids(), [0, 2]);
        assert_eq!(tok.pad_token_id(), None);
        let none = serde_json::Map::new();
        let out = tok
            .apply_chat_template(&[ChatMessage::new("user", "hi")], false, &none)
            .unwrap();
        assert_eq!(out, "<|im_start|>user: hi\n<|endoftext|>");
        let mut tools = serde_json::Map::new();
        tools.insert("tools".to_owned(), json!([{"name": "f"}]));
        let out = tok
            .apply_chat_template(&[ChatMessage::new("user", "hi")], false, &tools)
            .unwrap();
        assert_eq!(out, "TOOLS 1");
    }

    #[test]
    fn chat_template_list_without_default() {
        let dir = model_dir();
        let config = json!({"chat_template": [{"name": "rag", "template": "x"}]});
        write(dir.path(), "tokenizer_config.json", &config.to_string());
        let tok = Tokenizer::from_dir(dir.path(), None).unwrap();
        assert!(!tok.has_chat_template());
        let err = tok
            .apply_chat_template(&[], false, &serde_json::Map::new())
            .unwrap_err();
        assert!(err.to_string().contains("rag"), "{err}");
    }

    #[test]
    fn template_sources_in_order_of_preference() {
        let dir = model_dir();
        let hi = [ChatMessage::new("user", "hi")];
        let none = serde_json::Map::new();
        let render = |tok: &Tokenizer| tok.apply_chat_template(&hi, false, &none).unwrap();

        write(
            dir.path(),
            "chat_template.json",
            r#"{"chat_template": "from json"}"#,
        );
        assert_eq!(
            render(&Tokenizer::from_dir(dir.path(), None).unwrap()),
            "from json"
        );

        write(
            dir.path(),
            "tokenizer_config.json",
            r#"{"chat_template": "from config"}"#,
        );
        assert_eq!(
            render(&Tokenizer::from_dir(dir.path(), None).unwrap()),
            "from config"
        );

        write(dir.path(), "chat_template.jinja", "from jinja\n");
        assert_eq!(
            render(&Tokenizer::from_dir(dir.path(), None).unwrap()),
            "from jinja"
        );

        write(
            dir.path(),
            "override.jinja",
            "{{ messages[0].content | upper }}",
        );
        let tok =
            Tokenizer::from_dir(dir.path(), Some(&dir.path().join("override.jinja"))).unwrap();
        assert_eq!(render(&tok), "HI");
    }

    #[test]
    fn special_tokens_map_fills_gaps() {
        let dir = model_dir();
        write(
            dir.path(),
            "tokenizer_config.json",
            r#"{"eos_token": "<|im_end|>"}"#,
        );
        write(
            dir.path(),
            "special_tokens_map.json",
            r#"{"eos_token": "<|endoftext|>", "bos_token": {"content": "<|im_start|>"}}"#,
        );
        let tok = Tokenizer::from_dir(dir.path(), None).unwrap();
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        assert_eq!(tok.bos_token(), Some("<|im_start|>"));
        assert_eq!(tok.eos_token_ids(), [2]);
    }

    #[test]
    fn json_messages_reach_the_template() {
        let tok = Tokenizer::from_parts(
            char_tokenizer(),
            Some(chat_template::tests::QWEN25_TEMPLATE),
            SpecialTokens::default(),
        )
        .unwrap();
        let messages = [
            json!({"role": "user", "content": "1+1?"}),
            json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 1}}}]}),
        ];
        let out = tok
            .apply_chat_template_json(&messages, false, &serde_json::Map::new())
            .unwrap();
        assert!(
            out.ends_with("<|im_start|>assistant\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 1}}\n</tool_call><|im_end|>\n"),
            "{out:?}"
        );
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
    }
}
