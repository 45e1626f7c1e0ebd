//! `benchmarks.md`, `benchmarks.json` and `benchmarks.svg` from the results,
//! and the targets table, which is for developers (tests/bench/README.md) and
//! so printed rather than written into the user's page.

use std::{fmt::Write as _, path::Path};

use crate::probes::{InsertKind, ProbeKey, ProbeResult};

use super::results::*;

/// Ingress's memory limit (the RSS the wide point must stay under), MiB.
const INGRESS_RSS_LIMIT_MIB: f64 = 64.0;

/// A probe result the report divides corral's numbers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ceiling {
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

/// The best rate of the probes `ceiling` names, or `None` when `probes`
/// hold none (then the report says "n/a").
pub(super) fn ceiling_of(probes: &[ProbeResult], ceiling: Ceiling) -> Option<f64> {
    probes
        .iter()
        .filter(|p| p.key.is_some_and(|key| ceiling.matches(key)))
        .map(|p| p.per_second)
        .reduce(f64::max)
}

/// [`ceiling_of`] the results' probes.
fn ceiling(results: &Results, ceiling: Ceiling) -> Option<f64> {
    ceiling_of(&results.probes, ceiling)
}

/// The HTTP ceiling's rate at `connections`, if measured.
fn http_ceiling(results: &Results, connections: usize) -> Option<f64> {
    results
        .http_ceiling
        .iter()
        .find(|r| r.connections == connections)
        .map(|r| r.accepted_per_sec)
}

/// Ingress alone at `connections`, if measured.
fn ingress_at(results: &Results, connections: usize) -> Option<&IngressRun> {
    results
        .ingress
        .iter()
        .find(|r| r.connections == connections)
}

/// The pipeline run planned at `multiple` of the publish probe, if any.
fn pipeline_at_probe(results: &Results, multiple: f64) -> Option<&PipelineRun> {
    results.pipeline.iter().find(|r| {
        r.of_publish_probe
            .is_some_and(|m| (m - multiple).abs() < 1e-9)
    })
}

/// `value / ceiling` to two decimals, or "n/a" without the ceiling.
fn ratio(value: f64, ceiling: Option<f64>) -> String {
    ceiling.map_or_else(|| "n/a".to_owned(), |c| format!("{:.2}", value / c))
}

