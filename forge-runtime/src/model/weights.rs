//! Hugging Face safetensors in and out. A module walk names each parameter with its checkpoint
//! name; linear weights are transposed between PyTorch's `[out, in]` and burn's `[in, out]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

use super::ModelError;
use super::causal_lm::CausalLm;
use super::spec::ModelSpec;

/// Whether the parameter at `path` is a linear weight (stored transposed by burn).
fn is_linear_weight(path: &str) -> bool {
    path.ends_with("_proj.weight") || path == "lm_head.weight"
}

/// A parameter id derived from its path, so optimiser state saved in a checkpoint finds its
/// parameter again after a restart (burn's ids are random by default).
fn param_id(path: &str) -> ParamId {
    // FNV-1a: stable across runs and platforms, which `DefaultHasher` does not promise.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ParamId::from(hash)
}

/// Tracks the dotted path of the parameter being visited.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn path(&self) -> String {
        self.0.join(".")
    }
}

/// Gives every parameter the id derived from its path.
struct StableIds(PathStack);

impl<B: Backend> ModuleMapper<B> for StableIds {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(param_id(&self.0.path()), value, mapper)
    }
}

/// Re-ids a module's parameters by path (see [`param_id`]); call it on freshly built models.
pub fn stable_param_ids<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut StableIds(PathStack::default()))
}

/// Every tensor of a checkpoint, as f32 on the host.
struct HostTensors {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl HostTensors {
    fn read(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
                path: index.clone(),
                source,
            })?;
            let parsed: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Weights {
                    path: index.clone(),
                    message: e.to_string(),
                })?;
            let mut files: Vec<String> = parsed
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Weights {
                    path: index.clone(),
                    message: "no `weight_map` object".into(),
                })?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(ModelError::Weights {
                path: dir.to_path_buf(),
                message: "neither model.safetensors nor model.safetensors.index.json is here"
                    .into(),
            });
        };
        let mut tensors = HashMap::new();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|source| ModelError::Io {
                path: file.clone(),
                source,
            })?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Weights {
                path: file.clone(),
                message: e.to_string(),
            })?;
            for (name, view) in st.tensors() {
                let data = view.data();
                let values: Vec<f32> = match view.dtype() {
                    Dtype::F32 => data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                    Dtype::BF16 => data
                        .chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                    Dtype::F16 => data
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                    other => {
                        return Err(ModelError::Weights {
                            path: file.clone(),
                            message: format!(
                                "tensor `{name}` has dtype {other:?}; Forge reads f32, bf16 and f16"
                            ),
                        });
                    }
                };
                tensors.insert(name, (view.shape().to_vec(), values));
            }
        }
        Ok(Self { tensors })
    }
}

/// Replaces each parameter with the checkpoint's tensor of the same name.
struct Loader<'a, B: Backend> {
    host: &'a mut HostTensors,
    device: B::Device,
    path: PathStack,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.path();
        let expected = param.lazy_shape().to_vec();
        let Some((mut shape, mut values)) = self.host.tensors.remove(&name) else {
            self.problems.push(format!("tensor `{name}` is missing"));
            return param;
        };
        if D == 2 && is_linear_weight(&name) && shape.len() == 2 {
            values = transpose(&values, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        if shape != expected {
            self.problems.push(format!(
                "tensor `{name}` has shape {shape:?}, the config implies {expected:?}"
            ));
            return param;
        }
        let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &self.device);
        Param::initialized(param_id(&name), tensor.require_grad())
    }
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Loads the model of a Hugging Face checkpoint directory (`config.json` plus
/// `model.safetensors` or a sharded index), converting bf16/f16 weights to the backend's dtype.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<CausalLm<B>, ModelError> {
    let spec = ModelSpec::from_dir(dir)?;
    let mut host = HostTensors::read(dir)?;
    if spec.tie_word_embeddings {
        // transformers may write the tied head out; it is the embedding.
        host.tensors.remove("lm_head.weight");
    }
    from_host(&spec, host, device, dir)
}

/// A copy of `model` on another backend (or another device of the same one), through the host:
/// the frozen reference model on the CPU beside a GPU trainer. Parameters keep their ids.
pub fn copy_to_backend<B: Backend, B2: Backend>(
    model: &CausalLm<B>,
    device: &B2::Device,
) -> Result<CausalLm<B2>, ModelError> {
    let mut collector = Collector {
        path: PathStack::default(),
        tensors: Vec::new(),
    };
    model.visit(&mut collector);
    let host = HostTensors {
        tensors: collector
            .tensors
            .into_iter()
            .map(|(name, shape, values)| (name, (shape, values)))
            .collect(),
    };
    from_host(
        &model.spec,
        host,
        device,
        Path::new("<the policy in memory>"),
    )
}

