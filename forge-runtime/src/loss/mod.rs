//! Policy losses. A loss is a per-token scalar function written with `#[forge::loss]`; the macro
//! registers it here under its name so YAML can select it, generates its parameter struct (whose
//! schema joins the experiment schema) and an f64 reference twin used by tests.
//!
//! The built-in GRPO family lives in `builtin/`, one file per algorithm: [`grpo`], [`dapo`],
//! [`cispo`], [`gspo`], [`sapo`].

pub mod batch_file;
mod builtin;
pub mod math;
pub mod reference;
pub mod registry;

#[cfg(test)]
mod gradient_tests;
mod inputs;

pub use builtin::{cispo, dapo, grpo, gspo, sapo};
pub use inputs::{TokenGrad, TokenInputs};
pub use registry::LossRegistration;
