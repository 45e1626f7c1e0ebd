//! Logs and metrics.
//!
//! Logs go through `tracing` (text for a terminal, JSON for shippers). Metrics
//! go through [`metrics`], the single catalogue of every metric
//! name corral exports: the dashboard, the alerts and a test that scrapes both
//! binaries are all checked against [`metrics::CATALOGUE`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{
    EnvFilter,
    filter::{LevelFilter, Targets},
    fmt,
    prelude::*,
};

use crate::config::{LogFormat, LogSettings};

/// What never reaches a log, whatever `CORRAL_LOG` says: the client library's
/// lines that carry message bodies. lapin logs every message the broker
/// returns *with its body* at WARN (`lapin::returned_messages`), and every
/// frame, bodies included, at TRACE (`lapin::channels`, `lapin::frames`).
/// Webhook bodies hold phone numbers, so these are off for good; the broker's
/// own tracing or a packet capture shows the wire when it must be seen.
///
/// A filter of its own beside the operator's: an `EnvFilter` directive could
/// be outdone by a more specific one (`lapin::returned_messages[message]=warn`).
pub fn without_message_bodies() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("lapin::returned_messages", LevelFilter::OFF)
        .with_target("lapin::channels", LevelFilter::DEBUG)
        .with_target("lapin::frames", LevelFilter::DEBUG)
}

/// Installs the global `tracing` subscriber, writing to stderr: stdout is
/// kept for an operator command's report, so it can be piped. Safe to call
/// more than once (tests build several applications in one process): later
/// calls are no-ops.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|err| {
        // A typo in the filter must not silence the service; say so and fall back.
        eprintln!(
            "invalid CORRAL_LOG filter {:?} ({err}); using \"info\"",
            settings.filter
        );
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(without_message_bodies());
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // Already initialised: keep the first subscriber.
    let _ = result;
}

/// Installs the global Prometheus recorder once and returns a handle that
/// renders the exposition text. Later calls return the same handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for def in metrics::CATALOGUE {
                if let Some(buckets) = def.buckets {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(def.name.to_owned()), buckets)
                        .expect("histogram buckets in the catalogue are non-empty");
                }
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Histogram samples pile up in the recorder until upkeep folds
            // them into buckets; without it a process nobody scrapes grows by
            // 8 bytes per sample per histogram for ever (~250 KB/s at
            // 15,000 webhooks/s). A plain thread keeps it independent of any
            // runtime.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("starting the metrics upkeep thread");
            // Another recorder may already be installed (a test harness); then
            // this handle renders nothing, which the metric tests would catch.
            let _ = ::metrics::set_global_recorder(recorder);
            metrics::describe_all();
            handle
        })
        .clone()
}

mod delivery_labels;
pub mod labels;
// The metric help texts are Prometheus's HELP lines, written as operators read
// them (`<prefix>.delivery-results`), not as HTML.
#[allow(rustdoc::invalid_html_tags)]
pub mod metrics;
