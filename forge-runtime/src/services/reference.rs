//! The reference-model service: the frozen starting policy, one replica per place in
//! `services.ref_model` (a GPU of the training backend, or the CPU), scoring completions for the
//! KL term. A batch is cut into passes of bounded size, each routed to the least busy replica,
//! so several replicas score one batch at once.

use burn::backend::NdArray;
use burn::prelude::*;

use super::actor::{Service, ServiceError};
use crate::model::{CausalLm, copy_to_backend, copy_to_device};
use crate::rl::Episode;
use crate::train::TokenBatch;
use crate::train::loss_backend::LossBackend;

/// Where a reference replica runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferencePlace<D> {
    /// A device of the training backend (the trainer's unless `services.ref_model.devices`
    /// names another).
    Device(D),
    /// The CPU (`services.ref_model.with_gpus: false` on a GPU backend).
    Cpu,
}

/// Why reference log-probabilities could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The model could not be copied to its place.
    #[error("placing the reference model: {0}")]
    Place(String),
    /// The forward pass or the log-probability kernel failed.
    #[error("reference log-probabilities: {0}")]
    Logprobs(String),
    /// A replica's thread failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// One copy of the frozen reference model, where the placement puts it.
// One per replica: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ReferenceModel<B: Backend> {
    /// On a device of the training backend.
    Device(CausalLm<B>, B::Device),
    /// On the CPU.
    Cpu(CausalLm<NdArray<f32>>),
}

impl<B: LossBackend> ReferenceModel<B> {
    /// The reference for a policy starting from `start` (on `trainer`): the same tensors when it
    /// shares the trainer's device, a copy otherwise.
    pub fn place(
        start: CausalLm<B>,
        trainer: &B::Device,
        place: &ReferencePlace<B::Device>,
    ) -> Result<Self, ReferenceError> {
        Ok(match place {
            ReferencePlace::Device(device) if device == trainer => {
                Self::Device(start, device.clone())
            }
            ReferencePlace::Device(device) => {
                Self::Device(copy_to_device(&start, device), device.clone())
            }
            ReferencePlace::Cpu => Self::Cpu(
                copy_to_backend(&start, &Default::default())
                    .map_err(|e| ReferenceError::Place(e.to_string()))?,
            ),
        })
    }

    /// Log-probabilities of each episode's completion at `temperature`.
    pub fn completion_logprobs(
        &self,
        episodes: &[Episode],
        temperature: f64,
    ) -> Result<Vec<Vec<f32>>, ReferenceError> {
        match self {
            Self::Device(model, device) => {
                completion_logprobs(model, episodes, temperature, device)
            }
            Self::Cpu(model) => {
                completion_logprobs(model, episodes, temperature, &Default::default())
            }
        }
    }
}

/// The reference model's replicas.
pub struct Reference<B: Backend> {
    replicas: Service<ReferenceModel<B>>,
    /// Most token positions in one forward pass.
    pass_positions: usize,
}

impl<B: Backend> std::fmt::Debug for Reference<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("replicas", &self.replicas.replicas())
            .finish()
    }
}

impl<B: LossBackend> Reference<B> {
    /// A replica at each of `places` (at least one), each a copy of `start` unless it shares
    /// `trainer`'s device.
    pub fn new(
        start: CausalLm<B>,
        trainer: &B::Device,
        places: &[ReferencePlace<B::Device>],
    ) -> Result<Self, ReferenceError> {
        let first = [ReferencePlace::Device(trainer.clone())];
        let places = if places.is_empty() { &first } else { places };
        let models = places
            .iter()
            .map(|p| ReferenceModel::place(start.clone(), trainer, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            replicas: Service::spawn("ref_model", models),
            pass_positions: REFERENCE_POSITIONS,
        })
    }

    /// The same with passes of at most `positions` token positions (at least one episode each).
    pub fn with_pass_positions(self, positions: usize) -> Self {
        Self {
            pass_positions: positions,
            ..self
        }
    }

