//! corral's integration and end-to-end suites, against the real RabbitMQ and
//! PostgreSQL.
//!
//! # Layout
//!
//! - `tests/it/`: the one test binary, `it`, with a module per area (its
//!   `main.rs` lists them). They sit here rather than beside each service
//!   because the kit they use depends on both services.
//! - This library: empty; a package needs a target of its own.
