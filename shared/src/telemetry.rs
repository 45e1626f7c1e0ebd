//! Logs and metrics.
//!
//! Logs go through `tracing` (text for a terminal, JSON for shippers). Metrics
//! go through [`metrics`] (this module), the single catalogue of every metric
//! name corral exports: the dashboard, the alerts and a test that scrapes both
//! binaries are all checked against [`metrics::CATALOGUE`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global `tracing` subscriber. Safe to call more than once
/// (tests build several applications in one process): later calls are no-ops.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|err| {
        // A typo in the filter must not silence the service; say so and fall back.
        eprintln!(
            "invalid CORRAL_LOG filter {:?} ({err}); using \"info\"",
            settings.filter
        );
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
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

#[allow(clippy::disallowed_macros)] // the one place allowed to name metrics
pub mod metrics {
    //! The catalogue of every metric corral exports, and the only functions
    //! that write them. Label values are `&'static str` from closed sets so a
    //! request can never create a new time series.

    use std::time::Duration;

    use ::metrics::{
        Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };

    /// What kind of Prometheus metric a catalogue entry is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        /// Monotonic `_total`.
        Counter,
        /// A value that goes up and down.
        Gauge,
        /// Bucketed distribution (`_bucket`, `_sum`, `_count`).
        Histogram,
    }

    /// One exported metric.
    #[derive(Debug, Clone, Copy)]
    pub struct MetricDef {
        /// Full Prometheus name.
        pub name: &'static str,
        /// Counter, gauge or histogram.
        pub kind: Kind,
        /// Help text shown in `/metrics`.
        pub help: &'static str,
        /// Label names, for the dashboard checks.
        pub labels: &'static [&'static str],
        /// Histogram buckets; without them the exporter would emit a summary.
        pub buckets: Option<&'static [f64]>,
    }

    const LATENCY_BUCKETS: &[f64] = &[
        0.000_5, 0.001, 0.002, 0.003, 0.005, 0.007_5, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ];
    const E2E_BUCKETS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        3600.0,
    ];
    const BATCH_BUCKETS: &[f64] = &[
        1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    ];

    macro_rules! catalogue {
        ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], $buckets:expr, $help:literal;)*) => {
            $(
                #[doc = $help]
                pub const $id: &str = $name;
            )*
            /// Every metric corral exports.
            pub const CATALOGUE: &[MetricDef] = &[
                $(MetricDef { name: $name, kind: Kind::$kind, help: $help, labels: &[$($label),*], buckets: $buckets },)*
            ];
        };
    }

    catalogue! {
        BUILD_INFO = "corral_build_info", Gauge, ["binary", "version"], None,
            "Always 1; labels say which binary and version is running.";
        BROKER_CONNECTED = "corral_broker_connected", Gauge, [], None,
            "1 while connected to RabbitMQ with the topology declared, else 0.";
        BROKER_BLOCKED = "corral_broker_blocked", Gauge, [], None,
            "1 while RabbitMQ blocks publishing on this connection (memory or disk alarm).";
        BROKER_CONNECT_ATTEMPTS = "corral_broker_connect_attempts_total", Counter, ["outcome"], None,
            "Attempts to connect to RabbitMQ and declare the topology, by outcome (success, failure).";
        DATABASE_CONNECTED = "corral_database_connected", Gauge, [], None,
            "1 while the last database operation succeeded, else 0.";
        READY = "corral_ready", Gauge, [], None,
            "1 while /readyz answers 200.";

        INGRESS_REQUESTS = "corral_ingress_requests_total", Counter, ["route", "status"], None,
            "Webhook requests answered, by route and HTTP status.";
        INGRESS_REJECTED = "corral_ingress_rejected_total", Counter, ["reason"], None,
            "Webhook requests refused before publishing, by reason.";
        INGRESS_PUBLISHED = "corral_ingress_published_total", Counter, ["kind"], None,
            "Webhooks confirmed by RabbitMQ, by kind (sms, rvm).";
        INGRESS_PUBLISH_FAILURES = "corral_ingress_publish_failures_total", Counter, ["cause"], None,
            "Webhooks answered 503 because the broker did not take them, by cause.";
        INGRESS_PUBLISH_CONFIRM_SECONDS = "corral_ingress_publish_confirm_seconds", Histogram, [], Some(LATENCY_BUCKETS),
            "Time from publish to the broker's confirm.";
        INGRESS_REQUEST_SECONDS = "corral_ingress_request_seconds", Histogram, ["route"], Some(LATENCY_BUCKETS),
            "Time to answer a webhook request, from the first byte of its body to the answer.";
        INGRESS_PUBLISHES_IN_FLIGHT = "corral_ingress_publishes_in_flight", Gauge, [], None,
            "Publishes waiting for the broker's confirm.";

        WORKER_MESSAGES = "corral_worker_messages_total", Counter, ["outcome"], None,
            "Messages committed to PostgreSQL, by outcome (stored, duplicate, quarantined); a batch whose ack was lost is redelivered and counted again as duplicates.";
        WORKER_BATCH_SIZE = "corral_worker_batch_size", Histogram, [], Some(BATCH_BUCKETS),
            "Messages per committed batch.";
        WORKER_DB_WRITE_SECONDS = "corral_worker_db_write_seconds", Histogram, [], Some(LATENCY_BUCKETS),
            "Time to write and commit one batch.";
        WORKER_END_TO_END_SECONDS = "corral_worker_end_to_end_seconds", Histogram, [], Some(E2E_BUCKETS),
            "Time from ingress receiving a webhook to its row being committed.";
        WORKER_DB_ERRORS = "corral_worker_db_errors_total", Counter, ["kind"], None,
            "Failed batch writes, by kind: transient (retried, nothing acked) or data (batch split, culprit quarantined).";
        WORKER_ACK_FAILURES = "corral_worker_ack_failures_total", Counter, [], None,
            "Batches committed whose acknowledgement failed; RabbitMQ redelivers them and they count as duplicates.";
        WORKER_DRAIN_MESSAGES_IN_HAND = "corral_worker_messages_in_hand", Gauge, [], None,
            "Messages received from RabbitMQ and not yet acknowledged.";
    }

    /// Reasons a webhook is refused before publishing.
    pub const REJECT_REASONS: &[&str] = &[
        "unauthorized",
        "invalid_json",
        "not_object",
        "too_large",
        "unsupported_media_type",
        "body_timeout",
    ];
    /// Causes of a 503 on publish.
    pub const PUBLISH_FAILURE_CAUSES: &[&str] = &[
        "unavailable",
        "blocked",
        "overloaded",
        "nack",
        "unroutable",
        "channel_closed",
        "timeout",
        "shutting_down",
    ];
    /// Worker message outcomes.
    pub const WORKER_OUTCOMES: &[&str] = &["stored", "duplicate", "quarantined"];

    pub(super) fn describe_all() {
        for def in CATALOGUE {
            match def.kind {
                Kind::Counter => describe_counter!(def.name, def.help),
                Kind::Gauge => describe_gauge!(def.name, def.help),
                Kind::Histogram => {
                    let unit = if def.name.ends_with("_seconds") {
                        Unit::Seconds
                    } else {
                        Unit::Count
                    };
                    describe_histogram!(def.name, unit, def.help)
                }
            }
        }
    }

    /// Registers the series of `binary` at zero, so dashboards and `rate()`
    /// see them before the first event.
    pub fn register_binary(binary: &'static str) {
        gauge!(BUILD_INFO, "binary" => binary, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        gauge!(BROKER_CONNECTED).set(0.0);
        gauge!(BROKER_BLOCKED).set(0.0);
        gauge!(READY).set(0.0);
        for outcome in ["success", "failure"] {
            counter!(BROKER_CONNECT_ATTEMPTS, "outcome" => outcome).increment(0);
        }
        match binary {
            "corral-ingress" => {
                for reason in REJECT_REASONS {
                    counter!(INGRESS_REJECTED, "reason" => *reason).increment(0);
                }
                for cause in PUBLISH_FAILURE_CAUSES {
                    counter!(INGRESS_PUBLISH_FAILURES, "cause" => *cause).increment(0);
                }
                for kind in ["sms", "rvm"] {
                    counter!(INGRESS_PUBLISHED, "kind" => kind).increment(0);
                }
                gauge!(INGRESS_PUBLISHES_IN_FLIGHT).set(0.0);
            }
            "corral-worker" => {
                gauge!(DATABASE_CONNECTED).set(0.0);
                for outcome in WORKER_OUTCOMES {
                    counter!(WORKER_MESSAGES, "outcome" => *outcome).increment(0);
                }
                for kind in ["transient", "data"] {
                    counter!(WORKER_DB_ERRORS, "kind" => kind).increment(0);
                }
                counter!(WORKER_ACK_FAILURES).increment(0);
                gauge!(WORKER_DRAIN_MESSAGES_IN_HAND).set(0.0);
            }
            _ => {}
        }
    }

    fn flag(value: bool) -> f64 {
        if value { 1.0 } else { 0.0 }
    }

    /// Broker link up or down.
    pub fn broker_connected(connected: bool) {
        gauge!(BROKER_CONNECTED).set(flag(connected));
    }

    /// Broker flow control (connection.blocked / unblocked).
    pub fn broker_blocked(blocked: bool) {
        gauge!(BROKER_BLOCKED).set(flag(blocked));
    }

    /// One attempt to (re)connect and declare the topology.
    pub fn broker_connect_attempt(success: bool) {
        let outcome = if success { "success" } else { "failure" };
        counter!(BROKER_CONNECT_ATTEMPTS, "outcome" => outcome).increment(1);
    }

    /// Database reachable or not.
    pub fn database_connected(connected: bool) {
        gauge!(DATABASE_CONNECTED).set(flag(connected));
    }

    /// Readiness as `/readyz` reports it.
    pub fn ready(ready: bool) {
        gauge!(READY).set(flag(ready));
    }

    /// A webhook request answered.
    pub fn ingress_request(route: &'static str, status: u16, elapsed: Duration) {
        counter!(INGRESS_REQUESTS, "route" => route, "status" => status_label(status)).increment(1);
        histogram!(INGRESS_REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
    }

    /// A webhook refused before publishing.
    pub fn ingress_rejected(reason: &'static str) {
        counter!(INGRESS_REJECTED, "reason" => reason).increment(1);
    }

    /// A webhook the broker confirmed.
    pub fn ingress_published(kind: &'static str, confirm: Duration) {
        counter!(INGRESS_PUBLISHED, "kind" => kind).increment(1);
        histogram!(INGRESS_PUBLISH_CONFIRM_SECONDS).record(confirm.as_secs_f64());
    }

    /// A webhook the broker did not take.
    pub fn ingress_publish_failed(cause: &'static str) {
        counter!(INGRESS_PUBLISH_FAILURES, "cause" => cause).increment(1);
    }

    /// Publishes awaiting confirmation.
    pub fn ingress_in_flight(count: usize) {
        gauge!(INGRESS_PUBLISHES_IN_FLIGHT).set(count as f64);
    }

    /// A committed and acknowledged batch.
    pub fn worker_batch(size: usize, write: Duration) {
        histogram!(WORKER_BATCH_SIZE).record(size as f64);
        histogram!(WORKER_DB_WRITE_SECONDS).record(write.as_secs_f64());
    }

    /// Messages by outcome.
    pub fn worker_messages(outcome: &'static str, count: usize) {
        counter!(WORKER_MESSAGES, "outcome" => outcome).increment(count as u64);
    }

    /// Receive-to-commit latency of one message.
    pub fn worker_end_to_end(seconds: f64) {
        histogram!(WORKER_END_TO_END_SECONDS).record(seconds);
    }

    /// A failed batch write.
    pub fn worker_db_error(kind: &'static str) {
        counter!(WORKER_DB_ERRORS, "kind" => kind).increment(1);
    }

    /// A committed batch whose ack did not reach the broker.
    pub fn worker_ack_failed() {
        counter!(WORKER_ACK_FAILURES).increment(1);
    }

    /// Messages held between delivery and ack.
    pub fn worker_in_hand(count: usize) {
        gauge!(WORKER_DRAIN_MESSAGES_IN_HAND).set(count as f64);
    }

    /// Status codes as static labels (no allocation per request).
    fn status_label(status: u16) -> &'static str {
        match status {
            200 => "200",
            400 => "400",
            401 => "401",
            404 => "404",
            405 => "405",
            408 => "408",
            413 => "413",
            415 => "415",
            500 => "500",
            503 => "503",
            _ => "other",
        }
    }
}
