//! The loading pipeline: bytes -> UTF-8 -> YAML with positions -> overrides -> schema -> typed
//! config -> semantic checks. Every stage reports all it finds; later stages run only on input
//! the earlier ones accepted.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::semantic::{self, Context, Finding};
use super::source;
use super::{
    Diagnostic, Diagnostics, Experiment, ModelSource, Origin, Override, Severity, Span,
    is_experiment_file,
};

/// How to load an experiment.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Overrides applied on top of the file, in order.
    pub overrides: Vec<Override>,
    /// Check that the files the experiment names exist.
    pub check_files: bool,
    /// Whether the registries include the experiment's own `code` (true inside a built binary).
    pub user_code_registered: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            overrides: Vec::new(),
            check_files: true,
            user_code_registered: false,
        }
    }
}

/// A loaded, valid experiment.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The experiment, with defaults filled in and paths as written.
    pub experiment: Experiment,
    /// Directory relative paths are resolved against (the file's directory).
    pub base_dir: PathBuf,
    /// Warnings (problems that do not stop the run).
    pub warnings: Diagnostics,
}

impl Loaded {
    /// `path` resolved against the experiment file's directory.
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        self.base_dir.join(path)
    }

    /// This run's directory: `<metrics.dir>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.resolve(&self.experiment.metrics.dir)
            .join(&self.experiment.name)
    }

    /// Where the starting model is. An experiment file named by `model.path` is loaded (without
    /// its own file checks) to find its run directory, following chains of them.
    pub fn model_source(&self) -> Result<ModelSource, String> {
        let path = self.resolve(&self.experiment.model.path);
        if !is_experiment_file(&path) {
            return Ok(ModelSource::Checkpoint(path));
        }
        let mut seen = vec![path.clone()];
        let mut current = path.clone();
        let mut first: Option<PathBuf> = None;
        loop {
            let options = LoadOptions {
                check_files: false,
                ..LoadOptions::default()
            };
            let loaded = load_file(&current, &options).map_err(|d| {
                format!(
                    "`model.path` names experiment `{}`, which does not load: {}",
                    current.display(),
                    d.items.first().map_or(String::new(), |i| i.message.clone())
                )
            })?;
            let final_dir = loaded.run_dir().join("final");
            let first_dir = first.get_or_insert(final_dir).clone();
            let next = loaded.resolve(&loaded.experiment.model.path);
            if !is_experiment_file(&next) {
                return Ok(ModelSource::Experiment {
                    file: path,
                    final_dir: first_dir,
                    origin: next,
                });
            }
            if seen.contains(&next) {
                return Err(format!(
                    "experiments name each other in `model.path`: {}",
                    next.display()
                ));
            }
            seen.push(next.clone());
            current = next;
        }
    }

    /// The experiment with every file path made absolute, as a generated binary embeds it.
    pub fn resolved(&self) -> Experiment {
        let mut e = self.experiment.clone();
        let abs = |p: &Path| self.base_dir.join(p);
        e.model.path = abs(&e.model.path);
        e.tokenizer.path = e.tokenizer.path.as_deref().map(abs);
        e.tokenizer.chat_template_file = e.tokenizer.chat_template_file.as_deref().map(abs);
        e.dataset.path = abs(Path::new(&e.dataset.path)).display().to_string();
        if let Some(eval) = e.dataset.eval.as_mut() {
            eval.path = eval
                .path
                .as_deref()
                .map(|p| abs(Path::new(p)).display().to_string());
        }
        e.metrics.dir = abs(&e.metrics.dir);
        e.code = e.code.iter().map(|p| abs(p)).collect();
        e
    }
}

/// Loads and checks the experiment file at `path`.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Diagnostics {
        file: file.clone(),
        source: String::new(),
        items: vec![Diagnostic::error(
            format!("cannot read `{file}`: {e}"),
            None,
        )],
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(not_utf8(&file, e.as_bytes(), e.utf8_error().valid_up_to())),
    };
    let base_dir = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    load_str(&file, &text, &base_dir, options)
}

fn not_utf8(file: &str, bytes: &[u8], valid_up_to: usize) -> Diagnostics {
    let prefix = String::from_utf8_lossy(&bytes[..valid_up_to]);
    let line = prefix.matches('\n').count() + 1;
    let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let span = Span {
        start: valid_up_to,
        end: valid_up_to + 1,
        line,
        col,
    };
    Diagnostics {
        file: file.to_string(),
        source: String::new(),
        items: vec![
            Diagnostic::error(
                format!(
                    "the file is not valid UTF-8 (byte 0x{:02x} at line {line}, column {col})",
                    bytes[valid_up_to]
                ),
                Some(Origin::File(span)),
            )
            .with_hint(Some("save the file as UTF-8".into())),
        ],
    }
}