/// `docs/benchmarks.md`: method, machine, numbers and ratios.
pub fn markdown(results: &Results, previous_notes: &str) -> String {
    let mut out = String::new();
    intro(&mut out, results);
    super::figures::key_figures(&mut out, results);
    limits(&mut out, results);
    ingress_table(&mut out, results);
    super::signed::table(&mut out, results);
    wide_table(&mut out, results);
    worker_table(&mut out, results);
    pipeline_table(&mut out, results);
    latency_table(&mut out, results);
    spool_table(&mut out, results);
    sqs_table(&mut out, results);
    super::sizing::table(&mut out, results);
    super::events::table(&mut out, results);
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
         sits on. Reproduce with `scripts/bench` (10–20 minutes; `scripts/bench --quick` for a 6-minute version). Raw \
         numbers: [`benchmarks.json`](benchmarks.json); chart: [`benchmarks.svg`](benchmarks.svg).\n"
    );
    let _ = writeln!(out, "![throughput and latency](benchmarks.svg)\n");
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(
        out,
        "{}; {} cores, {} GiB; Linux {}; RabbitMQ {} and {}, both local with Debian's default settings; corral \
         (release build). The load generator, RabbitMQ, PostgreSQL and corral share the same {} cores, so every number \
         here includes that contention.\n",
        m.cpu, m.cores, m.memory_gib, m.kernel, m.rabbitmq, m.postgres, m.cores
    );
    let _ = writeln!(out, "## Method\n");
    let _ = writeln!(
        out,
        "- **Limit probes** use corral's payloads and topology but none of its code: a bare lapin client publishing persistent, \
         mandatory messages with confirms into the same quorum queue (a fixed window of publishes in flight, one task per \
         channel), and a bare tokio-postgres client inserting the same typed rows into the same `delivery_events` table \
         (same indexes) with one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch on one connection. \
         These are the ceilings corral's numbers are divided by.\n\
         - **HTTP ceiling**: a bare actix-web server (`corral-bench http-ceiling`, as many HTTP workers as ingress) \
         with ingress's routes, whose handler reads the whole body and answers 200 `{{\"id\": …}}`, no broker, driven \
         by the same load generator at the same connection counts right before ingress: the most an actix-web \
         service answers on this machine.\n\
         - **Ingress alone**: `corral-ingress` (defaults: 4 confirm channels, one HTTP worker per core) with no worker, \
         `corral-loadgen` in a closed loop at N keep-alive connections for {} s after a 2 s warm-up, realistic mix (SMS/RVM, \
         success and every failure reason). Latency is per request; RSS is the peak of the process, CPU its average over \
         the run. Webhooks per message is ingress's `corral_ingress_publish_batch_size` sum ÷ count over the run \
         (\"—\": ingress does not export it). The wide point holds {} keep-alive connections at once, ingress's \
         `CORRAL_MAX_CONNECTIONS` raised to fit them; its peak RSS is the kernel's high-water mark (`VmHWM`).\n\
         - **Worker alone**: the queue pre-filled with distinct webhooks (confirmed publishes, ingress's properties), then \
         `corral-worker` with default settings (pool 4, 2 writers, prefetch 2,000, batches of 500, 50 ms linger) started; \
         rows/s is messages ÷ seconds from the worker's start to its last commit (so it includes start-up and \
         migrations; progress is read from the worker's own counter, not by querying the table it writes).\n\
         - **Pipeline**: both binaries, `corral-loadgen` in an open loop at a fixed rate (a fraction of the best ingress \
         rate above) for {} s, latency measured from each request's *scheduled* send time (no coordinated omission); \
         end-to-end is `stored_at − received_at` of every row (ingress receiving the webhook → the start of the worker's \
         transaction that wrote it; the commit adds that batch's write time, the `corral_worker_db_write_seconds` \
         histogram); the run is then verified: every webhook answered 200 is exactly one row, nothing else changed.\n",
        results.plan.seconds,
        wide_connections(results),
        results.plan.pipeline_seconds
    );
}

/// The wide connection counts, for people: "4096", or "none" when not planned.
fn wide_connections(results: &Results) -> String {
    let counts: Vec<String> = results
        .plan
        .wide_connections
        .iter()
        .map(usize::to_string)
        .collect();
    if counts.is_empty() {
        "no".to_owned()
    } else {
        counts.join(" or ")
    }
}

/// One target row: what is measured, against what, met or not.
pub(super) struct Target {
    pub(super) what: String,
    pub(super) needed: String,
    pub(super) measured: String,
    /// `None` when the results lack what the target needs.
    pub(super) met: Option<bool>,
}

