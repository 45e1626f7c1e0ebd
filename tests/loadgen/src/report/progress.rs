//! The progress bar (on a terminal only).

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::*;

/// The progress bar: on a terminal only (hidden when stderr is not one).
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    started: Instant,
    warmup: Duration,
    /// `Some` in count mode: the bar counts measured requests.
    requests: Option<u64>,
    last: (Instant, u64),
}

impl Progress {
    pub(crate) fn new(
        visible: bool,
        warmup: Duration,
        duration: Option<Duration>,
        requests: Option<u64>,
    ) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let (length, template) = match (requests, duration) {
            (Some(n), _) => (n, "{elapsed:>4} [{bar:30}] {pos}/{len} {msg}"),
            (None, Some(d)) => (
                u64::try_from((warmup + d).as_millis()).unwrap_or(u64::MAX),
                "{elapsed:>4} [{bar:30}] {msg}",
            ),
            (None, None) => (0, "{elapsed:>4} {msg}"),
        };
        let bar = ProgressBar::with_draw_target(Some(length), target);
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let now = Instant::now();
        Self {
            bar,
            started: now,
            warmup,
            requests,
            last: (now, 0),
        }
    }

    /// Redraws from the live counters; the rate is over the last tick.
    pub(crate) fn tick(&mut self, live: &Live) {
        let now = Instant::now();
        let done = live.done.load(Relaxed);
        let (then, before) = self.last;
        let seconds = (now - then).as_secs_f64();
        let rate = if seconds > 0.0 {
            (done - before) as f64 / seconds
        } else {
            0.0
        };
        self.last = (now, done);
        let elapsed = now - self.started;
        match self.requests {
            Some(_) => self.bar.set_position(live.measured.load(Relaxed)),
            None => self
                .bar
                .set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        }
        let phase = if elapsed < self.warmup {
            "warm-up  "
        } else {
            ""
        };
        self.bar.set_message(format!(
            "{phase}{rate:>8.0} req/s  2xx {}  other {}  no answer {}",
            live.accepted.load(Relaxed),
            live.refused.load(Relaxed),
            live.failed.load(Relaxed),
        ));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
