//! The dataset service: one replica owning the training records' seeded order, handing out
//! prompts (built from the records' fields with the prompt template and tokenized) to whoever
//! samples. Its position is what a checkpoint stores and a resumed run restores.

use std::sync::Arc;

use super::actor::{Service, ServiceError};
use crate::data::{DataError, DataOrder, DataPosition, Dataset, Prompt, PromptBuilder};
use crate::reward::Sample;
use crate::tokenizer::Tokenizer;

/// Why prompts could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A record could not be made into a prompt.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The service's thread failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A record drawn for sampling.
#[derive(Debug, Clone)]
pub struct DrawnPrompt {
    /// The prompt: text and token ids.
    pub prompt: Prompt,
    /// The record's fields (rewards read the answer and the rest from them).
    pub record: Sample,
}

/// What the replica owns.
struct Reader {
    dataset: Arc<Dataset>,
    prompts: Arc<PromptBuilder>,
    tokenizer: Arc<Tokenizer>,
    order: DataOrder,
}

/// The training records, in their seeded order.
#[derive(Clone)]
pub struct DatasetService {
    reader: Service<Reader>,
}

impl std::fmt::Debug for DatasetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetService").finish_non_exhaustive()
    }
}

impl DatasetService {
    /// Serves `dataset`'s records in `order`, as prompts built by `prompts`.
    pub fn new(
        dataset: Arc<Dataset>,
        prompts: Arc<PromptBuilder>,
        tokenizer: Arc<Tokenizer>,
        order: DataOrder,
    ) -> Self {
        let reader = Reader {
            dataset,
            prompts,
            tokenizer,
            order,
        };
        Self {
            reader: Service::spawn("dataset", vec![reader]),
        }
    }

    /// The next `count` records, as prompts.
    pub fn next(&self, count: usize) -> Result<Vec<DrawnPrompt>, DatasetError> {
        self.reader
            .call_one(move |r| {
                (0..count)
                    .map(|_| {
                        let record = &r.dataset.records[r.order.next_index()];
                        Ok(DrawnPrompt {
                            prompt: r.prompts.build(&record.fields, &r.tokenizer)?,
                            record: record.fields.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, DataError>>()
            })
            .wait()?
            .map_err(DatasetError::from)
    }

    /// Where the order stands (after every `next` call made before this one).
    pub fn position(&self) -> Result<DataPosition, ServiceError> {
        self.reader.call_one(|r| r.order.position()).wait()
    }
}
