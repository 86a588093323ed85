//! The policy model: a decoder-only transformer (Llama 3, Qwen2, Qwen3) on burn, generic over the
//! backend, loaded from and saved to Hugging Face checkpoint directories.
//!
//! Parameter paths are Hugging Face's tensor names (`model.layers.0.self_attn.q_proj.weight`), so
//! loading and saving is a walk over the module; linear weights are transposed on the way, since
//! burn stores them `[in, out]` and PyTorch `[out, in]`.

mod causal_lm;
mod layers;
mod matmul;
pub use matmul::matmul_2d;
mod rope;
mod spec;
mod weights;

pub use causal_lm::{CausalLm, DecoderModel, KvCache};
pub use layers::{Attention, DecoderLayer, LayerCache, Mlp, RmsNorm, attention_bias};
pub use rope::{RopeTables, inverse_frequencies};
pub use spec::{Llama3RopeScaling, ModelSpec};
pub use weights::{copy_to_backend, copy_to_device, load, save, stable_param_ids};

/// Held while the backend's random generator (process-wide) is seeded and random weights drawn,
/// so runs (and tests) in one process do not draw each other's numbers.
pub static RANDOM_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::path::PathBuf;

/// What can go wrong reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` is not a model Forge implements.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights do not fit the configuration.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[cfg(test)]
pub(crate) mod tests;
