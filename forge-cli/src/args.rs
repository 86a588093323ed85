//! Command-line arguments (clap derive); `///` docs are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Forge: Rust-native RL post-training for LLMs.
///
/// Any command that takes an experiment also takes overrides: `--set training.lr=1e-5`, or in
/// torchforge style `--training.lr 1e-5` and `--trainer.procs 2` (= `services.trainer.procs`).
#[derive(Debug, Parser)]
#[command(name = "forge", version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check an experiment file: schema, then semantics; every error with file:line:col.
    /// Exits 0 when valid, 2 when not.
    Validate(ValidateArgs),
    /// Write the JSON Schema of experiment files (for editor completion and checking).
    Schema(SchemaArgs),
    /// Generate and compile the training binary for an experiment; prints its path.
    Build(BuildArgs),
    /// Build an experiment's binary, then run it.
    Run(RunArgs),
    /// Scaffold a new experiment with a custom loss and a custom reward.
    Init(InitArgs),
    /// Work with losses on recorded batches.
    #[command(subcommand)]
    Loss(LossCommand),
    /// Sample completions from a Hugging Face checkpoint, with their tokens and log-probabilities.
    Generate(GenerateArgs),
    /// Draw a run's metrics as PNG curves (`RUN_DIR/curves.png`).
    Plot(PlotArgs),
}

/// `forge plot`.
#[derive(Debug, Args)]
pub(crate) struct PlotArgs {
    /// The run directory (holding metrics.jsonl).
    pub run_dir: PathBuf,
    /// Metrics to draw (repeatable); default: every numeric metric, up to 12.
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Output file; default `RUN_DIR/curves.png`.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `forge generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Wrap the prompt in the chat template as a user turn, with the generation prompt.
    #[arg(long)]
    pub chat: bool,
    /// Completions to sample.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Most new tokens per completion.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Strings that end a completion (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Print one JSON object per completion.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LossCommand {
    /// Evaluate a loss and its gradient on a batch in a safetensors file.
    ///
    /// Input: `logits` [B,S,V] f32, `target_ids` [B,S] i64 (-100 = ignored),
    /// `generator_logprobs`, `advantages`, `loss_mask`, optional `ref_logprobs` ([B,S] f32).
    /// Output: `loss`, `grad_logits` [B,S,V], `logprobs` [B,S] and one tensor per metric.
    Eval(LossEvalArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LossEvalArgs {
    /// Registered loss name (grpo, dapo, cispo, gspo, sapo).
    #[arg(long)]
    pub loss: String,
    /// Set a loss parameter: `--set clip_low=0.1` (repeatable; the value is YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The batch.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the results.
    #[arg(long)]
    pub output: PathBuf,
    /// Token aggregation; default: the loss's own.
    #[arg(long, value_enum)]
    pub aggregation: Option<AggregationArg>,
    /// Sampling temperature the logits are divided by.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Dr. GRPO's fixed horizon (`sampling.max_tokens`); default: the sequence length.
    #[arg(long)]
    pub horizon: Option<f64>,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Token aggregations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AggregationArg {
    TokenMean,
    SequenceMean,
    FixedHorizon,
}

/// Devices `forge loss eval` can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeviceArg {
    /// The f64 reference on the CPU.
    Cpu,
    /// The kernels on CUDA device 0 (f32).
    Cuda,
    /// The kernels through wgpu: a GPU, or lavapipe on a CPU-only machine (f32).
    Wgpu,
}

/// An experiment file and overrides of its values.
#[derive(Debug, Args)]
pub(crate) struct ExperimentArgs {
    /// The experiment YAML file.
    pub file: PathBuf,
    /// Override a value: `--set training.lr=1e-5` (repeatable; the value is YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Skip checking that the files the experiment names (model, dataset, code) exist.
    #[arg(long)]
    pub no_file_checks: bool,
    /// Output format of the report.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// rustc-style messages with the offending text underlined.
    Human,
    /// One JSON object per problem, for tools.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    /// Where to write the schema (`-` for standard output).
    #[arg(short, long, default_value = "schemas/experiment.schema.json")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Cargo profile: `release` for training, `dev` for a quicker compile.
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// Rebuild even if nothing changed.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Arguments passed to the experiment binary (after `--`).
    #[arg(last = true)]
    pub binary_args: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// Experiment name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
