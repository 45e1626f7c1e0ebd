//! Measuring: latency histograms, status and error counts while a run goes
//! on, the live progress bar, the generator's own CPU, and the report at the
//! end (JSON for machines, a short table for people).
//!
//! # Layout
//!
//! - [`generator`]: The load generator's own CPU time and peak memory.
//! - [`progress`]: The progress bar (on a terminal only).
//! - [`stats`]: Histograms and counters of a run, and the live counts the progress bar reads.

mod generator;
mod progress;
mod stats;

pub use self::stats::Errors;
pub(crate) use self::{
    generator::{peak_rss_mib, process_cpu},
    progress::Progress,
    stats::{Live, Stats},
};

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Load, traffic::Mix, traffic::SentSummary, verify::Verification};

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
        if self.sent.signed_events > 0 {
            writeln!(
                f,
                "  signed      {} events ({} retried by the provider), {} drops on both channels",
                self.sent.signed_events, self.sent.signed_retried, self.sent.both_channels
            )?;
        }
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
    use hyper::StatusCode;

    use super::*;
    use crate::http::Failure;

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
