//! The model's 2-d products (every projection and the LM head): cuBLAS on burn's CUDA backend,
//! burn's own matmul everywhere else.
//!
//! The CUDA path is picked by the backend's concrete type rather than by a trait bound, so the
//! model stays generic over `B: Backend`: the backends Forge builds for CUDA
//! (`CubeBackend<CudaRuntime, f32 | bf16 | f16, i32, u8>`, with or without autodiff) take it.
//! Under autodiff the product is one operation whose backward pass runs two more cuBLAS
//! products (`g · wᵀ`, `xᵀ · g`).

use burn::prelude::*;

/// `x · w` for `x` [m, k] and `w` [k, n] (burn's `Linear` layout, or a transposed view).
pub fn matmul_2d<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "cuda")]
    let (x, w) = match cuda::try_matmul(x, w) {
        Ok(y) => return y,
        Err(operands) => operands,
    };
    x.matmul(w)
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::any::{Any, TypeId};

    use burn::backend::Autodiff;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
    use burn::prelude::*;
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{DType, TensorPrimitive};
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{CubeBackend, FloatElement};
    use cubecl::cuda::CudaRuntime;

    use crate::kernels::cublas::{Gemm, GemmElem, run};

    type Inner<F> = CubeBackend<CudaRuntime, F, i32, u8>;
    type Primitive = CubeTensor<CudaRuntime>;

    /// `value` as a `U`, when `T` is `U` (checked by the caller through `TypeId`).
    fn cast<T: 'static, U: 'static>(value: T) -> U {
        let boxed: Box<dyn Any> = Box::new(value);
        *boxed
            .downcast::<U>()
            .unwrap_or_else(|_| unreachable!("the caller compared the TypeIds"))
    }

    /// The product through cuBLAS when `B` is one of the CUDA backends, else the operands back.
    pub(super) fn try_matmul<B: Backend>(
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, (Tensor<B, 2>, Tensor<B, 2>)> {
        macro_rules! dispatch {
            ($($f:ty),*) => {$(
                if TypeId::of::<B>() == TypeId::of::<Inner<$f>>() {
                    let y = gemm(primitive(x), false, primitive(w), false);
                    return Ok(Tensor::from_primitive(TensorPrimitive::Float(cast(y))));
                }
                if TypeId::of::<B>() == TypeId::of::<Autodiff<Inner<$f>>>() {
                    let y = tracked::<$f>(cast(x.into_primitive().tensor()), cast(w.into_primitive().tensor()));
                    return Ok(Tensor::from_primitive(TensorPrimitive::Float(cast(y))));
                }
            )*};
        }
        fn primitive<B: Backend>(t: Tensor<B, 2>) -> Primitive {
            cast(t.into_primitive().tensor())
        }
        dispatch!(f32, half::bf16, half::f16);
        Err((x, w))
    }

    /// The product as a node of burn's autodiff graph.
    fn tracked<F: FloatElement>(
        x: FloatTensor<Autodiff<Inner<F>>>,
        w: FloatTensor<Autodiff<Inner<F>>>,
    ) -> FloatTensor<Autodiff<Inner<F>>> {
        let prep = MatmulBackward
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful();
        let y = gemm(x.primitive.clone(), false, w.primitive.clone(), false);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, w.primitive), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// d(x · w): `g · wᵀ` for x, `xᵀ · g` for w.
    #[derive(Debug)]
    struct MatmulBackward;

    impl<F: FloatElement> Backward<Inner<F>, 2> for MatmulBackward {
        type State = (Primitive, Primitive);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, w) = ops.state;
            binary::<Inner<F>, _, _>(
                ops.parents,
                ops.node,
                grads,
                |g| gemm(g, false, w, true),
                |g| gemm(x, true, g, false),
            );
        }
    }

    /// A contiguous buffer and whether `t` reads it transposed (a transposed view of a
    /// contiguous matrix costs no copy).
    fn operand(t: Primitive) -> (Primitive, bool) {
        let shape = t.meta.shape().clone();
        let [rows, cols] = shape.dims::<2>();
        let strides = t.meta.strides();
        if t.is_contiguous() {
            (t, false)
        } else if strides.len() == 2 && strides[0] == 1 && strides[1] == rows {
            let stored = CubeTensor::new_contiguous(
                t.client.clone(),
                t.device.clone(),
                burn::tensor::Shape::new([cols, rows]),
                t.handle.clone(),
                t.dtype,
            );
            (stored, true)
        } else {
            (burn_cubecl::kernel::into_contiguous(t), false)
        }
    }

    /// `op(a) · op(b)` through cuBLAS, `a_t`/`b_t` transposing the logical operands.
    fn gemm(a: Primitive, a_t: bool, b: Primitive, b_t: bool) -> Primitive {
        let (a, a_view) = operand(a);
        let (b, b_view) = operand(b);
        let (a_t, b_t) = (a_t != a_view, b_t != b_view);
        let [ar, ac] = a.meta.shape().dims::<2>();
        let [br, bc] = b.meta.shape().dims::<2>();
        let (m, k) = if a_t { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if b_t { (bc, br) } else { (br, bc) };
        assert_eq!(k, kb, "matmul of [{m}, {k}] by [{kb}, {n}]");
        let elem = match a.dtype {
            DType::F32 => GemmElem::F32,
            DType::BF16 => GemmElem::Bf16,
            DType::F16 => GemmElem::F16,
            other => panic!("cuBLAS products of {other:?} tensors are not supported"),
        };
        assert_eq!(
            a.dtype, b.dtype,
            "operands of one product share an element type"
        );
        let out = a.client.empty(m * n * a.dtype.size());
        run(
            &a.client,
            &a.device,
            &Gemm {
                a: &a.handle,
                a_transposed: a_t,
                b: &b.handle,
                b_transposed: b_t,
                out: &out,
                m,
                n,
                k,
                elem,
                f32_out: false,
                k_splits: 1,
            },
        )
        .unwrap_or_else(|e| panic!("cuBLAS product [{m}, {k}] x [{k}, {n}]: {e}"));
        CubeTensor::new_contiguous(
            a.client.clone(),
            a.device.clone(),
            burn::tensor::Shape::new([m, n]),
            out,
            a.dtype,
        )
    }
}
