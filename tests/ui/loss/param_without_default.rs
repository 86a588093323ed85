#[forge::loss]
fn clipped(logprob: f32, advantage: f32, #[param] clip: f32) -> f32 {
    -advantage * logprob.min(clip)
}

fn main() {}
