//! Where a run's models live, from `services`: the trainer's data-parallel ranks, the
//! generator's replicas and the frozen reference model, each on a device of the training
//! backend, or the reference on the CPU. One process drives them all, a thread per device; a
//! generator replica on another device gets the trainer's weights (rank 0's) copied every
//! `training.sync_interval` steps, one on rank 0's device reads them without a copy. A step's
//! prompts are split among the generator replicas, which sample at the same time, and its
//! micro-batches among the trainer's ranks ([`crate::train::data_parallel`]).

use burn::backend::NdArray;
use burn::prelude::*;

use super::session::RunError;
use crate::config::Experiment;
use crate::model::{CausalLm, copy_to_backend, copy_to_device};
use crate::rl::Episode;
use crate::train::loss_backend::LossBackend;

/// Where the reference model runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferencePlace<D> {
    /// A device of the training backend (the trainer's unless `services.ref_model.devices`
    /// names another).
    Device(D),
    /// The CPU (`services.ref_model.with_gpus: false` on a GPU backend).
    Cpu,
}

/// The devices of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement<D> {
    /// Where the policy trains: one device per data-parallel rank (at least one), rank 0
    /// first, whose weights the generator, the evaluation and the checkpoints read.
    pub trainers: Vec<D>,
    /// Where rollouts are decoded: one device per generator replica (at least one).
    pub generators: Vec<D>,
    /// Where the reference model scores completions (used only with a KL term).
    pub reference: ReferencePlace<D>,
}

/// GPU indices of a placement, from `services`: one GPU per trainer process (a data-parallel
/// rank each), the first listed device of each generator replica's process group (several
/// processes per replica are not built: `forge validate` says so), the trainer's first GPU for
/// a service that lists none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementIndices {
    /// The trainer's GPUs, one per data-parallel rank.
    pub trainers: Vec<u32>,
    /// Each generator replica's GPU.
    pub generators: Vec<u32>,
    /// The reference model's GPU; `None`: on the CPU.
    pub reference: Option<u32>,
}

impl PlacementIndices {
    /// Reads `services` (GPU indices mean nothing on the CPU backend: every model is on the CPU).
    pub fn from_config(exp: &Experiment) -> Self {
        let services = &exp.services;
        let first = |devices: &Option<Vec<u32>>| devices.as_ref().and_then(|d| d.first().copied());
        // Ranks that see different data; tensor and pipeline degrees are not built (said by
        // `forge validate`). On the CPU backend there is one device: one rank.
        let ranks = if exp.backend.uses_gpus() {
            exp.parallelism.data_parallel_degree().max(1) as usize
        } else {
            1
        };
        let trainers: Vec<u32> = match &services.trainer.devices {
            Some(devices) if !devices.is_empty() => devices.iter().copied().take(ranks).collect(),
            _ => (0..ranks as u32).collect(),
        };
        let trainer = trainers[0];
        let replicas = services.generator.num_replicas.max(1) as usize;
        let procs = services.generator.procs.max(1) as usize;
        let generators = match &services.generator.devices {
            // One list entry per process: each replica's first.
            Some(devices) if !devices.is_empty() => devices
                .chunks(procs)
                .take(replicas)
                .map(|group| group[0])
                .collect(),
            _ => vec![trainer; replicas],
        };
        let reference = match &services.ref_model {
            Some(r) if r.with_gpus == Some(false) && exp.backend.uses_gpus() => None,
            Some(r) => Some(first(&r.devices).unwrap_or(trainer)),
            None => Some(trainer),
        };
        Self {
            trainers,
            generators,
            reference,
        }
    }

    /// The devices these indices name, through `device` (index -> device of the backend).
    pub fn devices<D>(&self, device: impl Fn(u32) -> D) -> Placement<D> {
        Placement {
            trainers: self.trainers.iter().map(|&i| device(i)).collect(),
            generators: self.generators.iter().map(|&i| device(i)).collect(),
            reference: self
                .reference
                .map_or(ReferencePlace::Cpu, |i| ReferencePlace::Device(device(i))),
        }
    }
}

/// The frozen reference model, where the placement puts it.
// One per run: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ReferenceModel<B: Backend> {
    /// On a device of the training backend.
    Device(CausalLm<B>, B::Device),
    /// On the CPU.
    Cpu(CausalLm<NdArray<f32>>),
}

impl<B: LossBackend> ReferenceModel<B> {
    /// The reference for a policy starting from `start` (on `trainer`): the same tensors when it
    /// shares the trainer's device, a copy otherwise (as [`generator_weights`] copies).
    pub fn place(
        start: CausalLm<B>,
        trainer: &B::Device,
        place: &ReferencePlace<B::Device>,
    ) -> Result<Self, RunError> {
        Ok(match place {
            ReferencePlace::Device(device) if device == trainer => {
                Self::Device(start, device.clone())
            }
            ReferencePlace::Device(device) => {
                Self::Device(copy_to_device(&start, device), device.clone())
            }
            ReferencePlace::Cpu => Self::Cpu(copy_to_backend(&start, &Default::default())?),
        })
    }

