use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where each service runs. Services are actors: a call goes to one replica, or fans out to all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// GPUs the machine offers to this run; services may not ask for more. Unset: all visible GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// The rollout generator.
    pub generator: ServiceConfig,
    /// The trainer; its `procs` must equal the product of the `parallelism` degrees: one
    /// data-parallel rank per process, each on its own GPU.
    pub trainer: ServiceConfig,
    /// The frozen reference model for the KL penalty. Required when the loss's KL coefficient is
    /// above 0; leave it out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_model: Option<ServiceConfig>,
    /// Reward workers; `procs` is the number of worker threads scoring in parallel.
    pub reward: ServiceConfig,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            gpus: None,
            generator: ServiceConfig::default(),
            trainer: ServiceConfig::default(),
            ref_model: None,
            reward: ServiceConfig {
                with_gpus: Some(false),
                ..ServiceConfig::default()
            },
        }
    }
}

impl ServicesConfig {
    /// Every configured service with its YAML key, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &ServiceConfig)> {
        [
            ("generator", Some(&self.generator)),
            ("trainer", Some(&self.trainer)),
            ("ref_model", self.ref_model.as_ref()),
            ("reward", Some(&self.reward)),
        ]
        .into_iter()
        .filter_map(|(name, service)| service.map(|s| (name, s)))
    }
}

/// Placement of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Processes per replica (for a GPU service, one GPU each: its tensor-parallel size).
    #[schemars(range(min = 1))]
    pub procs: u32,
    /// Independent copies of the service; calls are routed among them.
    #[schemars(range(min = 1))]
    pub num_replicas: u32,
    /// Whether the service's processes each take a GPU. Unset: yes on the cuda and wgpu
    /// backends, no on cpu.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_gpus: Option<bool>,
    /// Explicit GPU indices, one per process of every replica. Services listing the same GPU
    /// share it (the generator then reads the trainer's weights without a copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<u32>>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            procs: 1,
            num_replicas: 1,
            with_gpus: None,
            devices: None,
        }
    }
}

impl ServiceConfig {
    /// Processes over all replicas.
    pub fn total_procs(&self) -> u64 {
        u64::from(self.procs) * u64::from(self.num_replicas)
    }

    /// Whether the service takes GPUs on a backend that has them.
    pub fn takes_gpus(&self, backend_uses_gpus: bool) -> bool {
        self.with_gpus.unwrap_or(backend_uses_gpus)
    }
}
