//! How many bytes of messages the worker may hold, and the prefetch that
//! keeps it there.
//!
//! A message stays in the worker's memory from the moment the broker sends
//! it until its batch has committed and it is acknowledged: lapin keeps each
//! delivery whole until the consumer takes it, and the consumer keeps its
//! webhooks until the commit. RabbitMQ bounds what it sends a consumer by a
//! count only: `basic.qos` with a `prefetch_size` is refused as not
//! implemented, and a `basic.qos` issued once a consumer is running changes
//! nothing for that consumer (it applies to the channel's next
//! `basic.consume`, on 3.10 as on 4.x). So the count is derived, once, from
//! the budget and the largest message ingress may publish
//! ([`MessageLimits::largest_message`]):
//!
//! ```text
//! messages = CORRAL_MAX_IN_HAND_BYTES ÷ largest message
//! ```
//!
//! shared by the worker's consumers: an eighth for the unroutable queue
//! (normally idle), the rest for the main queue, each capped by
//! `CORRAL_PREFETCH`; with `CORRAL_AMQP_QUEUES` = N, the main queue's share
//! is split evenly between the N shard consumers ([`Prefetch::per_queue`]). So the bytes in hand stay within the budget whatever
//! the messages hold. The SQS source bounds the bytes themselves
//! (see [`super::sqs`]).
//!
//! The budget's default is a quarter of the container's memory limit (cgroup
//! v2 `memory.max`, v1 `memory.limit_in_bytes`), or [`DEFAULT_BYTES`] where
//! there is none: what else the worker holds per byte in hand (the unpacked
//! webhooks, their typed rows and the batch's SQL parameters) is measured in
//! docs/operations/deploy.md#memory.

use std::sync::Arc;

use corral_runtime::config::MessageLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget where no container memory limit is found: a quarter of the
/// 256 MiB limit the deployment gives a worker.
pub const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

/// The share of the container's memory limit the budget takes by default.
const LIMIT_SHARE: u64 = 4;

/// The share of the budget one batch's bodies may take.
const BATCH_SHARE: u64 = 16;

/// The share of the messages the unroutable queue's consumer may hold.
const UNROUTABLE_SHARE: usize = 8;

/// The bytes in hand, and the largest message that may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of messages held at most (received, not yet acknowledged).
    pub bytes: u64,
    /// The largest message ingress publishes.
    pub largest: u64,
}

/// What each RabbitMQ consumer may hold, in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// The main queue's consumer.
    pub main: u16,
    /// The unroutable queue's consumer.
    pub unroutable: u16,
}

impl Prefetch {
    /// The prefetch of each of `queues` shard consumers: the main queue's
    /// share split between them, so that together they hold no more. One
    /// at least: [`WorkerConfig::validate`](crate::config::WorkerConfig::validate)
    /// checks the share holds a message for each of `CORRAL_AMQP_QUEUES`;
    /// only shards a higher setting left behind, drained, may take the
    /// total past the share, by a message each.
    pub fn per_queue(&self, queues: usize) -> u16 {
        let queues = u16::try_from(queues.max(1)).unwrap_or(u16::MAX);
        (self.main / queues).max(1)
    }
}

impl Budget {
    /// `bytes`, or the default for this container.
    pub fn new(bytes: Option<u64>, messages: &MessageLimits) -> Self {
        Self {
            bytes: bytes.unwrap_or_else(|| default_bytes(container_memory_limit())),
            largest: messages.largest_message(),
        }
    }

    /// Bytes of bodies a batch holds at most (unless one message holds
    /// more): a batch being written holds several copies of its bodies
    /// (rows, parameters, the statement), so its share is small.
    pub fn batch_bytes(&self) -> usize {
        usize::try_from(self.bytes / BATCH_SHARE).unwrap_or(usize::MAX)
    }