/// The targets the ingress change is held to, each against the numbers of this run.
fn targets(out: &mut String, results: &Results) {
    let publish64 = ceiling(results, Ceiling::Publish64);
    let mut rows = Vec::new();
    let ratio_target = |what: &str, value: Option<f64>, of: Option<f64>, needed: f64| {
        let value = value.zip(of).map(|(v, of)| v / of);
        Target {
            what: what.to_owned(),
            needed: format!("≥ {needed:.1}×"),
            measured: value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}×")),
            met: value.map(|v| v >= needed),
        }
    };
    let ingress = |c: usize| ingress_at(results, c).map(|r| r.accepted_per_sec);
    rows.push(ratio_target(
        "ingress alone, 64 connections ÷ publish probe (64 in flight)",
        ingress(64),
        publish64,
        2.0,
    ));
    rows.push(ratio_target(
        "ingress alone, 256 connections ÷ publish probe (64 in flight)",
        ingress(256),
        publish64,
        3.0,
    ));
    rows.push(ratio_target(
        "ingress alone, 64 connections ÷ HTTP ceiling, 64 connections",
        ingress(64),
        http_ceiling(results, 64),
        0.5,
    ));
    let clean = |r: &&PipelineRun| r.verified && r.lost == 0 && r.duplicated == 0;
    let best_clean = results
        .pipeline
        .iter()
        .filter(clean)
        .map(|r| r.accepted_per_sec)
        .reduce(f64::max);
    rows.push(ratio_target(
        "whole pipeline, best verified rate (0 lost, 0 duplicated) ÷ publish probe",
        best_clean,
        publish64,
        PIPELINE_TARGET_MULTIPLE,
    ));
    let half = PIPELINE_TARGET_MULTIPLE / 2.0;
    let at_half = pipeline_at_probe(results, half);
    let limit_target = |what: String, value: Option<f64>, limit: f64, unit: &str| Target {
        what,
        needed: format!("≤ {limit} {unit}"),
        measured: value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} {unit}")),
        met: value.map(|v| v <= limit),
    };
    rows.push(limit_target(
        format!("whole pipeline at {half}× publish probe, answer p99"),
        at_half.map(|r| r.p99_ms),
        20.0,
        "ms",
    ));
    rows.push(limit_target(
        format!("whole pipeline at {half}× publish probe, end-to-end p99"),
        at_half.map(|r| r.e2e_p99_ms),
        250.0,
        "ms",
    ));
    let quarter = results.quarter_load().map(|r| r.p50_ms);
    let before = results
        .baseline
        .as_ref()
        .and_then(|b| b.quarter_load_p50_ms);
    rows.push(Target {
        what: format!(
            "whole pipeline at 25 % load, answer p50 against before ({})",
            results.baseline.as_ref().map_or_else(
                || "no previous results".to_owned(),
                |b| format!("`{}`, {}", b.commit, b.date)
            )
        ),
        needed: "≤ before + 1 ms".to_owned(),
        measured: match (quarter, before) {
            (Some(now), Some(before)) => format!("{now:.2} ms (before {before:.2} ms)"),
            (Some(now), None) => format!("{now:.2} ms (before: n/a)"),
            _ => "n/a".to_owned(),
        },
        met: quarter.zip(before).map(|(now, before)| now <= before + 1.0),
    });
    let at256 = ingress(256);
    for wide in &results.ingress_wide {
        let c = wide.connections;
        let unanswered = wide.connection_errors + wide.timeouts;
        rows.push(Target {
            what: format!("ingress alone, {c} connections: every request answered, no 5xx"),
            needed: "0 / 0".to_owned(),
            measured: format!(
                "{unanswered} connection errors or timeouts / {} 5xx",
                wide.server_errors
            ),
            met: Some(unanswered == 0 && wide.server_errors == 0),
        });
        rows.push(Target {
            what: format!("ingress alone, {c} connections ÷ its 256-connection rate"),
            needed: "≥ 1.0×".to_owned(),
            measured: at256.map_or_else(
                || "n/a".to_owned(),
                |r| format!("{:.2}×", wide.accepted_per_sec / r),
            ),
            met: at256.map(|r| wide.accepted_per_sec >= r),
        });
        rows.push(limit_target(
            format!("ingress alone, {c} connections, peak RSS"),
            Some(wide.peak_rss_mib),
            INGRESS_RSS_LIMIT_MIB,
            "MiB",
        ));
        let (bare, holding) = bare_wide_rss(results, c);
        let bare = bare.map(|b| wide.peak_rss_mib / b);
        let holding = holding.map(|h| wide.peak_rss_mib / h);
        rows.push(Target {
            what: format!("ingress alone, {c} connections, peak RSS ÷ the bare actix-web server's"),
            needed: "≤ 1.25×".to_owned(),
            measured: match (bare, holding) {
                (Some(b), Some(h)) => {
                    format!("{b:.2}× ({h:.2}× the bare server holding its answers)")
                }
                (Some(b), None) => format!("{b:.2}×"),
                _ => "n/a".to_owned(),
            },
            met: bare.map(|b| b <= 1.25),
        });
    }
    for run in &results.spool {
        let c = run.connections;
        rows.push(Target {
            what: format!(
                "spool path (broker gone), {c} connections ÷ bare spool INSERT of {}-row statements, 1 connection; 0 lost",
                run.ceiling_batch
            ),
            needed: "≥ 0.7×, 0 lost".to_owned(),
            measured: format!(
                "{:.2}× ({:.2}× of {}-row statements, the run's round size), {} lost",
                run.accepted_per_sec / run.ceiling_per_sec,
                run.accepted_per_sec / run.probe_per_sec,
                run.probe_batch,
                run.lost
            ),
            met: Some(run.accepted_per_sec >= 0.7 * run.ceiling_per_sec && run.lost == 0),
        });
    }
    rows.push(super::signed::target(results));
    rows.extend(super::events::targets(results));
    let _ = writeln!(
        out,
        "## Targets
"
    );
    let _ = writeln!(
        out,
        "Each against this run's own probes and ceilings (same machine, same run).\n"
    );
    let _ = writeln!(
        out,
        "| target | needed | measured | met |\n|---|---|---|---|"
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {met} |",
            row.what, row.needed, row.measured
        );
    }
    let _ = writeln!(out);
}

