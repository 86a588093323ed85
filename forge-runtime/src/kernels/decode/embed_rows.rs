//! The decode step's first launch: each row's token embedding, gathered from the embedding
//! table by the token ids on the device (so a recorded step reads this step's ids from the
//! engine's input buffer instead of taking them as launch arguments).

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Units per cube.
pub const BLOCK: usize = 256;

/// `out[r, c] = embed[tokens[feed[r]], c]` for `r < rows`, `c < width`; one unit per element.
/// `feed` lets a step read the tokens the previous step drew in that step's row order, where rows
/// have left the batch since.
#[cube(launch, launch_unchecked)]
pub fn embed_rows_kernel<F: Float>(
    embed: &Array<F>,
    tokens: &Array<u32>,
    feed: &Array<u32>,
    out: &mut Array<F>,
    rows: u32,
    width: u32,
) {
    let i = ABSOLUTE_POS;
    let width = width as usize;
    if i < rows as usize * width {
        let r = i / width;
        out[i] = embed[tokens[feed[r] as usize] as usize * width + i % width];
    }
}
