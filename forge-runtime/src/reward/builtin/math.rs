//! Math answers (GSM8K `####`, `\boxed{}`, answer tags, "The answer is") and the thinking format.

use crate::reward::math_answer::{answers_match, think_format_ok};

/// 1 when the completion's final answer equals the reference numerically (commas, `$`, fractions,
/// trailing zeros and `\frac` forms compare equal), else 0. The reference may be a whole GSM8K
/// answer field: its answer follows `####`.
#[crate::reward]
pub fn math(completion: &str, answer: &str) -> f32 {
    if answers_match(completion, answer) {
        1.0
    } else {
        0.0
    }
}

/// 1 when the completion starts with one `<think>...</think>` block followed by a non-empty
/// answer, else 0.
#[crate::reward]
pub fn think_format(completion: &str) -> f32 {
    if think_format_ok(completion) {
        1.0
    } else {
        0.0
    }
}
