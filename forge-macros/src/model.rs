//! The macros' internal model of a user function, built and checked once; expansion reads only
//! this, never raw syn items.

use syn::{
    Attribute, Block, Expr, FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Type, Visibility,
};

use crate::args::{ItemArgs, ParamArgs};
use crate::ctx::Ctx;

/// Per-token inputs a loss may take (the runtime's `TokenInputs` fields).
pub(crate) const LOSS_INPUTS: &[&str] = &[
    "logprob",
    "old_logprob",
    "ref_logprob",
    "advantage",
    "seq_log_ratio",
];

/// A typed parameter: becomes a field of the generated `Params` struct and a YAML key.
pub(crate) struct Param {
    pub ident: Ident,
    pub ty: Type,
    pub default: Expr,
    pub min: Option<Expr>,
    pub max: Option<Expr>,
    pub doc: Option<LitStr>,
}

/// A reward input, bound by argument name.
pub(crate) struct RewardInputArg {
    pub ident: Ident,
}

/// What both macros share about the function.
pub(crate) struct FnDef {
    pub vis: Visibility,
    pub ident: Ident,
    pub name: String,
    pub docs: Vec<Attribute>,
    pub summary: String,
    pub params: Vec<Param>,
    pub body: Box<Block>,
    pub debug: bool,
}

/// `#[forge::loss]`.
pub(crate) struct LossDef {
    pub def: FnDef,
    pub inputs: Vec<Ident>,
    pub aggregation_variant: Ident,
    pub kl: Option<Ident>,
}

/// `#[forge::reward]`.
pub(crate) struct RewardDef {
    pub def: FnDef,
    /// The function's arguments in order: an input or a parameter.
    pub args: Vec<ArgKind>,
    pub item: ItemFn,
}

pub(crate) enum ArgKind {
    Input(RewardInputArg),
    Param(usize),
}

fn is_type(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
}

fn summary_of(docs: &[Attribute]) -> String {
    docs.iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .take_while(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One function argument: its name, type and `#[param]` attribute if any.
struct Argument {
    ident: Ident,
    ty: Type,
    param: Option<ParamArgs>,
}

/// Shared checks on the signature; returns the common part and the arguments, each with its
/// `#[param]` attribute if any.
fn fn_def(
    ctx: &mut Ctx,
    item: &ItemFn,
    args: &ItemArgs,
    macro_name: &str,
) -> (FnDef, Vec<Argument>) {
    let sig = &item.sig;
    let m = format!("`#[forge::{macro_name}]`");
    if let Some(t) = &sig.asyncness {
        ctx.error(t, format!("{m}: the function cannot be `async`"));
    }
    if let Some(t) = &sig.unsafety {
        ctx.error(t, format!("{m}: the function cannot be `unsafe`"));
    }
    if !sig.generics.params.is_empty() {
        ctx.error(
            &sig.generics,
            format!("{m}: the function cannot be generic"),
        );
    }
    match &sig.output {
        ReturnType::Type(_, ty) if is_type(ty, "f32") => {}
        other => ctx.error(other, format!("{m}: the function must return `f32`")),
    }
    let mut arguments = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else {
            ctx.error(input, format!("{m}: `self` is not allowed"));
            continue;
        };
        let Pat::Ident(pi) = &*pt.pat else {
            ctx.error(&pt.pat, format!("{m}: arguments must be plain names"));
            continue;
        };
        let mut param = None;
        for attr in &pt.attrs {
            if attr.path().is_ident("param") {
                match ParamArgs::parse(attr, macro_name) {
                    Ok(p) => param = Some(p),
                    Err(e) => ctx.push(e),
                }
            } else {
                ctx.error(
                    attr,
                    format!("{m}: only `#[param(..)]` is allowed on arguments"),
                );
            }
        }
        arguments.push(Argument {
            ident: pi.ident.clone(),
            ty: (*pt.ty).clone(),
            param,
        });
    }
    let docs: Vec<Attribute> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    for attr in item.attrs.iter().filter(|a| !a.path().is_ident("doc")) {
        ctx.error(
            attr,
            format!("{m}: other attributes are not supported on the function"),
        );
    }
    let name = args
        .name
        .as_ref()
        .map_or_else(|| sig.ident.to_string(), LitStr::value);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        let span = args
            .name
            .as_ref()
            .map_or_else(|| sig.ident.span(), LitStr::span);
        ctx.push(syn::Error::new(
            span,
            format!("{m}: name `{name}` must be letters, digits, `_` or `-`"),
        ));
    }
    let summary = summary_of(&docs);
    let def = FnDef {
        vis: item.vis.clone(),
        ident: sig.ident.clone(),
        name,
        docs,
        summary,
        params: Vec::new(),
        body: item.block.clone(),
        debug: args.debug,
    };
    (def, arguments)
}

