//! The kernels of the decode engine (`generate::engine`): one new token per sequence, every layer
//! in a dozen launches over a preallocated KV cache, instead of the ~3,000 burn operations a
//! decode step of the generic model issues (bench/NOTES.md). One kernel per file.

pub mod decode_attention;
pub mod kv_copy;
pub mod product;
pub mod qkv_rope_cache;
pub mod rms_norm;
pub mod sample_rows;
pub mod skinny_matmul;
pub mod skinny_mma;
