//! Training data: records read from a file, turned into prompts, in a seeded order whose position
//! a checkpoint can restore.

mod columnar;
mod order;
mod prompts;
mod records;

pub use order::{DataOrder, DataPosition};
pub use prompts::{Prompt, PromptBuilder};
pub use records::{Dataset, Record, SkippedRecord, field_text, load_records};

use std::path::PathBuf;

/// What can go wrong reading data or making prompts.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record is malformed and the policy is to stop.
    #[error("{path}:{line}: {message}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line (JSONL) or row (Parquet, Arrow).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file or directory is not in the format it should be.
    #[error("{path}: {message}")]
    Malformed {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No usable records.
    #[error("{0}: no usable records")]
    Empty(PathBuf),
    /// The prompt template failed on a record.
    #[error("prompt template: {0}")]
    Template(String),
    /// Tokenizing or the chat template failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}
