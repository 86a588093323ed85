//! Kernel arguments from cubecl handles, without `unsafe` at the call sites.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::std::tensor::TensorHandle;

/// A contiguous `len`-element array argument over `handle`, of element type `E`.
pub fn array_arg<R: Runtime, E: CubePrimitive>(handle: &Handle, len: usize) -> ArrayArg<R> {
    TensorHandle::<R>::new_contiguous(
        [len].to_vec(),
        handle.clone(),
        E::as_type_native_unchecked().storage_type(),
    )
    .into_arg()
    .into_array_arg()
}

/// [`array_arg`] over `handle` when present, else a one-element stand-in over `none` (for a kernel
/// whose comptime flag keeps the absent argument unread).
pub fn optional_array_arg<R: Runtime, E: CubePrimitive>(
    handle: Option<&Handle>,
    len: usize,
    none: &Handle,
) -> ArrayArg<R> {
    match handle {
        Some(h) => array_arg::<R, E>(h, len),
        None => array_arg::<R, E>(none, 1),
    }
}
