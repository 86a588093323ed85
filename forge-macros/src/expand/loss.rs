//! `#[forge::loss]` expansion: parameters, the f64 reference twin and the registration.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::visit_mut::VisitMut;

use crate::model::LossDef;
use crate::paths;

pub(super) fn expand(loss: &LossDef) -> syn::Result<TokenStream> {
    let def = &loss.def;
    let private = paths::private();
    let vis = &def.vis;
    let ident = &def.ident;
    let docs = &def.docs;
    let name = &def.name;
    let summary = &def.summary;
    let params = super::params::expand(def);
    let aggregation = &loss.aggregation_variant;

    let input_lets: Vec<TokenStream> = loss
        .inputs
        .iter()
        .map(|i| quote!(let #i: f64 = inputs.#i;))
        .collect();
    let param_lets: Vec<TokenStream> = def
        .params
        .iter()
        .map(|p| {
            let i = &p.ident;
            quote!(let #i: f64 = ::core::primitive::f64::from(params.#i);)
        })
        .collect();
    let (input_lets2, param_lets2) = (&input_lets, &param_lets);
    let mut body = (*def.body).clone();
    F32ToF64.visit_block_mut(&mut body);

    let kl_coef = match &loss.kl {
        Some(kl) => {
            quote!(|map| Params::from_map(map).map(|p| ::core::primitive::f64::from(p.#kl)))
        }
        None => quote!(|_| ::core::result::Result::Ok(0.0)),
    };
    let unused_inputs = format_ident!("_unused_inputs");
    // A loss that reads the sequence's mean log-ratio couples the tokens of a sequence: it cannot
    // finish a row's gradient inside that row's kernel.
    let (fused_wgpu, fused_cuda) = if loss.inputs.iter().any(|i| i == "seq_log_ratio") {
        (
            quote!(::core::option::Option::None),
            quote!(::core::option::Option::None),
        )
    } else {
        (
            quote!(::core::option::Option::Some(#private::launcher_wgpu!(kernel::launch_fused))),
            quote!(::core::option::Option::Some(#private::launcher_cuda!(kernel::launch_fused))),
        )
    };

    let params_idents: Vec<syn::Ident> = def.params.iter().map(|p| p.ident.clone()).collect();
    let lowered =
        super::diff::Lower::new(&super::diff::F64, &loss.inputs, &params_idents).run(&def.body)?;
    let stmts = &lowered.stmts;
    let kernel = kernel(loss, &params_idents)?;
    let value = &lowered.result.v;
    let [d_logprob, d_seq] = lowered.result.d.clone().map(|d| match d {
        Some(d) => quote!(#d),
        None => quote!(0.0f64),
    });

    Ok(quote! {
        #(#docs)*
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            #params

            /// Name YAML selects this loss by.
            pub const NAME: &str = #name;

            /// Per-token loss in f64: the plain-Rust twin of the kernel, the oracle of tests.
            #[allow(unused_variables, unused_parens, clippy::all)]
            pub fn reference(inputs: &::forge::loss::TokenInputs, params: &Params) -> f64 {
                #[allow(unused_imports)]
                use #private::math::*;
                let #unused_inputs = inputs;
                #(#input_lets)*
                #(#param_lets)*
                #body
            }

            /// The loss and its exact derivatives with respect to `logprob` and `seq_log_ratio`
            /// (forward-mode, generated from the body; branches take the chosen side's
            /// derivative), in f64.
            #[allow(unused_variables, unused_parens, clippy::all)]
            pub fn value_and_grad(inputs: &::forge::loss::TokenInputs, params: &Params) -> ::forge::loss::TokenGrad {
                #(#input_lets2)*
                #(#param_lets2)*
                #(#stmts)*
                ::forge::loss::TokenGrad { value: #value, d_logprob: #d_logprob, d_seq_log_ratio: #d_seq }
            }

            #kernel

            #private::inventory::submit! {
                ::forge::loss::LossRegistration {
                    name: #name,
                    summary: #summary,
                    default_aggregation: ::forge::config::Aggregation::#aggregation,
                    params_schema: Params::schema,
                    check_params: |map| Params::from_map(map).map(|_| ()),
                    kl_coef: #kl_coef,
                    bind: |map| Params::from_map(map).map(|params| {
                        ::std::boxed::Box::new(move |inputs: &::forge::loss::TokenInputs| value_and_grad(inputs, &params))
                            as ::forge::loss::registry::BoundLoss
                    }),
                    param_values: |map| Params::from_map(map).map(|p| ::std::vec![#(p.#params_idents),*]),
                    launch_wgpu: #private::launcher_wgpu!(kernel::launch),
                    launch_cuda: #private::launcher_cuda!(kernel::launch),
                    fused_wgpu: #fused_wgpu,
                    fused_cuda: #fused_cuda,
                    builtin: #private::is_forge_module(::core::module_path!()),
                }
            }
        }
    })
}

/// The per-token kernel: the same lowered body in cubecl, value and derivatives for every token
/// at once, and a launcher with one signature for every loss (parameters packed in an array).
fn kernel(loss: &LossDef, params: &[syn::Ident]) -> syn::Result<TokenStream> {
    let private = paths::private();
    let lowered =
        super::diff::Lower::new(&super::diff::Cube, &loss.inputs, params).run(&loss.def.body)?;
    let stmts = &lowered.stmts;
    let value = &lowered.result.v;
    let [d_logprob, d_seq] = lowered.result.d.clone().map(|d| match d {
        Some(d) => quote!(#d),
        None => quote!(F::new(0.0f32)),
    });
    let param_reads = params
        .iter()
        .enumerate()
        .map(|(k, p)| quote!(let #p = params[#k];));
    Ok(quote! {
        /// The generated cubecl code: the loss as a `#[cube]` function of one token, the
        /// per-token kernel and the launchers.
        pub mod kernel {
            #[allow(unused_imports)]
            use #private::cubecl;
            #[allow(unused_imports)]
            use #private::cubecl::prelude::*;
            use ::forge::kernels::token_loss::{TokenLossFn, TokenValue};

            /// This loss, for kernels (implements [`TokenLossFn`]).
            pub struct Loss;

            #[allow(unused_variables, unused_parens, clippy::all)]
            #[cubecl::cube]
            impl TokenLossFn for Loss {
                fn eval<F: Float>(
                    logprob: F,
                    old_logprob: F,
                    ref_logprob: F,
                    advantage: F,
                    seq_log_ratio: F,
                    params: &Array<F>,
                ) -> TokenValue<F> {
                    #(#param_reads)*
                    #(#stmts)*
                    TokenValue::<F> {
                        value: #value,
                        d_logprob: #d_logprob,
                        d_seq_log_ratio: #d_seq,
                    }
                }
            }

            /// Per token `i`: the loss and its derivatives with respect to `logprob` and
            /// `seq_log_ratio`.
            #[allow(unused_variables, unused_parens, clippy::all)]
            #[cubecl::cube(launch)]
            pub fn token_loss_kernel<F: Float>(
                in_logprob: &Array<F>,
                in_old_logprob: &Array<F>,
                in_ref_logprob: &Array<F>,
                in_advantage: &Array<F>,
                in_seq_log_ratio: &Array<F>,
                params: &Array<F>,
                out_value: &mut Array<F>,
                out_d_logprob: &mut Array<F>,
                out_d_seq_log_ratio: &mut Array<F>,
            ) {
                let i = ABSOLUTE_POS;
                if i < in_logprob.len() {
                    let out = Loss::eval::<F>(
                        in_logprob[i],
                        in_old_logprob[i],
                        in_ref_logprob[i],
                        in_advantage[i],
                        in_seq_log_ratio[i],
                        params,
                    );
                    out_value[i] = out.value;
                    out_d_logprob[i] = out.d_logprob;
                    out_d_seq_log_ratio[i] = out.d_seq_log_ratio;
                }
            }

            /// Launches [`token_loss_kernel`] over `io.len` tokens.
            pub fn launch<R: Runtime>(client: &ComputeClient<R>, io: &::forge::kernels::device_loss::TokenLossIo) {
                use ::forge::kernels::args::array_arg;
                let n = io.len;
                let units = 256usize;
                token_loss_kernel::launch::<f32, R>(
                    client,
                    CubeCount::Static(n.div_ceil(units).max(1) as u32, 1, 1),
                    CubeDim::new_1d(units as u32),
                    array_arg::<R, f32>(&io.logprob, n),
                    array_arg::<R, f32>(&io.old_logprob, n),
                    array_arg::<R, f32>(&io.ref_logprob, n),
                    array_arg::<R, f32>(&io.advantage, n),
                    array_arg::<R, f32>(&io.seq_log_ratio, n),
                    array_arg::<R, f32>(&io.params, io.params_len.max(1)),
                    array_arg::<R, f32>(&io.value, n),
                    array_arg::<R, f32>(&io.d_logprob, n),
                    array_arg::<R, f32>(&io.d_seq_log_ratio, n),
                );
            }

            /// Launches the fused logprob + loss + gradient kernel with this loss.
            #[allow(dead_code)]
            pub fn launch_fused<R: Runtime>(
                client: &ComputeClient<R>,
                io: &::forge::kernels::fused_token_loss::FusedLossIo,
            ) {
                ::forge::kernels::fused_token_loss::launch::<Loss, R>(client, io)
            }
        }
    })
}

/// The twin computes in f64: `f32` in type positions becomes `f64`, and `f32` literal suffixes go.
struct F32ToF64;

impl VisitMut for F32ToF64 {
    fn visit_type_path_mut(&mut self, tp: &mut syn::TypePath) {
        if tp.qself.is_none() && tp.path.is_ident("f32") {
            *tp = syn::parse_quote!(f64);
        }
        syn::visit_mut::visit_type_path_mut(self, tp);
    }

    fn visit_lit_float_mut(&mut self, lit: &mut syn::LitFloat) {
        if lit.suffix() == "f32" {
            *lit = syn::LitFloat::new(lit.base10_digits(), lit.span());
        }
    }

    fn visit_expr_path_mut(&mut self, ep: &mut syn::ExprPath) {
        // `f32::EPSILON`, `f32::consts::PI` and friends.
        if let Some(first) = ep.path.segments.first_mut()
            && first.ident == "f32"
        {
            first.ident = syn::Ident::new("f64", first.ident.span());
        }
        syn::visit_mut::visit_expr_path_mut(self, ep);
    }
}
