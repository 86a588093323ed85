//! Reward functions. A reward is a plain Rust function written with `#[forge::reward]`; the macro
//! registers it here under its name so YAML can list it, and generates its parameter struct.

mod builtin;
pub mod registry;

mod input;
pub mod math_answer;

pub use builtin::{exact_match, math, think_format};
pub use input::{RewardFn, RewardInput, Sample};
pub use registry::RewardRegistration;