fn make_param(ctx: &mut Ctx, m: &str, ident: Ident, ty: Type, p: ParamArgs) -> Param {
    let default = p.default.unwrap_or_else(|| {
        ctx.error(
            &ident,
            format!("{m}: parameter `{ident}` needs a default: `#[param(default = ..)]`"),
        );
        syn::parse_quote!(::core::default::Default::default())
    });
    Param {
        ident,
        ty,
        default,
        min: p.min,
        max: p.max,
        doc: p.doc,
    }
}

impl LossDef {
    pub(crate) fn from_item(item: &ItemFn, args: &ItemArgs) -> syn::Result<Self> {
        let mut ctx = Ctx::default();
        let m = "`#[forge::loss]`";
        let (mut def, arguments) = fn_def(&mut ctx, item, args, "loss");
        let mut inputs = Vec::new();
        for Argument { ident, ty, param } in arguments {
            if !is_type(&ty, "f32") {
                ctx.error(&ty, format!("{m}: `{ident}` must be `f32`"));
            }
            match param {
                Some(p) => {
                    let p = make_param(&mut ctx, m, ident, ty, p);
                    def.params.push(p);
                }
                None if LOSS_INPUTS.contains(&ident.to_string().as_str()) => inputs.push(ident),
                None => ctx.error(&ident, format!(
                    "{m}: unknown input `{ident}`; per-token inputs are {}, and parameters are marked `#[param(default = ..)]`",
                    LOSS_INPUTS.join(", ")
                )),
            }
        }
        if !inputs.iter().any(|i| i == "logprob") {
            ctx.error(
                &item.sig.ident,
                format!("{m}: the loss must take `logprob: f32`, the only input with a gradient"),
            );
        }
        let aggregation = args
            .aggregation
            .as_ref()
            .map_or_else(|| "token_mean".to_string(), LitStr::value);
        let variant = crate::args::AGGREGATIONS
            .iter()
            .find(|(a, _)| *a == aggregation)
            .map_or("TokenMean", |(_, v)| v);
        if let Some(kl) = &args.kl
            && !def.params.iter().any(|p| p.ident == *kl)
        {
            ctx.error(
                kl,
                format!("{m}: `kl = {kl}` must name a `#[param]` of the loss"),
            );
        }
        ctx.check()?;
        Ok(Self {
            def,
            inputs,
            aggregation_variant: Ident::new(variant, proc_macro2::Span::call_site()),
            kl: args.kl.clone(),
        })
    }
}

impl RewardDef {
    pub(crate) fn from_item(item: &ItemFn, args: &ItemArgs) -> syn::Result<Self> {
        let mut ctx = Ctx::default();
        let m = "`#[forge::reward]`";
        let (mut def, arguments) = fn_def(&mut ctx, item, args, "reward");
        let mut kinds = Vec::new();
        for Argument { ident, ty, param } in arguments {
            match param {
                Some(p) => {
                    def.params.push(make_param(&mut ctx, m, ident, ty, p));
                    kinds.push(ArgKind::Param(def.params.len() - 1));
                }
                None => {
                    let name = ident.to_string();
                    let ok = match name.as_str() {
                        "prompt" | "completion" | "answer" => {
                            matches!(&ty, Type::Reference(r) if is_type(&r.elem, "str"))
                        }
                        "sample" => matches!(&ty, Type::Reference(_)),
                        _ => {
                            ctx.error(&ident, format!(
                                "{m}: unknown input `{ident}`; inputs are prompt, completion, answer (`&str`) and sample (`&forge::reward::Sample`), and parameters are marked `#[param(default = ..)]`"
                            ));
                            true
                        }
                    };
                    if !ok {
                        let want = if name == "sample" {
                            "&forge::reward::Sample"
                        } else {
                            "&str"
                        };
                        ctx.error(&ty, format!("{m}: `{ident}` must be `{want}`"));
                    }
                    kinds.push(ArgKind::Input(RewardInputArg { ident }));
                }
            }
        }
        ctx.check()?;
        Ok(Self {
            def,
            args: kinds,
            item: item.clone(),
        })
    }
}
