//! What every virtual user or open-loop item reads and counts into.

use crate::*;

/// What every virtual user (or open-loop item task) reads and counts into.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) target: Target,
    pub(crate) traffic: Traffic,
    pub(crate) timeout: Duration,
    /// Measuring starts here (the end of the warm-up).
    pub(crate) measure_from: Instant,
    /// No item starts at or after this (duration mode).
    pub(crate) stop_at: Option<Instant>,
    /// Measured requests to send (count mode).
    pub(crate) max_requests: Option<u64>,
    /// Next item to take.
    pub(crate) next_item: AtomicU64,
    /// Measured requests handed out so far (count mode).
    pub(crate) reserved: AtomicU64,
    /// Requests sent during the warm-up.
    pub(crate) warmup_requests: AtomicU64,
    /// TCP connections opened.
    pub(crate) connections_opened: AtomicU64,
    pub(crate) live: Live,
}

impl Shared {
    /// The next item to send, starting at `at`, with how many of its steps
    /// to send (a count limit may cut an item short) and whether it is
    /// measured; `None` when the run is over.
    pub(crate) fn next(&self, at: Instant) -> Option<(Item, usize, bool)> {
        if self.stop_at.is_some_and(|stop| at >= stop) {
            return None;
        }
        let measured = at >= self.measure_from;
        let index = self.next_item.fetch_add(1, Relaxed);
        let item = self.traffic.item(index);
        let mut steps = item.steps.len();
        if measured && let Some(max) = self.max_requests {
            let first = self.reserved.fetch_add(steps as u64, Relaxed);
            if first >= max {
                return None;
            }
            steps = steps.min(usize::try_from(max - first).unwrap_or(usize::MAX));
        }
        Some((item, steps, measured))
    }

    pub(crate) fn counted(&self, result: &Result<hyper::StatusCode, Failure>, measured: bool) {
        self.live.count(result, measured);
        if !measured {
            self.warmup_requests.fetch_add(1, Relaxed);
        }
    }
}
