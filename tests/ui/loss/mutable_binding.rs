#[forge::loss]
fn accumulate(logprob: f32, advantage: f32) -> f32 {
    let mut x = logprob;
    -advantage * x
}

fn main() {}
