//! Checks the schema cannot express: relations between fields, the registries, and files on disk.
//! Every check reports; none stops the others.

use std::path::Path;

use serde_json::Value;

use super::schema::did_you_mean;
use super::{Experiment, Recipe, Severity};
use crate::{loss, reward};

/// A problem found by a semantic check, located by JSON pointer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    pub severity: Severity,
    /// JSON pointer of the value at fault.
    pub pointer: String,
    /// Point at the key rather than the value (for "this section should not be here").
    pub at_key: bool,
    pub message: String,
    pub hint: Option<String>,
}

struct Checks<'a> {
    raw: &'a Value,
    out: Vec<Finding>,
}

impl Checks<'_> {
    fn error(&mut self, pointer: &str, message: String, hint: Option<String>) {
        self.out.push(Finding {
            severity: Severity::Error,
            pointer: pointer.into(),
            at_key: false,
            message,
            hint,
        });
    }

    fn warn(&mut self, pointer: &str, message: String, hint: Option<String>) {
        self.out.push(Finding {
            severity: Severity::Warning,
            pointer: pointer.into(),
            at_key: false,
            message,
            hint,
        });
    }

    /// Whether the user wrote `pointer` (as opposed to it being a default).
    fn written(&self, pointer: &str) -> bool {
        self.raw.pointer(pointer).is_some()
    }
}

/// Options of the semantic pass.
pub(crate) struct Context<'a> {
    /// Directory relative paths are resolved against.
    pub base_dir: &'a Path,
    /// Check that files the experiment names exist.
    pub check_files: bool,
    /// Whether the loss/reward registries include the experiment's own `code` (true inside a
    /// built binary). When false and `code` is set, unknown names are left to the build.
    pub user_code_registered: bool,
}

pub(crate) fn check(exp: &Experiment, raw: &Value, ctx: &Context<'_>) -> Vec<Finding> {
    let mut c = Checks {
        raw,
        out: Vec::new(),
    };
    recipe_sections(exp, &mut c);
    if exp.recipe == Recipe::Grpo {
        loss_and_rewards(exp, ctx, &mut c);
        batch_shape(exp, &mut c);
    }
    training(exp, &mut c);
    services(exp, &mut c);
    if ctx.check_files {
        files(exp, ctx, &mut c);
    }
    c.out
}

fn recipe_sections(exp: &Experiment, c: &mut Checks<'_>) {
    match exp.recipe {
        Recipe::Grpo => {
            if c.written("/sft") {
                let message = "an `sft` section in a GRPO experiment".to_string();
                c.out.push(Finding {
                    severity: Severity::Error,
                    pointer: "/sft".into(),
                    at_key: true,
                    message,
                    hint: Some(
                        "set `recipe: sft` to fine-tune, or remove the `sft` section".into(),
                    ),
                });
            }
        }
        Recipe::Sft => {
            // Rewards and sampling score SFT's held-out evaluation, so they count when there is one.
            let evaluates = exp.dataset.eval.is_some();
            for key in ["loss", "rewards", "sampling", "advantages", "replay_buffer"] {
                let used = evaluates && matches!(key, "rewards" | "sampling");
                if c.written(&format!("/{key}")) && !used {
                    let (message, hint) = if matches!(key, "rewards" | "sampling") {
                        (
                            format!(
                                "`{key}` has no effect in an SFT experiment without `dataset.eval`"
                            ),
                            format!(
                                "remove `{key}`, add `dataset.eval` to score held-out prompts with it, or set `recipe: grpo`"
                            ),
                        )
                    } else {
                        (
                            format!("`{key}` has no effect in an SFT experiment"),
                            format!("remove `{key}`, or set `recipe: grpo`"),
                        )
                    };
                    c.out.push(Finding {
                        severity: Severity::Error,
                        pointer: format!("/{key}"),
                        at_key: true,
                        message,
                        hint: Some(hint),
                    });
                }
            }
            let stops_early = exp
                .sft
                .as_ref()
                .is_some_and(|s| s.stop_at_accuracy.is_some());
            let interval = exp.dataset.eval.as_ref().map_or(0, |e| e.interval);
            if stops_early && (interval == 0 || exp.rewards.is_empty()) {
                c.error(
                    "/sft/stop_at_accuracy",
                    "`sft.stop_at_accuracy` needs held-out accuracy during training".into(),
                    Some(
                        "add `dataset.eval` with an `interval` above 0, and a reward to score it (e.g. `rewards: [{name: exact_match}]`)"
                            .into(),
                    ),
                );
            }
        }
    }
}

