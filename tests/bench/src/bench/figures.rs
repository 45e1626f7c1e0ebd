//! The key figures of `benchmarks.md`: the handful of numbers the other pages
//! cite (sizing, the README, the FAQ), each on a row with a stable anchor.
//! Those pages link to a row instead of repeating its number, so the next run
//! cannot leave a stale copy behind; the docs tests refuse such copies and
//! check that every row named here is on the page.
//!
//! Also the version measured, because a number means little without it.

use std::fmt::Write as _;

use crate::probes::ProbeKey;

use super::{
    report::{Ceiling, ceiling_of},
    results::*,
};

/// One row: its anchor (other pages link to it, so it must not change from
/// one run to the next), what it measures, its value and the table it is
/// read from.
#[derive(Debug)]
struct Figure {
    name: String,
    what: String,
    value: String,
    from: String,
}

impl Figure {
    fn new(name: impl Into<String>, what: impl Into<String>, value: String) -> Self {
        Self {
            name: name.into(),
            what: what.into(),
            value,
            from: String::new(),
        }
    }

    fn from(mut self, tables: &[&str]) -> Self {
        self.from = tables.join(", ");
        self
    }
}

const LIMITS: &str = "[Limits of this machine](#limits-of-this-machine)";
const INGRESS: &str = "[Ingress alone](#ingress-alone)";
const WIDE: &str = "[Ingress alone, many connections](#ingress-alone-many-connections)";
const WORKER: &str = "[Worker alone](#worker-alone)";
const PIPELINE: &str = "[Whole pipeline at fixed rates](#whole-pipeline-at-fixed-rates)";

/// Writes the version measured and the key figures table.
pub(super) fn key_figures(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Key figures\n");
    let _ = writeln!(
        out,
        "**Version measured:** {}, {}. Every table on this page is from that run, unless the notes after the \
         tables say a table was measured apart (and then which version and when).\n",
        version(&results.machine),
        results.machine.date
    );
    let _ = writeln!(
        out,
        "The numbers the other pages rely on, each read from the table named beside it. Link to a row \
         (`benchmarks.md#<name>`) rather than repeating its number: `corral-bench` rewrites this table with \
         every run.\n"
    );
    let _ = writeln!(out, "| name | figure | value | from |\n|---|---|---:|---|");
    let mut figures = probe_figures(results);
    figures.extend(ingress_figures(results));
    figures.extend(worker_figures(results));
    figures.extend(pipeline_figures(results));
    for f in figures {
        let _ = writeln!(
            out,
            "| <a id=\"{0}\"></a>`{0}` | {1} | {2} | {3} |",
            f.name, f.what, f.value, f.from
        );
    }
    let _ = writeln!(out);
}

/// The version for people: `git describe --always --dirty` when the run
/// recorded it; a commit alone (runs before that) says its tree's state is
/// unknown.
fn version(machine: &Machine) -> String {
    match (&machine.version, machine.commit.as_str()) {
        (Some(version), _) => format!("corral `{version}`"),
        (None, "") => "corral, version unrecorded".to_owned(),
        (None, commit) => format!(
            "corral at commit `{commit}` (whether the working tree had uncommitted changes was not recorded)"
        ),
    }
}

/// The broker's and the database's own ceilings.
fn probe_figures(results: &Results) -> Vec<Figure> {
    let mut figures: Vec<Figure> = results
        .probes
        .iter()
        .filter_map(|p| match p.key? {
            ProbeKey::Publish {
                in_flight,
                channels,
            } => Some(
                Figure::new(
                    format!("publish-{in_flight}-in-flight-{}", count(channels, "channel")),
                    format!(
                        "broker alone: bare publish with confirms into one quorum queue, {} in flight, {}",
                        thousands(in_flight as f64),
                        count(channels, "channel").replace('-', " ")
                    ),
                    format!("{} messages/s", thousands(p.per_second)),
                )
                .from(&[LIMITS]),
            ),
            _ => None,
        })
        .collect();
    for (name, what, ceiling) in [
        (
            "insert-probe",
            "database alone: bare insert of the worker's work (events + `deliveries` upsert), 500-row batches, 1 connection",
            Ceiling::InsertWithLatest500,
        ),
        (
            "insert-probe-events-only",
            "database alone: bare insert of `delivery_events` rows only, 500-row batches, 1 connection",
            Ceiling::InsertEventsOnly500,
        ),
    ] {
        let value = ceiling_of(&results.probes, ceiling).map_or_else(
            || "n/a".to_owned(),
            |rate| format!("{} rows/s", thousands(rate)),
        );
        figures.push(Figure::new(name, what, value).from(&[LIMITS]));
    }
    figures
}

/// Ingress alone: rate, its own CPU per webhook and peak RSS, and webhooks
/// per message over every run that publishes.
fn ingress_figures(results: &Results) -> Vec<Figure> {
    let mut figures = per_connection_figures(results);
    let per_message = results
        .ingress
        .iter()
        .filter_map(|r| r.webhooks_per_message)
        .chain(
            results
                .pipeline
                .iter()
                .filter_map(|r| r.webhooks_per_message),
        );
    figures.push(
        Figure::new(
            "webhooks-per-message",
            "ingress: webhooks per AMQP message (group commit), least–most over the ingress-alone and pipeline runs",
            range(per_message, 1),
        )
        .from(&[INGRESS, PIPELINE]),
    );
    figures.push(
        Figure::new(
            "ingress-rss",
            "ingress alone: peak RSS, closed loop (most over the connection counts)",
            mib(results.ingress.iter().map(|r| r.peak_rss_mib)),
        )
        .from(&[INGRESS]),
    );
    for r in &results.ingress_wide {
        let c = r.connections;
        figures.push(
            Figure::new(
                format!("ingress-rss-{c}-connections"),
                format!(
                    "ingress alone: peak RSS holding {} connections at once",
                    thousands(c as f64)
                ),
                mib([r.peak_rss_mib]),
            )
            .from(&[WIDE]),
        );
    }
    figures
}

