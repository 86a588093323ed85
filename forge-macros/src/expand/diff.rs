//! Forward-mode differentiation of a loss body.
//!
//! The body (let-bindings, arithmetic, comparisons, `if/else`, the supported functions) is lowered
//! to straight-line code: every subexpression becomes a fresh binding holding its value and its
//! derivatives with respect to the two inputs that carry gradient, `logprob` and `seq_log_ratio`.
//! Branches (`if/else`, `min`, `max`, `clamp`, `abs`) compute both sides and `select` one, value
//! and derivatives alike, so a branch's derivative is the chosen branch's, and the same code suits
//! a GPU kernel (no divergent control flow). Derivatives known to be zero are tracked statically
//! and never emitted. The output is written through a [`Dialect`]: plain f64 Rust for the
//! reference twin, cubecl for kernels.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{BinOp, Block, Expr, Ident, Lit, Pat, Stmt, UnOp};

use crate::ctx::Ctx;

/// Inputs that carry gradient, in tangent order.
pub(crate) const ACTIVE: [&str; 2] = ["logprob", "seq_log_ratio"];

/// Functions a loss body may call, as methods (`x.exp()`) or free functions (`exp(x)`), with
/// their argument counts (the receiver included).
const FUNCTIONS: &[(&str, usize)] = &[
    ("exp", 1),
    ("ln", 1),
    ("log1p", 1),
    ("ln_1p", 1),
    ("sqrt", 1),
    ("abs", 1),
    ("tanh", 1),
    ("sigmoid", 1),
    ("softplus", 1),
    ("min", 2),
    ("max", 2),
    ("clamp", 3),
    ("stop_gradient", 1),
    ("k1", 2),
    ("k2", 2),
    ("k3", 2),
];

/// How lowered code is spelled in a target language.
pub(crate) trait Dialect {
    /// A float literal.
    fn lit(&self, value: f64) -> TokenStream;
    /// A one-argument function: exp, ln, log1p, sqrt, tanh, sigmoid, softplus.
    fn call1(&self, name: &str, x: &Ident) -> TokenStream;
    /// `if c { a } else { b }` without branching.
    fn select(&self, c: &Ident, a: &TokenStream, b: &TokenStream) -> TokenStream;
    /// The bound on KL log-ratios (the runtime's `KL_LOG_RATIO_CLAMP`).
    fn kl_clamp(&self) -> TokenStream;
}

/// A lowered value: its binding and the bindings of its derivatives (`None`: zero).
#[derive(Clone)]
pub(crate) struct Val {
    pub v: Ident,
    pub d: [Option<Ident>; 2],
    pub boolean: bool,
}

impl Val {
    fn constant(v: Ident) -> Self {
        Val {
            v,
            d: [None, None],
            boolean: false,
        }
    }
}

/// The lowering of one body.
pub(crate) struct Lowered {
    pub stmts: Vec<TokenStream>,
    pub result: Val,
}

pub(crate) struct Lower<'a> {
    dialect: &'a dyn Dialect,
    stmts: Vec<TokenStream>,
    scopes: Vec<HashMap<String, Val>>,
    next: usize,
    ctx: Ctx,
}

const M: &str = "`#[forge::loss]`";

