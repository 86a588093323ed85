#[forge::loss]
fn uses_entropy(logprob: f32, entropy: f32) -> f32 {
    -logprob * entropy
}

fn main() {}