/// Ingress alone at each connection count: its rate and its own CPU per
/// webhook.
fn per_connection_figures(results: &Results) -> Vec<Figure> {
    let mut figures = Vec::new();
    for r in &results.ingress {
        let c = r.connections;
        figures.push(
            Figure::new(
                format!("ingress-rate-{c}-connections"),
                format!(
                    "ingress alone: webhooks accepted per second, {c} connections (closed loop)"
                ),
                format!("{}/s", thousands(r.accepted_per_sec)),
            )
            .from(&[INGRESS]),
        );
        figures.push(
            Figure::new(
                format!("ingress-cpu-{c}-connections"),
                format!("ingress alone: its own CPU per webhook, {c} connections (CPU % × 10,000 ÷ accepted/s)"),
                micros(r.cpu_percent, r.accepted_per_sec),
            )
            .from(&[INGRESS]),
        );
    }
    figures
}

/// The worker alone, draining a pre-filled queue.
fn worker_figures(results: &Results) -> Vec<Figure> {
    let each = |value: &dyn Fn(&WorkerRun) -> String| {
        let runs: Vec<String> = results
            .worker
            .iter()
            .map(|r| format!("{} ({} queued)", value(r), thousands(r.messages as f64)))
            .collect();
        if runs.is_empty() {
            "n/a".to_owned()
        } else {
            runs.join("; ")
        }
    };
    vec![
        Figure::new(
            "worker-rate",
            "worker alone: rows stored per second, draining a queue (2 writers)",
            each(&|r| format!("{} rows/s", thousands(r.rows_per_sec))),
        )
        .from(&[WORKER]),
        Figure::new(
            "worker-cpu",
            "worker alone: its own CPU per webhook (CPU % × 10,000 ÷ rows/s)",
            each(&|r| micros(r.cpu_percent, r.rows_per_sec)),
        )
        .from(&[WORKER]),
        Figure::new(
            "worker-rss",
            "worker alone: peak RSS (most over the runs)",
            mib(results.worker.iter().map(|r| r.peak_rss_mib)),
        )
        .from(&[WORKER]),
    ]
}

/// The whole pipeline: its best verified rate and both processes' memory.
fn pipeline_figures(results: &Results) -> Vec<Figure> {
    let best = results
        .pipeline
        .iter()
        .filter(|r| r.verified && r.lost == 0 && r.duplicated == 0)
        .map(|r| r.accepted_per_sec)
        .reduce(f64::max);
    vec![
        Figure::new(
            "pipeline-best-verified",
            "whole pipeline: best rate verified (every 200 stored once: 0 lost, 0 duplicated), webhooks accepted per second",
            best.map_or_else(|| "n/a".to_owned(), |rate| format!("{}/s", thousands(rate))),
        )
        .from(&[PIPELINE]),
        Figure::new(
            "pipeline-ingress-rss",
            "whole pipeline: ingress's peak RSS (most over the rates)",
            mib(results.pipeline.iter().map(|r| r.ingress_peak_rss_mib)),
        )
        .from(&[PIPELINE]),
        Figure::new(
            "pipeline-worker-rss",
            "whole pipeline: the worker's peak RSS (most over the rates)",
            mib(results.pipeline.iter().map(|r| r.worker_peak_rss_mib)),
        )
        .from(&[PIPELINE]),
    ]
}

/// Microseconds of CPU per item: `percent` of one core ÷ `per_sec` items.
fn micros(percent: f64, per_sec: f64) -> String {
    if per_sec > 0.0 {
        format!("{:.1} µs", percent * 10_000.0 / per_sec)
    } else {
        "n/a".to_owned()
    }
}

/// The largest of `values`, MiB.
fn mib(values: impl IntoIterator<Item = f64>) -> String {
    values
        .into_iter()
        .reduce(f64::max)
        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} MiB"))
}

/// "least–most" of `values` to `decimals`, or the one value.
fn range(values: impl Iterator<Item = f64>, decimals: usize) -> String {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        low = low.min(v);
        high = high.max(v);
    }
    if low > high {
        "n/a".to_owned()
    } else if format!("{low:.decimals$}") == format!("{high:.decimals$}") {
        format!("{low:.decimals$}")
    } else {
        format!("{low:.decimals$}–{high:.decimals$}")
    }
}

/// `n` and the noun, hyphenated for an anchor: "1-channel", "4-channels".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n}-{noun}")
    } else {
        format!("{n}-{noun}s")
    }
}

/// A count or rate (never negative) rounded to a whole number, thousands
/// separated: "13,383".
fn thousands(value: f64) -> String {
    let digits = format!("{value:.0}");
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_and_rounds() {
        assert_eq!(thousands(13_382.52), "13,383");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }

    #[test]
    fn cpu_per_item_is_percent_times_ten_thousand_over_rate() {
        // 64 % of a core for 16,000 webhooks/s: 0.64 s ÷ 16,000 = 40 µs.
        assert_eq!(micros(64.0, 16_000.0), "40.0 µs");
        assert_eq!(micros(64.0, 0.0), "n/a");
    }

    #[test]
    fn a_range_is_least_to_most() {
        assert_eq!(range([9.0, 2.84, 23.0].into_iter(), 1), "2.8–23.0");
        assert_eq!(range([5.0].into_iter(), 1), "5.0");
        assert_eq!(range(std::iter::empty(), 1), "n/a");
    }
}
