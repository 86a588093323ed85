//! Exact match of the completion's final answer against the reference answer.

/// 1 when the completion's answer equals the reference answer (after trimming), else 0.
#[crate::reward]
pub fn exact_match(
    completion: &str,
    answer: &str,
    #[param(
        default = "",
        doc = "Marker before the answer in both texts (e.g. `####`); the text after its last occurrence is compared. Empty: whole texts."
    )]
    marker: String,
    #[param(default = true, doc = "Compare case-sensitively.")] case_sensitive: bool,
) -> f32 {
    let pick = |text: &str| -> String {
        let tail = if marker.is_empty() {
            text
        } else {
            text.rsplit_once(marker.as_str()).map_or("", |(_, t)| t)
        };
        let tail = tail.trim();
        if case_sensitive {
            tail.to_string()
        } else {
            tail.to_lowercase()
        }
    };
    let got = pick(completion);
    if !got.is_empty() && got == pick(answer) {
        1.0
    } else {
        0.0
    }
}
