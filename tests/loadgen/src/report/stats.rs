//! Histograms and counters of a run, and the live counts the progress bar
//! reads.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::Serialize;

use crate::http::Failure;

/// Counts and histograms of the measured requests of one virtual user (or
/// of the whole open loop).
#[derive(Debug)]
pub(crate) struct Stats {
    /// Scheduled send → whole answer read, in microseconds.
    pub(super) latency: Histogram<u64>,
    /// Actual send → whole answer read (differs from `latency` in the open
    /// loop only, where a request may start late).
    pub(super) service: Histogram<u64>,
    /// Answers by HTTP status.
    pub(super) statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer.
    pub(super) errors: Errors,
    /// When the last measured request finished.
    pub(super) last_done: Option<Instant>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        // Three significant digits; the histograms grow to the largest value seen.
        let histogram = || Histogram::new(3).expect("3 significant digits is valid");
        Self {
            latency: histogram(),
            service: histogram(),
            statuses: BTreeMap::new(),
            errors: Errors::default(),
            last_done: None,
        }
    }

    /// Records one measured request.
    pub(crate) fn record(
        &mut self,
        scheduled: Instant,
        sent: Instant,
        done: Instant,
        result: Result<StatusCode, Failure>,
    ) {
        match result {
            Ok(status) => {
                *self.statuses.entry(status.as_u16()).or_default() += 1;
                record(&mut self.latency, micros(done - scheduled));
                record(&mut self.service, micros(done - sent));
            }
            Err(Failure::Connect) => self.errors.connect += 1,
            Err(Failure::Io) => self.errors.io += 1,
            Err(Failure::Timeout) => self.errors.timeout += 1,
        }
        self.last_done = self.last_done.max(Some(done));
    }

    /// Adds another user's numbers.
    pub(crate) fn merge(&mut self, other: &Stats) {
        self.latency
            .add(&other.latency)
            .expect("auto-resizing histograms always add");
        self.service
            .add(&other.service)
            .expect("auto-resizing histograms always add");
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.errors.connect += other.errors.connect;
        self.errors.io += other.errors.io;
        self.errors.timeout += other.errors.timeout;
        self.last_done = self.last_done.max(other.last_done);
    }
}

/// Records into an auto-resizing histogram (`saturating_record` would not
/// resize: it clamps to the current top).
pub(super) fn record(histogram: &mut Histogram<u64>, value: u64) {
    if histogram.record(value).is_err() {
        histogram.saturating_record(value);
    }
}

pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Requests that got no HTTP answer, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// TCP connect or HTTP handshake failed (nothing was sent).
    pub connect: u64,
    /// Connection broke mid-request (may have been received).
    pub io: u64,
    /// No answer within the request timeout (may have been received).
    pub timeout: u64,
}

impl Errors {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.timeout
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Requests finished (answered or failed), warm-up included.
    pub done: AtomicU64,
    /// Measured requests finished.
    pub measured: AtomicU64,
    /// 2xx answers.
    pub accepted: AtomicU64,
    /// Other answers.
    pub refused: AtomicU64,
    /// No answer.
    pub failed: AtomicU64,
}

impl Live {
    pub(crate) fn count(&self, result: &Result<StatusCode, Failure>, measured: bool) {
        match result {
            Ok(status) if status.is_success() => self.accepted.fetch_add(1, Relaxed),
            Ok(_) => self.refused.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
        if measured {
            self.measured.fetch_add(1, Relaxed);
        }
        self.done.fetch_add(1, Relaxed);
    }
}
