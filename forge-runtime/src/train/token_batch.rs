//! Prompt + completion sequences laid out for one forward pass.

use burn::prelude::*;

use crate::loss::reference::IGNORE_INDEX;
use crate::model::CausalLm;

/// Sequences right-padded to a common length. Position `t` predicts token `t + 1`; only completion
/// tokens are targets.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Rows.
    pub batch: usize,
    /// Positions per row.
    pub seq: usize,
    /// Input ids `[batch, seq]` (padding: 0, never a target).
    pub input_ids: Vec<i64>,
    /// Target id per position, [`IGNORE_INDEX`] where there is none.
    pub target_ids: Vec<i64>,
    /// Per position: index into the row's completion of the target token, if any.
    pub completion_index: Vec<Option<usize>>,
}

impl TokenBatch {
    /// Lays out `(prompt, completion)` pairs; `seq` is the longest prompt + completion minus one.
    pub fn new<'a>(rows: impl IntoIterator<Item = (&'a [u32], &'a [u32])>) -> Self {
        let rows: Vec<(&[u32], &[u32])> = rows.into_iter().collect();
        let seq = rows
            .iter()
            .map(|(p, c)| (p.len() + c.len()).saturating_sub(1))
            .max()
            .unwrap_or(0)
            .max(1);
        let batch = rows.len();
        let mut input_ids = vec![0i64; batch * seq];
        let mut target_ids = vec![IGNORE_INDEX; batch * seq];
        let mut completion_index = vec![None; batch * seq];
        for (r, (prompt, completion)) in rows.iter().enumerate() {
            let full: Vec<u32> = prompt.iter().chain(completion.iter()).copied().collect();
            for (t, &id) in full.iter().take(seq).enumerate() {
                input_ids[r * seq + t] = i64::from(id);
            }
            for k in 0..completion.len() {
                // Completion token k sits at position prompt.len() + k and is predicted one before.
                let Some(pos) = (prompt.len() + k).checked_sub(1) else {
                    continue;
                };
                if pos < seq {
                    target_ids[r * seq + pos] = i64::from(completion[k]);
                    completion_index[r * seq + pos] = Some(k);
                }
            }
        }
        Self {
            batch,
            seq,
            input_ids,
            target_ids,
            completion_index,
        }
    }
}

impl TokenBatch {
    /// Runs `model` over the batch: the logits `[batch, seq, vocab]`, in the graph for a
    /// backward pass.
    pub fn logits<B: Backend>(&self, model: &CausalLm<B>, device: &B::Device) -> Tensor<B, 3> {
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(self.input_ids.clone(), [self.batch, self.seq]),
            device,
        );
        model.forward(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_completion_shifted_by_one() {
        let b = TokenBatch::new([
            (&[5u32, 6][..], &[7u32, 8, 9][..]),
            (&[1u32][..], &[2u32][..]),
        ]);
        assert_eq!((b.batch, b.seq), (2, 4));
        assert_eq!(b.input_ids, vec![5, 6, 7, 8, 1, 2, 0, 0]);
        let i = IGNORE_INDEX;
        assert_eq!(b.target_ids, vec![i, 7, 8, 9, 2, i, i, i]);
        assert_eq!(b.completion_index[1..4], [Some(0), Some(1), Some(2)]);
    }
}
