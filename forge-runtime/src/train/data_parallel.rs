//! Data-parallel training: one copy of the policy and of its optimiser per device, a "rank".
//! A batch's micro-batches are dealt out to the ranks; each rank sums the gradients of its own,
//! the ranks' sums are added up (NCCL's all-reduce where the runtime has it: CUDA; through the
//! host elsewhere) and every rank applies the same AdamW step to the same total, so the copies
//! stay equal without weights being copied after the start. Rank 0 is the run's model: the
//! checkpoints, the evaluation and the generator read it.
//!
//! The loss of each micro-batch is normalised over the whole batch (as with one device), so the
//! total does not depend on how many ranks share the batch, up to the order of the additions.

use std::sync::{Barrier, Mutex, PoisonError};

use super::adamw::AdamWBackend;
use super::{Optimizer, StepOutcome};
use crate::kernels::streams::WorkStream;
use crate::model::{CausalLm, copy_to_device};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};

/// A backend whose ranks can add up a tensor each.
pub trait GradientExchange: Backend {
    /// `tensor` summed over the ranks of `group`: every rank calls this at the same time (from
    /// a thread of its own) with a tensor of the same length and type, and gets the same sum.
    /// By default through the host.
    fn sum_over_ranks(
        tensor: Tensor<Self, 1>,
        rank: usize,
        group: &RankGroup<Self>,
    ) -> Tensor<Self, 1> {
        group.sum_on_host(rank, tensor)
    }
}

impl<E, I, Q> GradientExchange for burn_ndarray::NdArray<E, I, Q>
where
    E: burn_ndarray::FloatNdArrayElement,
    I: burn_ndarray::IntNdArrayElement,
    Q: burn_ndarray::QuantElement,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<E>>,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<I>>,
{
}

/// The devices of the ranks, and what adding up through the host needs.
pub struct RankGroup<B: Backend> {
    devices: Vec<B::Device>,
    /// Each rank's values of the current exchange (host path).
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

impl<B: Backend> RankGroup<B> {
    /// A group of one rank per device.
    pub fn new(devices: Vec<B::Device>) -> Self {
        let ranks = devices.len();
        Self {
            devices,
            slots: Mutex::new(vec![Vec::new(); ranks]),
            barrier: Barrier::new(ranks),
        }
    }

    /// The ranks' devices, rank 0 first.
    pub fn devices(&self) -> &[B::Device] {
        &self.devices
    }

    /// The sum computed on the host, in rank order (so every rank gets the same bits), in f32
    /// and returned in the tensor's own type.
    pub fn sum_on_host(&self, rank: usize, tensor: Tensor<B, 1>) -> Tensor<B, 1> {
        let (dtype, device) = (tensor.dtype(), tensor.device());
        let values = tensor.into_data().convert::<f32>().to_vec::<f32>();
        // f32 data converted to f32 always reads as f32.
        let values = values.unwrap_or_default();
        let n = values.len();
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)[rank] = values;
        self.barrier.wait();
        let mut sum = vec![0.0f32; n];
        for part in self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            for (s, v) in sum.iter_mut().zip(part) {
                *s += v;
            }
        }
        // Nobody writes the next exchange's values before everyone has read these.
        self.barrier.wait();
        Tensor::from_data(TensorData::new(sum, [n]), (&device, dtype))
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_backend::DeviceOps;
    use burn_cubecl::element::BoolElement;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
    use cubecl::server::{ReduceOperation, ServerCommunication};

    use super::{GradientExchange, RankGroup};

    impl<R, F, I, BT> GradientExchange for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        /// NCCL's all-reduce where the runtime's server has collectives (CUDA), on its
        /// communication stream, which the compute stream then waits for; the host otherwise.
        fn sum_over_ranks(
            tensor: Tensor<Self, 1>,
            rank: usize,
            group: &RankGroup<Self>,
        ) -> Tensor<Self, 1> {
            if !<R::Server as ServerCommunication>::SERVER_COMM_ENABLED {
                return group.sum_on_host(rank, tensor);
            }
            let src = burn_cubecl::kernel::into_contiguous(tensor.into_primitive().tensor());
            let mut client = src.client.clone();
            let shape = src.meta.shape().clone();
            let out = client.empty(shape.num_elements().max(1) * src.dtype.size());
            let ids = group.devices().iter().map(DeviceOps::id).collect();
            client.all_reduce(
                src.handle.clone(),
                out.clone(),
                src.dtype.into(),
                ids,
                ReduceOperation::Sum,
            );
            client.sync_collective();
            let sum = CubeTensor::new_contiguous(client, src.device.clone(), shape, out, src.dtype);
            Tensor::from_primitive(TensorPrimitive::Float(sum))
        }
    }
}

