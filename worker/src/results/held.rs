//! The events RabbitMQ refused, held back from the relay's fresh rounds
//! until their backoff is over, so newer events never wait behind them.
//!
//! What is held is every outbox row up to the highest refused id: one
//! number, however many were refused (a full queue refuses every event
//! until it is drained, and the outbox may hold millions by then). Fresh
//! rounds take the rows above it; a retry round, when its backoff is over,
//! the oldest rows up to it, as many as the retry window allows.
//!
//! A refused event of a fan-out exchange still reached every other bound
//! queue, and each retry reaches them again: the window keeps those copies
//! near what the refusing queue takes. A retry round that gets nothing in
//! shrinks the window to one event and doubles the backoff (from 100 ms,
//! jittered, up to the cap); one that gets some in but not all sets the
//! window to what got in and starts the backoff over; one that gets all in
//! doubles the window (up to a round) and makes the next retry due at once,
//! until a retry round finds fewer rows than it asked for: then nothing is
//! held any more. Retry and fresh rounds alternate while both have work, so
//! catching up never stops newer events. A row committed late below the
//! highest refused id (writers commit out of id order) waits for the next
//! retry round with the refused ones.
//!
//! Each relay holds its own: another worker's relay takes the same rows
//! once in its own fresh rounds, then holds them back too.

use std::time::Duration;

use corral_runtime::retry;
use tokio::time::Instant;

use super::round::Round;

/// The outbox ids a round takes: the oldest `limit` in `(after, upto]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slice {
    pub after: i64,
    pub upto: i64,
    pub limit: usize,
    /// Whether these are held-back events being retried.
    pub retry: bool,
}

/// What a round changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Events were refused while none were held.
    Started,
    /// The held events are all published (or taken by another relay).
    Ended,
    /// Nothing worth a line.
    Same,
}

/// The relay's held-back events, if any.
pub(super) struct Backlog {
    /// Events per round at most.
    limit: usize,
    retry_max: Duration,
    held: Option<Held>,
    retried_last: bool,
}

struct Held {
    upto: i64,
    window: usize,
    due: Instant,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Held {
    /// The next retry after the backoff's next delay.
    fn back_off(&mut self, now: Instant, retry_max: Duration) {
        self.due = now + self.delays.next().unwrap_or(retry_max);
    }
}

impl Backlog {
    /// Nothing held; rounds of `limit`, backoff capped at `retry_max`.
    pub fn new(limit: usize, retry_max: Duration) -> Self {
        Self {
            limit,
            retry_max,
            held: None,
            retried_last: false,
        }
    }

    /// The rows the next round takes.
    pub fn next(&self, now: Instant) -> Slice {
        match &self.held {
            Some(held) if self.retry_due(now) => Slice {
                after: i64::MIN,
                upto: held.upto,
                limit: held.window,
                retry: true,
            },
            held => Slice {
                after: held.as_ref().map_or(i64::MIN, |held| held.upto),
                upto: i64::MAX,
                limit: self.limit,
                retry: false,
            },
        }
    }

    /// Whether a retry is due and the last round was not one.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.due <= now && !self.retried_last)
    }

    /// When the held events are due again, if any are held.
    pub fn due(&self) -> Option<Instant> {
        self.held.as_ref().map(|held| held.due)
    }

    /// Takes in what a round of `slice` did.
    pub fn record(&mut self, slice: Slice, round: &Round, now: Instant) -> Change {
        self.retried_last = slice.retry;
        let highest = round.refused.iter().map(|(id, _)| *id).max();
        let Some(held) = &mut self.held else {
            let Some(upto) = highest else {
                return Change::Same;
            };
            let mut held = Held {
                upto,
                window: self.limit,
                due: now,
                delays: Box::new(retry::delays(self.retry_max)),
            };
            held.back_off(now, self.retry_max);
            self.held = Some(held);
            return Change::Started;
        };
        if let Some(upto) = highest {
            held.upto = held.upto.max(upto);
        }
        if !slice.retry {
            return Change::Same;
        }
        if highest.is_none() && round.events < slice.limit {
            self.held = None;
            return Change::Ended;
        }
        if round.confirmed > 0 {
            held.delays = Box::new(retry::delays(self.retry_max));
        }
        if highest.is_none() {
            held.window = (held.window * 2).min(self.limit);
            held.due = now;
        } else {
            held.window = round.confirmed.max(1);
            held.back_off(now, self.retry_max);
        }
        Change::Same
    }
}

#[cfg(test)]
mod tests {
    use corral_runtime::telemetry::labels::ResultRefusal;

    use super::*;

    const LIMIT: usize = 500;

    /// A round of `events` whose outbox ids in `refused` were nacked.
    fn round(events: usize, refused: &[i64]) -> Round {
        Round {
            events,
            confirmed: events - refused.len(),
            refused: refused
                .iter()
                .map(|id| (*id, ResultRefusal::Nack))
                .collect(),
            lost: None,
        }
    }

    fn backlog() -> Backlog {
        Backlog::new(LIMIT, Duration::from_millis(300))
    }

