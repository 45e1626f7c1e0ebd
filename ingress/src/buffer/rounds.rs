//! Group commit's queue, shared by both durable paths: webhooks wait in a
//! queue, and whenever a writer is free it takes everything waiting, up to
//! a count and a size, as one round (one AMQP message, one INSERT).

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A webhook waiting for a round.
pub(super) trait Waiting {
    /// Its request no longer waits for it (answered already, or gone): a
    /// round leaves it out.
    fn abandoned(&self) -> bool;

    /// What it adds to a round's size.
    fn size(&self) -> usize;
}

/// The limits of one round.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Webhooks at most.
    pub(super) count: usize,
    /// Size at most (a single larger webhook still goes, alone).
    pub(super) bytes: usize,
    /// The size of an empty round.
    pub(super) overhead: usize,
}

/// The receiving end of a queue, forming rounds.
#[derive(Debug)]
pub(super) struct Rounds<T> {
    queue: mpsc::UnboundedReceiver<T>,
    /// A webhook that did not fit in the last round leads the next one.
    carried: Option<T>,
    limits: Limits,
}

impl<T: Waiting> Rounds<T> {
    pub(super) fn new(queue: mpsc::UnboundedReceiver<T>, limits: Limits) -> Self {
        Self {
            queue,
            carried: None,
            limits,
        }
    }

    /// The webhook to lead the next round, waiting for one. Once `shutdown`
    /// is cancelled the queue takes no more, and what is already in it still
    /// comes; `None` once it is empty.
    pub(super) async fn first(&mut self, shutdown: &CancellationToken) -> Option<T> {
        if let Some(carried) = self.carried.take() {
            return Some(carried);
        }
        loop {
            tokio::select! {
                biased;
                next = self.queue.recv() => return next,
                () = shutdown.cancelled(), if !self.queue.is_closed() => self.queue.close(),
            }
        }
    }

    /// `first` and everything waiting behind it that fits, leaving out the
    /// abandoned; empty when all of them were.
    pub(super) fn fill(&mut self, first: T) -> Vec<T> {
        let limits = self.limits;
        let mut round = Vec::new();
        let mut size = limits.overhead;
        let waiting = std::iter::from_fn(|| self.queue.try_recv().ok());
        for next in std::iter::once(first).chain(waiting) {
            if next.abandoned() {
                continue;
            }
            // The first always goes, however large: alone, it fits wherever
            // a round of one did.
            if !round.is_empty() && size + next.size() > limits.bytes {
                self.carried = Some(next);
                break;
            }
            size += next.size();
            round.push(next);
            if round.len() >= limits.count {
                break;
            }
        }
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item {
        id: u32,
        size: usize,
        abandoned: bool,
    }

    impl Waiting for Item {
        fn abandoned(&self) -> bool {
            self.abandoned
        }

        fn size(&self) -> usize {
            self.size
        }
    }

    fn item(id: u32, size: usize) -> Item {
        Item {
            id,
            size,
            abandoned: false,
        }
    }

    fn rounds(count: usize, bytes: usize, items: Vec<Item>) -> Rounds<Item> {
        rounds_open(count, bytes, items).0
    }

    /// The rounds, and the queue's sender, which keeps it open while held.
    fn rounds_open(
        count: usize,
        bytes: usize,
        items: Vec<Item>,
    ) -> (Rounds<Item>, mpsc::UnboundedSender<Item>) {
        let (sender, queue) = mpsc::unbounded_channel();
        for item in items {
            sender.send(item).unwrap();
        }
        let limits = Limits {
            count,
            bytes,
            overhead: 10,
        };
        (Rounds::new(queue, limits), sender)
    }

    fn ids(round: &[Item]) -> Vec<u32> {
        round.iter().map(|item| item.id).collect()
    }

    #[tokio::test]
    async fn a_round_takes_what_waits_up_to_the_count_and_the_rest_comes_next() {
        let never = CancellationToken::new();
        let mut rounds = rounds(2, 1000, (1..=3).map(|id| item(id, 1)).collect());
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(ids(&rounds.fill(first)), [1, 2]);
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(ids(&rounds.fill(first)), [3]);
    }

    #[tokio::test]
    async fn what_does_not_fit_the_size_leads_the_next_round_and_a_large_first_goes_alone() {
        let never = CancellationToken::new();
        // 10 of overhead: 10 + 40 + 40 fits 100, the third 40 does not.
        let items = vec![item(1, 40), item(2, 40), item(3, 40), item(4, 500)];
        let mut rounds = rounds(100, 100, items);
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(ids(&rounds.fill(first)), [1, 2]);
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(ids(&rounds.fill(first)), [3]);
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(ids(&rounds.fill(first)), [4]);
    }

    #[tokio::test]
    async fn abandoned_webhooks_are_left_out() {
        let never = CancellationToken::new();
        let mut gone = item(2, 1);
        gone.abandoned = true;
        let mut rounds = rounds(10, 1000, vec![item(1, 1), gone, item(3, 1)]);
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(ids(&rounds.fill(first)), [1, 3]);
    }

    #[tokio::test]
    async fn after_shutdown_what_is_queued_still_comes_then_nothing() {
        let shutdown = CancellationToken::new();
        // The sender stays: only the shutdown can end the queue.
        let (mut rounds, _sender) = rounds_open(1, 1000, vec![item(1, 1), item(2, 1)]);
        shutdown.cancel();
        assert_eq!(rounds.first(&shutdown).await.map(|i| i.id), Some(1));
        assert_eq!(rounds.first(&shutdown).await.map(|i| i.id), Some(2));
        assert_eq!(rounds.first(&shutdown).await, None);
    }
}