    /// Log-probabilities of each episode's completion at `temperature`.
    pub fn completion_logprobs(
        &self,
        episodes: &[Episode],
        temperature: f64,
    ) -> Result<Vec<Vec<f32>>, RunError> {
        match self {
            Self::Device(model, device) => {
                super::rollouts::completion_logprobs(model, episodes, temperature, device)
            }
            Self::Cpu(model) => super::rollouts::completion_logprobs(
                model,
                episodes,
                temperature,
                &Default::default(),
            ),
        }
    }
}

/// The weights each generator replica samples with: the trainer's own tensors where it shares
/// their device, a copy on its device otherwise (one per device). Copies go through the host (in
/// the weights' own element type): burn's device-to-device transfer is not implemented on wgpu.
pub fn generator_weights<B: Backend>(
    policy: CausalLm<B>,
    placement: &Placement<B::Device>,
) -> Vec<CausalLm<B>> {
    let mut copies: Vec<(B::Device, CausalLm<B>)> = Vec::new();
    placement
        .generators
        .iter()
        .map(|device| {
            if *device == placement.trainers[0] {
                return policy.clone();
            }
            if let Some((_, copy)) = copies.iter().find(|(d, _)| d == device) {
                return copy.clone();
            }
            let copy = copy_to_device(&policy, device);
            copies.push((device.clone(), copy.clone()));
            copy
        })
        .collect()
}

impl<D: PartialEq> Placement<D> {
    /// Whether some generator replica needs the weights copied to it.
    pub fn copies_weights(&self) -> bool {
        self.generators.iter().any(|g| *g != self.trainers[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend as ComputeBackend, ServiceConfig};

    fn experiment(backend: ComputeBackend) -> Experiment {
        let options = crate::config::LoadOptions {
            check_files: false,
            ..Default::default()
        };
        let text = "name: t\nmodel: {path: m}\ndataset: {path: d.jsonl}\nrewards: [{name: exact_match}]\nloss: {name: dapo}\n";
        let loaded = crate::config::load_str("exp.yaml", text, std::path::Path::new("."), &options)
            .expect("a minimal experiment");
        let mut exp = loaded.experiment;
        exp.backend = backend;
        exp
    }

    fn on(devices: &[u32]) -> ServiceConfig {
        ServiceConfig {
            devices: Some(devices.to_vec()),
            ..ServiceConfig::default()
        }
    }

    /// Unlisted services share the trainer's GPU; listed ones get theirs; a reference without
    /// GPUs is on the CPU only on a GPU backend.
    #[test]
    fn services_map_to_devices() {
        let mut exp = experiment(ComputeBackend::Cuda);
        let colocated = PlacementIndices::from_config(&exp);
        assert_eq!(
            colocated,
            PlacementIndices {
                trainers: vec![0],
                generators: vec![0],
                reference: Some(0)
            }
        );
        exp.services.trainer = on(&[1]);
        exp.services.generator = on(&[2]);
        exp.services.ref_model = Some(on(&[0]));
        let spread = PlacementIndices::from_config(&exp);
        assert_eq!(
            (spread.trainers, spread.generators, spread.reference),
            (vec![1], vec![2], Some(0))
        );
        // Replicas: one device each (the first of each process group when procs > 1).
        exp.services.generator = ServiceConfig {
            num_replicas: 2,
            devices: Some(vec![2, 3]),
            ..ServiceConfig::default()
        };
        assert_eq!(PlacementIndices::from_config(&exp).generators, vec![2, 3]);
        exp.services.generator.procs = 2;
        exp.services.generator.devices = Some(vec![2, 3, 4, 5]);
        assert_eq!(PlacementIndices::from_config(&exp).generators, vec![2, 4]);
        exp.services.generator.devices = None;
        assert_eq!(PlacementIndices::from_config(&exp).generators, vec![1, 1]);
        exp.services.ref_model = Some(ServiceConfig {
            with_gpus: Some(false),
            ..ServiceConfig::default()
        });
        assert_eq!(PlacementIndices::from_config(&exp).reference, None);
        let devices = PlacementIndices::from_config(&exp).devices(|i| i * 10);
        assert_eq!(devices.trainers, vec![10]);
        assert_eq!(devices.generators, vec![10, 10]);
        assert_eq!(devices.reference, ReferencePlace::Cpu);
        exp.backend = ComputeBackend::Cpu;
        assert_eq!(PlacementIndices::from_config(&exp).reference, Some(1));
    }

    /// Data-parallel ranks: one per trainer process, on the listed GPUs or the first ones; one
    /// on the CPU backend.
    #[test]
    fn trainer_ranks_map_to_devices() {
        let mut exp = experiment(ComputeBackend::Cuda);
        exp.parallelism.data_parallel_replicate_degree = 2;
        exp.services.trainer.procs = 2;
        let indices = PlacementIndices::from_config(&exp);
        assert_eq!(
            (indices.trainers, indices.generators),
            (vec![0, 1], vec![0])
        );
        exp.services.trainer.devices = Some(vec![2, 3]);
        let indices = PlacementIndices::from_config(&exp);
        assert_eq!((indices.trainers, indices.reference), (vec![2, 3], Some(2)));
        exp.backend = ComputeBackend::Cpu;
        assert_eq!(PlacementIndices::from_config(&exp).trainers, vec![2]);
    }
}