fn loss_and_rewards(exp: &Experiment, ctx: &Context<'_>, c: &mut Checks<'_>) {
    let deferred = !exp.code.is_empty() && !ctx.user_code_registered;
    let known_losses: Vec<String> = loss::registry::all().map(|r| r.name.to_string()).collect();
    match loss::registry::find(&exp.loss.name) {
        Some(registration) => {
            if let Err(e) = (registration.check_params)(&exp.loss.params) {
                c.error(
                    "/loss",
                    format!("parameters of loss `{}`: {e}", exp.loss.name),
                    None,
                );
            }
            match (registration.kl_coef)(&exp.loss.params) {
                Ok(kl) if kl > 0.0 && exp.services.ref_model.is_none() => {
                    // Point at the coefficient if written, else at the loss's name.
                    let written = exp
                        .loss
                        .params
                        .iter()
                        .find(|(_, v)| v.as_f64() == Some(kl))
                        .map(|(k, _)| format!("/loss/{k}"));
                    let pointer = written
                        .filter(|p| c.written(p))
                        .or_else(|| c.written("/loss/name").then(|| "/loss/name".to_string()))
                        .unwrap_or_default();
                    // Parameters are f32: print the value as written, not its f64 widening.
                    let kl = kl as f32;
                    c.error(
                        &pointer,
                        format!("loss `{}` has a KL coefficient of {kl} but there is no reference model", exp.loss.name),
                        Some("add `services: {ref_model: {}}` (the frozen starting policy), or set the KL coefficient to 0 (`beta: 0.0`)".into()),
                    );
                }
                _ => {}
            }
        }
        None if deferred => {}
        None => {
            let hint = did_you_mean(&exp.loss.name, &known_losses).map(|h| {
                format!("{h} (custom losses are `#[forge::loss]` functions in the files listed under `code`)")
            });
            c.error(
                "/loss/name",
                format!("unknown loss `{}`", exp.loss.name),
                hint,
            );
        }
    }

    if exp.rewards.is_empty() {
        let pointer = if c.written("/rewards") {
            "/rewards"
        } else {
            ""
        };
        c.error(
            pointer,
            "a GRPO experiment needs at least one reward".into(),
            Some(
                "add `rewards: [{name: exact_match}]` or a `#[forge::reward]` function of your own"
                    .into(),
            ),
        );
    }
    let known_rewards: Vec<String> = reward::registry::all()
        .map(|r| r.name.to_string())
        .collect();
    for (i, r) in exp.rewards.iter().enumerate() {
        match reward::registry::find(&r.name) {
            Some(registration) => {
                if let Err(e) = (registration.check_params)(&r.params) {
                    c.error(
                        &format!("/rewards/{i}"),
                        format!("parameters of reward `{}`: {e}", r.name),
                        None,
                    );
                }
            }
            None if deferred => {}
            None => {
                let hint = did_you_mean(&r.name, &known_rewards);
                c.error(
                    &format!("/rewards/{i}/name"),
                    format!("unknown reward `{}`", r.name),
                    hint,
                );
            }
        }
    }
    if exp.rewards.iter().all(|r| r.weight == 0.0) && !exp.rewards.is_empty() {
        c.warn(
            "/rewards",
            "every reward has weight 0: all advantages will be 0".into(),
            None,
        );
    }
}

