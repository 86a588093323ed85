//! The built-in GRPO family, one loss per file, each written with `#[forge::loss]`, which makes
//! the module of the same name: `forge::loss::grpo::{Params, value_and_grad, ..}`.
// Each file's `#[forge::loss] fn x` makes a module `x`; the file's own module gets another
// name so the generated one can be re-exported under the file's name.
#[path = "cispo.rs"]
mod cispo_def;
#[path = "dapo.rs"]
mod dapo_def;
#[path = "grpo.rs"]
mod grpo_def;
#[path = "gspo.rs"]
mod gspo_def;
#[path = "sapo.rs"]
mod sapo_def;

pub use cispo_def::cispo;
pub use dapo_def::dapo;
pub use grpo_def::grpo;
pub use gspo_def::gspo;
pub use sapo_def::sapo;
