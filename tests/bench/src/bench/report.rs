//! `benchmarks.md`, `benchmarks.json` and `benchmarks.svg` from the results.

use std::{fmt::Write as _, path::Path};

use crate::probes::{InsertKind, ProbeKey};

use super::results::*;

/// A probe result the report divides corral's numbers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ceiling {
    /// The bare publish probe with 64 confirms in flight (best of its channel counts).
    Publish64,
    /// The bare publish probe with 1,024 confirms in flight.
    Publish1024,
    /// The bare insert probe, `delivery_events` only, 500-row batches.
    InsertEventsOnly500,
    /// The bare insert probe doing the worker's work, 500-row batches.
    InsertWithLatest500,
}

impl Ceiling {
    fn matches(self, key: ProbeKey) -> bool {
        match (self, key) {
            (Ceiling::Publish64, ProbeKey::Publish { in_flight, .. }) => in_flight == 64,
            (Ceiling::Publish1024, ProbeKey::Publish { in_flight, .. }) => in_flight == 1024,
            (Ceiling::InsertEventsOnly500, ProbeKey::Insert { kind, batch }) => {
                kind == InsertKind::EventsOnly && batch == 500
            }
            (Ceiling::InsertWithLatest500, ProbeKey::Insert { kind, batch }) => {
                kind == InsertKind::WithLatest && batch == 500
            }
            _ => false,
        }
    }
}

/// The best rate of the probes `ceiling` names, or `None` when the results
/// hold none (then the report says "n/a").
fn ceiling(results: &Results, ceiling: Ceiling) -> Option<f64> {
    results
        .probes
        .iter()
        .filter(|p| p.key.is_some_and(|key| ceiling.matches(key)))
        .map(|p| p.per_second)
        .reduce(f64::max)
}

/// `value / ceiling` to two decimals, or "n/a" without the ceiling.
fn ratio(value: f64, ceiling: Option<f64>) -> String {
    ceiling.map_or_else(|| "n/a".to_owned(), |c| format!("{:.2}", value / c))
}

/// `docs/benchmarks.md`: method, machine, numbers and ratios.
pub fn markdown(results: &Results, previous_notes: &str) -> String {
    let mut out = String::new();
    intro(&mut out, results);
    limits(&mut out, results);
    ingress_table(&mut out, results);
    worker_table(&mut out, results);
    pipeline_table(&mut out, results);
    latency_table(&mut out, results);
    out.push_str(previous_notes);
    out
}

/// Title, machine and method.
fn intro(out: &mut String, results: &Results) {
    let m = &results.machine;
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "How fast corral is on one small machine, measured in the same run as the limits of the broker and the database it \
         sits on. Reproduce with `scripts/bench` (15–20 minutes; `scripts/bench --quick` for a 5-minute version). Raw \
         numbers: [`benchmarks.json`](benchmarks.json); chart: [`benchmarks.svg`](benchmarks.svg).\n"
    );
    let _ = writeln!(out, "![throughput and latency](benchmarks.svg)\n");
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(
        out,
        "{}; {} cores, {} GiB; Linux {}; RabbitMQ {} and {}, both local with Debian's default settings; corral `{}` \
         (release build). The load generator, RabbitMQ, PostgreSQL and corral share the same {} cores, so every number \
         here includes that contention.\n",
        m.cpu, m.cores, m.memory_gib, m.kernel, m.rabbitmq, m.postgres, m.commit, m.cores
    );
    let _ = writeln!(out, "## Method\n");
    let _ = writeln!(
        out,
        "- **Limit probes** use corral's payloads and topology but none of its code: a bare lapin client publishing persistent, \
         mandatory messages with confirms into the same quorum queue (a fixed window of publishes in flight, one task per \
         channel), and a bare tokio-postgres client inserting the same typed rows into the same `delivery_events` table \
         (same indexes) with one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch on one connection. \
         These are the ceilings corral's numbers are divided by.\n\
         - **Ingress alone**: `corral-ingress` (defaults: 4 confirm channels, one HTTP worker per core) with no worker, \
         `corral-loadgen` in a closed loop at N keep-alive connections for {} s after a 2 s warm-up, realistic mix (SMS/RVM, \
         success and every failure reason). Latency is per request; RSS is the peak of the process, CPU its average over \
         the run.\n\
         - **Worker alone**: the queue pre-filled with distinct webhooks (confirmed publishes, ingress's properties), then \
         `corral-worker` with default settings (pool 4, 2 writers, prefetch 2,000, batches of 500, 50 ms linger) started; \
         rows/s is messages ÷ seconds from the worker's start to its last commit (so it includes start-up and \
         migrations; progress is read from the worker's own counter, not by querying the table it writes).\n\
         - **Pipeline**: both binaries, `corral-loadgen` in an open loop at a fixed rate (a fraction of the best ingress \
         rate above) for {} s, latency measured from each request's *scheduled* send time (no coordinated omission); \
         end-to-end is `stored_at − received_at` of every row (ingress receiving the webhook → the start of the worker's \
         transaction that wrote it; the commit adds that batch's write time, the `corral_worker_db_write_seconds` \
         histogram); the run is then verified: every webhook answered 200 is exactly one row, nothing else changed.\n",
        results.plan.seconds, results.plan.pipeline_seconds
    );
}