/// One rank: its copy of the policy and of the optimiser, and its device.
pub struct Rank<B: AutodiffBackend> {
    /// The policy.
    pub model: CausalLm<B>,
    /// Its optimiser.
    pub optimizer: Optimizer<B>,
    /// Where both live.
    pub device: B::Device,
}

/// The trainer's ranks (at least one).
pub struct DataParallel<B: AutodiffBackend> {
    /// Rank 0 first.
    pub ranks: Vec<Rank<B>>,
    group: RankGroup<B::InnerBackend>,
    /// The stream each rank's work goes to, from whatever thread does it (rank 0's: the
    /// caller's, set at each step).
    streams: Vec<WorkStream>,
}

impl<B: AutodiffBackend> std::fmt::Debug for DataParallel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("ranks", &self.ranks.len())
            .finish_non_exhaustive()
    }
}

/// Why the ranks cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum DataParallelError {
    /// Two ranks on one device.
    #[error(
        "two trainer ranks on one device ({0}): each data-parallel rank needs a device of its own"
    )]
    SharedDevice(String),
}

impl<B> DataParallel<B>
where
    B: AutodiffBackend<InnerBackend: GradientExchange + AdamWBackend>,
{
    /// Rank 0 trains `model` with `optimizer` on `devices[0]`; the others train copies on the
    /// other devices.
    pub fn new(
        model: CausalLm<B>,
        optimizer: Optimizer<B>,
        devices: &[B::Device],
    ) -> Result<Self, DataParallelError> {
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].contains(d) {
                return Err(DataParallelError::SharedDevice(format!("{d:?}")));
            }
        }
        let first = devices.first().cloned().unwrap_or_default();
        let mut ranks = vec![Rank {
            model,
            optimizer,
            device: first,
        }];
        for device in devices.iter().skip(1) {
            let rank = Rank {
                model: copy_to_device(&ranks[0].model, device),
                optimizer: ranks[0].optimizer.copy_to_device(device),
                device: device.clone(),
            };
            ranks.push(rank);
        }
        let group = RankGroup::new(ranks.iter().map(|r| r.device.clone()).collect());
        // Rank 0's is replaced by the caller's at each step.
        let streams = (0..ranks.len())
            .map(|r| {
                if r == 0 {
                    WorkStream::current()
                } else {
                    WorkStream::new()
                }
            })
            .collect();
        Ok(Self {
            ranks,
            group,
            streams,
        })
    }

    /// Rank 0's policy: what the run evaluates, samples with and saves.
    pub fn model(&self) -> &CausalLm<B> {
        &self.ranks[0].model
    }

    /// Rank 0's optimiser.
    pub fn optimizer(&self) -> &Optimizer<B> {
        &self.ranks[0].optimizer
    }

    /// One optimiser step over `chunks` (the batch's micro-batches): chunk `i` goes to rank
    /// `i % ranks`, whose `gradients` give its gradients and what the caller wants back (`S`,
    /// in chunk order). The step is skipped on every rank (weights kept) when `finite` says the
    /// results are not; AdamW skips it too when the summed gradients are not finite.
    pub fn step<C, S, E>(
        &mut self,
        chunks: &[C],
        gradients: impl Fn(&CausalLm<B>, &C, &B::Device) -> Result<(GradientsParams, S), E> + Sync,
        finite: impl FnOnce(&[S]) -> bool,
    ) -> Result<(Vec<S>, StepOutcome), E>
    where
        C: Sync,
        S: Send,
        E: Send,
    {
        let n_ranks = self.ranks.len();
        if n_ranks == 1 {
            // One device: no exchange, the gradients accumulated in place.
            let rank = &mut self.ranks[0];
            let mut accumulator = GradientsAccumulator::new();
            let mut results = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let (grads, result) = gradients(&rank.model, chunk, &rank.device)?;
                accumulator.accumulate(&rank.model, grads);
                results.push(result);
            }
            let model = rank.model.clone();
            let (model, outcome) = if finite(&results) {
                rank.optimizer.step(model, accumulator.grads())
            } else {
                rank.optimizer.step_skipped(model)
            };
            rank.model = model;
            return Ok((results, outcome));
        }

        // 1. Each rank's gradients over its chunks, at the same time (a thread each, rank 0's
        // work on the caller's stream, as with one device).
        self.streams[0] = WorkStream::current();
        let per_rank: Vec<Result<RankGradients<S>, E>> =
            on_every_rank(&self.streams, &self.ranks, |r, rank| {
                let mut accumulator = GradientsAccumulator::new();
                let mut results = Vec::new();
                for (i, chunk) in chunks.iter().enumerate().skip(r).step_by(n_ranks) {
                    let (grads, result) = gradients(&rank.model, chunk, &rank.device)?;
                    accumulator.accumulate(&rank.model, grads);
                    results.push((i, result));
                }
                let grads = accumulator.grads();
                let present = Presence::of(&rank.model, &grads);
                Ok(RankGradients {
                    grads,
                    present,
                    results,
                })
            });
        let mut ranked = Vec::with_capacity(n_ranks);
        let mut results: Vec<(usize, S)> = Vec::with_capacity(chunks.len());
        for r in per_rank {
            let r = r?;
            results.extend(r.results);
            ranked.push((r.grads, r.present));
        }
        results.sort_by_key(|(i, _)| *i);
        let results: Vec<S> = results.into_iter().map(|(_, s)| s).collect();
        // A parameter gets a (summed) gradient if any rank's chunks gave it one.
        let present = ranked
            .iter()
            .map(|(_, p)| p.0.clone())
            .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| *x || *y).collect())
            .unwrap_or_default();
        let take_step = finite(&results);

        // 2. The sum over the ranks, and the same step on every rank.
        let group = &self.group;
        let present = &present;
        let outcomes: Vec<StepOutcome> = on_every_rank(
            &self.streams,
            self.ranks.iter_mut().zip(ranked),
            |r, (rank, (grads, _))| {
                let model = rank.model.clone();
                let (model, outcome) = if take_step {
                    let flat = flatten(&rank.model, &grads, present, &rank.device);
                    drop(grads);
                    let sum = <B::InnerBackend as GradientExchange>::sum_over_ranks(flat, r, group);
                    let grads = unflatten(&rank.model, sum, present);
                    rank.optimizer.step(model, grads)
                } else {
                    rank.optimizer.step_skipped(model)
                };
                rank.model = model;
                outcome
            },
        );
        Ok((results, outcomes[0]))
    }
}

