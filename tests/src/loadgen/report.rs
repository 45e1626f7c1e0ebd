//! Measuring: latency histograms, status and error counts while a run goes
//! on, the live progress bar, the generator's own CPU, and the report at the
//! end (JSON for machines, a short table for people).

use std::{
    collections::BTreeMap,
    fmt,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use hyper::StatusCode;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{Load, http::Failure, traffic::Mix, traffic::SentSummary, verify::Verification};

/// Counts and histograms of the measured requests of one virtual user (or
/// of the whole open loop).
#[derive(Debug)]
pub(crate) struct Stats {
    /// Scheduled send → whole answer read, in microseconds.
    latency: Histogram<u64>,
    /// Actual send → whole answer read (differs from `latency` in the open
    /// loop only, where a request may start late).
    service: Histogram<u64>,
    /// Answers by HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer.
    errors: Errors,
    /// When the last measured request finished.
    last_done: Option<Instant>,
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
fn record(histogram: &mut Histogram<u64>, value: u64) {
    if histogram.record(value).is_err() {
        histogram.saturating_record(value);
    }
}

fn micros(duration: Duration) -> u64 {
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

/// CPU time this process has used (all threads), for the generator's own cost.
pub(crate) fn process_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Peak resident set size of this process in MiB (`VmHWM`), where Linux tells.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Requests in the histogram (those that got an answer).
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// What the generator itself cost: it shares the machine with what it measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Generator {
    /// CPU seconds (user + system, every thread of this process) while sending.
    /// When the services run in the same process (tests) it includes theirs.
    pub cpu_secs: f64,
    /// `cpu_secs` over the sending time, in percent of one core.
    pub cpu_percent: f64,
    /// Wall-clock seconds from the first request to the last answer, warm-up included.
    pub wall_secs: f64,
    /// Peak resident memory of the process, in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Runtime worker threads, when the caller says (the binary does).
    pub threads: Option<usize>,
    /// TCP connections opened: exactly the connection count in a closed loop
    /// that met no errors.
    pub connections_opened: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run id (first ten hex digits of every `drop_id`).
    pub run_id: String,
    /// Seed of the traffic (the same seed and run id send the same bodies).
    pub seed: u64,
    /// Base URL.
    pub target: String,
    /// Closed or open loop and its size.
    pub load: Load,
    /// The traffic mix.
    pub mix: Mix,
    /// Warm-up, not measured.
    pub warmup_secs: f64,
    /// From the end of the warm-up to the last measured answer.
    pub measured_secs: f64,
    /// Measured requests (answered or not).
    pub requests: u64,
    /// Measured requests answered 2xx.
    pub accepted: u64,
    /// `requests / measured_secs`: the achieved rate.
    pub requests_per_sec: f64,
    /// `accepted / measured_secs`.
    pub accepted_per_sec: f64,
    /// Measured answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Measured requests without an answer.
    pub errors: Errors,
    /// Answer latency from the *scheduled* send time (coordinated omission
    /// corrected in the open loop; the actual send time in the closed loop).
    pub latency_us: Latency,
    /// Open loop only: from the actual send; the gap to `latency_us` is time
    /// the request waited for the generator or a connection.
    pub service_time_us: Option<Latency>,
    /// Requests sent during the warm-up.
    pub warmup_requests: u64,
    /// What the whole run (warm-up included) sent, in distinct webhooks.
    pub sent: SentSummary,
    /// The generator's own cost.
    pub generator: Generator,
    /// Set by the caller after [`verify()`](super::verify()).
    pub verification: Option<Verification>,
}

/// Inputs to [`Report::build`].
#[derive(Debug)]
pub(crate) struct ReportInputs {
    pub run_id: String,
    pub seed: u64,
    pub target: String,
    pub load: Load,
    pub mix: Mix,
    pub warmup: Duration,
    pub measure_from: Instant,
    pub stats: Stats,
    pub warmup_requests: u64,
    pub sent: SentSummary,
    pub generator: Generator,
}

impl Report {
    pub(crate) fn build(inputs: ReportInputs) -> Self {
        let ReportInputs {
            run_id,
            seed,
            target,
            load,
            mix,
            warmup,
            measure_from,
            stats,
            warmup_requests,
            sent,
            generator,
        } = inputs;
        let measured_secs = stats.last_done.map_or(0.0, |done| {
            done.saturating_duration_since(measure_from).as_secs_f64()
        });
        let answered: u64 = stats.statuses.values().sum();
        let requests = answered + stats.errors.total();
        let accepted: u64 = stats
            .statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, count)| count)
            .sum();
        let per_sec = |count: u64| {
            if measured_secs > 0.0 {
                count as f64 / measured_secs
            } else {
                0.0
            }
        };
        let open = matches!(load, Load::Open { .. });
        Self {
            run_id,
            seed,
            target,
            load,
            mix,
            warmup_secs: warmup.as_secs_f64(),
            measured_secs,
            requests,
            accepted,
            requests_per_sec: per_sec(requests),
            accepted_per_sec: per_sec(accepted),
            statuses: stats.statuses,
            errors: stats.errors,
            latency_us: Latency::of(&stats.latency),
            service_time_us: open.then(|| Latency::of(&stats.service)),
            warmup_requests,
            sent,
            generator,
            verification: None,
        }
    }

    /// The answers other than 2xx, and the requests without one.
    pub fn not_accepted(&self) -> u64 {
        self.requests - self.accepted
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl fmt::Display for Report {
    /// The short table for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = match self.load {
            Load::Closed { connections } => format!("closed loop, {connections} connections"),
            Load::Open {
                rate,
                max_connections,
            } => {
                format!("open loop, {rate} req/s scheduled, at most {max_connections} connections")
            }
        };
        writeln!(f, "corral-loadgen run {} → {}", self.run_id, self.target)?;
        writeln!(
            f,
            "  load        {load}; {:.1} s measured after {:.1} s warm-up",
            self.measured_secs, self.warmup_secs
        )?;
        writeln!(
            f,
            "  requests    {:>10}  {:>10.1}/s",
            self.requests, self.requests_per_sec
        )?;
        writeln!(
            f,
            "  accepted    {:>10}  {:>10.1}/s   (2xx)",
            self.accepted, self.accepted_per_sec
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        writeln!(f, "  answers     {}", statuses.join("  "))?;
        writeln!(
            f,
            "  no answer   connect {}  io {}  timeout {}",
            self.errors.connect, self.errors.io, self.errors.timeout
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, l: &Latency| {
            writeln!(
                f,
                "  {name} p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (ms)",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p99_9),
                ms(l.max)
            )
        };
        row(f, "latency    ", &self.latency_us)?;
        if let Some(service) = &self.service_time_us {
            row(f, "service    ", service)?;
        }
        writeln!(
            f,
            "  webhooks    {} distinct sent ({} answered 2xx), {} resent, {} out-of-order pairs, {} warm-up requests",
            self.sent.webhooks,
            self.sent.confirmed,
            self.sent.resent,
            self.sent.out_of_order_pairs,
            self.warmup_requests
        )?;
        let g = &self.generator;
        write!(
            f,
            "  generator   CPU {:.2} s over {:.1} s = {:.0}% of one core",
            g.cpu_secs, g.wall_secs, g.cpu_percent
        )?;
        if let Some(threads) = g.threads {
            write!(f, ", {threads} thread(s)")?;
        }
        if let Some(rss) = g.peak_rss_mib {
            write!(f, ", peak RSS {rss:.1} MiB")?;
        }
        writeln!(f, ", {} connections opened", g.connections_opened)?;
        if let Some(verification) = &self.verification {
            write!(f, "{verification}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stats_add_up() {
        let t0 = Instant::now();
        let mut a = Stats::new();
        a.record(t0, t0, t0 + Duration::from_millis(2), Ok(StatusCode::OK));
        a.record(t0, t0, t0 + Duration::from_millis(4), Err(Failure::Timeout));
        let mut b = Stats::new();
        b.record(
            t0,
            t0 + Duration::from_millis(5),
            t0 + Duration::from_millis(6),
            Ok(StatusCode::SERVICE_UNAVAILABLE),
        );
        a.merge(&b);
        assert_eq!(a.statuses, BTreeMap::from([(200, 1), (503, 1)]));
        assert_eq!(a.errors.timeout, 1);
        assert_eq!(a.latency.len(), 2);
        // Latency counts from the scheduled time, service time from the send.
        assert!(a.latency.max() >= 5_990, "{}", a.latency.max());
        assert_eq!(a.latency.value_at_quantile(0.5), a.latency.min());
        assert!(a.service.max() < 2_100);
        assert_eq!(a.last_done, Some(t0 + Duration::from_millis(6)));
    }

    #[test]
    fn the_process_cpu_clock_moves() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
    }
}
