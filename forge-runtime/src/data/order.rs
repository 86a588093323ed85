//! The order records are visited in: epoch by epoch, each epoch a seeded permutation.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Where the order stands; a checkpoint stores it, and restoring it continues the same sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Records already taken in this epoch.
    pub index: usize,
}

/// A seeded, resumable order over `len` records.
#[derive(Debug, Clone)]
pub struct DataOrder {
    len: usize,
    seed: u64,
    shuffle: bool,
    position: DataPosition,
    permutation: Vec<usize>,
}

impl DataOrder {
    /// An order over `len` records, shuffled each epoch by `seed` when `shuffle`.
    pub fn new(len: usize, seed: u64, shuffle: bool) -> Self {
        let mut order = Self {
            len,
            seed,
            shuffle,
            position: DataPosition::default(),
            permutation: Vec::new(),
        };
        order.permute();
        order
    }

    fn permute(&mut self) {
        self.permutation = (0..self.len).collect();
        if self.shuffle {
            let mut rng =
                StdRng::seed_from_u64(crate::generate::mix_seed(self.seed, self.position.epoch));
            self.permutation.shuffle(&mut rng);
        }
    }

    /// The next record index.
    pub fn next_index(&mut self) -> usize {
        if self.position.index >= self.len {
            self.position.epoch += 1;
            self.position.index = 0;
            self.permute();
        }
        let i = self.permutation[self.position.index];
        self.position.index += 1;
        i
    }

    /// Where the order stands.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// Continues from `position`.
    pub fn restore(&mut self, position: DataPosition) {
        self.position = position;
        self.permute();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_restoring_continues_the_sequence() {
        let mut a = DataOrder::new(7, 3, true);
        let first: Vec<usize> = (0..7).map(|_| a.next_index()).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        assert_ne!(first, (0..7).collect::<Vec<_>>(), "shuffled");
        let _ = a.next_index();
        let saved = a.position();
        let rest: Vec<usize> = (0..10).map(|_| a.next_index()).collect();
        let mut b = DataOrder::new(7, 3, true);
        b.restore(saved);
        let again: Vec<usize> = (0..10).map(|_| b.next_index()).collect();
        assert_eq!(rest, again);
        let mut plain = DataOrder::new(3, 3, false);
        assert_eq!(
            (0..4).map(|_| plain.next_index()).collect::<Vec<_>>(),
            vec![0, 1, 2, 0]
        );
    }
}