/// The probes: this machine's ceilings.
fn limits(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Limits of this machine\n");
    let _ = writeln!(out, "| probe | per second |\n|---|---:|");
    for p in &results.probes {
        let _ = writeln!(out, "| {} | {:.0} |", p.name, p.per_second);
    }
}

/// Ingress alone, against the publish probe.
fn ingress_table(out: &mut String, results: &Results) {
    let publish64 = ceiling(results, Ceiling::Publish64);
    let publish1024 = ceiling(results, Ceiling::Publish1024);
    let _ = writeln!(out, "\n## Ingress alone\n");
    let _ = writeln!(
        out,
        "| connections | accepted/s | ÷ publish probe (64 in flight) | p50 ms | p99 ms | p99.9 ms | not 200 | peak RSS MiB | CPU % | load generator CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.ingress {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {:.0} |",
            r.connections,
            r.accepted_per_sec,
            ratio(r.accepted_per_sec, publish64),
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.not_accepted,
            r.peak_rss_mib,
            r.cpu_percent,
            r.generator_cpu_percent
        );
    }
    let _ = writeln!(
        out,
        "\n(the 1,024-in-flight publish probe reached {}/s: what more concurrency buys the broker.)",
        publish1024.map_or_else(|| "n/a".to_owned(), |rate| format!("{rate:.0}"))
    );
}

/// Worker alone, against the insert probes.
fn worker_table(out: &mut String, results: &Results) {
    let insert500 = ceiling(results, Ceiling::InsertEventsOnly500);
    let same500 = ceiling(results, Ceiling::InsertWithLatest500);
    let _ = writeln!(out, "\n## Worker alone\n");
    let _ = writeln!(
        out,
        "| messages | seconds | rows/s | ÷ insert probe, events only | ÷ insert probe, same work (events + deliveries) | peak RSS MiB | CPU % |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.worker {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.0} | {} | {} | {:.1} | {:.0} |",
            r.messages,
            r.seconds,
            r.rows_per_sec,
            ratio(r.rows_per_sec, insert500),
            ratio(r.rows_per_sec, same500),
            r.peak_rss_mib,
            r.cpu_percent
        );
    }
}

/// The whole pipeline at fixed rates.
fn pipeline_table(out: &mut String, results: &Results) {
    let _ = writeln!(out, "\n## Whole pipeline at fixed rates\n");
    let _ = writeln!(
        out,
        "| load | offered/s | accepted/s | answer p50 ms | p99 ms | p99.9 ms | end-to-end p50 ms | end-to-end p99 ms | lost | duplicated | verified | ingress RSS MiB | worker RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    for r in &results.pipeline {
        let _ = writeln!(
            out,
            "| {:.0} % | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {:.1} |",
            r.fraction * 100.0,
            r.rate,
            r.accepted_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.lost,
            r.duplicated,
            if r.verified { "yes" } else { "**no**" },
            r.ingress_peak_rss_mib,
            r.worker_peak_rss_mib
        );
    }
}

/// Where the answer latency goes: the layers under the pipeline, rate by rate.
fn latency_table(out: &mut String, results: &Results) {
    if results.latency.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Where the answer latency goes\n");
    let _ = writeln!(
        out,
        "The same rates, one layer at a time, each measured from the scheduled send time and with a bare consumer \
         (prefetch 2,000, one acknowledgement per 100 messages, nothing stored) keeping the queue empty as the worker does: the broker alone (a bare lapin \
         client publishing with confirms on 4 channels), ingress alone (no worker), then the whole pipeline from \
         the table above (ingress, worker and PostgreSQL sharing the cores).\n"
    );
    let _ = writeln!(
        out,
        "| load | rate/s | broker alone: confirm p50 / p99 / p99.9 ms | ingress alone: answer p50 / p99 / p99.9 ms | whole pipeline: answer p50 / p99 / p99.9 ms |\n|---|---:|---|---|---|"
    );
    for r in &results.latency {
        let pipeline = results
            .pipeline
            .iter()
            .find(|p| (p.fraction - r.fraction).abs() < 1e-9)
            .map_or_else(
                || "–".to_owned(),
                |p| format!("{:.2} / {:.2} / {:.2}", p.p50_ms, p.p99_ms, p.p999_ms),
            );
        let _ = writeln!(
            out,
            "| {:.0} % | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {pipeline} |",
            r.fraction * 100.0,
            r.broker.rate,
            r.broker.p50_ms,
            r.broker.p99_ms,
            r.broker.p999_ms,
            r.ingress.p50_ms,
            r.ingress.p99_ms,
            r.ingress.p999_ms,
        );
    }
}

