//! The generator service: one replica per device of `services.generator`, each holding the
//! policy weights it samples with and the version (optimiser steps) they have taken. A weight
//! update fans out to every replica: one on the trainer's device keeps the trainer's tensors
//! (no copy: the optimiser replaces them rather than writing into them), one elsewhere copies
//! them to its device, all replicas at once. A request's prompts are split into contiguous runs,
//! one per replica, sampled at the same time; prompt `i` draws from the same random streams
//! whichever replica samples it, so results do not depend on the number of replicas.

use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;

use super::actor::{Reply, Service, ServiceError, wait_all};
use crate::generate::{
    Completion, DecodeBackend, GenerateError, GenerateRequest, GenerateTiming, SamplingParams,
    generate_timed,
};
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;

/// Why a generator call failed.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// Sampling failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A replica was asked to sample before it had weights.
    #[error("generator replica {0} has no weights yet")]
    NoWeights(usize),
    /// A replica's thread failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// One replica: its device and the weights it samples with.
pub struct GeneratorReplica<B: Backend> {
    device: B::Device,
    tokenizer: Arc<Tokenizer>,
    weights: Option<(u64, CausalLm<B>)>,
}

/// What one replica sampled: completions per prompt of its run, and where its time went.
pub type ReplicaSamples = (Vec<Vec<Completion>>, GenerateTiming);

/// The generator's replicas; clones share them.
#[derive(Clone)]
pub struct Generator<B: Backend> {
    replicas: Service<GeneratorReplica<B>>,
    devices: Vec<B::Device>,
    trainer: B::Device,
}

impl<B: Backend> std::fmt::Debug for Generator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl<B: DecodeBackend> Generator<B> {
    /// A replica on each of `devices` (at least one: the trainer's when empty), sampling for a
    /// trainer whose rank 0 is on `trainer`.
    pub fn new(devices: &[B::Device], trainer: &B::Device, tokenizer: Arc<Tokenizer>) -> Self {
        let devices = if devices.is_empty() {
            vec![trainer.clone()]
        } else {
            devices.to_vec()
        };
        let states = devices
            .iter()
            .map(|device| GeneratorReplica {
                device: device.clone(),
                tokenizer: Arc::clone(&tokenizer),
                weights: None,
            })
            .collect();
        Self {
            replicas: Service::spawn("generator", states),
            devices,
            trainer: trainer.clone(),
        }
    }

    /// How many replicas sample.
    pub fn replicas(&self) -> usize {
        self.replicas.replicas()
    }

    /// Whether some replica copies the weights (it is not on the trainer's device).
    pub fn copies_weights(&self) -> bool {
        self.devices.iter().any(|d| *d != self.trainer)
    }

    /// Gives every replica `policy` (rank 0's weights after `version` optimiser steps) and waits
    /// until all hold it. A replica on the trainer's device holds `policy` itself; the others a
    /// copy that `copy` makes for their device (once per device). Returns the seconds it took
    /// when some replica copies (0 otherwise).
    pub fn update_weights<E>(
        &self,
        version: u64,
        policy: CausalLm<B>,
        copy: impl Fn(&B::Device) -> Result<CausalLm<B>, E>,
    ) -> Result<f64, E>
    where
        E: From<GeneratorError>,
    {
        let t = Instant::now();
        let mut weights: Vec<(B::Device, CausalLm<B>)> = vec![(self.trainer.clone(), policy)];
        for device in &self.devices {
            if !weights.iter().any(|(d, _)| d == device) {
                weights.push((device.clone(), copy(device)?));
            }
        }
        let weights = Arc::new(weights);
        wait_all(self.replicas.fan_out(move |_, replica| {
            let (_, model) = weights
                .iter()
                .find(|(d, _)| *d == replica.device)
                .expect("a model for every replica's device");
            replica.weights = Some((version, model.clone()));
        }))
        .map_err(GeneratorError::from)?;
        Ok(if self.copies_weights() {
            t.elapsed().as_secs_f64()
        } else {
            0.0
        })
    }

    /// Starts sampling `n` completions of each prompt: one reply per replica that got prompts,
    /// in prompt order. Sample `j` of prompt `i` draws from random stream
    /// `seed_offset + i * n + j` of `params.seed`; each completion records the version of the
    /// weights that sampled it.
    pub fn generate(
        &self,
        prompts: Vec<Vec<u32>>,
        n: usize,
        params: Arc<SamplingParams>,
        seed_offset: u64,
    ) -> Vec<Reply<Result<ReplicaSamples, GeneratorError>>> {
        let replicas = self.replicas().min(prompts.len()).max(1);
        let per = prompts.len().div_ceil(replicas).max(1);
        let mut rest = prompts;
        let mut start = 0;
        let mut replies = Vec::with_capacity(replicas);
        for r in 0..replicas {
            let take = per.min(rest.len());
            let tail = rest.split_off(take);
            let mine = std::mem::replace(&mut rest, tail);
            let params = Arc::clone(&params);
            let offset = seed_offset + (start * n) as u64;
            start += mine.len();
            replies.push(self.replicas.call(r, move |replica| {
                let (version, model) = replica
                    .weights
                    .as_ref()
                    .ok_or(GeneratorError::NoWeights(r))?;
                let request = GenerateRequest {
                    prompts: &mine,
                    n,
                    params: &params,
                    seed_offset: offset,
                    policy_version: *version,
                };
                Ok(generate_timed(
                    model,
                    &replica.tokenizer,
                    &request,
                    &replica.device,
                )?)
            }));
        }
        replies
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;
    use crate::generate::tests::{model, tokenizer};
    use crate::model::copy_to_device;

    type B = NdArray<f32>;

    /// Three replicas sample what one does, prompt by prompt, with the version they were given;
    /// a replica without weights says so.
    #[test]
    fn replicas_sample_what_one_replica_does() {
        let model = model(5);
        let params = Arc::new(SamplingParams {
            temperature: 1.0,
            max_new_tokens: 6,
            seed: 11,
            ..SamplingParams::default()
        });
        let prompts: Vec<Vec<u32>> = (0..5u32).map(|i| vec![1 + i, 2, 3 + i % 2]).collect();
        let run = |replicas: usize| {
            let devices = vec![Default::default(); replicas];
            let generator =
                Generator::<B>::new(&devices, &Default::default(), Arc::new(tokenizer()));
            generator
                .update_weights(3, model.clone(), |d| {
                    Ok::<_, GeneratorError>(copy_to_device(&model, d))
                })
                .expect("update");
            let mut all = Vec::new();
            for reply in generator.generate(prompts.clone(), 2, Arc::clone(&params), 7) {
                all.extend(reply.wait().expect("answered").expect("sampled").0);
            }
            all
        };
        let one = run(1);
        assert_eq!(one.len(), 5);
        assert!(one.iter().flatten().all(|c| c.policy_version == 3));
        let three = run(3);
        let ids = |c: &Vec<Vec<Completion>>| -> Vec<Vec<u32>> {
            c.iter().flatten().map(|c| c.token_ids.clone()).collect()
        };
        assert_eq!(ids(&three), ids(&one));
        assert!(
            ids(&one).iter().any(|t| !t.is_empty()),
            "something was sampled"
        );

        let fresh = Generator::<B>::new(
            &[Default::default()],
            &Default::default(),
            Arc::new(tokenizer()),
        );
        let err = fresh.generate(prompts, 1, params, 0).remove(0).wait();
        assert!(
            matches!(err, Ok(Err(GeneratorError::NoWeights(0)))),
            "{err:?}"
        );
    }
}
