//! What both corral binaries run on: their shared settings, telemetry and
//! the one metric catalogue, shutdown, retry, the admin listener, and the
//! clients of the buffer and the database (AMQP, SQS, PostgreSQL). The
//! message contract itself is `corral-contract`'s.
//!
//! # Layout
//!
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`) and the
//!   readiness state behind it.
//! - [`amqp`]: connecting with deadlines, the topology (exchange, quorum queue,
//!   dead-letter path), the mandatory publish and what its confirm means.
//! - [`config`]: the settings both binaries share (broker, logging), as clap
//!   argument groups so every `CORRAL_*` variable is also a `--flag`.
//! - `postgres` (feature `postgres`): PostgreSQL pools as both binaries make
//!   them (verified TLS, deadlines, a COMMIT cut short by a synchronous
//!   standby's wait failed rather than trusted).
//! - [`retry`]: the one retry policy (jittered exponential backoff, never
//!   giving up) and retrying until shutdown.
//! - [`shutdown`]: turns SIGTERM / SIGINT into a cancellation token that is
//!   passed down, never global.
//! - `sqs` (feature `sqs`): Amazon SQS as the buffer (`CORRAL_BUFFER=sqs`):
//!   the client both binaries make, the check of the queue, and the message
//!   attributes between them.
//! - [`telemetry`]: tracing set-up and the one catalogue of metric names
//!   ([`telemetry::metrics`]); nothing else may name a metric.
//! - [`error_chain`]: an error and its causes as one log line.

pub mod admin;
pub mod amqp;
pub mod config;
mod error;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod retry;
pub mod shutdown;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod telemetry;

pub use error::chain as error_chain;