/// `work(r, item)` for every rank's `item` at once, a thread each, rank `r`'s device work on
/// `streams[r]`; the results in rank order (a rank's panic is raised again here).
fn on_every_rank<T: Send, R: Send>(
    streams: &[WorkStream],
    items: impl IntoIterator<Item = T>,
    work: impl Fn(usize, T) -> R + Sync,
) -> Vec<R> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(r, item)| {
                let stream = streams[r];
                scope.spawn(move || stream.run(|| work(r, item)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// What one rank computed in a step.
struct RankGradients<S> {
    grads: GradientsParams,
    present: Presence,
    results: Vec<(usize, S)>,
}

/// Which parameters (in visiting order) have a gradient.
struct Presence(Vec<bool>);

impl Presence {
    fn of<B: AutodiffBackend>(model: &CausalLm<B>, grads: &GradientsParams) -> Self {
        struct Visit<'a>(&'a GradientsParams, Vec<bool>);
        impl<B: AutodiffBackend> ModuleVisitor<B> for Visit<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.1
                    .push(self.0.get::<B::InnerBackend, D>(param.id).is_some());
            }
        }
        let mut visit = Visit(grads, Vec::new());
        model.visit(&mut visit);
        Self(visit.1)
    }
}

/// The gradients of the `present` parameters, in visiting order, flattened into one tensor (in
/// the first one's type): zeros for a parameter this rank has no gradient of.
fn flatten<B: AutodiffBackend>(
    model: &CausalLm<B>,
    grads: &GradientsParams,
    present: &[bool],
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
    struct Visit<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        present: std::slice::Iter<'a, bool>,
        parts: Vec<Tensor<B::InnerBackend, 1>>,
        device: B::Device,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Visit<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.present.next() != Some(&true) {
                return;
            }
            let value = param.val();
            let n = value.shape().num_elements();
            let part = match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(g) => g.reshape([n]),
                None => Tensor::zeros([n], (&self.device, value.dtype())),
            };
            let part = match self.parts.first().map(Tensor::dtype) {
                Some(dtype) if dtype != part.dtype() => part.cast(float_dtype(dtype)),
                _ => part,
            };
            self.parts.push(part);
        }
    }
    let mut visit = Visit::<B> {
        grads,
        present: present.iter(),
        parts: Vec::new(),
        device: device.clone(),
    };
    model.visit(&mut visit);
    if visit.parts.is_empty() {
        return Tensor::zeros([1], device);
    }
    Tensor::cat(visit.parts, 0)
}

/// The gradients [`flatten`] laid out, back into one tensor per parameter (each in its
/// parameter's type).
fn unflatten<B: AutodiffBackend>(
    model: &CausalLm<B>,
    flat: Tensor<B::InnerBackend, 1>,
    present: &[bool],
) -> GradientsParams {
    struct Visit<'a, B: AutodiffBackend> {
        flat: Tensor<B::InnerBackend, 1>,
        present: std::slice::Iter<'a, bool>,
        offset: usize,
        grads: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Visit<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.present.next() != Some(&true) {
                return;
            }
            let value = param.val();
            let shape = value.shape();
            let n = shape.num_elements();
            let part = self.flat.clone().slice(self.offset..self.offset + n);
            self.offset += n;
            let part = if part.dtype() == value.dtype() {
                part
            } else {
                part.cast(float_dtype(value.dtype()))
            };
            self.grads
                .register::<B::InnerBackend, D>(param.id, part.reshape(shape));
        }
    }
    let mut visit = Visit::<B> {
        flat,
        present: present.iter(),
        offset: 0,
        grads: GradientsParams::new(),
    };
    model.visit(&mut visit);
    visit.grads
}

