//! The fault suite: both binaries as real processes under a steady load from
//! `corral-loadgen`, a fault injected mid-load, recovery awaited, and then the
//! one promise checked — every webhook answered 2xx is exactly one
//! `delivery_events` row, no row exists that was not sent — plus the
//! services having recovered by themselves.
//!
//! Scenarios restart shared services (RabbitMQ, PostgreSQL), so the suite
//! runs serially and never beside the parallel test suite; `scripts/test`
//! runs its short profile after the other tests.
//!
//! # Layout
//!
//! - [`cluster`]: The scenarios on a three-node RabbitMQ cluster of their
//!   own (a node killed, stopped or partitioned): they never touch the
//!   shared broker.
//! - [`outcome`]: How hard each scenario runs, what it found, and the table of
//!   docs/reliability.md.
//! - [`scenarios`]: The scenarios, one function each, and running one by name.
//! - [`stack`]: The processes of one scenario, on their own AMQP prefix and
//!   database, and the checks made after it.
//! - [`services`]: Stopping and starting the shared RabbitMQ and PostgreSQL.
//! - [`failover`]: `postgres-failover`, on a PostgreSQL primary and
//!   synchronous standby of its own: the primary killed, the standby promoted.
//! - [`sqs`]: The scenarios on SQS (`CORRAL_BUFFER=sqs`), each on its own
//!   queue on moto behind its own proxy: they never stop a shared service.

mod cluster;
mod failover;
mod outcome;
mod scenarios;
mod services;
mod sqs;
mod stack;
#[cfg(test)]
mod tests;

pub use self::{
    outcome::{Outcome, Profile, table},
    scenarios::{SCENARIOS, is_contained, run, selected, starts_services},
    services::ensure_services_up,
};
