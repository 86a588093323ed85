//! A shaping reward that prefers short answers.

/// 1 for completions up to `target_chars` characters, falling linearly to 0 at twice that.
#[forge::reward]
pub fn brevity(
    completion: &str,
    #[param(default = 32, doc = "Length (in characters) that still scores 1.")] target_chars: u32,
) -> f32 {
    let len = completion.chars().count() as f32;
    let target = target_chars.max(1) as f32;
    (2.0 - len / target).clamp(0.0, 1.0)
}
