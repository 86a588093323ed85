//! The `Params` struct shared by both macros: serde (unknown keys rejected, defaults filled) and
//! schemars (so the experiment schema shows each parameter, its default and its range).

use proc_macro2::TokenStream;
use quote::quote;

use crate::model::FnDef;
use crate::paths;

pub(super) fn expand(def: &FnDef) -> TokenStream {
    let serde_crate = paths::serde_crate();
    let schemars_crate = paths::schemars_crate();
    let private = paths::private();
    let name = &def.name;
    let fields = def.params.iter().map(|p| {
        let ident = &p.ident;
        let ty = &p.ty;
        let doc = p.doc.as_ref().map(|d| quote!(#[doc = #d]));
        let range = match (&p.min, &p.max) {
            (None, None) => quote!(),
            (Some(min), None) => quote!(#[schemars(range(min = #min))]),
            (None, Some(max)) => quote!(#[schemars(range(max = #max))]),
            (Some(min), Some(max)) => quote!(#[schemars(range(min = #min, max = #max))]),
        };
        quote! { #doc #range pub #ident: #ty, }
    });
    let defaults = def.params.iter().map(|p| {
        let ident = &p.ident;
        let default = &p.default;
        if matches!(&p.ty, syn::Type::Path(tp) if tp.path.is_ident("String")) {
            quote!(#ident: ::std::string::String::from(#default),)
        } else {
            quote!(#ident: #default,)
        }
    });
    let doc = format!("Parameters of `{name}`, set in YAML beside its name.");
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone, PartialEq, #private::serde::Serialize, #private::serde::Deserialize, #private::schemars::JsonSchema)]
        #[serde(crate = #serde_crate, deny_unknown_fields, default)]
        #[schemars(crate = #schemars_crate)]
        pub struct Params { #(#fields)* }

        impl ::core::default::Default for Params {
            fn default() -> Self {
                Self { #(#defaults)* }
            }
        }

        impl Params {
            /// Reads parameters from the YAML keys beside the name.
            pub fn from_map(map: &#private::serde_json::Map<::std::string::String, #private::serde_json::Value>) -> ::core::result::Result<Self, ::std::string::String> {
                #private::serde_json::from_value(#private::serde_json::Value::Object(map.clone()))
                    .map_err(|e| e.to_string())
            }

            /// JSON Schema of the parameters, self-contained.
            pub fn schema() -> #private::schemars::Schema {
                #private::schemars::generate::SchemaSettings::draft2020_12()
                    .with(|s| s.inline_subschemas = true)
                    .into_generator()
                    .into_root_schema_for::<Self>()
            }
        }
    }
}
