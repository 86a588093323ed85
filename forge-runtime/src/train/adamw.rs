//! AdamW as `torch.optim.AdamW` computes it (decoupled weight decay, bias-corrected moments),
//! with f32 moments, and an f32 master copy of every parameter stored in a narrower type (bf16,
//! f16): the update runs on the master and the parameter is its rounding, so updates far below
//! a bf16 ulp still accumulate. On cubecl backends one fused launch per parameter
//! ([`crate::kernels::adamw`]); elsewhere burn's tensor operations.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};

use crate::kernels::adamw::AdamWScalars;

/// The f32 state of one parameter, flattened.
#[derive(Debug, Clone)]
pub struct MomentState<B: Backend> {
    /// First moment (`exp_avg`).
    pub exp_avg: Tensor<B, 1>,
    /// Second moment (`exp_avg_sq`).
    pub exp_avg_sq: Tensor<B, 1>,
    /// The f32 master weights, for parameters stored in another type.
    pub master: Option<Tensor<B, 1>>,
}

impl<B: Backend> MomentState<B> {
    /// Zero moments for `param` (flattened), and its master copy if it is not f32.
    pub fn new(param: &Tensor<B, 1>) -> Self {
        let [n] = param.dims();
        let device = param.device();
        let zeros = || Tensor::<B, 1>::zeros([n], (&device, DType::F32));
        Self {
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            master: (param.dtype() != DType::F32).then(|| param.clone().cast(FloatDType::F32)),
        }
    }
}

/// A backend that applies AdamW to one parameter.
pub trait AdamWBackend: Backend {
    /// The parameter after one AdamW step (same type as `param`) and the updated state.
    /// `param` and `grad` are flattened and of the same type. By default burn's tensor
    /// operations, in f32.
    fn adamw_update(
        param: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        state: MomentState<Self>,
        scalars: &AdamWScalars,
    ) -> (Tensor<Self, 1>, MomentState<Self>) {
        update_with_tensor_ops(param, grad, state, scalars)
    }
}

impl<E, I, Q> AdamWBackend for burn_ndarray::NdArray<E, I, Q>
where
    E: burn_ndarray::FloatNdArrayElement,
    I: burn_ndarray::IntNdArrayElement,
    Q: burn_ndarray::QuantElement,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<E>>,
    burn_ndarray::NdArrayTensor: From<burn_ndarray::SharedArray<I>>,
{
}

/// [`AdamWBackend::adamw_update`] with burn's tensor operations.
pub fn update_with_tensor_ops<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    state: MomentState<B>,
    s: &AdamWScalars,
) -> (Tensor<B, 1>, MomentState<B>) {
    let dtype = param.dtype();
    let grad = if grad.dtype() == DType::F32 {
        grad
    } else {
        grad.cast(FloatDType::F32)
    };
    let p = match &state.master {
        Some(master) => master.clone(),
        None => param,
    };
    // Without weight decay the factor is 1: no pass over the parameter for it.
    let p = if s.decay == 1.0 {
        p
    } else {
        p.mul_scalar(s.decay)
    };
    let m = state.exp_avg.clone().mul_scalar(s.beta1) + grad.clone().mul_scalar(1.0 - s.beta1);
    let v = state.exp_avg_sq.clone().mul_scalar(s.beta2) + grad.square().mul_scalar(1.0 - s.beta2);
    let denom = v
        .clone()
        .sqrt()
        .mul_scalar(s.inv_sqrt_bias2)
        .add_scalar(s.eps);
    let p = p - (m.clone() / denom).mul_scalar(s.step_size);
    let has_master = state.master.is_some();
    let param = if has_master {
        p.clone().cast(FloatDType::from(dtype))
    } else {
        p.clone()
    };
    let state = MomentState {
        exp_avg: m,
        exp_avg_sq: v,
        master: has_master.then_some(p),
    };
    (param, state)
}

/// AdamW's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// The constants of step `t` (1-based) at learning rate `lr`.
    pub fn scalars(&self, lr: f64, t: u64) -> AdamWScalars {
        let t = t.max(1) as i32;
        AdamWScalars {
            decay: (1.0 - lr * self.weight_decay) as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            inv_sqrt_bias2: (1.0 / (1.0 - self.beta2.powi(t)).sqrt()) as f32,
            eps: self.eps as f32,
            step_size: (lr / (1.0 - self.beta1.powi(t))) as f32,
        }
    }
}

/// The state of every parameter, by id.
#[derive(Debug)]
pub struct AdamW<B: Backend> {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Steps applied (the bias corrections' t).
    pub steps: u64,
    state: HashMap<ParamId, MomentState<B>>,
}

impl<B: Backend> AdamW<B> {
    /// No state yet: moments start at zero on each parameter's first step.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            steps: 0,
            state: HashMap::new(),
        }
    }
}