fn batch_shape(exp: &Experiment, c: &mut Checks<'_>) {
    let n = exp.sampling.n;
    if n < 2 {
        c.error(
            "/sampling/n",
            format!("group size `sampling.n` is {n}, but group-relative advantages need at least 2 completions per prompt"),
            Some("set `sampling.n: 2` or more (8 is common)".into()),
        );
    }
    let batch = u64::from(exp.training.batch_size);
    if n > 0 && batch % u64::from(n) != 0 {
        c.error(
            "/training/batch_size",
            format!("`training.batch_size` ({batch}) is not a multiple of the group size `sampling.n` ({n})"),
            Some(format!("a batch holds whole groups: try {}", round_to(batch, u64::from(n)))),
        );
    }
    let per_step = exp.parallelism.data_parallel_degree()
        * u64::from(exp.training.gradient_accumulation_steps);
    if batch % per_step != 0 {
        c.error(
            "/training/batch_size",
            format!(
                "`training.batch_size` ({batch}) is not divisible by data-parallel degree x gradient_accumulation_steps ({} x {} = {per_step})",
                exp.parallelism.data_parallel_degree(),
                exp.training.gradient_accumulation_steps
            ),
            Some(format!("try {}", round_to(batch, lcm(per_step, u64::from(n.max(1)))))),
        );
    }
}

fn training(exp: &Experiment, c: &mut Checks<'_>) {
    let t = &exp.training;
    if t.warmup_steps > t.steps {
        c.error(
            "/training/warmup_steps",
            format!(
                "`training.warmup_steps` ({}) is more than `training.steps` ({})",
                t.warmup_steps, t.steps
            ),
            None,
        );
    }
    if exp.dataset.streaming {
        c.error(
            "/dataset/streaming",
            "`dataset.streaming` is not built yet: Forge reads the whole dataset into memory"
                .into(),
            Some("remove the key (or set it to false)".into()),
        );
    }
    let age = exp.replay_buffer.max_policy_age;
    if exp.recipe == Recipe::Grpo && t.sync_interval > age.max(1) {
        c.error(
            "/training/sync_interval",
            format!(
                "`training.sync_interval` ({}) would train on episodes {} policy versions old, but `replay_buffer.max_policy_age` is {age}",
                t.sync_interval, t.sync_interval
            ),
            Some(if age == 0 {
                "strictly on-policy training samples with the current weights every step: remove `sync_interval` or raise `max_policy_age`".into()
            } else {
                format!("lower `sync_interval` to at most {age} or raise `max_policy_age`")
            }),
        );
    }
    if exp.recipe == Recipe::Grpo && age >= 1 && exp.replay_buffer.capacity < t.batch_size {
        c.error(
            "/replay_buffer/capacity",
            format!(
                "`replay_buffer.capacity` ({}) cannot hold the batch of {} episodes made ahead for the next step",
                exp.replay_buffer.capacity, t.batch_size
            ),
            Some(format!("raise it to at least {}", t.batch_size)),
        );
    }
    if exp.recipe == Recipe::Grpo && exp.sampling.max_tokens >= t.seq_len {
        c.error(
            "/sampling/max_tokens",
            format!(
                "`sampling.max_tokens` ({}) leaves no room for the prompt within `training.seq_len` ({})",
                exp.sampling.max_tokens, t.seq_len
            ),
            Some("raise `training.seq_len` or lower `sampling.max_tokens`".into()),
        );
    }
    if exp.sampling.top_k > 0 && exp.sampling.top_k < 2 && exp.sampling.n > 1 {
        c.warn(
            "/sampling/top_k",
            "`top_k: 1` is greedy: every completion of a group will be the same".into(),
            None,
        );
    }
}

