#[forge::reward]
fn by_length(completion: &str, tokens: &[u32]) -> f32 {
    completion.len() as f32 + tokens.len() as f32
}

fn main() {}
