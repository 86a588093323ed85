//! Policy losses. A loss is a per-token scalar function written with `#[forge::loss]`; the macro
//! registers it here under its name so YAML can select it, generates its parameter struct (whose
//! schema joins the experiment schema) and an f64 reference twin used by tests.
//!
//! The built-in GRPO family lives in one file per algorithm: [`grpo`], [`dapo`], [`cispo`],
//! [`gspo`], [`sapo`].

pub mod cispo;
pub mod dapo;
pub mod grpo;
pub mod gspo;
pub mod math;
pub mod registry;
pub mod sapo;

mod inputs;

pub use inputs::TokenInputs;
pub use registry::LossRegistration;