impl<B: Backend> AdamW<B> {
    /// The same state on `device` (a data-parallel rank's copy: [`crate::train::data_parallel`]).
    /// Through the host, as [`crate::model::copy_to_device`] copies weights.
    pub fn copy_to_device(&self, device: &B::Device) -> Self {
        let copy = |t: &Tensor<B, 1>| {
            Tensor::<B, 1>::from_data(t.clone().into_data(), (device, t.dtype()))
        };
        Self {
            config: self.config,
            steps: self.steps,
            state: self
                .state
                .iter()
                .map(|(&id, s)| {
                    let state = MomentState {
                        exp_avg: copy(&s.exp_avg),
                        exp_avg_sq: copy(&s.exp_avg_sq),
                        master: s.master.as_ref().map(copy),
                    };
                    (id, state)
                })
                .collect(),
        }
    }
}

impl<B: AdamWBackend> AdamW<B> {
    /// One step at `lr` on every parameter of `module` that has a gradient in `grads`.
    pub fn step<A, M>(&mut self, lr: f64, module: M, grads: &mut GradientsParams) -> M
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: burn::module::Module<A>,
    {
        self.steps += 1;
        let mut mapper = Update::<A> {
            grads,
            state: &mut self.state,
            scalars: self.config.scalars(lr, self.steps),
        };
        module.map(&mut mapper)
    }
}

struct Update<'a, A: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    state: &'a mut HashMap<ParamId, MomentState<A::InnerBackend>>,
    scalars: AdamWScalars,
}

impl<A: AutodiffBackend> ModuleMapper<A> for Update<'_, A>
where
    A::InnerBackend: AdamWBackend,
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<A::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let flat = tensor.inner().reshape([n]);
        let state = match self.state.remove(&id) {
            Some(state) => state,
            None => MomentState::new(&flat),
        };
        let (updated, state) =
            A::InnerBackend::adamw_update(flat, grad.reshape([n]), state, &self.scalars);
        self.state.insert(id, state);
        let mut tensor = Tensor::<A, D>::from_inner(updated.reshape(shape));
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Names of a parameter's state tensors in the saved file.
fn names(id: ParamId) -> [String; 3] {
    let id = id.serialize();
    [
        format!("{id}.exp_avg"),
        format!("{id}.exp_avg_sq"),
        format!("{id}.master"),
    ]
}