/// The probes: this machine's ceilings.
fn limits(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Limits of this machine\n");
    let _ = writeln!(out, "| probe | per second |\n|---|---:|");
    for p in &results.probes {
        let _ = writeln!(out, "| {} | {:.0} |", p.name, p.per_second);
    }
    for r in &results.http_ceiling {
        let _ = writeln!(
            out,
            "| HTTP ceiling: bare actix-web, body read, 200, no broker, {} connections (p50 {:.2} ms, p99 {:.2} ms, CPU {:.0} %, load generator CPU {:.0} %) | {:.0} |",
            r.connections,
            r.p50_ms,
            r.p99_ms,
            r.cpu_percent,
            r.generator_cpu_percent,
            r.accepted_per_sec
        );
    }
}

/// Ingress alone, against the publish probe.
fn ingress_table(out: &mut String, results: &Results) {
    let publish64 = ceiling(results, Ceiling::Publish64);
    let publish1024 = ceiling(results, Ceiling::Publish1024);
    let _ = writeln!(out, "\n## Ingress alone\n");
    let _ = writeln!(
        out,
        "| connections | accepted/s | ÷ publish probe (64 in flight) | ÷ HTTP ceiling (same connections) | webhooks per message | p50 ms | p99 ms | p99.9 ms | not 200 | peak RSS MiB | CPU % | load generator CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.ingress {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {:.0} |",
            r.connections,
            r.accepted_per_sec,
            ratio(r.accepted_per_sec, publish64),
            ratio(r.accepted_per_sec, http_ceiling(results, r.connections)),
            per_message(r.webhooks_per_message),
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

/// Ingress alone holding many connections at once.
fn wide_table(out: &mut String, results: &Results) {
    if results.ingress_wide.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Ingress alone, many connections\n");
    let _ = writeln!(
        out,
        "| connections | CORRAL_MAX_CONNECTIONS | accepted/s | ÷ 256 connections | webhooks per message | p50 ms | p99 ms | p99.9 ms | connection errors | timeouts | 5xx | connections opened | peak RSS MiB (limit {INGRESS_RSS_LIMIT_MIB:.0}) | bare actix-web server's peak RSS MiB | ÷ it | bare server holding each answer ingress's p50: peak RSS MiB | ÷ it | CPU % | load generator CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let at256 = ingress_at(results, 256).map(|r| r.accepted_per_sec);
    for r in &results.ingress_wide {
        let (bare, holding) = bare_wide_rss(results, r.connections);
        let mib = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.0} | {:.0} |",
            r.connections,
            r.max_connections
                .map_or_else(|| "default".to_owned(), |m| m.to_string()),
            r.accepted_per_sec,
            ratio(r.accepted_per_sec, at256),
            per_message(r.webhooks_per_message),
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.connection_errors,
            r.timeouts,
            r.server_errors,
            r.connections_opened,
            r.peak_rss_mib,
            mib(bare),
            ratio(r.peak_rss_mib, bare),
            mib(holding),
            ratio(r.peak_rss_mib, holding),
            r.cpu_percent,
            r.generator_cpu_percent
        );
    }
    if !results.http_ceiling_wide.is_empty() {
        let _ = writeln!(
            out,
            "\nThe bare actix-web server (the HTTP ceiling's, as many HTTP workers) was held by the same closed \
             loop right after ingress, answering at once and then holding each answer as long as ingress's p50 \
             in its run (so that it, too, holds about every connection's request at once); its peak RSS is the \
             same high-water mark."
        );
    }
}

/// The bare actix-web server's peak RSS holding `connections`, answering at
/// once and holding its answers, if measured.
fn bare_wide_rss(results: &Results, connections: usize) -> (Option<f64>, Option<f64>) {
    let at = |r: &&IngressRun| r.connections == connections;
    let bare = results.http_ceiling_wide.iter().find(at);
    let holding = results
        .http_holding_wide
        .iter()
        .map(|(_, run)| run)
        .find(at);
    (
        bare.map(|r| r.peak_rss_mib),
        holding.map(|r| r.peak_rss_mib),
    )
}

/// Ingress through the spool alone, against the bare spool INSERT.
fn spool_table(out: &mut String, results: &Results) {
    if results.spool.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Spool path: the broker gone\n");
    let _ = writeln!(
        out,
        "Ingress alone whose broker is unreachable (its AMQP URL names a port nobody listens on) and whose spool is \
         the local PostgreSQL: every webhook is refused by the broker at once and committed into `spooled_webhooks` \
         (group commit over `CORRAL_SPOOL_CONNECTIONS`, default 4), under the same closed loop as ingress alone. \
         Rows per INSERT is `corral_ingress_spool_batch_size` sum ÷ count. The probe is the same INSERT statement \
         with the same rows, `synchronous_commit` on, one statement after another on one connection: in statements \
         of the run's mean round size rounded up to a power of two, and of the spool's largest round (256), the most \
         one connection inserts. Afterwards a worker drains the spool and the \
         verifier checks every 200 is exactly one row.\n"
    );
    let _ = writeln!(
        out,
        "| connections | accepted/s | not accepted | rows per INSERT | p50 ms | p99 ms | CPU % | bare INSERT/s, round size (rows) | ÷ it | bare INSERT/s, largest round (rows) | ÷ it | lost | duplicated | verified |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &results.spool {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} ({}) | {:.2}× | {:.0} ({}) | {:.2}× | {} | {} | {} |",
            r.connections,
            r.accepted_per_sec,
            r.not_accepted,
            per_message(r.rows_per_insert),
            r.p50_ms,
            r.p99_ms,
            r.cpu_percent,
            r.probe_per_sec,
            r.probe_batch,
            r.accepted_per_sec / r.probe_per_sec,
            r.ceiling_per_sec,
            r.ceiling_batch,
            r.accepted_per_sec / r.ceiling_per_sec,
            r.lost,
            r.duplicated,
            if r.verified { "yes" } else { "no" }
        );
    }
}

