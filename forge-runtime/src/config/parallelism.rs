use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Parallelism degrees of the trainer; their product is the number of trainer processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ParallelismConfig {
    /// Trainer ranks holding a full copy of the weights and optimiser state (plain data
    /// parallelism), one GPU each: a batch's micro-batches are dealt out among them and their
    /// gradients summed (NCCL on CUDA) before every rank takes the same optimiser step.
    #[schemars(range(min = 1))]
    pub data_parallel_replicate_degree: u32,
    /// Ranks sharding weights, gradients and optimiser state (FSDP). Sharding is not built:
    /// these ranks run as plain data-parallel ranks (`forge validate` warns).
    #[schemars(range(min = 1))]
    pub data_parallel_shard_degree: u32,
    /// Ranks splitting each layer's matrices (tensor parallelism). Not built (`forge validate`
    /// warns).
    #[schemars(range(min = 1))]
    pub tensor_parallel_degree: u32,
    /// Pipeline stages. Not built (`forge validate` warns).
    #[schemars(range(min = 1))]
    pub pipeline_parallel_degree: u32,
}

impl Default for ParallelismConfig {
    fn default() -> Self {
        Self {
            data_parallel_replicate_degree: 1,
            data_parallel_shard_degree: 1,
            tensor_parallel_degree: 1,
            pipeline_parallel_degree: 1,
        }
    }
}

impl ParallelismConfig {
    /// Ranks that see different data: replicate times shard degree.
    pub fn data_parallel_degree(&self) -> u64 {
        u64::from(self.data_parallel_replicate_degree) * u64::from(self.data_parallel_shard_degree)
    }

    /// Trainer processes these degrees need.
    pub fn world_size(&self) -> u64 {
        self.data_parallel_degree()
            * u64::from(self.tensor_parallel_degree)
            * u64::from(self.pipeline_parallel_degree)
    }
}
