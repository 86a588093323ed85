#[forge::loss]
fn powered(logprob: f32, advantage: f32) -> f32 {
    -advantage * logprob.powi(2)
}

fn main() {}
