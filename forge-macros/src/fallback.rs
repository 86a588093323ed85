//! On error: the compile errors plus the user's item, so the IDE keeps resolving it and no
//! follow-on errors drown the real one. `#[param]` markers are removed from the item: without the
//! macro's expansion, rustc would report each one as an unknown attribute.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

pub(crate) fn emit(error: syn::Error, item: TokenStream) -> TokenStream {
    emit_with(error, item, false)
}

/// For `#[forge::loss]`: the body is the macro's language, not Rust to run, so rustc's own
/// complaints about it (an `if` without `else`, a float type mismatch) would only repeat the
/// macro's error. The signature stays; the body is replaced.
pub(crate) fn emit_loss(error: syn::Error, item: TokenStream) -> TokenStream {
    emit_with(error, item, true)
}

fn emit_with(error: syn::Error, item: TokenStream, replace_body: bool) -> TokenStream {
    let errors = error.to_compile_error();
    let item = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(mut function) => {
            if replace_body {
                function.block = Box::new(syn::parse_quote!({ ::core::unreachable!() }));
                function
                    .attrs
                    .push(syn::parse_quote!(#[allow(unused_variables)]));
            }
            for input in &mut function.sig.inputs {
                if let syn::FnArg::Typed(pt) = input {
                    pt.attrs.retain(|a| !a.path().is_ident("param"));
                }
            }
            function.into_token_stream()
        }
        Err(_) => item,
    };
    quote! {
        #errors
        #[allow(dead_code)]
        #item
    }
}