/// Why optimiser state could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum AdamWStateError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a valid state file.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl<B: Backend> AdamW<B> {
    /// Writes every state tensor (f32) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), AdamWStateError> {
        let invalid = |message: String| AdamWStateError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut host: Vec<(String, Vec<u8>, usize)> = Vec::new();
        for (&id, state) in &self.state {
            let [m, v, master] = names(id);
            let tensors = [
                (m, Some(&state.exp_avg)),
                (v, Some(&state.exp_avg_sq)),
                (master, state.master.as_ref()),
            ];
            for (name, tensor) in tensors {
                let Some(tensor) = tensor else { continue };
                let values = tensor
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| invalid(format!("{name}: {e:?}")))?;
                let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                host.push((name, bytes, values.len()));
            }
        }
        let views = host
            .iter()
            .map(|(name, bytes, len)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*len], bytes)
                    .map(|view| (name.clone(), view))
                    .map_err(|e| invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata =
            std::collections::HashMap::from([("steps".to_string(), self.steps.to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), path)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Reads the state [`AdamW::save`] wrote, onto `device`.
    pub fn load(&mut self, path: &Path, device: &B::Device) -> Result<(), AdamWStateError> {
        let invalid = |message: String| AdamWStateError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| AdamWStateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
        let steps = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("steps"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no `steps` in the metadata".into()))?;
        let file =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
        let tensor = |name: &str| -> Result<Option<Tensor<B, 1>>, AdamWStateError> {
            let Ok(view) = file.tensor(name) else {
                return Ok(None);
            };
            if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 1 {
                return Err(invalid(format!("{name}: expected a 1-d f32 tensor")));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let n = values.len();
            Ok(Some(Tensor::from_data(
                TensorData::new(values, [n]),
                (device, DType::F32),
            )))
        };
        let mut state = HashMap::new();
        for name in file.names() {
            let Some(id) = name.strip_suffix(".exp_avg") else {
                continue;
            };
            let id = ParamId::deserialize(id);
            let [m, v, master] = names(id);
            let missing = || invalid(format!("{v}: missing"));
            state.insert(
                id,
                MomentState {
                    exp_avg: tensor(&m)?.ok_or_else(missing)?,
                    exp_avg_sq: tensor(&v)?.ok_or_else(missing)?,
                    master: tensor(&master)?,
                },
            );
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_cubecl::element::BoolElement;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
    use cubecl::prelude::*;
    use cubecl::server::Handle;
    use half::{bf16, f16};

    use super::{AdamWBackend, MomentState, update_with_tensor_ops};
    use crate::kernels::adamw::{ADAMW_BLOCK, AdamWScalars, adamw_kernel};
    use crate::kernels::args::array_arg;

    /// Most cubes of one update (grid-stride beyond).
    const MAX_CUBES: usize = 4096;

    impl<R, F, I, BT> AdamWBackend for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        fn adamw_update(
            param: Tensor<Self, 1>,
            grad: Tensor<Self, 1>,
            state: MomentState<Self>,
            scalars: &AdamWScalars,
        ) -> (Tensor<Self, 1>, MomentState<Self>) {
            let supported = matches!(param.dtype(), DType::F32 | DType::BF16 | DType::F16);
            let master_ok = (param.dtype() == DType::F32) == state.master.is_none();
            if !supported || grad.dtype() != param.dtype() || !master_ok {
                return update_with_tensor_ops(param, grad, state, scalars);
            }
            let param = primitive(param);
            let grad = primitive(grad);
            // The state is the optimiser's own: updated in place (copied first if a clone of it
            // is still alive somewhere).
            let exp_avg = owned(state.exp_avg);
            let exp_avg_sq = owned(state.exp_avg_sq);
            let master = state.master.map(owned);
            let n = param.meta.shape().num_elements();
            let out = param.client.empty(n.max(1) * param.dtype.size());
            // Without a master copy the kernel reads and writes none: a one-element stand-in.
            let dummy = param.client.empty(4);
            let buffers = Buffers {
                n,
                param: &param.handle,
                grad: &grad.handle,
                out: &out,
                master: master.as_ref().map(|m| &m.handle),
                dummy: &dummy,
                exp_avg: &exp_avg.handle,
                exp_avg_sq: &exp_avg_sq.handle,
            };
            match param.dtype {
                DType::BF16 => launch::<R, bf16>(&param.client, &buffers, scalars),
                DType::F16 => launch::<R, f16>(&param.client, &buffers, scalars),
                _ => launch::<R, f32>(&param.client, &buffers, scalars),
            }
            let float =
                |t: CubeTensor<R>| Tensor::<Self, 1>::from_primitive(TensorPrimitive::Float(t));
            let updated = CubeTensor::new_contiguous(
                param.client.clone(),
                param.device.clone(),
                param.meta.shape().clone(),
                out,
                param.dtype,
            );
            let state = MomentState {
                exp_avg: float(exp_avg),
                exp_avg_sq: float(exp_avg_sq),
                master: master.map(float),
            };
            (float(updated), state)
        }
    }

    /// The buffers of one update, `n` elements each.
    struct Buffers<'a> {
        n: usize,
        param: &'a Handle,
        grad: &'a Handle,
        out: &'a Handle,
        master: Option<&'a Handle>,
        dummy: &'a Handle,
        exp_avg: &'a Handle,
        exp_avg_sq: &'a Handle,
    }

    /// Launches [`adamw_kernel`] with parameters and gradients of element type `P`.
    fn launch<R: CubeRuntime, P: Float + CubeElement>(
        client: &ComputeClient<R>,
        b: &Buffers<'_>,
        s: &AdamWScalars,
    ) {
        let n = b.n;
        let cubes = n.div_ceil(ADAMW_BLOCK).clamp(1, MAX_CUBES) as u32;
        let (master, master_len) = match b.master {
            Some(master) => (master, n),
            None => (b.dummy, 1),
        };
        adamw_kernel::launch::<P, R>(
            client,
            CubeCount::Static(cubes, 1, 1),
            CubeDim::new_1d(ADAMW_BLOCK as u32),
            array_arg::<R, P>(b.param, n),
            array_arg::<R, P>(b.grad, n),
            array_arg::<R, P>(b.out, n),
            array_arg::<R, f32>(master, master_len),
            array_arg::<R, f32>(b.exp_avg, n),
            array_arg::<R, f32>(b.exp_avg_sq, n),
            s.decay,
            s.beta1,
            s.beta2,
            s.inv_sqrt_bias2,
            s.eps,
            s.step_size,
            b.master.is_some(),
        );
    }

    /// The contiguous cubecl tensor of `t`.
    fn primitive<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        t: Tensor<CubeBackend<R, F, I, BT>, 1>,
    ) -> CubeTensor<R> {
        burn_cubecl::kernel::into_contiguous(t.into_primitive().tensor())
    }

    /// `t` as a buffer nothing else holds.
    fn owned<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        t: Tensor<CubeBackend<R, F, I, BT>, 1>,
    ) -> CubeTensor<R> {
        let t = primitive(t);
        if t.can_mut() {
            t
        } else {
            // A fresh buffer: the product by 1 of a shared tensor is written elsewhere.
            primitive(
                Tensor::<CubeBackend<R, F, I, BT>, 1>::from_primitive(TensorPrimitive::Float(t))
                    .mul_scalar(1.0),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use rand::{RngExt, SeedableRng};

    use super::*;

    type B = NdArray<f32>;

    /// `torch.optim.AdamW`'s update in f64, `steps` times, over `params` with `grads[t]`.
    fn reference(config: &AdamWConfig, lr: f64, params: &[f64], grads: &[Vec<f64>]) -> Vec<f64> {
        let mut p = params.to_vec();
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..p.len() {
                p[i] *= 1.0 - lr * config.weight_decay;
                m[i] = config.beta1 * m[i] + (1.0 - config.beta1) * g[i];
                v[i] = config.beta2 * v[i] + (1.0 - config.beta2) * g[i] * g[i];
                let m_hat = m[i] / (1.0 - config.beta1.powi(t));
                let v_hat = v[i] / (1.0 - config.beta2.powi(t));
                p[i] -= lr * m_hat / (v_hat.sqrt() + config.eps);
            }
        }
        p
    }

    fn random(rng: &mut rand::rngs::StdRng, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| (rng.random::<f64>() - 0.5) * scale)
            .collect()
    }

    /// Three steps of the update on random parameters and gradients, in `dtype`, against the
    /// f64 reference (f64 parameters keep an f32 master copy: the path bf16 takes on a GPU).
    fn check(dtype: DType) {
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let (lr, n) = (1e-2, 257);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let params = random(&mut rng, n, 2.0);
        let grads: Vec<Vec<f64>> = (0..3).map(|_| random(&mut rng, n, 0.02)).collect();
        let want = reference(&config, lr, &params, &grads);

        let device = Default::default();
        let tensor = |values: &[f64]| {
            Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [n]), (&device, dtype))
        };
        let mut param = tensor(&params);
        let mut state = MomentState::new(&param);
        assert_eq!(state.master.is_some(), dtype != DType::F32);
        for (t, g) in grads.iter().enumerate() {
            let scalars = config.scalars(lr, t as u64 + 1);
            (param, state) = B::adamw_update(param, tensor(g), state, &scalars);
            assert_eq!(param.dtype(), dtype, "the parameter keeps its type");
        }
        let got: Vec<f64> = param.into_data().convert::<f64>().to_vec().expect("f64");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-6 * (1.0 + w.abs()),
                "{dtype:?} [{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn the_update_is_torchs_adamw() {
        check(DType::F32);
        check(DType::F64);
    }

    #[test]
    fn the_state_survives_a_save_a_load_and_a_copy() {
        let device = Default::default();
        let mut adam = AdamW::<B>::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        });
        let values = |k: f32| Tensor::<B, 1>::from_floats([k, -2.0 * k, 0.5], &device);
        let id = ParamId::new();
        adam.state.insert(
            id,
            MomentState {
                exp_avg: values(1.0),
                exp_avg_sq: values(3.0),
                master: Some(values(7.0)),
            },
        );
        let plain = ParamId::new();
        adam.state.insert(plain, MomentState::new(&values(5.0)));
        adam.steps = 12;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("optimizer.safetensors");
        adam.save(&path).expect("saved");

        let mut loaded = AdamW::<B>::new(adam.config);
        loaded.load(&path, &device).expect("loaded");
        // A data-parallel rank's copy carries the same state.
        let copied = adam.copy_to_device(&device);
        assert_eq!((loaded.steps, copied.steps), (12, 12));
        let host = |t: &Tensor<B, 1>| t.clone().into_data().to_vec::<f32>().expect("f32");
        for other in [&loaded, &copied] {
            assert_eq!(other.state.len(), 2);
            for key in [id, plain] {
                let (a, b) = (&adam.state[&key], &other.state[&key]);
                assert_eq!(host(&a.exp_avg), host(&b.exp_avg));
                assert_eq!(host(&a.exp_avg_sq), host(&b.exp_avg_sq));
                assert_eq!(a.master.as_ref().map(host), b.master.as_ref().map(host));
            }
        }
        // A file that is not one: an error naming it, not a panic.
        std::fs::write(&path, b"not safetensors").expect("written");
        let err = loaded.load(&path, &device).expect_err("invalid");
        assert!(err.to_string().contains("optimizer.safetensors"), "{err}");
    }
}