/// A two-panel SVG: throughput against the limits, and latency by load.
pub fn svg(results: &Results) -> String {
    // A missing probe draws as an empty bar labelled 0.
    let publish64 = ceiling(results, Ceiling::Publish64).unwrap_or(0.0);
    let insert500 = ceiling(results, Ceiling::InsertEventsOnly500).unwrap_or(0.0);
    let same500 = ceiling(results, Ceiling::InsertWithLatest500).unwrap_or(0.0);
    let ingress64 = results
        .ingress
        .iter()
        .find(|r| r.connections == 64)
        .map_or(0.0, |r| r.accepted_per_sec);
    let worker = results.worker.first().map_or(0.0, |r| r.rows_per_sec);
    let bars = [
        ("publish probe (64 in flight)", publish64, "#9aa5b1"),
        ("corral-ingress (64 connections)", ingress64, "#2f6fdf"),
        ("insert probe, events only", insert500, "#9aa5b1"),
        ("insert probe, same work", same500, "#9aa5b1"),
        ("corral-worker (drain)", worker, "#1f9d55"),
    ];
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="250" font-family="sans-serif" font-size="12">
<rect width="1000" height="250" fill="white"/>
<text x="20" y="24" font-size="15" font-weight="bold">Throughput against this machine's limits (per second)</text>
"#,
    );
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let y = 44.0 + i as f64 * 34.0;
        let width = value / max * 260.0;
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{:.0}">{label}</text><rect x="230" y="{:.0}" width="{width:.0}" height="24" fill="{color}"/><text x="{:.0}" y="{:.0}">{value:.0}</text>"#,
            y + 16.0,
            y,
            236.0 + width,
            y + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="540" y="24" font-size="15" font-weight="bold">Answer latency, ms, log scale (p50 / p99 / p99.9)</text>"#
    );
    let rows: Vec<(String, f64, f64, f64)> = results
        .ingress
        .iter()
        .map(|r| {
            (
                format!("ingress, {} conns", r.connections),
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
            )
        })
        .chain(results.pipeline.iter().map(|r| {
            (
                format!("pipeline, {:.0} % rate", r.fraction * 100.0),
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
            )
        }))
        .collect();
    let lmax = rows.iter().map(|r| r.3).fold(1.0, f64::max);
    for (i, (label, p50, p99, p999)) in rows.iter().enumerate() {
        let y = 44.0 + i as f64 * 30.0;
        // Logarithmic: the interesting latencies span milliseconds to seconds.
        let scale = |v: f64| (v + 1.0).log10() / (lmax + 1.0).log10() * 140.0;
        let _ = writeln!(
            svg,
            r##"<text x="540" y="{:.0}">{label}</text><rect x="700" y="{y:.0}" width="{:.1}" height="18" fill="#c7d7f5"/><rect x="700" y="{y:.0}" width="{:.1}" height="18" fill="#7ea3ea"/><rect x="700" y="{y:.0}" width="{:.1}" height="18" fill="#2f6fdf"/><text x="{:.0}" y="{:.0}">{p50:.1} / {p99:.1} / {p999:.1}</text>"##,
            y + 13.0,
            scale(*p999),
            scale(*p99),
            scale(*p50),
            706.0 + scale(*p999),
            y + 13.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes the three files under `dir`, keeping whatever follows the
/// `<!-- notes -->` marker of an existing `benchmarks.md` (the analysis).
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<()> {
    let md_path = dir.join("benchmarks.md");
    let notes = std::fs::read_to_string(&md_path)
        .ok()
        .and_then(|text| {
            text.find("\n<!-- notes -->")
                .map(|at| text[at..].to_owned())
        })
        .unwrap_or_else(|| "\n<!-- notes -->\n".to_owned());
    std::fs::write(&md_path, markdown(results, &notes))?;
    std::fs::write(
        dir.join("benchmarks.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    std::fs::write(dir.join("benchmarks.svg"), svg(results))?;
    Ok(())
}
