//! Data-parallel training: one copy of the policy and of its optimiser per device, a "rank"
//! (the trainer service, [`crate::services::Trainer`], runs each on a thread of its own).
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

    /// Whether tensors move between two devices directly (NCCL's send and receive on CUDA)
    /// rather than through the host. By default not.
    fn copies_between_devices() -> bool {
        false
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

        /// Where the runtime's server has collectives (CUDA): burn's `to_device` then sends each
        /// tensor with NCCL (cubecl's `to_client`) instead of reading it back to the host.
        fn copies_between_devices() -> bool {
            <R::Server as ServerCommunication>::SERVER_COMM_ENABLED
        }
    }
}

/// What [`Rank::accumulate`] gives back: each chunk's result with its index in the batch, and
/// which parameters (in visiting order) have a gradient.
pub type Accumulated<S> = (Vec<(usize, S)>, Vec<bool>);

/// One rank: its copy of the policy and of the optimiser, its device, and the gradients it has
/// summed for the step under way. The trainer service runs each rank on a thread of its own
/// ([`crate::services::Trainer`]).
pub struct Rank<B: AutodiffBackend> {
    /// The policy.
    pub model: CausalLm<B>,
    /// Its optimiser.
    pub optimizer: Optimizer<B>,
    /// Where both live.
    pub device: B::Device,
    /// The sum of this step's gradients so far.
    pending: GradientsAccumulator<CausalLm<B>>,
}

impl<B: AutodiffBackend> std::fmt::Debug for Rank<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rank")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<B> Rank<B>
where
    B: AutodiffBackend<InnerBackend: GradientExchange + AdamWBackend>,
{
    /// A rank training `model` with `optimizer` on `device`.
    pub fn new(model: CausalLm<B>, optimizer: Optimizer<B>, device: B::Device) -> Self {
        Self {
            model,
            optimizer,
            device,
            pending: GradientsAccumulator::new(),
        }
    }

    /// A rank on `device` with copies of this one's policy and optimiser state.
    pub fn copy_to_device(&self, device: &B::Device) -> Self {
        Self::new(
            copy_to_device(&self.model, device),
            self.optimizer.copy_to_device(device),
            device.clone(),
        )
    }

    /// Adds the gradients of `chunks` (each with its index in the batch) to the step's sum;
    /// returns what `gradients` gave beside them, with the chunk indices, and which parameters
    /// (in visiting order) have a gradient so far.
    pub fn accumulate<C, S, E>(
        &mut self,
        chunks: Vec<(usize, C)>,
        gradients: &impl Fn(&CausalLm<B>, &C, &B::Device) -> Result<(GradientsParams, S), E>,
    ) -> Result<Accumulated<S>, E> {
        let mut results = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks {
            let (grads, result) = gradients(&self.model, &chunk, &self.device)?;
            self.pending.accumulate(&self.model, grads);
            results.push((i, result));
        }
        // The accumulator hands its sum out and resets: read and put back.
        let sum = self.pending.grads();
        let present = Presence::of(&self.model, &sum).0;
        self.pending.accumulate(&self.model, sum);
        Ok((results, present))
    }

    /// Drops the gradients summed so far (a step that failed part-way).
    pub fn discard(&mut self) {
        drop(self.pending.grads());
    }

    /// Ends the step: with `take_step`, the summed gradients (added over the ranks of `group`
    /// first, when it has more than this one: every rank calls this at once, `present` the
    /// union of their [`Self::accumulate`] presences) go through the optimiser; without, the
    /// step is skipped and the weights kept. The sum starts again from zero.
    pub fn apply(
        &mut self,
        rank: usize,
        group: &RankGroup<B::InnerBackend>,
        present: &[bool],
        take_step: bool,
    ) -> StepOutcome {
        let grads = self.pending.grads();
        let model = self.model.clone();
        let (model, outcome) = if !take_step {
            drop(grads);
            self.optimizer.step_skipped(model)
        } else if group.devices().len() == 1 {
            self.optimizer.step(model, grads)
        } else {
            let flat = flatten(&self.model, &grads, present, &self.device);
            drop(grads);
            let sum = <B::InnerBackend as GradientExchange>::sum_over_ranks(flat, rank, group);
            let grads = unflatten(&self.model, sum, present);
            self.optimizer.step(model, grads)
        };
        self.model = model;
        outcome
    }
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
}
