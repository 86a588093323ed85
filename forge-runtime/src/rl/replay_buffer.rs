//! The replay buffer: batches made ahead for the steps that will train on them, each with the
//! policy version that sampled it. A batch older than `replay_buffer.max_policy_age` versions when
//! its step comes is evicted rather than trained on (it is sampled again).

/// A batch waiting for its step.
#[derive(Debug, Clone, PartialEq)]
struct Entry<T> {
    step: u64,
    policy_version: u64,
    batch: T,
}

/// What [`ReplayBuffer::take`] found for a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken<T> {
    /// The step's batch, young enough.
    Ready(T),
    /// The step's batch was sampled by this policy version: too old, dropped.
    Evicted {
        /// The version that sampled it.
        policy_version: u64,
    },
    /// No batch was made for the step.
    Missing,
}

/// Batches by the optimiser step they are for.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer<T> {
    entries: Vec<Entry<T>>,
    max_policy_age: u64,
}

impl<T> ReplayBuffer<T> {
    /// An empty buffer evicting batches more than `max_policy_age` versions old.
    pub fn new(max_policy_age: u64) -> Self {
        Self {
            entries: Vec::new(),
            max_policy_age,
        }
    }

    /// Adds the batch for optimiser step `step` (0-based), sampled by `policy_version`; replaces
    /// one already there for that step.
    pub fn add(&mut self, step: u64, policy_version: u64, batch: T) {
        self.entries.retain(|e| e.step != step);
        self.entries.push(Entry {
            step,
            policy_version,
            batch,
        });
    }

    /// Removes and returns the batch of step `step` (trained with weights of version `step`),
    /// unless it is too old; batches of earlier steps are dropped.
    pub fn take(&mut self, step: u64) -> Taken<T> {
        self.entries.retain(|e| e.step >= step);
        let Some(i) = self.entries.iter().position(|e| e.step == step) else {
            return Taken::Missing;
        };
        let entry = self.entries.swap_remove(i);
        if step.saturating_sub(entry.policy_version) > self.max_policy_age {
            Taken::Evicted {
                policy_version: entry.policy_version,
            }
        } else {
            Taken::Ready(entry.batch)
        }
    }

    /// The batch waiting for step `step`, if any (a checkpoint stores it).
    pub fn peek(&self, step: u64) -> Option<&T> {
        self.entries
            .iter()
            .find(|e| e.step == step)
            .map(|e| &e.batch)
    }

    /// Batches held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no batch is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_taken_by_step_and_evicted_when_too_old() {
        let mut buffer = ReplayBuffer::new(1);
        buffer.add(3, 2, "made at 2 for 3");
        buffer.add(4, 2, "made at 2 for 4");
        assert_eq!(buffer.peek(3), Some(&"made at 2 for 3"));
        assert_eq!(buffer.take(2), Taken::Missing);
        assert_eq!(buffer.take(3), Taken::Ready("made at 2 for 3"));
        assert_eq!(buffer.take(3), Taken::Missing, "taken once");
        // Two versions old at step 4: more than max_policy_age 1.
        assert_eq!(buffer.take(4), Taken::Evicted { policy_version: 2 });
        assert!(buffer.is_empty());
        buffer.add(5, 5, "a");
        buffer.add(5, 5, "b");
        buffer.add(9, 8, "later");
        assert_eq!(buffer.len(), 2, "one batch per step");
        assert_eq!(buffer.take(5), Taken::Ready("b"));
        // Strictly on-policy: only a batch of the step's own version is young enough.
        let mut strict = ReplayBuffer::new(0);
        strict.add(1, 0, ());
        strict.add(2, 2, ());
        assert_eq!(strict.take(1), Taken::Evicted { policy_version: 0 });
        assert_eq!(strict.take(2), Taken::Ready(()));
    }
}
