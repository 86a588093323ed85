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
