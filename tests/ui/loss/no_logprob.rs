#[forge::loss]
fn constant(advantage: f32) -> f32 {
    advantage
}

fn main() {}