fn services(exp: &Experiment, c: &mut Checks<'_>) {
    let gpu_backend = exp.backend.uses_gpus();
    let world = exp.parallelism.world_size();
    if u64::from(exp.services.trainer.procs) != world {
        c.error(
            "/services/trainer/procs",
            format!(
                "`services.trainer.procs` is {} but the parallelism degrees multiply to {world}",
                exp.services.trainer.procs
            ),
            Some(format!(
                "set `services.trainer.procs: {world}`, or change `parallelism`"
            )),
        );
    }
    let mut requested = 0u64;
    for (name, service) in exp.services.iter() {
        let pointer = format!("/services/{name}");
        if service.takes_gpus(gpu_backend) {
            if !gpu_backend {
                c.error(
                    &format!("{pointer}/with_gpus"),
                    format!(
                        "`services.{name}.with_gpus` is true, but the backend is `{}`",
                        exp.backend.as_str()
                    ),
                    Some("set `backend: cuda` (or `wgpu`), or `with_gpus: false`".into()),
                );
            }
            requested += service.total_procs();
        }
        if let Some(devices) = &service.devices {
            if devices.len() as u64 != service.total_procs() {
                c.error(
                    &format!("{pointer}/devices"),
                    format!(
                        "`services.{name}.devices` lists {} GPUs, but the service has {} processes (procs x num_replicas)",
                        devices.len(),
                        service.total_procs()
                    ),
                    None,
                );
            }
            if let Some(gpus) = exp.services.gpus
                && let Some(bad) = devices.iter().find(|d| **d >= gpus)
            {
                c.error(
                    &format!("{pointer}/devices"),
                    format!("GPU {bad} in `services.{name}.devices` does not exist: `services.gpus` is {gpus} (indices 0..{})", gpus.saturating_sub(1)),
                    None,
                );
            }
        }
    }
    if let Some(devices) = &exp.services.trainer.devices
        && let Some(twice) = devices
            .iter()
            .enumerate()
            .find(|(i, d)| devices[..*i].contains(d))
            .map(|(_, d)| d)
    {
        c.error(
            "/services/trainer/devices",
            format!("GPU {twice} is listed twice in `services.trainer.devices`: each trainer process (a data-parallel rank) needs a GPU of its own"),
            None,
        );
    }
    // What the placement cannot honour yet: said, not silently ignored. The trainer runs one
    // data-parallel rank per process; the first listed GPU of every other service, and of each
    // generator replica, is honoured (recipes::placement).
    let p = &exp.parallelism;
    if !gpu_backend && exp.services.trainer.procs > 1 {
        c.warn(
            "/services/trainer/procs",
            format!(
                "the `{}` backend has one device: the trainer runs one rank, not {}",
                exp.backend.as_str(),
                exp.services.trainer.procs
            ),
            Some("data-parallel ranks need `backend: cuda` (or `wgpu`), one GPU each".into()),
        );
    }
    if gpu_backend && p.data_parallel_shard_degree > 1 {
        c.warn(
            "/parallelism/data_parallel_shard_degree",
            "sharding (FSDP) is not built: the shard degree's ranks run as plain data-parallel ranks, each holding the whole model and optimiser state".into(),
            None,
        );
    }
    let trainer_unbuilt = exp.services.trainer.num_replicas > 1
        || p.tensor_parallel_degree > 1
        || p.pipeline_parallel_degree > 1;
    let spread = exp
        .services
        .iter()
        .filter(|(name, s)| match *name {
            "reward" => false,
            "generator" | "ref_model" => s.procs > 1,
            "trainer" => trainer_unbuilt,
            _ => s.total_procs() > 1,
        })
        .map(|(name, _)| name)
        .collect::<Vec<_>>();
    if gpu_backend && !spread.is_empty() {
        c.warn(
            "/services",
            format!(
                "the services ask for several processes for {}, which is not built yet: the trainer runs one data-parallel rank per process (no tensor or pipeline parallelism, one replica), each generator and reference replica in one process's place, on the first GPU listed for it (the trainer's when none is)",
                spread.join(", ")
            ),
            None,
        );
    }
    if let Some(gpus) = exp.services.gpus {
        let shared = exp.services.iter().any(|(_, s)| s.devices.is_some());
        if requested > u64::from(gpus) && !shared {
            let pointer = if c.written("/services/gpus") {
                "/services/gpus"
            } else {
                "/services"
            };
            let detail: Vec<String> = exp
                .services
                .iter()
                .filter(|(_, s)| s.takes_gpus(gpu_backend))
                .map(|(n, s)| format!("{n} {}", s.total_procs()))
                .collect();
            c.error(
                pointer,
                format!("the services ask for {requested} GPUs ({}) but `services.gpus` is {gpus}", detail.join(", ")),
                Some("share GPUs by listing the same indices under `devices`, set `with_gpus: false` on a service, or lower `procs`/`num_replicas`".into()),
            );
        }
    }
}

