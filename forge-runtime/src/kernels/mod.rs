//! Hand-written cubecl kernels for the vocabulary-sized work, the math helpers the macro-generated
//! loss kernels call, and the device path that runs a whole loss batch. One kernel per file.

pub mod adamw;
pub mod args;
pub mod cube_reduce;
#[cfg(feature = "cuda")]
pub mod cublas;
#[cfg(feature = "cuda")]
pub mod cuda_graph;
#[cfg(feature = "cuda")]
pub mod cuda_stream;
pub mod decode;
pub mod device_loss;
pub mod fused_token_loss;
pub mod logprob_backward;
pub mod logprob_forward;
pub mod logprob_row;
pub mod loss_scalars;
pub mod math;
pub mod token_loss;
