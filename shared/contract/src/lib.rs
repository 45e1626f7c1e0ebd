//! The contract between `corral-ingress` and `corral-worker`, and with the
//! customer's services: what a message, a spooled row and a result event
//! hold. Types, constants and pure functions only: no I/O, no client, so a
//! contract changes in one place and reading it needs nothing else.
//!
//! # Layout
//!
//! - [`envelope`]: the AMQP message contract between ingress and worker.
//! - [`json`]: the shape of body ingress accepts (a JSON object, nested at
//!   most so deep), checked in linear time whatever the nesting.
//! - [`provider`]: what Drop Cowboy documents (its failure reasons and
//!   reason codes), which the metric label sets need in every binary.
//! - [`results`]: the result event the worker publishes for each newly
//!   stored webhook, the contract with the customer's own services.
//! - [`spool`]: the spool's row (table, columns, the INSERT ingress runs),
//!   the contract between ingress and worker outside the queue.

pub mod envelope;
pub mod json;
pub mod provider;
pub mod results;
pub mod spool;