/// A copy of `model` on `device` of the same backend, each parameter moved as it is stored (its
/// element type, its layout) through the host, with its id: the generator's weights on a GPU of
/// its own. Faster than [`copy_to_backend`], which converts to f32 and to PyTorch's layout. A
/// parameter that requires gradients (an autodiff model's) still does in the copy: a
/// data-parallel trainer rank trains its copy.
pub fn copy_to_device<B: Backend>(model: &CausalLm<B>, device: &B::Device) -> CausalLm<B> {
    /// The source's parameters in visiting order (a fresh model of the same spec visits its
    /// own in the same order), with whether each requires gradients.
    struct Take(Vec<(ParamId, TensorData, bool)>);
    impl<B: Backend> ModuleVisitor<B> for Take {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let require_grad = value.is_require_grad();
            self.0.push((param.id, value.into_data(), require_grad));
        }
    }
    struct Put<B: Backend>(std::vec::IntoIter<(ParamId, TensorData, bool)>, B::Device);
    impl<B: Backend> ModuleMapper<B> for Put<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            match self.0.next() {
                Some((id, data, require_grad)) => {
                    let dtype = data.dtype;
                    let value = Tensor::from_data(data, (&self.1, dtype));
                    let value = if require_grad {
                        value.require_grad()
                    } else {
                        value
                    };
                    Param::initialized(id, value)
                }
                None => param,
            }
        }
    }
    let mut take = Take(Vec::new());
    model.visit(&mut take);
    CausalLm::<B>::new(&model.spec, device).map(&mut Put(take.0.into_iter(), device.clone()))
}

/// The model of `spec` with the parameters of `host` (PyTorch's layout), on `device`. `origin`
/// names where they came from, for errors.
fn from_host<B: Backend>(
    spec: &ModelSpec,
    mut host: HostTensors,
    device: &B::Device,
    origin: &Path,
) -> Result<CausalLm<B>, ModelError> {
    let model = CausalLm::<B>::new(spec, device);
    let mut loader = Loader::<B> {
        host: &mut host,
        device: device.clone(),
        path: PathStack::default(),
        problems: Vec::new(),
    };
    let model = model.map(&mut loader);
    let mut problems = loader.problems;
    let mut unused: Vec<&String> = host
        .tensors
        .keys()
        // Buffers transformers sometimes saves; they are recomputed from the config.
        .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
        .collect();
    unused.sort();
    if !unused.is_empty() {
        problems.push(format!(
            "{} tensor(s) the model has no place for, e.g. `{}`",
            unused.len(),
            unused[0]
        ));
    }
    if problems.is_empty() {
        Ok(model)
    } else {
        Err(ModelError::Weights {
            path: origin.to_path_buf(),
            message: problems.join("; "),
        })
    }
}

/// Collects every parameter as (name, shape in PyTorch's layout, f32 values).
struct Collector {
    path: PathStack,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.path();
        let value = param.val();
        let mut shape = value.dims().to_vec();
        let mut values = value
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("converted to f32");
        if D == 2 && is_linear_weight(&name) {
            values = transpose(&values, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        self.tensors.push((name, shape, values));
    }
}

/// Saves `model` as a Hugging Face checkpoint directory (`config.json`, `model.safetensors` in
/// f32) that transformers' `from_pretrained` loads. Files are written to temporary names and
/// renamed, so an interrupted save leaves no half-written file under the final name.
pub fn save<B: Backend>(model: &CausalLm<B>, dir: &Path) -> Result<(), ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut collector = Collector {
        path: PathStack::default(),
        tensors: Vec::new(),
    };
    model.visit(&mut collector);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = collector
        .tensors
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .expect("shape and byte count agree");
            (name.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = dir.join("model.safetensors");
    let tmp = dir.join(".model.safetensors.tmp");
    let serialized =
        safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::Weights {
            path: weights.clone(),
            message: e.to_string(),
        })?;
    std::fs::write(&tmp, serialized).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &weights).map_err(io(&weights))?;
    let config = dir.join("config.json");
    let tmp = dir.join(".config.json.tmp");
    std::fs::write(&tmp, model.spec.to_hf_json()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &config).map_err(io(&config))?;
    Ok(())
}