    #[test]
    fn nothing_refused_takes_everything_every_round() {
        let mut backlog = backlog();
        let now = Instant::now();
        let all = Slice {
            after: i64::MIN,
            upto: i64::MAX,
            limit: LIMIT,
            retry: false,
        };
        assert_eq!(backlog.next(now), all);
        assert_eq!(backlog.record(all, &round(LIMIT, &[]), now), Change::Same);
        assert_eq!(backlog.next(now), all);
        assert_eq!(backlog.due(), None);
    }

    #[test]
    fn refused_events_are_held_back_while_newer_ones_go_on() {
        let mut backlog = backlog();
        let now = Instant::now();
        let first = backlog.next(now);
        assert_eq!(
            backlog.record(first, &round(10, &[4, 9]), now),
            Change::Started
        );
        // Until the backoff is over, only rows above the highest refused.
        let fresh = backlog.next(now);
        assert_eq!((fresh.after, fresh.upto, fresh.retry), (9, i64::MAX, false));
        let due = backlog.due().expect("a retry is planned");
        assert!(due > now && due <= now + Duration::from_millis(600));
        assert!(!backlog.retry_due(now));
        // A fresh round refusing more raises the mark, not the due time.
        assert_eq!(backlog.record(fresh, &round(5, &[12]), now), Change::Same);
        assert_eq!(backlog.next(now).after, 12);
        assert_eq!(backlog.due(), Some(due));
        // Then the retry: the oldest rows up to the mark, a round's worth.
        let retry = backlog.next(due);
        assert_eq!(
            (retry.after, retry.upto, retry.limit),
            (i64::MIN, 12, LIMIT)
        );
        assert!(retry.retry);
    }

    #[test]
    fn a_retry_refused_whole_backs_off_one_event_at_a_time() {
        let mut backlog = backlog();
        let now = Instant::now();
        backlog.record(backlog.next(now), &round(3, &[1, 2, 3]), now);
        let mut at = backlog.due().unwrap();
        let mut last_delay = Duration::ZERO;
        for _ in 0..6 {
            let retry = backlog.next(at);
            assert!(retry.retry);
            backlog.record(
                retry,
                &round(retry.limit.min(3), &[1, 2, 3][..retry.limit.min(3)]),
                at,
            );
            assert_eq!(backlog.next(at).limit, LIMIT, "fresh rounds stay whole");
            let due = backlog.due().unwrap();
            last_delay = due - at;
            // Capped; the policy's jitter adds up to the delay again.
            assert!(last_delay <= Duration::from_millis(600), "{last_delay:?}");
            // A fresh round comes between two retries.
            let fresh = backlog.next(due);
            assert!(!fresh.retry);
            backlog.record(fresh, &round(0, &[]), due);
            at = due;
        }
        assert_eq!(
            backlog.next(at).limit,
            1,
            "one event per retry while refused"
        );
        assert!(last_delay >= Duration::from_millis(300), "{last_delay:?}");
    }

    #[test]
    fn retries_that_go_through_grow_until_nothing_is_held() {
        let mut backlog = backlog();
        let now = Instant::now();
        backlog.record(backlog.next(now), &round(LIMIT, &[100]), now);
        let at = backlog.due().unwrap();
        // Refused again: one at a time.
        let retry = backlog.next(at);
        backlog.record(retry, &round(1, &[1]), at);
        let at = backlog.due().unwrap();
        let skip = backlog.next(at);
        backlog.record(skip, &round(0, &[]), at);
        // Some get in: the window is what got in, the backoff starts over.
        let retry = backlog.next(at);
        assert_eq!(retry.limit, 1);
        backlog.record(retry, &round(1, &[]), at);
        let fresh = backlog.next(at);
        assert!(!fresh.retry, "a fresh round between two retries");
        backlog.record(fresh, &round(0, &[]), at);
        for window in [2, 4, 8] {
            assert!(backlog.retry_due(at), "due at once after one went through");
            let retry = backlog.next(at);
            assert_eq!((retry.limit, retry.upto), (window, 100));
            backlog.record(retry, &round(window, &[]), at);
            let fresh = backlog.next(at);
            backlog.record(fresh, &round(0, &[]), at);
        }
        // Fewer rows than asked for: nothing is held any more.
        let retry = backlog.next(at);
        assert_eq!(backlog.record(retry, &round(3, &[]), at), Change::Ended);
        assert_eq!(backlog.due(), None);
        assert_eq!(backlog.next(at).after, i64::MIN);
    }

    #[test]
    fn a_retry_partly_refused_keeps_to_what_got_in() {
        let mut backlog = backlog();
        let now = Instant::now();
        backlog.record(backlog.next(now), &round(20, &[11, 20]), now);
        let at = backlog.due().unwrap();
        let retry = backlog.next(at);
        backlog.record(retry, &round(10, &[14, 15, 16, 17, 18, 19, 20]), at);
        let at = backlog.due().unwrap();
        let fresh = backlog.next(at);
        backlog.record(fresh, &round(0, &[]), at);
        assert_eq!(backlog.next(at).limit, 3, "the three that got in");
    }
}