    /// Messages of the largest size the budget holds.
    pub fn messages(&self) -> usize {
        usize::try_from(self.bytes / self.largest.max(1)).unwrap_or(usize::MAX)
    }

    /// The prefetch of each consumer: an eighth of the messages the budget
    /// holds (one at least) for the unroutable queue, the rest for the main
    /// queue, each capped by `count` (CORRAL_PREFETCH); `None` when the
    /// budget holds fewer than two of the largest messages (one for each).
    pub fn prefetch(&self, count: u16) -> Option<Prefetch> {
        let total = self.messages();
        if total < 2 {
            return None;
        }
        let unroutable = (total / UNROUTABLE_SHARE).max(1);
        let cap = |messages: usize| u16::try_from(messages).unwrap_or(u16::MAX).min(count);
        Some(Prefetch {
            main: cap(total - unroutable),
            unroutable: cap(unroutable),
        })
    }
}

/// The largest message SQS hands out (body and attributes; 1 MiB since
/// August 2025, 256 KiB before).
pub const SQS_LARGEST_MESSAGE: u32 = 1024 * 1024;

/// Room for messages in hand, by count and by bytes. Each message asked for
/// reserves the largest size it may have; once it has come, it keeps only
/// its own size and gives the rest back. So what is in hand and what may
/// still come together never pass the budget, while small messages fill it
/// by their real size.
#[derive(Debug, Clone)]
pub struct Room {
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// The largest message, reserved for each one asked for.
    largest: u32,
}

/// Room taken for one message asked for, not yet received.
#[derive(Debug)]
pub struct Reservation {
    count: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

/// The room a message in hand holds until it is dropped.
#[derive(Debug)]
pub struct Taken {
    _count: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Room {
    /// Room for `count` messages and `bytes` bytes, messages of at most
    /// `largest` bytes.
    pub fn new(count: usize, bytes: u64, largest: u32) -> Self {
        let bytes = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .clamp(largest as usize, Semaphore::MAX_PERMITS);
        Self {
            count: Arc::new(Semaphore::new(count)),
            bytes: Arc::new(Semaphore::new(bytes)),
            largest,
        }
    }

    /// Waits for room for one more message.
    pub async fn reserve(&self) -> Reservation {
        let count = self.count.clone().acquire_owned().await;
        let bytes = self.bytes.clone().acquire_many_owned(self.largest).await;
        Reservation {
            count: count.expect("never closed"),
            bytes: bytes.expect("never closed"),
        }
    }

    /// Room for one more message, if there is some now.
    pub fn try_reserve(&self) -> Option<Reservation> {
        let count = self.count.clone().try_acquire_owned().ok()?;
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(self.largest)
            .ok()?;
        Some(Reservation { count, bytes })
    }
}

impl Reservation {
    /// Keeps room for a message of `size` bytes (at most the reservation)
    /// and gives back the rest.
    pub fn keep(mut self, size: usize) -> Taken {
        let size = size.min(self.bytes.num_permits());
        let bytes = self.bytes.split(size).expect("at most what is reserved");
        Taken {
            _count: self.count,
            _bytes: bytes,
        }
    }
}

/// The default budget under a container memory limit of `limit` bytes.
fn default_bytes(limit: Option<u64>) -> u64 {
    limit.map_or(DEFAULT_BYTES, |limit| limit / LIMIT_SHARE)
}

/// The memory limit of the cgroup the worker runs in, as a container sees
/// it (its own cgroup mounted at `/sys/fs/cgroup`); `None` without one.
pub fn container_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| parse_limit(&text))
}

