use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The compute backend the generated binary is specialised for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The CPU (burn's ndarray backend; the loss through its f64 twin).
    #[default]
    Cpu,
    /// NVIDIA GPUs through CUDA (kernels compiled at run time with NVRTC, GEMMs through cuBLAS).
    Cuda,
    /// Any GPU through wgpu (Vulkan, Metal, DX12).
    Wgpu,
}

impl Backend {
    /// Whether this backend runs on GPUs (and so may be given `with_gpus` services).
    pub fn uses_gpus(self) -> bool {
        !matches!(self, Backend::Cpu)
    }

    /// The cargo feature of `forge-runtime` a binary for this backend needs, if any.
    pub fn runtime_feature(self) -> Option<&'static str> {
        match self {
            Backend::Cpu => None,
            Backend::Cuda => Some("cuda"),
            Backend::Wgpu => Some("wgpu"),
        }
    }

    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Wgpu => "wgpu",
        }
    }
}