/// The pipeline over SQS: latency and what each webhook costs in requests.
fn sqs_table(out: &mut String, results: &Results) {
    if results.sqs.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## SQS: requests per webhook\n");
    let _ = writeln!(
        out,
        "The pipeline with `CORRAL_BUFFER=sqs` against the local moto server (an emulator: its latency and \
         throughput are not AWS's, see [operations](operations.md#rabbitmq-or-sqs)), at fixed rates for \
         {} s each after a 2 s warm-up, one ingress and one worker. Requests are `corral_sqs_requests_total` \
         of both binaries over the whole run until the queue was empty (every operation: sends, receives, \
         deletes, visibility extensions, the readiness and depth checks), divided by the webhooks sent; billed \
         is `corral_sqs_billed_requests_total` (AWS bills each 64 KiB of payload as one request). The target is \
         at most 0.1 requests per webhook. Verified: every 200 stored exactly once. The FIFO queue is run \
         once, at {:.0} webhooks/s: moto's FIFO `SendMessageBatch` takes 150–600 ms, growing with the queue's \
         depth, and fell behind at 1,000/s (25/s answered), which measures the emulator rather than corral.\n",
        results.plan.pipeline_seconds, SQS_FIFO_RATE
    );
    let _ = writeln!(
        out,
        "| webhooks/s | queue | linger ms | accepted/s | p50 ms | p99 ms | e2e p50 ms | e2e p99 ms | webhooks per message | ingress requests per webhook | worker requests per webhook | requests per webhook | billed per webhook | lost | duplicated | verified |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &results.sqs {
        let _ = writeln!(
            out,
            "| {:.0} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {:.3} | {:.3} | **{:.3}** | {:.3} | {} | {} | {} |",
            r.rate,
            if r.fifo { "FIFO" } else { "standard" },
            r.linger_ms,
            r.accepted_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            per_message(r.webhooks_per_message),
            r.ingress_requests_per_webhook,
            r.worker_requests_per_webhook,
            r.ingress_requests_per_webhook + r.worker_requests_per_webhook,
            r.billed_per_webhook,
            r.lost,
            r.duplicated,
            if r.verified { "yes" } else { "no" }
        );
    }
}