/// The float type of a float `DType` (f32 for anything else: gradients are floats).
fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::BF16 => FloatDType::BF16,
        DType::F16 => FloatDType::F16,
        _ => FloatDType::F32,
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::config::Architecture;
    use crate::model::CausalLm;
    use crate::model::tests::tiny_spec;

    type B = Autodiff<NdArray<f32>>;
    type Inner = NdArray<f32>;

    /// Random gradients for every parameter but the first (absent on this "rank").
    fn random_grads(model: &CausalLm<B>, seed: u64) -> GradientsParams {
        struct Visit(GradientsParams, rand::rngs::StdRng, bool);
        impl ModuleVisitor<B> for Visit {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if !std::mem::replace(&mut self.2, true) {
                    return;
                }
                let shape = param.val().shape();
                let values: Vec<f32> = (0..shape.num_elements())
                    .map(|_| self.1.random_range(-1.0..1.0))
                    .collect();
                let g = Tensor::<Inner, D>::from_data(
                    TensorData::new(values, shape),
                    &Default::default(),
                );
                self.0.register::<Inner, D>(param.id, g);
            }
        }
        let mut visit = Visit(
            GradientsParams::new(),
            rand::rngs::StdRng::seed_from_u64(seed),
            false,
        );
        model.visit(&mut visit);
        visit.0
    }

    fn tiny() -> CausalLm<B> {
        CausalLm::<B>::new(&tiny_spec(Architecture::Qwen3), &Default::default())
    }

    /// Every parameter's gradient as a host vector, in visiting order (empty: none).
    fn host(model: &CausalLm<B>, grads: &GradientsParams) -> Vec<Vec<f32>> {
        struct Visit<'a>(&'a GradientsParams, Vec<Vec<f32>>);
        impl ModuleVisitor<B> for Visit<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.1.push(
                    self.0
                        .get::<Inner, D>(param.id)
                        .map_or_else(Vec::new, |g| g.into_data().to_vec::<f32>().expect("f32")),
                );
            }
        }
        let mut visit = Visit(grads, Vec::new());
        model.visit(&mut visit);
        visit.1
    }

    #[test]
    fn flattening_round_trips_and_keeps_absent_parameters_absent() {
        let model = tiny();
        let grads = random_grads(&model, 1);
        let present = Presence::of(&model, &grads).0;
        assert!(!present[0] && present[1..].iter().all(|&p| p));
        let flat = flatten(&model, &grads, &present, &Default::default());
        let back = unflatten(&model, flat, &present);
        assert_eq!(host(&model, &back), host(&model, &grads));
    }

    #[test]
    fn ranks_summing_on_the_host_get_the_same_sum() {
        let group = RankGroup::<Inner>::new(vec![Default::default(); 3]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let parts: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..1000).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let want: Vec<f32> = (0..1000)
            .map(|i| parts[0][i] + parts[1][i] + parts[2][i])
            .collect();
        // Twice: the second exchange must not read the first's values.
        for round in 0..2 {
            let sums: Vec<Vec<f32>> = std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .iter()
                    .enumerate()
                    .map(|(r, p)| {
                        let group = &group;
                        scope.spawn(move || {
                            let scaled: Vec<f32> =
                                p.iter().map(|x| x * (round + 1) as f32).collect();
                            let t = Tensor::<Inner, 1>::from_data(
                                TensorData::new(scaled, [1000]),
                                &Default::default(),
                            );
                            group
                                .sum_on_host(r, t)
                                .into_data()
                                .to_vec::<f32>()
                                .expect("f32")
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("rank"))
                    .collect()
            });
            for sum in &sums {
                assert_eq!(sum, &sums[0], "every rank gets the same bits");
                for (s, w) in sum.iter().zip(&want) {
                    assert!((s - w * (round + 1) as f32).abs() <= 1e-5, "{s} vs {w}");
                }
            }
        }
    }

    #[test]
    fn ranks_on_one_device_are_refused() {
        let model = tiny();
        let optimizer = Optimizer::<B>::new(&crate::config::TrainingConfig::default());
        let err = DataParallel::new(model, optimizer, &[Default::default(), Default::default()])
            .expect_err("one device twice");
        assert!(err.to_string().contains("a device of its own"), "{err}");
    }
}