    /// The reference log-probabilities of every episode's completion at `temperature`, set on
    /// the episodes. Passes of at most [`REFERENCE_POSITIONS`] positions (padded) go to the
    /// replicas as they free up.
    pub fn score(&self, episodes: &mut [Episode], temperature: f64) -> Result<(), ReferenceError> {
        let mut replies = Vec::new();
        let mut start = 0;
        while start < episodes.len() {
            let take = pass_size(&episodes[start..], self.pass_positions);
            let chunk: Vec<Episode> = episodes[start..start + take].to_vec();
            replies.push((
                start,
                self.replicas
                    .call_one(move |model| model.completion_logprobs(&chunk, temperature)),
            ));
            start += take;
        }
        // Every reply is waited for before any error is returned: no pass is left running.
        let results: Vec<_> = replies
            .into_iter()
            .map(|(start, reply)| (start, reply.wait()))
            .collect();
        for (start, result) in results {
            for (k, lp) in result??.into_iter().enumerate() {
                episodes[start + k].ref_logprobs = Some(lp);
            }
        }
        Ok(())
    }
}

/// Token positions the reference model scores in one forward pass: bounds its logits
/// ([positions, vocab], 2.5 GB in bf16 at Qwen's vocabulary) and activations.
pub const REFERENCE_POSITIONS: usize = 8192;

/// How many of the leading `episodes` the next pass of at most `positions` (padded) positions
/// takes (at least one).
fn pass_size(episodes: &[Episode], positions: usize) -> usize {
    let mut longest = 0;
    for (k, e) in episodes.iter().enumerate() {
        longest = longest.max(e.prompt_ids.len() + e.completion_ids.len());
        if k > 0 && (k + 1) * longest > positions {
            return k;
        }
    }
    episodes.len()
}

/// Log-probabilities of each episode's completion under `model` at `temperature`, computed
/// where the logits are (only one number per position comes back to the host).
pub fn completion_logprobs<B: LossBackend>(
    model: &CausalLm<B>,
    episodes: &[Episode],
    temperature: f64,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>, ReferenceError> {
    let tokens = TokenBatch::new(
        episodes
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (tokens.batch, tokens.seq);
    let logits = tokens.logits(model, device);
    let v = logits.dims()[2];
    // Only completion positions are wanted; the others are marked ignored.
    let targets: Vec<i32> = (0..b * s)
        .map(|i| match tokens.completion_index[i] {
            Some(_) => i32::try_from(tokens.target_ids[i]).unwrap_or(-1),
            None => -1,
        })
        .collect();
    let rows = logits.reshape([b * s, v]).into_primitive().tensor();
    let logprobs = B::target_logprobs(rows, &targets, temperature)
        .map_err(|e| ReferenceError::Logprobs(e.to_string()))?;
    let mut out: Vec<Vec<f32>> = episodes
        .iter()
        .map(|e| vec![0.0; e.completion_ids.len()])
        .collect();
    for i in 0..b * s {
        if let Some(k) = tokens.completion_index[i] {
            out[i / s][k] = logprobs[i];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::tests::model;

    type B = NdArray<f32>;

    fn episode(prompt: Vec<u32>, completion: Vec<u32>) -> Episode {
        Episode {
            prompt_ids: prompt,
            completion_ids: completion,
            generator_logprobs: Vec::new(),
            ref_logprobs: None,
            reward: 0.0,
            advantage: 0.0,
            truncated: false,
            policy_version: 0,
            group: 0,
        }
    }

    /// Two replicas (one on the CPU backend's device, one on the CPU proper), given passes of
    /// two or three episodes, give the numbers one model computes in one pass.
    #[test]
    fn replicas_score_what_the_model_computes() {
        let model = model(9);
        let mut episodes: Vec<Episode> = (0..7u32)
            .map(|i| {
                episode(
                    vec![1 + i % 3, 4, 2],
                    (0..(2 + i % 4)).map(|t| 3 + t).collect(),
                )
            })
            .collect();
        let want =
            completion_logprobs(&model, &episodes, 0.7, &Default::default()).expect("direct");
        let places = vec![
            ReferencePlace::Device(Default::default()),
            ReferencePlace::Cpu,
        ];
        let reference = Reference::<B>::new(model, &Default::default(), &places)
            .expect("placed")
            .with_pass_positions(16);
        reference.score(&mut episodes, 0.7).expect("scored");
        for (e, w) in episodes.iter().zip(&want) {
            let got = e.ref_logprobs.as_ref().expect("set");
            assert_eq!(got.len(), w.len());
            for (g, w) in got.iter().zip(w) {
                assert!((g - w).abs() <= 1e-5, "{g} vs {w}");
                assert!(*g < 0.0);
            }
        }
    }
}
