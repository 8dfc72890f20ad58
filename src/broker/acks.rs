//! Which of a channel's deliveries one `basic.ack` with `multiple` may settle.
//!
//! A batch of commands that all committed is acked with one frame, the
//! highest delivery tag with `multiple` set, instead of one frame per
//! command: one trip through the AMQP connection and one settlement in the
//! broker's queue for the whole batch. That frame settles every unsettled
//! delivery up to its tag on the channel, so it is only sent when all of
//! those belong to the batch: a delivery of another batch still in flight,
//! or of this batch but refused, retried or handed back, keeps the acks one
//! per delivery. Nothing is acked before its transaction committed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The delivery tags of one channel that are in a batch and not yet known
/// to be settled. A superset is safe: it only means fewer combined acks.
#[derive(Debug, Default)]
pub struct AckLedger {
    open: Mutex<BTreeSet<u64>>,
}

/// A batch's tags in the ledger; they leave it when this is dropped, after
/// every delivery of the batch was settled (or its channel is gone).
#[derive(Debug)]
pub struct OpenBatch {
    ledger: Arc<AckLedger>,
    tags: Vec<u64>,
}

impl AckLedger {
    /// Records the tags of a batch about to be processed.
    pub fn open(self: &Arc<Self>, tags: Vec<u64>) -> OpenBatch {
        self.with(|open| open.extend(tags.iter().copied()));
        OpenBatch {
            ledger: self.clone(),
            tags,
        }
    }

    /// The tag to ack with `multiple` so that exactly `tags` are settled:
    /// their highest, if every open tag up to it is one of `tags`.
    pub fn covering(&self, tags: &[u64]) -> Option<u64> {
        let last = *tags.iter().max()?;
        self.with(|open| {
            let mut mine: Vec<u64> = tags.to_vec();
            mine.sort_unstable();
            mine.dedup();
            open.range(..=last).copied().eq(mine.iter().copied())
        })
        .then_some(last)
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeSet<u64>) -> T) -> T {
        f(&mut self.open.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for OpenBatch {
    fn drop(&mut self) {
        self.ledger.with(|open| {
            for tag in &self.tags {
                open.remove(tag);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_alone_on_its_channel_is_acked_with_its_highest_tag() {
        let ledger = Arc::new(AckLedger::default());
        let _batch = ledger.open(vec![4, 5, 6]);
        assert_eq!(ledger.covering(&[4, 5, 6]), Some(6));
    }

    #[test]
    fn a_delivery_of_the_batch_left_out_keeps_the_acks_separate() {
        let ledger = Arc::new(AckLedger::default());
        let _batch = ledger.open(vec![4, 5, 6]);
        assert_eq!(ledger.covering(&[4, 6]), None, "5 is still unsettled");
        assert_eq!(ledger.covering(&[4, 5]), Some(5), "6 is above the tag");
    }

    #[test]
    fn an_earlier_batch_in_flight_keeps_the_acks_separate_until_it_is_done() {
        let ledger = Arc::new(AckLedger::default());
        let earlier = ledger.open(vec![1, 2]);
        let _later = ledger.open(vec![3, 4]);
        assert_eq!(ledger.covering(&[3, 4]), None);
        assert_eq!(
            ledger.covering(&[1, 2]),
            Some(2),
            "a later batch is above it"
        );
        drop(earlier);
        assert_eq!(ledger.covering(&[3, 4]), Some(4));
    }

    #[test]
    fn tags_not_in_a_batch_are_never_covered() {
        let ledger = Arc::new(AckLedger::default());
        assert_eq!(ledger.covering(&[]), None);
        assert_eq!(ledger.covering(&[7]), None, "7 was never opened");
        let _batch = ledger.open(vec![7]);
        assert_eq!(ledger.covering(&[7, 8]), None, "8 was never opened");
    }
}
