//! What `corral-ingress` and `corral-worker` agree on.
//!
//! corral takes Drop Cowboy's delivery-status webhooks off the internet
//! (`corral-ingress`), holds them in a RabbitMQ quorum queue, and lands each
//! one exactly once in PostgreSQL (`corral-worker`). Everything both sides of
//! the queue must agree on lives here, so that a contract changes in one place.
//!
//! # Layout
//!
//! - [`config`]: the settings both binaries share (broker, logging), as clap
//!   argument groups so every `CORRAL_*` variable is also a `--flag`.
//! - [`telemetry`]: tracing set-up and the one catalogue of metric names
//!   ([`telemetry::metrics`]); nothing else may name a metric.
//! - [`shutdown`]: turns SIGTERM / SIGINT into a cancellation token that is
//!   passed down, never global.
//! - [`amqp`]: connecting with deadlines, the topology (exchange, quorum queue,
//!   dead-letter path), the mandatory publish and what its confirm means.
//! - [`retry`]: the one retry policy (jittered exponential backoff, never
//!   giving up) and retrying until shutdown.
//! - [`error_chain`]: an error and its causes as one log line.
//! - [`envelope`]: the AMQP message contract between ingress and worker.
//! - [`json`]: the shape of body ingress accepts (a JSON object, nested at
//!   most so deep), checked in linear time whatever the nesting.
//! - [`provider`]: what Drop Cowboy documents (its failure reasons and
//!   reason codes), which the metric label sets need in every binary.
//! - `payload` (feature `payload`): the Drop Cowboy payload, typed strictly
//!   where it must be and tolerantly where the provider may vary; the worker
//!   and the load generator's verifier use it, ingress never does.
//! - `postgres` (feature `postgres`): PostgreSQL pools as both binaries make
//!   them (verified TLS, deadlines, a COMMIT cut short by a synchronous
//!   standby's wait failed rather than trusted).
//! - `sqs` (feature `sqs`): Amazon SQS as the buffer (`CORRAL_BUFFER=sqs`):
//!   the client both binaries make, the check of the queue, and the message
//!   attributes between them.
//! - [`spool`]: the spool's row (table, columns, the INSERT ingress runs),
//!   the contract between ingress and worker outside the queue.
//! - [`results`]: the result event the worker publishes for each newly
//!   stored webhook, the contract with the customer's own services.
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`) and the
//!   readiness state behind it.

pub mod admin;
pub mod amqp;
pub mod config;
pub mod envelope;
mod error;
pub mod json;
#[cfg(feature = "payload")]
pub mod payload;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod provider;
pub mod results;
pub mod retry;
pub mod shutdown;
pub mod spool;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod telemetry;

pub use error::chain as error_chain;
