//! corral-worker against real RabbitMQ and PostgreSQL: typing, exactness,
//! exactly-once storage, ordering, quarantine, database and broker outages,
//! graceful shutdown.
//!
//! Messages are published straight to the test's exchange with the
//! properties ingress gives them (`amqp::properties` of the envelope's
//! `Metadata`), so each test controls exactly what the worker receives and
//! in which batch. Faults are
//! made with per-test means only (a [`TcpProxy`] in front of RabbitMQ or
//! PostgreSQL, a trigger or `ALLOW_CONNECTIONS` on the test's own database,
//! `pg_terminate_backend` of the worker's own backends, a primary and
//! synchronous standby of the test's own, killed and promoted), never by touching the shared
//! services.
//!
//! # Layout
//!
//! - `batches`: Envelope 2: each webhook of a message stored or quarantined
//!   on its own, an unreadable message quarantined whole, a message never
//!   split across transactions.
//! - `depth`: Nesting depth: a payload nested past the worker's cap is
//!   quarantined with the reason, and the queue keeps moving.
//! - `exactly_once`: Exactly-once storage: duplicates, redeliveries, competing
//!   workers.
//! - `failover`: A PostgreSQL failover while the worker writes: every
//!   webhook answered before and after on the new primary once, and a
//!   COMMIT in flight at the crash retried and stored once.
//! - `helpers`: What the worker tests share: settings, publishing as ingress,
//!   counting rows, metrics, slow commits, proxies and typed rows.
//! - `memory`: Memory bounded by the bytes in hand, behind a locked table.
//! - `ordering`: The newest state wins whatever the arrival order.
//! - `proptests`: Whatever a message holds, its batch commits and each of its
//!   webhooks is stored, a duplicate, or quarantined.
//! - `outages`: Database and broker outages lose nothing and ack nothing early.
//! - `quarantine`: What cannot be typed or stored is quarantined, and the rest
//!   of its batch stored.
//! - `schema`: A schema newer than the worker stops it, nothing acknowledged.
//! - `shutdown`: Graceful shutdown, with and without the database.
//! - `signed`: Drop Cowboy's signed webhooks through the signed route:
//!   results once by `event_id`, other events kept, receipts joined, a
//!   result on both channels counted once, suppressions by `reason_code`.
//! - `suppressions`: Numbers not to message again, from every class of
//!   payload, exactly once and whatever the arrival order; lifting one.
//! - `standby`: A synchronous standby away: nothing acknowledged until it has
//!   the batch.
//! - `tls`: Verified TLS to PostgreSQL.
//! - `typing`: Samples and every documented failure reason become exact rows.

mod batches;
mod depth;
mod exactly_once;
pub(crate) mod failover;
pub(crate) mod helpers;
mod memory;
mod ordering;
mod outages;
mod proptests;
mod quarantine;
mod schema;
mod shutdown;
pub(crate) mod signed;
mod standby;
mod suppressions;
mod tls;
mod typing;
