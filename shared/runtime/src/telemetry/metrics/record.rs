//! The functions the binaries call as things happen, one per metric (or
//! per related pair), each writing only catalogued names with closed labels.

// The one place allowed to name metrics, with the catalogue beside it.
#![allow(clippy::disallowed_macros)]

use std::time::Duration;

use ::metrics::{counter, gauge, histogram};

use super::*;
use crate::telemetry::labels::{
    ConnectOutcome, DbErrorKind, DeliveryLabels, MessageOutcome, PrunedTable, PublishFailure,
    RejectReason, ResultRefusal, SpoolCause, SqsMessageState, SqsQueue,
};

/// Broker link up or down.
pub fn broker_connected(connected: bool) {
    gauge!(BROKER_CONNECTED).set(flag(connected));
}

/// Broker flow control (connection.blocked / unblocked).
pub fn broker_blocked(blocked: bool) {
    gauge!(BROKER_BLOCKED).set(flag(blocked));
}

/// One attempt to (re)connect and declare the topology.
pub fn broker_connect_attempt(outcome: ConnectOutcome) {
    counter!(BROKER_CONNECT_ATTEMPTS, "outcome" => outcome.as_str()).increment(1);
}

/// `count` newly stored events with these labels.
pub fn worker_deliveries(labels: DeliveryLabels, count: u64) {
    counter!(WORKER_DELIVERIES, "kind" => labels.kind, "status" => labels.status, "reason" => labels.reason, "reason_code" => labels.reason_code)
        .increment(count);
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
pub fn ingress_request(route: WebhookKind, status: u16, elapsed: Duration) {
    let route = route.as_str();
    counter!(INGRESS_REQUESTS, "route" => route, "status" => status_label(status)).increment(1);
    histogram!(INGRESS_REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

/// A webhook refused before publishing.
pub fn ingress_rejected(reason: RejectReason) {
    counter!(INGRESS_REJECTED, "reason" => reason.as_str()).increment(1);
}

/// A webhook the broker confirmed.
pub fn ingress_published(kind: WebhookKind, confirm: Duration) {
    counter!(INGRESS_PUBLISHED, "kind" => kind.as_str()).increment(1);
    histogram!(INGRESS_PUBLISH_CONFIRM_SECONDS).record(confirm.as_secs_f64());
}

/// A webhook the broker did not take.
pub fn ingress_publish_failed(cause: PublishFailure) {
    counter!(INGRESS_PUBLISH_FAILURES, "cause" => cause.as_str()).increment(1);
}

/// One AMQP message put on the wire with `webhooks` in it.
pub fn ingress_publish_batch(webhooks: usize) {
    histogram!(INGRESS_PUBLISH_BATCH_SIZE).record(webhooks as f64);
}

/// Publishes awaiting confirmation.
pub fn ingress_in_flight(count: usize) {
    gauge!(INGRESS_PUBLISHES_IN_FLIGHT).set(count as f64);
}

/// Bytes of request bodies leased went up (or down) `by`.
pub fn ingress_body_bytes_changed(by: f64) {
    gauge!(INGRESS_BODY_BYTES_IN_FLIGHT).increment(by);
}

/// A committed and acknowledged batch.
pub fn worker_batch(size: usize, write: Duration) {
    histogram!(WORKER_BATCH_SIZE).record(size as f64);
    histogram!(WORKER_DB_WRITE_SECONDS).record(write.as_secs_f64());
}

/// Webhooks by outcome.
pub fn worker_messages(outcome: MessageOutcome, count: usize) {
    counter!(WORKER_MESSAGES, "outcome" => outcome.as_str()).increment(count as u64);
}

/// Receive-to-commit latency of one webhook.
pub fn worker_end_to_end(seconds: f64) {
    histogram!(WORKER_END_TO_END_SECONDS).record(seconds);
}

/// A failed batch write.
pub fn worker_db_error(kind: DbErrorKind) {
    counter!(WORKER_DB_ERRORS, "kind" => kind.as_str()).increment(1);
}

/// A webhook quarantined because no partition holds its provider time.
pub fn worker_event_unpartitioned() {
    counter!(WORKER_EVENTS_UNPARTITIONED).increment(1);
}

/// Partitions of `delivery_events` dropped past the retention.
pub fn worker_partitions_dropped(count: u64) {
    counter!(WORKER_PARTITIONS_DROPPED).increment(count);
}

/// Rows the retention deleted from `table`.
pub fn worker_pruned_rows(table: PrunedTable, count: u64) {
    counter!(WORKER_PRUNED_ROWS, "table" => table.as_str()).increment(count);
}

/// Days ahead of today that `delivery_events` has partitions for.
pub fn worker_event_days_ahead(days: f64) {
    gauge!(WORKER_EVENT_DAYS_AHEAD).set(days);
}

/// A committed batch whose ack did not reach the broker.
pub fn worker_ack_failed() {
    counter!(WORKER_ACK_FAILURES).increment(1);
}

/// A message taken from the unroutable queue.
pub fn worker_unroutable() {
    counter!(WORKER_UNROUTABLE).increment(1);
}

/// Messages held between delivery and ack went up (or down) `by`; every
/// consuming session adds its own, so the gauge is their sum.
pub fn worker_in_hand_changed(by: f64) {
    gauge!(WORKER_DRAIN_MESSAGES_IN_HAND).increment(by);
}

/// Registers the spool's series at zero: ingress has them only when a
/// spool is configured, so their absence says there is none.
pub fn register_spool() {
    zero_counters::<SpoolCause>(INGRESS_SPOOLED, "cause");
    counter!(INGRESS_SPOOL_FAILURES).increment(0);
    gauge!(INGRESS_SPOOL_CONNECTED).set(0.0);
}

/// A webhook the spool committed, and why it went there.
pub fn ingress_spooled(cause: SpoolCause) {
    counter!(INGRESS_SPOOLED, "cause" => cause.as_str()).increment(1);
}

/// Webhooks the spool did not commit by their request's deadline.
pub fn ingress_spool_failed(webhooks: usize) {
    counter!(INGRESS_SPOOL_FAILURES).increment(webhooks as u64);
}

/// The spool reachable or not.
pub fn ingress_spool_connected(connected: bool) {
    gauge!(INGRESS_SPOOL_CONNECTED).set(flag(connected));
}

/// One spool INSERT with `webhooks` in it.
pub fn ingress_spool_batch(webhooks: usize) {
    histogram!(INGRESS_SPOOL_BATCH_SIZE).record(webhooks as f64);
}

/// What the spool holds, as the worker last read it.
pub fn worker_spool(depth: u64, oldest_seconds: f64) {
    gauge!(WORKER_SPOOL_DEPTH).set(depth as f64);
    gauge!(WORKER_SPOOL_OLDEST_SECONDS).set(oldest_seconds);
}

/// The SQS operations corral calls, each registered at zero where a binary
/// uses SQS; anything else counts as `other`.
pub const SQS_OPERATIONS: &[&str] = &[
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "DeleteMessage",
    "DeleteMessageBatch",
    "GetQueueAttributes",
    "GetQueueUrl",
    "ReceiveMessage",
    "SendMessage",
    "SendMessageBatch",
    "other",
];

/// Registers the SQS request series at zero: a binary has them only with
/// `CORRAL_BUFFER=sqs`.
pub fn register_sqs() {
    for operation in SQS_OPERATIONS {
        counter!(SQS_REQUESTS, "operation" => *operation).increment(0);
        counter!(SQS_BILLED_REQUESTS, "operation" => *operation).increment(0);
    }
}

/// One SQS request sent; `operation` is one of [`SQS_OPERATIONS`].
pub fn sqs_request(operation: &'static str) {
    counter!(SQS_REQUESTS, "operation" => operation).increment(1);
}

/// An SQS request answered, billed as `billed` requests.
pub fn sqs_billed(operation: &'static str, billed: u64) {
    counter!(SQS_BILLED_REQUESTS, "operation" => operation).increment(billed);
}

/// Webhooks drained from the spool in one committed batch.
pub fn worker_spool_drained(webhooks: usize) {
    counter!(WORKER_SPOOL_DRAINED).increment(webhooks as u64);
}

/// Registers the result-event series at zero: the worker has them only with
/// `CORRAL_RESULT_EVENTS=true`, so their absence says events are off.
pub fn register_result_events() {
    counter!(WORKER_RESULT_EVENTS_PUBLISHED).increment(0);
    zero_counters::<ResultRefusal>(WORKER_RESULT_EVENTS_REFUSED, "cause");
    worker_result_events_outbox(0, 0.0);
}

/// Result events RabbitMQ refused this time, and why.
pub fn worker_result_events_refused(cause: ResultRefusal, events: usize) {
    counter!(WORKER_RESULT_EVENTS_REFUSED, "cause" => cause.as_str()).increment(events as u64);
}

/// Result events confirmed and removed from the outbox.
pub fn worker_result_events_published(events: usize) {
    counter!(WORKER_RESULT_EVENTS_PUBLISHED).increment(events as u64);
}

/// What the result-event outbox holds, as the worker last read it.
pub fn worker_result_events_outbox(pending: u64, oldest_seconds: f64) {
    gauge!(WORKER_RESULT_EVENTS_PENDING).set(pending as f64);
    gauge!(WORKER_RESULT_EVENTS_OLDEST_SECONDS).set(oldest_seconds);
}

/// Registers the SQS series of the worker at zero: it has them only with
/// `CORRAL_BUFFER=sqs` (the dead-letter queue's once a redrive policy names
/// one).
pub fn register_sqs_worker() {
    worker_sqs_queue(SqsQueue::Main, 0, 0, 0);
    gauge!(WORKER_SQS_OLDEST_RECEIVED_SECONDS).set(0.0);
}

/// The message counts of one SQS queue, as SQS last reported them.
pub fn worker_sqs_queue(queue: SqsQueue, visible: u64, in_flight: u64, delayed: u64) {
    for (state, count) in [
        (SqsMessageState::Visible, visible),
        (SqsMessageState::InFlight, in_flight),
        (SqsMessageState::Delayed, delayed),
    ] {
        gauge!(WORKER_SQS_QUEUE_MESSAGES, "queue" => queue.as_str(), "state" => state.as_str())
            .set(count as f64);
    }
}

/// How long the oldest message received since the last measurement had waited.
pub fn worker_sqs_oldest_received(seconds: f64) {
    gauge!(WORKER_SQS_OLDEST_RECEIVED_SECONDS).set(seconds);
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