impl<'a> Lower<'a> {
    /// `inputs` are the per-token inputs the function takes (two may be active), `params` its
    /// parameters (constants); both are already bound under their own names by the caller.
    pub(crate) fn new(dialect: &'a dyn Dialect, inputs: &[Ident], params: &[Ident]) -> Self {
        let mut scope = HashMap::new();
        for input in inputs {
            let mut d = [None, None];
            for (k, active) in ACTIVE.iter().enumerate() {
                if input == active {
                    d[k] = Some(format_ident!("__one"));
                }
            }
            scope.insert(
                input.to_string(),
                Val {
                    v: input.clone(),
                    d,
                    boolean: false,
                },
            );
        }
        for p in params {
            scope.insert(p.to_string(), Val::constant(p.clone()));
        }
        let mut lower = Lower {
            dialect,
            stmts: Vec::new(),
            scopes: vec![scope],
            next: 0,
            ctx: Ctx::default(),
        };
        let one = dialect.lit(1.0);
        lower.stmts.push(quote!(let __one = #one;));
        lower
    }

    pub(crate) fn run(mut self, body: &Block) -> syn::Result<Lowered> {
        let result = self.block(body);
        if let Some(r) = &result
            && r.boolean
        {
            self.ctx.error(
                body,
                format!("{M}: the loss must evaluate to a number, not a boolean"),
            );
        }
        self.ctx.check()?;
        let result = result
            .ok_or_else(|| syn::Error::new(body.span(), format!("{M}: the body has no value")))?;
        Ok(Lowered {
            stmts: self.stmts,
            result,
        })
    }

    fn fresh(&mut self, what: &str) -> Ident {
        self.next += 1;
        format_ident!("__{}{}", what, self.next)
    }

    /// Binds `value` (and derivative expressions) to fresh names.
    fn bind(&mut self, value: TokenStream, d: [Option<TokenStream>; 2], boolean: bool) -> Val {
        let v = self.fresh("v");
        self.stmts.push(quote!(let #v = #value;));
        let d = d.map(|d| {
            d.map(|expr| {
                let name = format_ident!("{}_d{}", v, self.next);
                self.next += 1;
                self.stmts.push(quote!(let #name = #expr;));
                name
            })
        });
        Val { v, d, boolean }
    }

    fn zero(&self) -> TokenStream {
        self.dialect.lit(0.0)
    }

    fn d_or_zero(&self, d: &Option<Ident>) -> TokenStream {
        match d {
            Some(d) => quote!(#d),
            None => self.zero(),
        }
    }

    fn block(&mut self, block: &Block) -> Option<Val> {
        self.scopes.push(HashMap::new());
        let mut last = None;
        for (i, stmt) in block.stmts.iter().enumerate() {
            let is_last = i + 1 == block.stmts.len();
            match stmt {
                Stmt::Local(local) => {
                    let (ident, mutable) = match &local.pat {
                        Pat::Ident(pi) => (Some(pi.ident.clone()), pi.mutability.is_some()),
                        Pat::Type(pt) => match &*pt.pat {
                            Pat::Ident(pi) => (Some(pi.ident.clone()), pi.mutability.is_some()),
                            other => {
                                self.ctx
                                    .error(other, format!("{M}: `let` binds a plain name"));
                                (None, false)
                            }
                        },
                        other => {
                            self.ctx
                                .error(other, format!("{M}: `let` binds a plain name"));
                            (None, false)
                        }
                    };
                    if mutable {
                        self.ctx.error(
                            &local.pat,
                            format!(
                                "{M}: bindings cannot be `mut`; write each step as a new `let`"
                            ),
                        );
                    }
                    let Some(init) = &local.init else {
                        self.ctx.error(local, format!("{M}: `let` needs a value"));
                        continue;
                    };
                    if let Some((_, diverge)) = &init.diverge {
                        self.ctx
                            .error(diverge, format!("{M}: `let ... else` is not supported"));
                    }
                    if let (Some(ident), Some(val)) = (ident, self.expr(&init.expr)) {
                        self.scopes
                            .last_mut()
                            .map(|s| s.insert(ident.to_string(), val));
                    }
                    last = None;
                }
                Stmt::Expr(expr, None) if is_last => last = self.expr(expr),
                Stmt::Expr(expr, _) => {
                    self.ctx.error(
                        expr,
                        format!("{M}: only `let` bindings and a final expression are allowed"),
                    );
                }
                Stmt::Item(item) => self
                    .ctx
                    .error(item, format!("{M}: items cannot be declared inside a loss")),
                Stmt::Macro(m) => self
                    .ctx
                    .error(m, format!("{M}: macros are not supported inside a loss")),
            }
        }
        self.scopes.pop();
        last
    }

    fn lookup(&self, name: &str) -> Option<Val> {
        self.scopes.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn number(&mut self, expr: &Expr) -> Option<Val> {
        let val = self.expr(expr)?;
        if val.boolean {
            self.ctx
                .error(expr, format!("{M}: expected a number, found a condition"));
            return None;
        }
        Some(val)
    }

    fn condition(&mut self, expr: &Expr) -> Option<Val> {
        let val = self.expr(expr)?;
        if !val.boolean {
            self.ctx.error(
                expr,
                format!("{M}: expected a condition (a comparison), found a number"),
            );
            return None;
        }
        Some(val)
    }

    fn expr(&mut self, expr: &Expr) -> Option<Val> {
        match expr {
            Expr::Lit(lit) => {
                let value = match &lit.lit {
                    Lit::Float(f) => f.base10_parse::<f64>().ok(),
                    Lit::Int(i) => i.base10_parse::<f64>().ok(),
                    _ => None,
                };
                match value {
                    Some(x) => {
                        let lit = self.dialect.lit(x);
                        Some(self.bind(lit, [None, None], false))
                    }
                    None => {
                        self.ctx
                            .error(lit, format!("{M}: only number literals are supported"));
                        None
                    }
                }
            }
            Expr::Path(path) => {
                match path.path.get_ident() {
                    Some(ident) => match self.lookup(&ident.to_string()) {
                        Some(val) => Some(val),
                        None => {
                            self.ctx.error(ident, format!(
                            "{M}: unknown name `{ident}`: use the function's inputs and parameters, or an earlier `let`"
                        ));
                            None
                        }
                    },
                    None => {
                        self.ctx.error(path, format!("{M}: paths are not supported; use the function's inputs and parameters"));
                        None
                    }
                }
            }
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Block(b) if b.label.is_none() => self.block(&b.block),
            Expr::Cast(c) => {
                let is_float = matches!(&*c.ty, syn::Type::Path(p) if p.path.is_ident("f32") || p.path.is_ident("f64"));
                if !is_float {
                    self.ctx
                        .error(&c.ty, format!("{M}: only `as f32` casts are supported"));
                }
                self.number(&c.expr)
            }
            Expr::Unary(u) => match u.op {
                UnOp::Neg(_) => {
                    let x = self.number(&u.expr)?;
                    let v = &x.v;
                    let d = x.d.clone().map(|d| d.map(|d| quote!(-#d)));
                    Some(self.bind(quote!(-#v), d, false))
                }
                UnOp::Not(_) => {
                    let x = self.condition(&u.expr)?;
                    let v = &x.v;
                    Some(self.bind(quote!(!#v), [None, None], true))
                }
                _ => {
                    self.ctx.error(u, format!("{M}: unsupported operator"));
                    None
                }
            },
            Expr::Binary(b) => self.binary(b),
            Expr::If(i) => self.if_else(i),
            Expr::MethodCall(m) => {
                let mut args = vec![&*m.receiver];
                args.extend(m.args.iter());
                if m.turbofish.is_some() {
                    self.ctx
                        .error(m, format!("{M}: type arguments are not supported"));
                }
                self.call(&m.method, &args, m)
            }
            Expr::Call(c) => {
                let name = match &*c.func {
                    Expr::Path(p) => p.path.get_ident().cloned(),
                    _ => None,
                };
                match name {
                    Some(name) => {
                        let args: Vec<&Expr> = c.args.iter().collect();
                        self.call(&name, &args, c)
                    }
                    None => {
                        self.ctx.error(
                            &c.func,
                            format!("{M}: only the supported functions can be called"),
                        );
                        None
                    }
                }
            }
            other => {
                self.ctx.error(other, format!(
                    "{M}: unsupported expression; a loss body uses `let`, arithmetic, comparisons, `if/else` and the functions {}",
                    supported_list()
                ));
                None
            }
        }
    }

    fn binary(&mut self, b: &syn::ExprBinary) -> Option<Val> {
        let logical = matches!(b.op, BinOp::And(_) | BinOp::Or(_));
        let comparison = matches!(
            b.op,
            BinOp::Lt(_) | BinOp::Le(_) | BinOp::Gt(_) | BinOp::Ge(_) | BinOp::Eq(_) | BinOp::Ne(_)
        );
        if logical {
            let (l, r) = (self.condition(&b.left), self.condition(&b.right));
            let (l, r) = (l?, r?);
            let (lv, rv, op) = (&l.v, &r.v, &b.op);
            return Some(self.bind(quote!(#lv #op #rv), [None, None], true));
        }
        let (l, r) = (self.number(&b.left), self.number(&b.right));
        let (l, r) = (l?, r?);
        let (a, c) = (&l.v, &r.v);
        if comparison {
            let op = &b.op;
            return Some(self.bind(quote!(#a #op #c), [None, None], true));
        }
        match b.op {
            BinOp::Add(_) | BinOp::Sub(_) => {
                let plus = matches!(b.op, BinOp::Add(_));
                let d = [0, 1].map(|k| match (&l.d[k], &r.d[k]) {
                    (None, None) => None,
                    (Some(x), None) => Some(quote!(#x)),
                    (None, Some(y)) => Some(if plus { quote!(#y) } else { quote!(-#y) }),
                    (Some(x), Some(y)) => Some(if plus {
                        quote!(#x + #y)
                    } else {
                        quote!(#x - #y)
                    }),
                });
                let v = if plus {
                    quote!(#a + #c)
                } else {
                    quote!(#a - #c)
                };
                Some(self.bind(v, d, false))
            }
            BinOp::Mul(_) => {
                let d = [0, 1].map(|k| match (&l.d[k], &r.d[k]) {
                    (None, None) => None,
                    (Some(x), None) => Some(quote!(#x * #c)),
                    (None, Some(y)) => Some(quote!(#a * #y)),
                    (Some(x), Some(y)) => Some(quote!(#x * #c + #a * #y)),
                });
                Some(self.bind(quote!(#a * #c), d, false))
            }
            BinOp::Div(_) => {
                let q = self.bind(quote!(#a / #c), [None, None], false);
                let qv = &q.v;
                let d = [0, 1].map(|k| match (&l.d[k], &r.d[k]) {
                    (None, None) => None,
                    (Some(x), None) => Some(quote!(#x / #c)),
                    (None, Some(y)) => Some(quote!(-(#qv * #y) / #c)),
                    (Some(x), Some(y)) => Some(quote!((#x - #qv * #y) / #c)),
                });
                Some(self.with_derivatives(q, d))
            }
            _ => {
                self.ctx.error(
                    b,
                    format!("{M}: unsupported operator; use + - * / and comparisons"),
                );
                None
            }
        }
    }

    /// Adds derivative bindings to an already bound value.
    fn with_derivatives(&mut self, mut val: Val, d: [Option<TokenStream>; 2]) -> Val {
        for (k, expr) in d.into_iter().enumerate() {
            if let Some(expr) = expr {
                let name = format_ident!("{}_d{}", val.v, self.next);
                self.next += 1;
                self.stmts.push(quote!(let #name = #expr;));
                val.d[k] = Some(name);
            }
        }
        val
    }

    /// `select(c, a, b)` on value and derivatives.
    fn select(&mut self, c: &Ident, a: &Val, b: &Val) -> Val {
        let (av, bv) = (&a.v, &b.v);
        let v = self.dialect.select(c, &quote!(#av), &quote!(#bv));
        let d = [0, 1].map(|k| {
            if a.d[k].is_none() && b.d[k].is_none() {
                None
            } else {
                let (x, y) = (self.d_or_zero(&a.d[k]), self.d_or_zero(&b.d[k]));
                Some(self.dialect.select(c, &x, &y))
            }
        });
        self.bind(v, d, a.boolean)
    }

    fn if_else(&mut self, i: &syn::ExprIf) -> Option<Val> {
        let c = self.condition(&i.cond);
        let then = self.block(&i.then_branch);
        let otherwise = match &i.else_branch {
            Some((_, e)) => self.expr(e),
            None => {
                self.ctx.error(
                    i,
                    format!("{M}: `if` needs an `else`: the loss must have a value either way"),
                );
                None
            }
        };
        let (c, a, b) = (c?, then?, otherwise?);
        if a.boolean != b.boolean {
            self.ctx
                .error(i, format!("{M}: both branches must be numbers"));
            return None;
        }
        Some(self.select(&c.v, &a, &b))
    }

    /// `x op 0` as a condition binding.
    fn compare(&mut self, x: &Ident, op: TokenStream, y: TokenStream) -> Ident {
        self.bind(quote!(#x #op #y), [None, None], true).v
    }

    fn call(&mut self, name: &Ident, args: &[&Expr], whole: &dyn quote::ToTokens) -> Option<Val> {
        let key = name.to_string();
        let Some((_, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == key) else {
            self.ctx.error(
                name,
                format!(
                    "{M}: unsupported function `{key}`; supported: {}",
                    supported_list()
                ),
            );
            return None;
        };
        if args.len() != *arity {
            self.ctx.error(
                whole,
                format!(
                    "{M}: `{key}` takes {arity} argument{}",
                    if *arity == 1 { "" } else { "s" }
                ),
            );
            return None;
        }
        let vals: Vec<Option<Val>> = args.iter().map(|a| self.number(a)).collect();
        let vals: Vec<Val> = vals.into_iter().collect::<Option<_>>()?;
        let x = &vals[0];
        let xv = &x.v;
        Some(match key.as_str() {
            "stop_gradient" => Val::constant(x.v.clone()),
            "exp" => {
                let r = self.bind(self.dialect.call1("exp", xv), [None, None], false);
                let rv = r.v.clone();
                let d = x.d.clone().map(|d| d.map(|d| quote!(#rv * #d)));
                self.with_derivatives(r, d)
            }
            "ln" => {
                let d = x.d.clone().map(|d| d.map(|d| quote!(#d / #xv)));
                self.bind(self.dialect.call1("ln", xv), d, false)
            }
            "log1p" | "ln_1p" => {
                let one = self.dialect.lit(1.0);
                let d = x.d.clone().map(|d| d.map(|d| quote!(#d / (#one + #xv))));
                self.bind(self.dialect.call1("log1p", xv), d, false)
            }
            "sqrt" => {
                let r = self.bind(self.dialect.call1("sqrt", xv), [None, None], false);
                let (rv, two) = (r.v.clone(), self.dialect.lit(2.0));
                let d = x.d.clone().map(|d| d.map(|d| quote!(#d / (#two * #rv))));
                self.with_derivatives(r, d)
            }
            "tanh" => {
                let r = self.bind(self.dialect.call1("tanh", xv), [None, None], false);
                let (rv, one) = (r.v.clone(), self.dialect.lit(1.0));
                let d =
                    x.d.clone()
                        .map(|d| d.map(|d| quote!((#one - #rv * #rv) * #d)));
                self.with_derivatives(r, d)
            }
            "sigmoid" => {
                let r = self.bind(self.dialect.call1("sigmoid", xv), [None, None], false);
                let (rv, one) = (r.v.clone(), self.dialect.lit(1.0));
                let d =
                    x.d.clone()
                        .map(|d| d.map(|d| quote!(#rv * (#one - #rv) * #d)));
                self.with_derivatives(r, d)
            }
            "softplus" => {
                let s = self.dialect.call1("sigmoid", xv);
                let d = x.d.clone().map(|d| d.map(|d| quote!(#s * #d)));
                self.bind(self.dialect.call1("softplus", xv), d, false)
            }
            "abs" => {
                let zero = self.zero();
                let c = self.compare(xv, quote!(>=), zero);
                let neg = self.bind(
                    quote!(-#xv),
                    x.d.clone().map(|d| d.map(|d| quote!(-#d))),
                    false,
                );
                self.select(&c, x, &neg)
            }
            "min" | "max" => {
                let y = &vals[1];
                let yv = &y.v;
                let op = if key == "min" { quote!(<=) } else { quote!(>=) };
                let c = self.compare(xv, op, quote!(#yv));
                self.select(&c, x, y)
            }
            "clamp" => {
                let (lo, hi) = (&vals[1], &vals[2]);
                let (lov, hiv) = (&lo.v, &hi.v);
                let below = self.compare(xv, quote!(<), quote!(#lov));
                let above = self.compare(xv, quote!(>), quote!(#hiv));
                let upper = self.select(&above, hi, x);
                self.select(&below, lo, &upper)
            }
            "k1" | "k2" | "k3" => self.kl(&key, x, &vals[1]),
            _ => unreachable!("every FUNCTIONS entry is handled"),
        })
    }

    /// KL estimators on the clamped log-ratio, as `forge::loss::math` defines them.
    fn kl(&mut self, which: &str, logprob: &Val, ref_logprob: &Val) -> Val {
        let bound = self.dialect.kl_clamp();
        // r = clamp(lp - rp) for k1/k2, clamp(rp - lp) for k3.
        let (a, b) = if which == "k3" {
            (ref_logprob, logprob)
        } else {
            (logprob, ref_logprob)
        };
        let (av, bv) = (&a.v, &b.v);
        let diff_d = [0, 1].map(|k| match (&a.d[k], &b.d[k]) {
            (None, None) => None,
            (Some(x), None) => Some(quote!(#x)),
            (None, Some(y)) => Some(quote!(-#y)),
            (Some(x), Some(y)) => Some(quote!(#x - #y)),
        });
        let diff = self.bind(quote!(#av - #bv), diff_d, false);
        let lo = self.bind(quote!(-#bound), [None, None], false);
        let hi = self.bind(quote!(#bound), [None, None], false);
        let below = self.compare(&diff.v, quote!(<), {
            let l = &lo.v;
            quote!(#l)
        });
        let above = self.compare(&diff.v, quote!(>), {
            let h = &hi.v;
            quote!(#h)
        });
        let upper = self.select(&above, &hi, &diff);
        let r = self.select(&below, &lo, &upper);
        let rv = r.v.clone();
        match which {
            "k1" => r,
            "k2" => {
                let half = self.dialect.lit(0.5);
                let d = r.d.clone().map(|d| d.map(|d| quote!(#rv * #d)));
                self.bind(quote!(#half * #rv * #rv), d, false)
            }
            _ => {
                let e = self.bind(self.dialect.call1("exp", &rv), [None, None], false);
                let (ev, one) = (e.v.clone(), self.dialect.lit(1.0));
                let d = r.d.clone().map(|d| d.map(|d| quote!((#ev - #one) * #d)));
                self.bind(quote!(#ev - #rv - #one), d, false)
            }
        }
    }
}

fn supported_list() -> String {
    FUNCTIONS
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| *f != "ln_1p")
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plain f64 Rust: the reference twin with its gradient.
pub(crate) struct F64;

impl Dialect for F64 {
    fn lit(&self, value: f64) -> TokenStream {
        let lit = syn::LitFloat::new(&format!("{value:?}f64"), Span::call_site());
        quote!(#lit)
    }

    fn call1(&self, name: &str, x: &Ident) -> TokenStream {
        let math = crate::paths::private();
        match name {
            "exp" => quote!(#x.exp()),
            "ln" => quote!(#x.ln()),
            "log1p" => quote!(#x.ln_1p()),
            "sqrt" => quote!(#x.sqrt()),
            "tanh" => quote!(#x.tanh()),
            "sigmoid" => quote!(#math::math::sigmoid(#x)),
            "softplus" => quote!(#math::math::softplus(#x)),
            other => unreachable!("no f64 spelling for {other}"),
        }
    }

    fn select(&self, c: &Ident, a: &TokenStream, b: &TokenStream) -> TokenStream {
        quote!(if #c { #a } else { #b })
    }

    fn kl_clamp(&self) -> TokenStream {
        let math = crate::paths::private();
        quote!(#math::math::KL_LOG_RATIO_CLAMP)
    }
}

/// cubecl: the body of a `#[cube]` kernel generic over `F: Float`.
pub(crate) struct Cube;

impl Dialect for Cube {
    fn lit(&self, value: f64) -> TokenStream {
        let lit = syn::LitFloat::new(&format!("{:?}f32", value as f32), Span::call_site());
        quote!(F::new(#lit))
    }

    fn call1(&self, name: &str, x: &Ident) -> TokenStream {
        let private = crate::paths::private();
        match name {
            "exp" => quote!(#x.exp()),
            "ln" => quote!(#x.ln()),
            "log1p" => quote!(#x.log1p()),
            "sqrt" => quote!(#x.sqrt()),
            "tanh" => quote!(#x.tanh()),
            "sigmoid" => quote!(#private::kernels::math::sigmoid::<F>(#x)),
            "softplus" => quote!(#private::kernels::math::softplus::<F>(#x)),
            other => unreachable!("no cubecl spelling for {other}"),
        }
    }

    fn select(&self, c: &Ident, a: &TokenStream, b: &TokenStream) -> TokenStream {
        quote!(select(#c, #a, #b))
    }

    fn kl_clamp(&self) -> TokenStream {
        quote!(F::new(20.0f32))
    }
}
