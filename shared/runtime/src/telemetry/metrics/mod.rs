//! The catalogue of every metric corral exports, and the only functions
//! that write them. Label values come from the enums in [`super::labels`],
//! closed sets, so a request can never create a new time series.
//!
//! This module holds the catalogue and the registration at zero; `record`
//! holds the functions the binaries call as things happen.

// The one place allowed to name metrics.
#![allow(clippy::disallowed_macros)]

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use super::labels::{
    Binary, ConnectOutcome, DbErrorKind, DeliveryLabels, Label, MessageOutcome, PrunedTable,
    PublishFailure, RejectReason,
};
use corral_contract::envelope::Kind as WebhookKind;

mod record;
pub use record::*;

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
    0.000_5, 0.001, 0.002, 0.003, 0.005, 0.007_5, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
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
        "Webhooks whose publish awaits the broker's confirm.";
    INGRESS_PUBLISH_BATCH_SIZE = "corral_ingress_publish_batch_size", Histogram, [], Some(BATCH_BUCKETS),
        "Webhooks per AMQP message published (those that arrived while earlier publishes awaited their confirms travel together).";
    INGRESS_SPOOLED = "corral_ingress_spooled_total", Counter, ["cause"], None,
        "Webhooks answered 200 once the PostgreSQL spool committed them, because RabbitMQ did not take them, by cause: the broker's failure, or slow (no confirm within CORRAL_SPOOL_AFTER_MS).";
    INGRESS_SPOOL_FAILURES = "corral_ingress_spool_failures_total", Counter, [], None,
        "Webhooks the PostgreSQL spool failed to commit (unreachable, refused, or past the request's deadline); each got 503 unless RabbitMQ confirmed it after all.";
    INGRESS_SPOOL_CONNECTED = "corral_ingress_spool_connected", Gauge, [], None,
        "1 while the PostgreSQL spool's last write or check succeeded, else 0; absent when no spool is configured.";
    INGRESS_SPOOL_BATCH_SIZE = "corral_ingress_spool_batch_size", Histogram, [], Some(BATCH_BUCKETS),
        "Webhooks per spool INSERT (those waiting while earlier spool writes committed go together).";
    INGRESS_BODY_BYTES_IN_FLIGHT = "corral_ingress_body_bytes_in_flight", Gauge, [], None,
        "Bytes of request bodies held (leased from CORRAL_MAX_IN_FLIGHT_BYTES) until their publish no longer needs them.";

    WORKER_MESSAGES = "corral_worker_messages_total", Counter, ["outcome"], None,
        "Webhooks committed to PostgreSQL, by outcome (stored, duplicate, quarantined); each webhook of an AMQP message counts, and a message that could not be unpacked counts once, as quarantined. A batch whose ack was lost is redelivered and counted again as duplicates.";
    WORKER_DELIVERIES = "corral_worker_deliveries_total", Counter, ["kind", "status", "reason", "reason_code"], None,
        "Delivery results newly stored, each result once (not a duplicate, nor the same result of a drop arriving again on its other channel), by kind, status (success, failure, other), reason (each of the twelve v1 reasons exactly as spelled, none, or other; for a documented reason_code, its v1 equivalent or other) and reason_code (each the provider documents, none, or other), counted after the commit.";
    WORKER_BATCH_SIZE = "corral_worker_batch_size", Histogram, [], Some(BATCH_BUCKETS),
        "Webhooks per committed batch (of the AMQP messages it holds, whole).";
    WORKER_DB_WRITE_SECONDS = "corral_worker_db_write_seconds", Histogram, [], Some(LATENCY_BUCKETS),
        "Time to write and commit one batch.";
    WORKER_END_TO_END_SECONDS = "corral_worker_end_to_end_seconds", Histogram, [], Some(E2E_BUCKETS),
        "Time from ingress receiving a webhook to its row being committed, per webhook.";
    WORKER_DB_ERRORS = "corral_worker_db_errors_total", Counter, ["kind"], None,
        "Failed batch writes, by kind: transient (retried, nothing acked) or data (batch split, culprit quarantined).";
    WORKER_UNROUTABLE = "corral_worker_unroutable_total", Counter, [], None,
        "Messages taken from the unroutable queue: the webhooks exchange could not route them to the main queue (its queue or binding was missing). They are stored like any other.";
    WORKER_ACK_FAILURES = "corral_worker_ack_failures_total", Counter, [], None,
        "Batches committed whose acknowledgement failed; RabbitMQ redelivers them and they count as duplicates.";
    WORKER_DRAIN_MESSAGES_IN_HAND = "corral_worker_messages_in_hand", Gauge, [], None,
        "AMQP messages (as CORRAL_PREFETCH counts them, each holding one webhook or more) received from RabbitMQ and not yet acknowledged.";
    WORKER_SPOOL_DEPTH = "corral_worker_spool_depth", Gauge, [], None,
        "Webhooks waiting in the PostgreSQL spool (spooled_webhooks) for a worker to store them; 0 except during a broker outage. Exact up to 100,000, PostgreSQL's estimate above.";
    WORKER_SPOOL_OLDEST_SECONDS = "corral_worker_spool_oldest_seconds", Gauge, [], None,
        "Age of the oldest webhook in the PostgreSQL spool, in seconds; 0 when it is empty.";
    WORKER_SPOOL_DRAINED = "corral_worker_spool_drained_total", Counter, [], None,
        "Webhooks taken from the PostgreSQL spool and committed (stored, duplicate or quarantined, also counted in corral_worker_messages_total).";
    WORKER_RESULT_EVENTS_PUBLISHED = "corral_worker_result_events_published_total", Counter, [], None,
        "Result events RabbitMQ confirmed on <prefix>.delivery-results (routed to at least one queue) and removed from the outbox; an event republished after a crash counts again (CORRAL_RESULT_EVENTS=true only).";
    WORKER_RESULT_EVENTS_REFUSED = "corral_worker_result_events_refused_total", Counter, ["cause"], None,
        "Result events RabbitMQ did not take, each time it refused one, by cause: nack (a bound queue refused it, e.g. full with x-overflow reject-publish; the other bound queues have it) or unroutable (no queue bound). Each stays in the outbox and is published again after a backoff (CORRAL_RESULT_EVENTS=true only).";
    WORKER_RESULT_EVENTS_PENDING = "corral_worker_result_events_pending", Gauge, [], None,
        "Result events waiting in the outbox (delivery_results_outbox) to be published, measured every 5 s by each worker; grows while no queue is bound to <prefix>.delivery-results or RabbitMQ is unreachable. Exact up to 100,000, PostgreSQL's estimate above (CORRAL_RESULT_EVENTS=true only).";
    WORKER_RESULT_EVENTS_OLDEST_SECONDS = "corral_worker_result_events_oldest_seconds", Gauge, [], None,
        "Age of the oldest result event in the outbox, in seconds; 0 when it is empty (CORRAL_RESULT_EVENTS=true only).";
    WORKER_EVENTS_UNPARTITIONED = "corral_worker_events_unpartitioned_total", Counter, [], None,
        "Webhooks quarantined because no partition of delivery_events holds their provider time (attempt_date, or a signed event's event_at): older than the oldest day kept (past CORRAL_RETENTION), or more than a week ahead of the worker's clock. `corral-worker quarantine reprocess` stores them once their day has a partition.";
    WORKER_PARTITIONS_DROPPED = "corral_worker_partitions_dropped_total", Counter, [], None,
        "Partitions of delivery_events (days, and the legacy partition of the events stored before migration V7) dropped because all their events are older than CORRAL_RETENTION.";
    WORKER_PRUNED_ROWS = "corral_worker_pruned_rows_total", Counter, ["table"], None,
        "Rows deleted by the data lifecycle's maintenance, by table: delivery_results_outbox (result events of dropped events), deliveries, provider_events and quarantined_webhooks past CORRAL_RETENTION, delivery_summary past CORRAL_SUMMARY_RETENTION.";
    WORKER_EVENT_DAYS_AHEAD = "corral_worker_event_days_ahead", Gauge, [], None,
        "Days after today (UTC) that delivery_events already has partitions for, as the maintenance last saw them (it keeps a week); below 1, events of the coming day would be quarantined: the maintenance is failing.";
    WORKER_SQS_QUEUE_MESSAGES = "corral_worker_sqs_queue_messages", Gauge, ["queue", "state"], None,
        "Messages in the SQS queue (queue=main) and in the dead-letter queue its redrive policy names (queue=dead_letter), by state: visible (waiting), in_flight (received, not deleted), delayed; SQS's approximate counts, read with GetQueueAttributes every 15 s by each worker (CORRAL_BUFFER=sqs only).";
    WORKER_SQS_OLDEST_RECEIVED_SECONDS = "corral_worker_sqs_oldest_received_seconds", Gauge, [], None,
        "How long the oldest message this worker received from SQS since the previous 15 s measurement had waited in the queue (receipt time minus SentTimestamp), in seconds; 0 when it received none. A proxy for CloudWatch's ApproximateAgeOfOldestMessage, which the SQS API does not expose: it shows only what is received, so a backlog no worker receives shows in corral_worker_sqs_queue_messages instead (CORRAL_BUFFER=sqs only).";
    SQS_REQUESTS = "corral_sqs_requests_total", Counter, ["operation"], None,
        "SQS API requests sent (each attempt, retries included), by operation; with CORRAL_BUFFER=sqs only.";
    SQS_BILLED_REQUESTS = "corral_sqs_billed_requests_total", Counter, ["operation"], None,
        "SQS requests as AWS bills them (each 64 KiB of a request's or answer's payload is one), estimated from HTTP body sizes: a request's when it is sent, a ReceiveMessage's answer when it comes; with CORRAL_BUFFER=sqs only.";
}

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
pub fn register_binary(binary: Binary) {
    gauge!(BUILD_INFO, "binary" => binary.as_str(), "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    gauge!(BROKER_CONNECTED).set(0.0);
    gauge!(BROKER_BLOCKED).set(0.0);
    gauge!(READY).set(0.0);
    zero_counters::<ConnectOutcome>(BROKER_CONNECT_ATTEMPTS, "outcome");
    match binary {
        Binary::Ingress => {
            zero_counters::<RejectReason>(INGRESS_REJECTED, "reason");
            zero_counters::<PublishFailure>(INGRESS_PUBLISH_FAILURES, "cause");
            for kind in WebhookKind::ALL {
                counter!(INGRESS_PUBLISHED, "kind" => kind.as_str()).increment(0);
            }
            gauge!(INGRESS_PUBLISHES_IN_FLIGHT).set(0.0);
            gauge!(INGRESS_BODY_BYTES_IN_FLIGHT).set(0.0);
        }
        Binary::Worker => {
            gauge!(DATABASE_CONNECTED).set(0.0);
            zero_counters::<MessageOutcome>(WORKER_MESSAGES, "outcome");
            zero_counters::<DbErrorKind>(WORKER_DB_ERRORS, "kind");
            counter!(WORKER_ACK_FAILURES).increment(0);
            counter!(WORKER_UNROUTABLE).increment(0);
            gauge!(WORKER_DRAIN_MESSAGES_IN_HAND).set(0.0);
            gauge!(WORKER_SPOOL_DEPTH).set(0.0);
            gauge!(WORKER_SPOOL_OLDEST_SECONDS).set(0.0);
            counter!(WORKER_SPOOL_DRAINED).increment(0);
            counter!(WORKER_EVENTS_UNPARTITIONED).increment(0);
            counter!(WORKER_PARTITIONS_DROPPED).increment(0);
            zero_counters::<PrunedTable>(WORKER_PRUNED_ROWS, "table");
            gauge!(WORKER_EVENT_DAYS_AHEAD).set(0.0);
            for labels in DeliveryLabels::expected() {
                worker_deliveries(labels, 0);
            }
        }
    }
}

fn zero_counters<L: Label>(name: &'static str, label: &'static str) {
    for value in L::all() {
        let value: &'static str = (*value).into();
        counter!(name, label => value).increment(0);
    }
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}
