//! Custom rewards: functions of `prompt`, `completion`, `answer` (`&str`) and `sample`
//! (the dataset record), plus `#[param]`s set in YAML, returning the score.

/// 1 when the last number in the completion equals the reference answer.
#[forge::reward]
pub fn last_number(
    completion: &str,
    answer: &str,
    #[param(default = 1e-6, min = 0.0, doc = "Largest difference still counted as equal.")] tolerance: f64,
) -> f32 {
    let last = completion
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter_map(|token| token.parse::<f64>().ok())
        .last();
    match (last, answer.trim().parse::<f64>()) {
        (Some(got), Ok(want)) if (got - want).abs() <= tolerance => 1.0,
        _ => 0.0,
    }
}
