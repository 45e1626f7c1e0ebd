//! The operator commands against real RabbitMQ and PostgreSQL — dead-letter
//! list and replay, quarantine list and re-processing — and the check that
//! the dashboard and the alerts in `deploy/` name only metrics the binaries
//! export.
//!
//! Dead letters are made the way RabbitMQ makes them: a message taken off the
//! test's main queue and rejected without requeue is dead-lettered (at least
//! once) into the test's dead-letter queue, with its `x-death` history.
//! Quarantine rows that a fix has made typeable are inserted as an older
//! version of the worker would have left them.
//!
//! # Layout
//!
//! - `conventions`: what every command does the same way, through the real
//!   binary: stdout and stderr, `--json`, `--limit`, exit codes, `--help`.
//! - `dead_letters`: `corral-worker dead-letters`: listing, dry runs and
//!   replays.
//! - `deploy_metrics`: deploy/: every corral_* metric the dashboard and the
//!   alerts name exists.
//! - `helpers`: What the operator-command tests share.
//! - `quarantine`: `corral-worker quarantine`: re-processing quarantined
//!   webhooks.

mod conventions;
mod dead_letters;
mod deploy_metrics;
mod helpers;
mod quarantine;
