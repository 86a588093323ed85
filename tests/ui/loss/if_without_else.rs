#[forge::loss]
fn one_sided(logprob: f32, advantage: f32) -> f32 {
    if advantage > 0.0 { -logprob }
}

fn main() {}
