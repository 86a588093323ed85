//! Where a run's models live, from `services`: the trainer's data-parallel ranks, the
//! generator's replicas and the frozen reference model's replicas, each on a device of the
//! training backend, or the reference on the CPU. The services ([`crate::services`]) run each
//! replica on a thread of its own with its device.

use crate::config::Experiment;
pub use crate::services::ReferencePlace;

/// The devices of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement<D> {
    /// Where the policy trains: one device per data-parallel rank (at least one), rank 0
    /// first, whose weights the generator, the evaluation and the checkpoints read.
    pub trainers: Vec<D>,
    /// Where rollouts are decoded: one device per generator replica (at least one).
    pub generators: Vec<D>,
    /// Where the reference model scores completions (used only with a KL term): one place per
    /// replica (at least one).
    pub reference: Vec<ReferencePlace<D>>,
}

/// GPU indices of a placement, from `services`: one GPU per trainer process (a data-parallel
/// rank each), the first listed device of each generator or reference replica's process group
/// (several processes per replica are not built: `forge validate` says so), the trainer's first
/// GPU for a service that lists none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementIndices {
    /// The trainer's GPUs, one per data-parallel rank.
    pub trainers: Vec<u32>,
    /// Each generator replica's GPU.
    pub generators: Vec<u32>,
    /// Each reference replica's GPU; `None`: on the CPU.
    pub reference: Vec<Option<u32>>,
}

impl PlacementIndices {
    /// Reads `services` (GPU indices mean nothing on the CPU backend: every model is on the CPU).
    pub fn from_config(exp: &Experiment) -> Self {
        let services = &exp.services;
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
        // One list entry per process: each replica's first; the trainer's GPU when none is
        // listed.
        let replicas = |service: &crate::config::ServiceConfig| -> Vec<u32> {
            let replicas = service.num_replicas.max(1) as usize;
            let procs = service.procs.max(1) as usize;
            match &service.devices {
                Some(devices) if !devices.is_empty() => devices
                    .chunks(procs)
                    .take(replicas)
                    .map(|group| group[0])
                    .collect(),
                _ => vec![trainer; replicas],
            }
        };
        let generators = replicas(&services.generator);
        let reference = match &services.ref_model {
            Some(r) if r.with_gpus == Some(false) && exp.backend.uses_gpus() => {
                vec![None; r.num_replicas.max(1) as usize]
            }
            Some(r) => replicas(r).into_iter().map(Some).collect(),
            None => vec![Some(trainer)],
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
                .iter()
                .map(|r| r.map_or(ReferencePlace::Cpu, |i| ReferencePlace::Device(device(i))))
                .collect(),
        }
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
                reference: vec![Some(0)]
            }
        );
        exp.services.trainer = on(&[1]);
        exp.services.generator = on(&[2]);
        exp.services.ref_model = Some(on(&[0]));
        let spread = PlacementIndices::from_config(&exp);
        assert_eq!(
            (spread.trainers, spread.generators, spread.reference),
            (vec![1], vec![2], vec![Some(0)])
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
        assert_eq!(PlacementIndices::from_config(&exp).reference, vec![None]);
        let devices = PlacementIndices::from_config(&exp).devices(|i| i * 10);
        assert_eq!(devices.trainers, vec![10]);
        assert_eq!(devices.generators, vec![10, 10]);
        assert_eq!(devices.reference, vec![ReferencePlace::Cpu]);
        exp.backend = ComputeBackend::Cpu;
        assert_eq!(PlacementIndices::from_config(&exp).reference, vec![Some(1)]);
        // Reference replicas: like the generator's, or all on the CPU.
        exp.backend = ComputeBackend::Cuda;
        exp.services.ref_model = Some(ServiceConfig {
            num_replicas: 2,
            devices: Some(vec![3, 0]),
            ..ServiceConfig::default()
        });
        assert_eq!(
            PlacementIndices::from_config(&exp).reference,
            vec![Some(3), Some(0)]
        );
        exp.services.ref_model = Some(ServiceConfig {
            num_replicas: 2,
            with_gpus: Some(false),
            ..ServiceConfig::default()
        });
        assert_eq!(
            PlacementIndices::from_config(&exp).reference,
            vec![None, None]
        );
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
        assert_eq!(
            (indices.trainers, indices.reference),
            (vec![2, 3], vec![Some(2)])
        );
        exp.backend = ComputeBackend::Cpu;
        assert_eq!(PlacementIndices::from_config(&exp).trainers, vec![2]);
    }
}