/// Worker alone, against the insert probes.
fn worker_table(out: &mut String, results: &Results) {
    let insert500 = ceiling(results, Ceiling::InsertEventsOnly500);
    let same500 = ceiling(results, Ceiling::InsertWithLatest500);
    let _ = writeln!(out, "\n## Worker alone\n");
    let _ = writeln!(
        out,
        "| webhooks | webhooks per message | seconds | rows/s | ÷ insert probe, events only | ÷ insert probe, same work (events + deliveries) | peak RSS MiB | CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.worker {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {:.1} | {:.0} |",
            r.messages,
            r.webhooks_per_message,
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
    let publish64 = ceiling(results, Ceiling::Publish64);
    let _ = writeln!(out, "\n## Whole pipeline at fixed rates\n");
    let _ = writeln!(
        out,
        "| load | offered/s | accepted/s | ÷ publish probe (64 in flight) | webhooks per message | answer p50 ms | p99 ms | p99.9 ms | end-to-end p50 ms | end-to-end p99 ms | lost | duplicated | verified | ingress RSS MiB | worker RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    for r in &results.pipeline {
        let load = r.of_publish_probe.map_or_else(
            || format!("{:.0} %", r.fraction * 100.0),
            |m| format!("{m}× publish probe ({:.0} %)", r.fraction * 100.0),
        );
        let _ = writeln!(
            out,
            "| {load} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {:.1} |",
            r.rate,
            r.accepted_per_sec,
            ratio(r.accepted_per_sec, publish64),
            per_message(r.webhooks_per_message),
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
    let http64 = http_ceiling(results, 64).unwrap_or(0.0);
    let bars = [
        ("publish probe (64 in flight)", publish64, "#9aa5b1"),
        ("HTTP ceiling (64 connections)", http64, "#9aa5b1"),
        ("corral-ingress (64 connections)", ingress64, "#2f6fdf"),
        ("insert probe, events only", insert500, "#9aa5b1"),
        ("insert probe, same work", same500, "#9aa5b1"),
        ("corral-worker (drain)", worker, "#1f9d55"),
    ];
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="290" font-family="sans-serif" font-size="12">
<rect width="1000" height="290" fill="white"/>
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
        .chain(&results.ingress_wide)
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
                r.of_publish_probe.map_or_else(
                    || format!("pipeline, {:.0} % rate", r.fraction * 100.0),
                    |m| format!("pipeline, {m}× probe"),
                ),
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

/// The targets of this run, each met or not, with the commit and the date
/// of the run: what a developer compares a change against.
pub fn targets_report(results: &Results) -> String {
    let m = &results.machine;
    let mut out = format!("corral `{}`, run of {} on {}\n\n", m.commit, m.date, m.cpu);
    targets(&mut out, results);
    out
}

/// Writes the three files under `dir`, keeping whatever follows the
/// `<!-- notes -->` marker of an existing `benchmarks.md` (the analysis),
/// and prints the [`targets_report`].
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
    eprint!("{}", targets_report(results));
    Ok(())
}
