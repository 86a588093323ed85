//! On error: the compile errors plus the user's item unchanged, so the IDE keeps resolving it and
//! no follow-on "cannot find function" errors drown the real one.

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn emit(error: syn::Error, item: TokenStream) -> TokenStream {
    let errors = error.to_compile_error();
    quote! {
        #errors
        #[allow(dead_code)]
        #item
    }
}
