//! The kernels of the decode engine (`generate::engine`): one new token per sequence, every layer
//! in eight launches over a preallocated KV cache, instead of the ~3,000 burn operations a decode
//! step of the generic model issues (bench/NOTES.md). One kernel per file.

pub mod add_rms_norm;
pub mod decode_attention;
pub mod embed_rows;
pub mod kv_copy;
pub mod product;
pub mod qkv_rope_cache;
pub mod rms_norm;
pub mod sample_rows;
pub mod skinny_matmul;
pub mod skinny_mma;

/// Whether the decode kernels launch with cubecl's bounds checks: only when
/// `FORGE_DECODE_CHECKED=1` (to compare the two on one build, or to rule out an index out of
/// bounds). Read once per process.
pub fn checked() -> bool {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHECKED.get_or_init(|| std::env::var("FORGE_DECODE_CHECKED").as_deref() == Ok("1"))
}

/// Units per cube for a decode kernel: `var` where it is set to a power of two from 32 to 1,024
/// (to compare cube sizes on one build), else `default`.
pub fn units_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&b: &usize| b.is_power_of_two() && (32..=1024).contains(&b))
        .unwrap_or(default)
}

/// Launches a decode kernel, `launch!(kernel::<T, ..>(client, count, dim, args..))`, without
/// cubecl's bounds checks unless [`checked`] (a checked launch clamps and selects every global
/// read and puts every write behind a branch). Sound because the engine sizes every buffer for
/// the indices its kernels compute, which the tests check against references on wgpu (whose
/// shaders keep their own robust-access checks).
macro_rules! launch {
    ($kernel:ident :: < $($t:ty),* > ( $($arg:expr),* $(,)? )) => {
        if $crate::kernels::decode::checked() {
            $kernel::launch::<$($t),*>($($arg),*)
        } else {
            // SAFETY: see the macro's doc: every index the kernel computes is within the
            // buffers the caller passes.
            #[allow(unsafe_code)]
            let launched = unsafe { $kernel::launch_unchecked::<$($t),*>($($arg),*) };
            launched
        }
    };
}
pub(crate) use launch;