fn files(exp: &Experiment, ctx: &Context<'_>, c: &mut Checks<'_>) {
    let base = ctx.base_dir;
    let model = base.join(&exp.model.path);
    if super::is_experiment_file(&model) {
        if !model.is_file() {
            c.error(
                "/model/path",
                format!("experiment file `{}` does not exist", model.display()),
                Some("`model.path` is a checkpoint directory, or an experiment whose final model this one starts from".into()),
            );
        }
    } else if !model.is_dir() {
        c.error("/model/path", format!("model directory `{}` does not exist", model.display()), Some("`model.path` is a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json)".into()));
    } else if !model.join("config.json").is_file() {
        c.error(
            "/model/path",
            format!(
                "`{}` has no config.json: not a Hugging Face checkpoint directory",
                model.display()
            ),
            None,
        );
    }
    if let Some(tokenizer) = &exp.tokenizer.path {
        let dir = base.join(tokenizer);
        if !dir.join("tokenizer.json").is_file() {
            c.error(
                "/tokenizer/path",
                format!("no tokenizer.json in `{}`", dir.display()),
                None,
            );
        }
    }
    if let Some(template) = &exp.tokenizer.chat_template_file {
        let file = base.join(template);
        if !file.is_file() {
            c.error(
                "/tokenizer/chat_template_file",
                format!("chat template file `{}` does not exist", file.display()),
                None,
            );
        }
    }
    let data = base.join(&exp.dataset.path);
    if !data.exists() {
        c.error(
            "/dataset/path",
            format!("dataset `{}` does not exist", data.display()),
            None,
        );
    }
    if let Some(eval) = exp.dataset.eval.as_ref().and_then(|e| e.path.as_ref()) {
        let data = base.join(eval);
        if !data.exists() {
            c.error(
                "/dataset/eval/path",
                format!("evaluation dataset `{}` does not exist", data.display()),
                None,
            );
        }
    }
    for (i, code) in exp.code.iter().enumerate() {
        let path = base.join(code);
        let pointer = format!("/code/{i}");
        if path.is_dir() {
            if !path.join("Cargo.toml").is_file() {
                c.error(
                    &pointer,
                    format!("`{}` is a directory without Cargo.toml", path.display()),
                    Some("`code` lists `.rs` files or crate directories".into()),
                );
            }
        } else if !path.is_file() {
            c.error(
                &pointer,
                format!("code file `{}` does not exist", path.display()),
                None,
            );
        } else if path.extension().is_none_or(|e| e != "rs") {
            c.error(
                &pointer,
                format!("`{}` is not a `.rs` file", path.display()),
                Some("`code` lists `.rs` files or crate directories".into()),
            );
        }
    }
}

fn round_to(value: u64, multiple: u64) -> u64 {
    if multiple == 0 {
        return value;
    }
    (value.div_ceil(multiple)).max(1) * multiple
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        a.max(b)
    } else {
        a / gcd(a, b) * b
    }
}
