//! What every recipe sets up: device, model, tokenizer, data, prompts, rewards, run directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;

use super::eval::{EvalItem, EvalResult};
use crate::config::{Loaded, ModelInit, ModelSource};
use crate::data::{DataError, Dataset, PromptBuilder, load_records};
use crate::model::{CausalLm, ModelError, ModelSpec, load, stable_param_ids};
use crate::rl::RewardScorer;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The model could not be loaded or saved.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file of the run directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A service's replica failed (a panic in its thread).
    #[error(transparent)]
    Service(#[from] crate::services::ServiceError),
    /// The trainer's ranks failed.
    #[error(transparent)]
    Trainer(#[from] crate::services::TrainerError),
    /// The generator's replicas failed.
    #[error(transparent)]
    Generator(#[from] crate::services::GeneratorError),
    /// The dataset service could not hand out prompts.
    #[error(transparent)]
    Dataset(#[from] crate::services::DatasetError),
    /// The reference model could not be placed or could not score.
    #[error(transparent)]
    Reference(#[from] crate::services::ReferenceError),
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
        move |source| RunError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The shared state of a run.
pub struct Session<B: AutodiffBackend> {
    /// The experiment.
    pub loaded: Loaded,
    /// Where tensors live.
    pub device: B::Device,
    /// The policy being trained.
    pub model: CausalLm<B>,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The directory the starting model came from.
    pub model_dir: PathBuf,
    /// Training records.
    pub dataset: Arc<Dataset>,
    /// Records into prompts.
    pub prompts: Arc<PromptBuilder>,
    /// Held-out prompts, if configured.
    pub eval: Vec<EvalItem>,
    /// The configured rewards.
    pub scorer: Arc<RewardScorer>,
    /// `<metrics.dir>/<name>`.
    pub run_dir: PathBuf,
}

impl<B: AutodiffBackend> Session<B> {
    /// Loads everything the experiment names. `required` lists the record fields the recipe needs.
    pub fn open(loaded: Loaded, device: B::Device, required: &[&str]) -> Result<Self, RunError> {
        let exp = &loaded.experiment;
        let source = loaded.model_source().map_err(RunError::Other)?;
        let model_dir = source.dir().to_path_buf();
        if let ModelSource::Experiment {
            file, final_dir, ..
        } = &source
            && !final_dir.join("config.json").is_file()
        {
            return Err(RunError::Other(format!(
                "`model.path` names experiment `{}`, whose final model `{}` does not exist yet: run that experiment first (`forge run` does so by itself)",
                file.display(),
                final_dir.display()
            )));
        }
        let model = match exp.model.init {
            ModelInit::Pretrained => load::<B>(&model_dir, &device)?,
            ModelInit::Random => {
                let spec = ModelSpec::from_dir(&model_dir)?;
                // The backend's random generator is process-wide: seeding it and drawing the
                // weights happen under one lock, or two runs in one process (the tests) would
                // draw each other's numbers.
                let _drawing = crate::model::RANDOM_INIT
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                B::seed(&device, exp.training.seed);
                stable_param_ids(CausalLm::<B>::new(&spec, &device))
            }
        };
        let tokenizer_dir = exp
            .tokenizer
            .path
            .as_ref()
            .map_or(model_dir.clone(), |p| loaded.resolve(p));
        let template = exp
            .tokenizer
            .chat_template_file
            .as_ref()
            .map(|p| loaded.resolve(p));
        let tokenizer = Tokenizer::from_dir(&tokenizer_dir, template.as_deref())?;
        if tokenizer.vocab_size() > model.spec.vocab_size {
            return Err(RunError::Other(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                model.spec.vocab_size
            )));
        }
        let data_path = loaded.resolve(&exp.dataset.path);
        let dataset = load_records(&data_path, &exp.dataset, required, exp.dataset.max_samples)?;
        let prompts = PromptBuilder::new(&exp.dataset, &exp.tokenizer)?;
        let eval = match &exp.dataset.eval {
            Some(eval) => {
                let path = eval
                    .path
                    .as_ref()
                    .map_or(data_path.clone(), |p| loaded.resolve(p));
                let records = load_records(
                    &path,
                    &exp.dataset,
                    &[exp.dataset.fields.prompt.as_str()],
                    Some(eval.max_samples),
                )?;
                records
                    .records
                    .iter()
                    .map(|r| EvalItem::new(r, &prompts, &tokenizer, &exp.dataset.fields.answer))
                    .collect::<Result<_, _>>()?
            }
            None => Vec::new(),
        };
        let scorer = RewardScorer::new(&exp.rewards).map_err(RunError::Other)?;
        let run_dir = loaded.run_dir();
        std::fs::create_dir_all(&run_dir).map_err(RunError::io(&run_dir))?;
        Ok(Self {
            loaded,
            device,
            model,
            tokenizer: Arc::new(tokenizer),
            model_dir,
            dataset: Arc::new(dataset),
            prompts: Arc::new(prompts),
            eval,
            scorer: Arc::new(scorer),
            run_dir,
        })
    }

    /// Saves the policy as a complete Hugging Face directory (weights, config, tokenizer files).
    pub fn save_model(&self, dir: &Path) -> Result<(), RunError> {
        crate::model::save(&self.model, dir)?;
        let tokenizer_dir = self
            .loaded
            .experiment
            .tokenizer
            .path
            .as_ref()
            .map_or(self.model_dir.clone(), |p| self.loaded.resolve(p));
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "special_tokens_map.json",
            "chat_template.jinja",
        ] {
            let from = tokenizer_dir.join(name);
            if from.is_file() && from != dir.join(name) {
                std::fs::copy(&from, dir.join(name)).map_err(RunError::io(&from))?;
            }
        }
        Ok(())
    }

    /// Scores `model` on the held-out prompts, sampling with `params`.
    pub fn evaluate(
        &self,
        model: &CausalLm<B::InnerBackend>,
        params: &crate::generate::SamplingParams,
    ) -> Result<EvalResult, RunError>
    where
        B::InnerBackend: crate::generate::DecodeBackend,
    {
        super::eval::evaluate(
            model,
            &self.tokenizer,
            &self.eval,
            &self.scorer,
            params,
            &self.device,
        )
        .map_err(|e| RunError::Other(e.to_string()))
    }

    /// The record's reference answer.
    pub fn answer_of(&self, fields: &crate::reward::Sample) -> String {
        crate::data::field_text(fields, &self.loaded.experiment.dataset.fields.answer)
    }
}
