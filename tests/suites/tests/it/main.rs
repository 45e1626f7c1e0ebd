//! corral's integration and end-to-end tests: real RabbitMQ, real PostgreSQL,
//! each test under its own AMQP prefix and in its own database. What they
//! share comes from `corral-testkit`; a module's own helpers live in its
//! `helpers.rs`.
//!
//! # Layout
//!
//! - `smoke`: the whole path in one process.
//! - `brokers`: several broker addresses in `CORRAL_AMQP_URL`.
//! - `docs`: the docs match the code: settings, metrics, links, and the
//!   SQL cookbook's queries run on known webhooks.
//! - `ingress`: the HTTP contract, publishing, broker loss, shutdown.
//! - `worker`: typing, exactly-once storage, ordering, quarantine, outages.
//! - `e2e`: both binaries as real processes.
//! - `loadgen`: a short `corral-loadgen --verify` run: zero lost, zero
//!   duplicated.
//! - `lifecycle`: `delivery_events` partitioned by day, the retention
//!   (`CORRAL_RETENTION`) over many simulated days, the migration of an
//!   existing table, and the cookbook's plans on partitions.
//! - `ops`: the operator commands (dead-letter replay, quarantine
//!   re-processing).
//! - `spool`: ingress's PostgreSQL spool, and the worker draining it.
//! - `summary`: the hourly outcome and spend summary: `corral-worker
//!   report` and the roll-up.
//! - `results`: result events (`CORRAL_RESULT_EVENTS`) as a customer's
//!   service bound to `<prefix>.delivery-results` receives them.
//! - `sqs`: SQS as the buffer (`CORRAL_BUFFER=sqs`), against the local moto
//!   server.
//! - `shards`: several queues (`CORRAL_AMQP_QUEUES`): spread, a customer's
//!   binding, dead letters, the unroutable path, and changing the number.
//! - `topology`: what both binaries declare on the broker, read back from
//!   it, and an older corral's unroutable queue upgraded.

mod brokers;
mod docs;
mod e2e;
mod ingress;
mod lifecycle;
mod loadgen;
mod ops;
mod results;
mod shards;
mod smoke;
mod spool;
mod sqs;
mod summary;
mod topology;
mod worker;
