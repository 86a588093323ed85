//! `#[forge::reward]` expansion: parameters, the user function kept callable, a scorer binding
//! the parameters, and the registration.

use proc_macro2::TokenStream;
use quote::quote;

use crate::model::{ArgKind, RewardDef};
use crate::paths;

pub(super) fn expand(reward: &RewardDef) -> TokenStream {
    let def = &reward.def;
    let private = paths::private();
    let vis = &def.vis;
    let ident = &def.ident;
    let docs = &def.docs;
    let name = &def.name;
    let summary = &def.summary;
    let params = super::params::expand(def);

    // The user's function, unchanged but for `#[param]` markers, as `<mod>::call`.
    let mut call_fn = reward.item.clone();
    call_fn.sig.ident = syn::Ident::new("call", def.ident.span());
    call_fn.vis = syn::parse_quote!(pub);
    call_fn.attrs.clear();
    for input in &mut call_fn.sig.inputs {
        if let syn::FnArg::Typed(pt) = input {
            pt.attrs.clear();
        }
    }
    let call_args = reward.args.iter().map(|arg| match arg {
        ArgKind::Input(input) => {
            let i = &input.ident;
            if i == "sample" {
                quote!(input.sample)
            } else {
                quote!(input.#i)
            }
        }
        ArgKind::Param(index) => {
            let i = &def.params[*index].ident;
            quote!(::core::clone::Clone::clone(&self.0.#i))
        }
    });

    quote! {
        #(#docs)*
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            #params

            /// Name YAML lists this reward by.
            pub const NAME: &str = #name;

            /// The reward function as written.
            #call_fn

            /// The reward with its parameters bound.
            pub struct Scorer(pub Params);

            impl ::forge::reward::RewardFn for Scorer {
                fn score(&self, input: &::forge::reward::RewardInput<'_>) -> f32 {
                    call(#(#call_args),*)
                }
            }

            #private::inventory::submit! {
                ::forge::reward::RewardRegistration {
                    name: #name,
                    summary: #summary,
                    params_schema: Params::schema,
                    check_params: |map| Params::from_map(map).map(|_| ()),
                    build: |map| Params::from_map(map)
                        .map(|p| ::std::boxed::Box::new(Scorer(p)) as ::std::boxed::Box<dyn ::forge::reward::RewardFn>),
                    builtin: #private::is_forge_module(::core::module_path!()),
                }
            }
        }
    }
}
