#[forge::loss]
fn looping(logprob: f32, advantage: f32) -> f32 {
    let total = for _ in 0..3 {};
    -advantage * logprob
}

fn main() {}
