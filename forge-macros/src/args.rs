//! Attribute arguments: `#[forge::loss(name = "..", aggregation = "..", kl = beta, debug)]` and
//! `#[param(default = .., min = .., max = .., doc = "..")]`.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Expr, Ident, LitStr};

use crate::ctx::Ctx;

/// Aggregations a loss may default to (the runtime's `Aggregation`, snake_case).
pub(crate) const AGGREGATIONS: &[(&str, &str)] = &[
    ("token_mean", "TokenMean"),
    ("sequence_mean", "SequenceMean"),
    ("fixed_horizon", "FixedHorizon"),
];

/// Arguments of `#[forge::loss]` / `#[forge::reward]`.
#[derive(Default)]
pub(crate) struct ItemArgs {
    pub name: Option<LitStr>,
    pub aggregation: Option<LitStr>,
    pub kl: Option<Ident>,
    pub debug: bool,
}

impl ItemArgs {
    pub(crate) fn parse(
        tokens: TokenStream,
        macro_name: &str,
        allowed: &[&str],
    ) -> syn::Result<Self> {
        let mut args = ItemArgs::default();
        let mut ctx = Ctx::default();
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !allowed.contains(&key.as_str()) {
                return Err(meta.error(format!(
                    "`#[forge::{macro_name}]`: unknown argument `{key}`; expected one of: {}",
                    allowed.join(", ")
                )));
            }
            match key.as_str() {
                "name" => set(
                    &mut ctx,
                    &mut args.name,
                    meta.value()?.parse()?,
                    macro_name,
                    "name",
                ),
                "aggregation" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if !AGGREGATIONS.iter().any(|(a, _)| *a == lit.value()) {
                        ctx.error(&lit, format!(
                            "`#[forge::{macro_name}]`: unknown aggregation `{}`; expected one of: token_mean, sequence_mean, fixed_horizon",
                            lit.value()
                        ));
                    }
                    set(
                        &mut ctx,
                        &mut args.aggregation,
                        lit,
                        macro_name,
                        "aggregation",
                    );
                }
                "kl" => set(
                    &mut ctx,
                    &mut args.kl,
                    meta.value()?.parse()?,
                    macro_name,
                    "kl",
                ),
                "debug" => args.debug = true,
                _ => unreachable!("checked against `allowed`"),
            }
            Ok(())
        });
        parser.parse2(tokens)?;
        ctx.check()?;
        Ok(args)
    }
}

fn set<T: quote::ToTokens>(
    ctx: &mut Ctx,
    slot: &mut Option<T>,
    value: T,
    macro_name: &str,
    key: &str,
) {
    if slot.is_some() {
        ctx.error(
            &value,
            format!("`#[forge::{macro_name}]`: duplicate argument `{key}`"),
        );
    }
    *slot = Some(value);
}

/// Arguments of `#[param(..)]` on a function argument.
#[derive(Default)]
pub(crate) struct ParamArgs {
    pub default: Option<Expr>,
    pub min: Option<Expr>,
    pub max: Option<Expr>,
    pub doc: Option<LitStr>,
}

impl ParamArgs {
    pub(crate) fn parse(attr: &syn::Attribute, macro_name: &str) -> syn::Result<Self> {
        let mut args = ParamArgs::default();
        if matches!(attr.meta, syn::Meta::Path(_)) {
            return Ok(args);
        }
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
            let slot = match key.as_str() {
                "default" => &mut args.default,
                "min" => &mut args.min,
                "max" => &mut args.max,
                "doc" => {
                    args.doc = Some(meta.value()?.parse()?);
                    return Ok(());
                }
                _ => {
                    return Err(meta.error(format!(
                        "`#[forge::{macro_name}]`: unknown `#[param]` key `{key}`; expected default, min, max, doc"
                    )));
                }
            };
            *slot = Some(meta.value()?.parse()?);
            Ok(())
        })?;
        Ok(args)
    }
}
