//! The trainer service: the policy's data-parallel ranks ([`crate::train::data_parallel`]), one
//! replica each, on a thread of its own with its device. A step deals the batch's micro-batches
//! out (chunk `i` to rank `i % ranks`), each rank sums its own gradients (one fanned-out call),
//! the caller checks what came back, and a second fanned-out call adds the ranks' sums (NCCL or
//! the host) and takes the same AdamW step on every rank, or skips it on all. Rank 0 is the run's
//! model: the generator, the evaluation and the checkpoints read it.

use std::path::PathBuf;
use std::sync::Arc;

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;

use super::actor::{Service, ServiceError, wait_all};
use burn::module::{AutodiffModule, Module};

use crate::model::{CausalLm, copy_to_device};
use crate::train::adamw::AdamWBackend;
use crate::train::{GradientExchange, Optimizer, Rank, RankGroup, StepOutcome};

/// Why the ranks cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// Two ranks on one device.
    #[error(
        "two trainer ranks on one device ({0}): each data-parallel rank needs a device of its own"
    )]
    SharedDevice(String),
    /// Saving the optimiser state failed.
    #[error("saving the optimiser state: {0}")]
    Save(String),
    /// A rank's thread failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// The trainer's ranks (at least one).
pub struct Trainer<B: AutodiffBackend> {
    ranks: Service<Rank<B>>,
    group: Arc<RankGroup<B::InnerBackend>>,
}

impl<B: AutodiffBackend> std::fmt::Debug for Trainer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("ranks", &self.ranks.replicas())
            .finish_non_exhaustive()
    }
}

impl<B> Trainer<B>
where
    B: AutodiffBackend<InnerBackend: GradientExchange + AdamWBackend>,
{
    /// Rank 0 trains `model` with `optimizer` on `devices[0]`; the others train copies on the
    /// other devices.
    pub fn new(
        model: CausalLm<B>,
        optimizer: Optimizer<B>,
        devices: &[B::Device],
    ) -> Result<Self, TrainerError> {
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].contains(d) {
                return Err(TrainerError::SharedDevice(format!("{d:?}")));
            }
        }
        let first = devices.first().cloned().unwrap_or_default();
        let rank0 = Rank::new(model, optimizer, first);
        let others: Vec<Rank<B>> = devices
            .iter()
            .skip(1)
            .map(|d| rank0.copy_to_device(d))
            .collect();
        let ranks: Vec<Rank<B>> = std::iter::once(rank0).chain(others).collect();
        let group = Arc::new(RankGroup::new(
            ranks.iter().map(|r| r.device.clone()).collect(),
        ));
        Ok(Self {
            ranks: Service::spawn("trainer", ranks),
            group,
        })
    }

    /// How many ranks train.
    pub fn ranks(&self) -> usize {
        self.ranks.replicas()
    }

    /// Rank 0's policy (its tensors, not a copy): what the run evaluates, samples with and saves.
    pub fn model(&self) -> Result<CausalLm<B>, TrainerError> {
        Ok(self.ranks.call(0, |rank| rank.model.clone()).wait()?)
    }

    /// A copy of rank 0's weights (without autodiff) on `device`, made on rank 0's thread, where
    /// the weights are written: device to device where the backend can
    /// ([`GradientExchange::copies_between_devices`]: NCCL on CUDA), through the host otherwise
    /// ([`copy_to_device`]; burn's device-to-device transfer is not implemented on wgpu).
    pub fn copy_weights_to(
        &self,
        device: &B::Device,
    ) -> Result<CausalLm<B::InnerBackend>, TrainerError> {
        let device = device.clone();
        Ok(self
            .ranks
            .call(0, move |rank| {
                if <B::InnerBackend as GradientExchange>::copies_between_devices() {
                    rank.model.valid().to_device(&device)
                } else {
                    copy_to_device(&rank.model.valid(), &device)
                }
            })
            .wait()?)
    }

    /// Writes rank 0's optimiser state to `path` (every rank holds the same).
    pub fn save_optimizer(&self, path: PathBuf) -> Result<(), TrainerError> {
        self.ranks
            .call(0, move |rank| {
                rank.optimizer
                    .save(&path)
                    .map_err(|e| TrainerError::Save(e.to_string()))
            })
            .wait()?
    }

    /// One optimiser step over `chunks` (the batch's micro-batches): chunk `i` goes to rank
    /// `i % ranks`, whose `gradients` give its gradients and what the caller wants back (`S`,
    /// in chunk order). The step is skipped on every rank (weights kept) when `finite` says the
    /// results are not; AdamW skips it too when the summed gradients are not finite.
    pub fn step<C, S, E, G>(
        &self,
        chunks: Vec<C>,
        gradients: G,
        finite: impl FnOnce(&[S]) -> bool,
    ) -> Result<(Vec<S>, StepOutcome), E>
    where
        C: Send + 'static,
        S: Send + 'static,
        E: Send + 'static + From<ServiceError>,
        G: Fn(&CausalLm<B>, &C, &B::Device) -> Result<(GradientsParams, S), E>
            + Send
            + Sync
            + 'static,
    {
        let n_ranks = self.ranks();
        let mut dealt: Vec<Vec<(usize, C)>> = (0..n_ranks).map(|_| Vec::new()).collect();
        for (i, chunk) in chunks.into_iter().enumerate() {
            dealt[i % n_ranks].push((i, chunk));
        }
        // 1. Each rank's gradients over its chunks, all ranks at once.
        let gradients = Arc::new(gradients);
        let replies: Vec<_> = dealt
            .into_iter()
            .enumerate()
            .map(|(r, mine)| {
                let gradients = Arc::clone(&gradients);
                self.ranks
                    .call(r, move |rank| rank.accumulate(mine, gradients.as_ref()))
            })
            .collect();
        let mut results: Vec<(usize, S)> = Vec::new();
        let mut present: Vec<bool> = Vec::new();
        let mut failed = None;
        for reply in wait_all(replies)? {
            match reply {
                Ok((mine, has)) => {
                    results.extend(mine);
                    present = if present.is_empty() {
                        has
                    } else {
                        present.iter().zip(&has).map(|(a, b)| *a || *b).collect()
                    };
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            // Every rank drops what it summed, so the next step starts clean.
            wait_all(self.ranks.fan_out(|_, rank| rank.discard()))?;
            return Err(e);
        }
        results.sort_by_key(|(i, _)| *i);
        let values: Vec<S> = results.into_iter().map(|(_, s)| s).collect();
        let take_step = finite(&values);

        // 2. The sum over the ranks, and the same step on every rank.
        let group = Arc::clone(&self.group);
        let present = Arc::new(present);
        let outcomes = wait_all(
            self.ranks
                .fan_out(move |r, rank| rank.apply(r, &group, &present, take_step)),
        )?;
        Ok((values, outcomes[0]))
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};

    use super::*;
    use crate::config::Architecture;
    use crate::model::tests::tiny_spec;

    type B = Autodiff<NdArray<f32>>;

    #[test]
    fn ranks_on_one_device_are_refused() {
        let model = CausalLm::<B>::new(&tiny_spec(Architecture::Qwen3), &Default::default());
        let optimizer = Optimizer::<B>::new(&crate::config::TrainingConfig::default());
        let err = Trainer::new(model, optimizer, &[Default::default(), Default::default()])
            .expect_err("one device twice");
        assert!(err.to_string().contains("a device of its own"), "{err}");
    }
}