/// A limit as cgroup v2 (`max` for none) or v1 (a number near `i64::MAX`
/// for none) writes it.
fn parse_limit(text: &str) -> Option<u64> {
    const UNLIMITED: u64 = 1 << 60;
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&limit| limit < UNLIMITED)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn limits(max_body_bytes: u64, publish_batch_max_bytes: u32) -> MessageLimits {
        MessageLimits {
            max_body_bytes,
            publish_batch_max_bytes,
        }
    }

    #[test]
    fn the_default_is_a_quarter_of_the_container_limit_or_64_mib_without_one() {
        assert_eq!(default_bytes(Some(256 * MIB)), 64 * MIB);
        assert_eq!(default_bytes(Some(MIB * 1024)), 256 * MIB);
        assert_eq!(default_bytes(None), 64 * MIB);
    }

    #[test]
    fn cgroup_limits_parse_and_unlimited_is_none() {
        assert_eq!(parse_limit("268435456\n"), Some(256 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn the_prefetch_holds_the_budget_in_largest_messages_split_between_the_queues() {
        let budget = Budget::new(Some(64 * MIB), &limits(65_536, 1024 * 1024));
        assert_eq!(budget.largest, MIB);
        let prefetch = budget.prefetch(2_000).expect("64 messages fit");
        assert_eq!(
            prefetch,
            Prefetch {
                main: 56,
                unroutable: 8
            }
        );
        let held = u64::from(prefetch.main + prefetch.unroutable) * budget.largest;
        assert!(held <= budget.bytes);
    }

    #[test]
    fn shard_consumers_split_the_main_share() {
        let budget = Budget::new(Some(64 * MIB), &limits(65_536, 1024 * 1024));
        let prefetch = budget.prefetch(2_000).expect("64 messages fit");
        assert_eq!(prefetch.per_queue(1), 56);
        assert_eq!(prefetch.per_queue(3), 18);
        let held = u64::from(prefetch.per_queue(3) * 3 + prefetch.unroutable) * budget.largest;
        assert!(held <= budget.bytes);
        assert_eq!(prefetch.per_queue(64), 1, "one message each at least");
    }

    #[test]
    fn corral_prefetch_still_caps_the_count() {
        let budget = Budget::new(Some(1024 * MIB), &limits(65_536, 4096));
        assert_eq!(budget.messages(), 8_182);
        assert_eq!(
            budget.prefetch(2_000),
            Some(Prefetch {
                main: 2_000,
                unroutable: 1_022
            })
        );
    }

    #[test]
    fn a_large_body_alone_can_be_the_largest_message() {
        let budget = Budget::new(Some(64 * MIB), &limits(4 * MIB, 1024 * 1024));
        assert_eq!(budget.largest, 8 * MIB + 146);
        assert_eq!(budget.messages(), 7);
    }

    #[tokio::test]
    async fn room_reserves_the_largest_message_and_keeps_only_what_came() {
        let room = Room::new(100, 10 * MIB, MIB as u32);
        let reserved: Vec<Reservation> =
            (0..10).map(|_| room.try_reserve().expect("room")).collect();
        assert!(
            room.try_reserve().is_none(),
            "ten largest messages fill 10 MiB"
        );
        let kept: Vec<Taken> = reserved.into_iter().map(|r| r.keep(1_000)).collect();
        let more: Vec<Reservation> = (0..9).map(|_| room.try_reserve().expect("room")).collect();
        assert!(
            room.try_reserve().is_none(),
            "10 kB kept leave room for nine more of the largest"
        );
        drop(kept);
        assert!(
            room.try_reserve().is_some(),
            "dropped messages give their room back"
        );
        drop(more);
    }

    #[test]
    fn room_counts_messages_too() {
        let room = Room::new(2, 10 * MIB, 1_000);
        let _kept: Vec<Taken> = (0..2)
            .map(|_| room.try_reserve().expect("room").keep(10))
            .collect();
        assert!(
            room.try_reserve().is_none(),
            "CORRAL_PREFETCH messages in hand"
        );
    }

    #[test]
    fn a_budget_below_two_largest_messages_is_refused() {
        let budget = Budget::new(Some(MIB), &limits(65_536, 1024 * 1024));
        assert_eq!(budget.prefetch(2_000), None);
    }
}
