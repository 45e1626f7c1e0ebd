//! Group commit's queue: webhooks wait in a queue, and whenever a writer is
//! free it takes everything waiting, up to a count and a size, as one round
//! (one AMQP message, one `SendMessageBatch`, one INSERT).

use tokio::{sync::mpsc, time::Instant};
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
pub(in crate::buffer) struct Limits {
    /// Webhooks at most.
    pub(in crate::buffer) count: usize,
    /// Size at most (a single larger webhook still goes, alone).
    pub(in crate::buffer) bytes: usize,
    /// The size of an empty round.
    pub(in crate::buffer) overhead: usize,
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
        let mut round = Round::new(self.limits);
        let waiting = std::iter::from_fn(|| self.queue.try_recv().ok());
        for next in std::iter::once(first).chain(waiting) {
            if let Err(full) = round.add(next) {
                self.carried = full;
                break;
            }
        }
        round.items
    }

    /// As [`Rounds::fill`], and while the round is not full, waits for more
    /// until `until` (not once `shutdown` is cancelled): fewer, fuller
    /// rounds where each one costs (SQS bills per request).
    pub(super) async fn gather(
        &mut self,
        first: T,
        until: Instant,
        shutdown: &CancellationToken,
    ) -> Vec<T> {
        let mut round = Round::new(self.limits);
        let mut next = Some(first);
        loop {
            let item = match next.take().or_else(|| self.queue.try_recv().ok()) {
                Some(item) => item,
                None if shutdown.is_cancelled() => break,
                None => tokio::select! {
                    biased;
                    item = tokio::time::timeout_at(until, self.queue.recv()) => match item {
                        Ok(Some(item)) => item,
                        Ok(None) | Err(_) => break,
                    },
                    () = shutdown.cancelled() => continue,
                },
            };
            if let Err(full) = round.add(item) {
                self.carried = full;
                break;
            }
        }
        round.items
    }
}

/// A round being formed.
struct Round<T> {
    items: Vec<T>,
    size: usize,
    limits: Limits,
}

impl<T: Waiting> Round<T> {
    fn new(limits: Limits) -> Self {
        Self {
            items: Vec::new(),
            size: limits.overhead,
            limits,
        }
    }

    /// Takes `next` (or leaves it out, when abandoned). `Err` once the round
    /// is full, with what did not fit, to lead the next round.
    fn add(&mut self, next: T) -> Result<(), Option<T>> {
        if next.abandoned() {
            return Ok(());
        }
        // The first always goes, however large: alone, it fits wherever a
        // round of one did.
        if !self.items.is_empty() && self.size + next.size() > self.limits.bytes {
            return Err(Some(next));
        }
        self.size += next.size();
        self.items.push(next);
        if self.items.len() >= self.limits.count {
            return Err(None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    /// The next round, gathered until `until`: its ids.
    async fn gathered(
        rounds: &mut Rounds<Item>,
        until: Instant,
        shutdown: &CancellationToken,
    ) -> Vec<u32> {
        let first = rounds.first(shutdown).await.unwrap();
        ids(&rounds.gather(first, until, shutdown).await)
    }

    #[tokio::test(start_paused = true)]
    async fn gathering_waits_for_more_until_the_deadline() {
        let never = CancellationToken::new();
        let (mut rounds, sender) = rounds_open(10, 1000, vec![item(1, 1)]);
        let later = sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            later.send(item(2, 1)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            later.send(item(3, 1)).unwrap();
        });
        let started = Instant::now();
        let round = gathered(&mut rounds, started + Duration::from_millis(50), &never).await;
        assert_eq!(round, [1, 2]);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        let first = rounds.first(&never).await.unwrap();
        assert_eq!(first.id, 3);
        drop(sender);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_round_goes_without_waiting_for_the_deadline() {
        let never = CancellationToken::new();
        let (mut rounds, _sender) = rounds_open(2, 1000, (1..=3).map(|id| item(id, 1)).collect());
        let started = Instant::now();
        let until = started + Duration::from_secs(60);
        assert_eq!(gathered(&mut rounds, until, &never).await, [1, 2]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Full by size as well: 10 + 40 + 40 fits 100, the third 40 does not.
        let (mut rounds, _sender) =
            rounds_open(100, 100, vec![item(1, 40), item(2, 40), item(3, 40)]);
        assert_eq!(gathered(&mut rounds, until, &never).await, [1, 2]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(rounds.first(&never).await.map(|i| i.id), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let shutdown = CancellationToken::new();
        let (mut rounds, _sender) = rounds_open(10, 1000, vec![item(1, 1)]);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            stop.cancel();
        });
        let started = Instant::now();
        let round = gathered(&mut rounds, started + Duration::from_secs(60), &shutdown).await;
        assert_eq!(round, [1]);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }
}
