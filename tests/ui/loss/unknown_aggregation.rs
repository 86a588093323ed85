#[forge::loss(aggregation = "token_sum")]
fn summed(logprob: f32, advantage: f32) -> f32 {
    -advantage * logprob
}

fn main() {}
