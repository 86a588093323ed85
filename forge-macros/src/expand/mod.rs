//! Expansion: `mod <fn> { Params, NAME, reference | call, registration }`.

mod diff;
mod loss;
mod params;
mod reward;

use proc_macro2::TokenStream;

use crate::args::ItemArgs;
use crate::model::{LossDef, RewardDef};

pub(crate) fn loss(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = ItemArgs::parse(args, "loss", &["name", "aggregation", "kl", "debug"])?;
    let item: syn::ItemFn = syn::parse2(item)?;
    let def = LossDef::from_item(&item, &args)?;
    Ok(debug_print(def.def.debug, loss::expand(&def)?))
}

pub(crate) fn reward(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = ItemArgs::parse(args, "reward", &["name", "debug"])?;
    let item: syn::ItemFn = syn::parse2(item)?;
    let def = RewardDef::from_item(&item, &args)?;
    Ok(debug_print(def.def.debug, reward::expand(&def)))
}

/// `debug` prints the expansion at compile time, for users wondering what the macro made.
fn debug_print(debug: bool, tokens: TokenStream) -> TokenStream {
    if debug {
        eprintln!("{tokens}");
    }
    tokens
}
