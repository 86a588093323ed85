//! Built-in rewards, one per file, each written with `#[forge::reward]`.
// Each file's `#[forge::reward] fn x` makes a module `x`; the file's own module gets another
// name so the generated one can be re-exported under the file's name.
#[path = "exact_match.rs"]
mod exact_match_def;

pub use exact_match_def::exact_match;

#[path = "math.rs"]
mod math_def;

pub use math_def::{math, think_format};
