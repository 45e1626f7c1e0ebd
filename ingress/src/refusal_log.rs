//! Log lines for refused webhooks, at most one per cause per second.
//!
//! During a broker outage every webhook is refused (503); at 10,000 webhooks/s
//! one line per request would flood the log pipeline with identical lines. The
//! first refusal of a cause is logged at once with its details; the others
//! are counted, and a summary line (`more=<count>`) per cause follows at most
//! once per second while they last. The metrics count every refusal exactly.
//!
//! A small piece of our own: rate-limiter crates (governor and the like)
//! decide whether to let an event through, but do not count what they held
//! back per cause for a summary, which is the point here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a cause may reach the log.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What a refusal was, as far as its log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Refused before publishing (`corral_ingress_rejected_total{reason}`).
    Rejected(&'static str),
    /// Not taken by the buffer: 503 (`corral_ingress_publish_failures_total{cause}`).
    NotAccepted(&'static str),
}

#[derive(Debug, Default)]
struct Slot {
    /// When this cause last reached the log.
    last_line: Option<Instant>,
    /// Refusals since then that did not.
    held_back: u64,
}

/// The per-cause state, shared by every HTTP worker.
#[derive(Debug, Clone, Default)]
pub struct RefusalLog {
    slots: Arc<Mutex<HashMap<Cause, Slot>>>,
}

impl RefusalLog {
    /// Whether this refusal is logged in full now (the first of its cause in
    /// a window); otherwise it is counted for the next summary.
    pub fn admit(&self, cause: Cause, now: Instant) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(cause).or_default();
        let quiet = slot
            .last_line
            .is_none_or(|last| now.duration_since(last) >= WINDOW);
        if quiet && slot.held_back == 0 {
            slot.last_line = Some(now);
            true
        } else {
            slot.held_back += 1;
            false
        }
    }

    /// Takes the counts of the causes whose window has passed (all of them
    /// when `all`, at shutdown), for their summary lines.
    pub fn take_summaries(&self, now: Instant, all: bool) -> Vec<(Cause, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        for (cause, slot) in slots.iter_mut() {
            let window_over = slot
                .last_line
                .is_none_or(|last| now.duration_since(last) >= WINDOW);
            if slot.held_back > 0 && (all || window_over) {
                due.push((*cause, slot.held_back));
                slot.held_back = 0;
                slot.last_line = Some(now);
            }
        }
        due
    }

    /// Writes the summary lines every [`WINDOW`] until `stop`, then the last ones.
    pub async fn run_summaries(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.write_summaries(false),
                () = stop.cancelled() => {
                    self.write_summaries(true);
                    return;
                }
            }
        }
    }

    fn write_summaries(&self, all: bool) {
        for (cause, more) in self.take_summaries(Instant::now(), all) {
            match cause {
                Cause::Rejected(reason) => tracing::info!(
                    reason,
                    more,
                    "webhook rejected, and more like it since the previous line"
                ),
                Cause::NotAccepted(cause) => tracing::warn!(
                    cause,
                    more,
                    "webhook not accepted: 503, and more like it since the previous line"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNAUTHORIZED: Cause = Cause::Rejected("unauthorized");
    const BROKER_DOWN: Cause = Cause::NotAccepted("unavailable");

    #[test]
    fn a_storm_gives_one_line_then_one_summary_per_window_and_every_refusal_is_counted() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let mut lines = 0;
        let mut summarised = 0;
        // 10,000 refusals a second for 3 s, the summaries taken every 100 ms.
        for ms in 0..3_000u64 {
            let now = start + Duration::from_millis(ms);
            for _ in 0..10 {
                lines += u64::from(log.admit(BROKER_DOWN, now));
            }
            if ms % 100 == 0 {
                let due = log.take_summaries(now, false);
                lines += due.len() as u64;
                summarised += due.iter().map(|(_, more)| more).sum::<u64>();
            }
        }
        let last = log.take_summaries(start + Duration::from_secs(3), true);
        summarised += last.iter().map(|(_, more)| more).sum::<u64>();
        lines += last.len() as u64;
        assert!(lines <= 5, "{lines} lines for 3 s of refusals");
        assert_eq!(
            summarised + 1,
            30_000,
            "the first line and the summaries account for every refusal"
        );
    }

    #[test]
    fn causes_are_limited_apart_and_a_quiet_cause_logs_at_once_again() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert!(log.admit(UNAUTHORIZED, start));
        assert!(
            log.admit(BROKER_DOWN, start),
            "another cause has its own window"
        );
        assert!(!log.admit(UNAUTHORIZED, start + Duration::from_millis(10)));
        assert!(
            !log.admit(UNAUTHORIZED, start + Duration::from_secs(2)),
            "held-back refusals are summarised before the next full line"
        );
        assert_eq!(
            log.take_summaries(start + Duration::from_secs(2), false),
            vec![(UNAUTHORIZED, 2)]
        );
        assert!(
            log.take_summaries(start + Duration::from_secs(9), true)
                .is_empty()
        );
        assert!(log.admit(UNAUTHORIZED, start + Duration::from_secs(9)));
    }
}
