//! Every path the generated code names, through `::forge::__private`, so users depend on `forge`
//! alone.

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn serde_crate() -> &'static str {
    "::forge::__private::serde"
}
pub(crate) fn schemars_crate() -> &'static str {
    "::forge::__private::schemars"
}
pub(crate) fn private() -> TokenStream {
    quote!(::forge::__private)
}
