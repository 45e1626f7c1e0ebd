//! The PostgreSQL spool, ingress's second durable path, against the real
//! RabbitMQ and PostgreSQL: every way the broker can refuse a webhook sends it
//! to `spooled_webhooks` and answers 200; a webhook both spooled and
//! published is one row; workers drain the spool side by side, with or
//! without a broker; the ingress role can only INSERT; and 503 (and an
//! unready `/readyz`) only when both paths are gone.
//!
//! Each test has its own database, spool role and AMQP prefix. Ingress and
//! worker run in the test's process, so they share one metrics recorder:
//! either's `/metrics` shows both.
//!
//! # Layout
//!
//! - `causes`: Each cause of a broker refusal spools the webhook, byte for
//!   byte, counted under its cause.
//! - `drain`: Workers drain the spool: several at once, without a broker, a
//!   round cut before its commit, and what cannot be typed into quarantine.
//! - `failover`: Spooling across a PostgreSQL failover: the spool and its
//!   drain reach the promoted standby, every webhook answered 200 stored once.
//! - `helpers`: What the spool tests share: a spooling ingress, the rows it
//!   wrote, a draining worker.
//! - `once`: A webhook spooled and also published, or spooled and sent again,
//!   is one row; so is each of many in both the spool and the queue.
//! - `outage`: Both paths down: 503, nothing stored; readiness follows
//!   either path; a request in flight at shutdown; no spool configured.
//! - `privileges`: The ingress role may INSERT into the spool and nothing else.
//! - `signed`: A signed webhook is spooled as kind `event`, and stored by
//!   the worker from there.

mod causes;
mod drain;
mod failover;
mod helpers;
mod once;
mod outage;
mod privileges;
mod signed;