/// Loads and checks an experiment from text; `file` names it in messages and `base_dir` anchors
/// its relative paths.
pub fn load_str(
    file: &str,
    text: &str,
    base_dir: &Path,
    options: &LoadOptions,
) -> Result<Loaded, Diagnostics> {
    let mut report = Diagnostics {
        file: file.to_string(),
        source: text.to_string(),
        items: Vec::new(),
    };
    let fail = |mut report: Diagnostics, items: Vec<Diagnostic>| {
        report.items.extend(items);
        report.sort();
        Err(report)
    };

    let (mut value, mut map) = match source::parse(text) {
        Ok(parsed) => parsed,
        Err(errors) => {
            let items = errors
                .into_iter()
                .map(|e| Diagnostic::error(e.message, Some(Origin::File(e.span))).with_hint(e.hint))
                .collect();
            return fail(report, items);
        }
    };
    if value.is_null() {
        value = Value::Object(serde_json::Map::new());
    }
    if !value.is_object() {
        let origin = map.value("").cloned();
        return fail(
            report,
            vec![Diagnostic::error(
                "an experiment file is a YAML mapping (`key: value` lines)",
                origin,
            )],
        );
    }

    let mut items = Vec::new();
    for o in &options.overrides {
        if let Err(e) = o.apply(&mut value, &mut map) {
            items.push(Diagnostic::error(e.reason, Some(Origin::Override(e.text))));
        }
    }
    if !items.is_empty() {
        return fail(report, items);
    }

    let items = super::schema::check(&value, &map);
    if !items.is_empty() {
        return fail(report, items);
    }

    let experiment: Experiment = match serde_path_to_error::deserialize(&value) {
        Ok(e) => e,
        Err(e) => {
            let pointer = path_to_pointer(e.path());
            let message = format!("`{}`: {}", super::schema::display_path(&pointer), e.inner());
            return fail(
                report,
                vec![Diagnostic::error(message, map.value(&pointer).cloned())],
            );
        }
    };

    let ctx = Context {
        base_dir,
        check_files: options.check_files,
        user_code_registered: options.user_code_registered,
    };
    let findings = semantic::check(&experiment, &value, &ctx);
    let (errors, warnings): (Vec<Finding>, Vec<Finding>) = findings
        .into_iter()
        .partition(|f| f.severity == Severity::Error);
    let locate = |f: Finding| {
        let origin = if f.at_key {
            map.key(&f.pointer)
                .map(Origin::File)
                .or_else(|| map.value(&f.pointer).cloned())
        } else {
            map.value(&f.pointer).cloned()
        };
        Diagnostic {
            severity: f.severity,
            message: f.message,
            origin,
            hint: f.hint,
        }
    };
    report.items = warnings.into_iter().map(locate).collect();
    report.sort();
    if !errors.is_empty() {
        let errors = errors.into_iter().map(locate).collect();
        return fail(report, errors);
    }
    Ok(Loaded {
        experiment,
        base_dir: base_dir.to_path_buf(),
        warnings: report,
    })
}

fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|segment| match segment {
            Segment::Seq { index } => format!("/{index}"),
            Segment::Map { key } => format!("/{}", source::escape_segment(key)),
            Segment::Enum { variant } => format!("/{variant}"),
            Segment::Unknown => String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name: t\nmodel: {path: m}\ndataset: {path: d.jsonl}\nrewards: [{name: exact_match}]\nloss: {name: dapo}\n";

    fn load(text: &str) -> Result<Loaded, Diagnostics> {
        let options = LoadOptions {
            check_files: false,
            ..LoadOptions::default()
        };
        load_str("exp.yaml", text, Path::new("."), &options)
    }

    #[test]
    fn a_minimal_experiment_loads_with_defaults() {
        let loaded = load(MINIMAL).expect("valid");
        assert_eq!(loaded.experiment.sampling.n, 8);
        assert_eq!(loaded.experiment.loss.name, "dapo");
        assert_eq!(loaded.experiment.rewards[0].weight, 1.0);
    }

    #[test]
    fn unknown_keys_are_located_with_a_suggestion() {
        let text = format!("{MINIMAL}training:\n  lerning_rate: 1e-5\n  lr: 1e-6\n");
        let report = load(&text).expect_err("typo");
        assert_eq!(report.items.len(), 1, "{report}");
        let d = &report.items[0];
        assert_eq!(d.location("exp.yaml"), "exp.yaml:7:3");
        assert!(d.message.contains("lerning_rate"), "{}", d.message);
        assert!(
            report.render(false).contains("lerning_rate: 1e-5"),
            "{}",
            report.render(false)
        );
    }

    #[test]
    fn loss_parameters_are_checked_per_loss() {
        let text = MINIMAL.replace("{name: dapo}", "{name: dapo, beta: 0.1, clip_low: 2.0}");
        let report = load(&text).expect_err("dapo has no beta and clip_low <= 1");
        let messages: Vec<&str> = report.items.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("unknown key `beta`")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("loss.clip_low") && m.contains("at most 1")),
            "{messages:?}"
        );
    }

    #[test]
    fn every_semantic_error_is_reported_at_once() {
        let text = format!(
            "{MINIMAL}sampling: {{n: 1}}\ntraining: {{batch_size: 10, gradient_accumulation_steps: 4, warmup_steps: 500, steps: 10}}\nbackend: cpu\nservices: {{generator: {{with_gpus: true}}}}\n"
        );
        let report = load(&text).expect_err("several problems");
        assert_eq!(report.error_count(), 4, "{report}");
        let rendered = report.render(false);
        assert!(rendered.contains("exp.yaml:6:15"), "{rendered}");
    }

    #[test]
    fn placement_that_is_not_built_is_said() {
        let services = |text: &str| format!("{MINIMAL}backend: cuda\nservices:\n{text}");
        let silent = |text: &str| {
            let loaded = load(&services(text)).expect("valid");
            assert!(
                loaded.warnings.items.is_empty(),
                "{}",
                loaded.warnings.render(false)
            );
        };
        let warns = |text: &str, said: &str| {
            let rendered = load(text)
                .expect("valid, with a warning")
                .warnings
                .render(false);
            assert!(rendered.contains(said), "{rendered}");
        };
        // Services on GPUs of their own: built, nothing to say.
        silent("  gpus: 2\n  generator: {devices: [1]}\n  trainer: {devices: [0]}\n");
        // Generator replicas: built.
        silent(
            "  gpus: 3\n  generator: {num_replicas: 2, devices: [1, 2]}\n  trainer: {devices: [0]}\n",
        );
        // One GPU shared by every service is what runs: nothing to say.
        silent("  generator: {devices: [0]}\n  trainer: {devices: [0]}\n");
        // Data-parallel trainer ranks: built.
        silent(
            "  gpus: 2\n  trainer: {procs: 2, devices: [0, 1]}\nparallelism: {data_parallel_replicate_degree: 2}\n",
        );
        // Two ranks on one GPU: an error.
        let twice = services(
            "  gpus: 2\n  trainer: {procs: 2, devices: [1, 1]}\nparallelism: {data_parallel_replicate_degree: 2}\n",
        );
        let report = load(&twice).expect_err("one GPU for two ranks");
        assert!(report.render(false).contains("listed twice"), "{report}");
        // Ranks on the CPU backend: one device, said.
        let cpu = format!(
            "{MINIMAL}services:\n  trainer: {{procs: 2}}\nparallelism: {{data_parallel_replicate_degree: 2}}\n"
        );
        warns(&cpu, "the trainer runs one rank");
        // Sharding: run as replicas, said.
        let sharded = services(
            "  gpus: 2\n  trainer: {procs: 2, devices: [0, 1]}\nparallelism: {data_parallel_shard_degree: 2}\n",
        );
        warns(&sharded, "sharding (FSDP) is not built");
        // Several processes for one service: not built, said.
        let tensor_parallel = format!(
            "{}parallelism: {{tensor_parallel_degree: 2}}\n",
            services("  gpus: 2\n  trainer: {procs: 2, devices: [0, 1]}\n")
        );
        let loaded = load(&tensor_parallel).expect("valid, with a warning");
        let rendered = loaded.warnings.render(false);
        assert!(
            rendered.contains("several processes for trainer")
                && rendered.contains("not built yet"),
            "{rendered}"
        );
    }

    #[test]
    fn kl_needs_a_reference_model() {
        let text = MINIMAL.replace("{name: dapo}", "{name: grpo, beta: 0.05}");
        let report = load(&text).expect_err("no ref model");
        assert!(
            report.items[0].message.contains("KL coefficient"),
            "{report}"
        );
        let ok = format!("{text}services: {{ref_model: {{}}}}\n");
        load(&ok).expect("valid with a reference model");
    }

    #[test]
    fn overrides_apply_and_their_errors_name_them() {
        let mut options = LoadOptions {
            check_files: false,
            ..LoadOptions::default()
        };
        options
            .overrides
            .push(Override::parse_set("training.lr=2e-6").expect("valid"));
        let loaded = load_str("exp.yaml", MINIMAL, Path::new("."), &options).expect("valid");
        assert_eq!(loaded.experiment.training.lr, 2e-6);
        options.overrides = vec![Override::parse_set("training.lr=fast").expect("parses")];
        let report =
            load_str("exp.yaml", MINIMAL, Path::new("."), &options).expect_err("a string lr");
        assert_eq!(
            report.items[0].location("exp.yaml"),
            "override `--set training.lr=fast`"
        );
    }
}
