//! `--verify`: after a run, wait until the pipeline has drained, then prove
//! that every webhook ingress answered 2xx is in `delivery_events` exactly
//! once, that nothing else of the run is there, and that `deliveries` shows
//! the newest stored event of every `drop_id`.
//!
//! # How a row is matched to a webhook
//!
//! Independently of how the worker recognises duplicates: each distinct body
//! a run sends has its own `(drop_id, attempt_date)` (the generator makes
//! them so), and the body's fingerprint is made again from the same bytes
//! with the worker's own canonical form
//! ([`corral_shared::payload::parse`]). A row with the key and the
//! fingerprint of a sent body is a copy of it; with the key but another
//! fingerprint it is *mismatched* (the content changed on the way); a row of
//! the run with a key never sent is *unexpected*. Per webhook: no copy is
//! *lost* if ingress answered it 2xx, more than one copy is *duplicated*
//! (whatever ingress answered, and however often it was sent).
//!
//! # Finding the run's rows
//!
//! Every `drop_id` of a run starts with the run id's ten hex digits, so the
//! run's rows are one range scan of the `drop_id` index:
//! `drop_id >= '<run>' AND drop_id < '<run>g'`. That range holds exactly the
//! run's hex `drop_id`s wherever digits sort before `a`–`f` and those before
//! `g` (C, and every common collation); the verifier checks this on the
//! database and otherwise falls back to an exact `left(drop_id, 10)` scan.
//!
//! # When the pipeline has drained
//!
//! The run's row count is polled. It has drained when the count equals the
//! number of distinct bodies sent and has stayed so for half a second (late
//! duplicates would show), or when it has not moved for the quiet period
//! (some bodies, never answered 2xx, will never come). Then the exact check
//! runs. If it finds a lost webhook and time is left, the verifier keeps
//! waiting (a stalled worker may still deliver it) and checks again when the
//! count has moved and settled, or at the deadline.
//!
//! # Layout
//!
//! - [`check`]: One pass over the run's rows: events, copies, latest state,
//!   quarantine.
//! - [`scope`]: Selecting the run's rows by `drop_id`, on the index where the
//!   collation allows.

mod check;
mod scope;

use std::{
    fmt,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use corral_shared::payload;
use serde::Serialize;
use tokio_postgres::NoTls;

use self::{check::check, scope::Scope};
use super::traffic::Sent;

/// How long to wait for the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Give up waiting for the pipeline to drain after this long and report
    /// what is there.
    pub timeout: Duration,
    /// The pipeline counts as drained once the run's row count has not
    /// moved for this long.
    pub quiet: Duration,
    /// How often the row count is read.
    pub poll: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            quiet: Duration::from_secs(3),
            poll: Duration::from_millis(200),
        }
    }
}

/// With every body sent stored, how long the count must hold still.
const SETTLE: Duration = Duration::from_millis(500);

/// How many problems are listed by name.
const EXAMPLES: usize = 10;

/// Why the verification could not be done (not: what it found).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No connection to the database (the URL is not repeated: it may hold a password).
    #[error("connecting to the verification database")]
    Connect(#[source] tokio_postgres::Error),
    /// A query failed.
    #[error("querying the verification database")]
    Query(#[from] tokio_postgres::Error),
}

/// What the database holds for a run, compared with what was sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verification {
    /// The pipeline had drained when the final check ran (false: the
    /// deadline came first).
    pub drained: bool,
    /// Seconds spent waiting and checking.
    pub waited_secs: f64,
    /// Distinct webhooks sent at least once.
    pub webhooks: u64,
    /// Of those, answered 2xx at least once: each must be stored exactly once.
    pub confirmed: u64,
    /// Answered 2xx and stored exactly once.
    pub stored_once: u64,
    /// Answered 2xx and not stored.
    pub lost: u64,
    /// Stored more than once (answered 2xx or not).
    pub duplicated: u64,
    /// Rows beyond the first of the duplicated webhooks.
    pub extra_rows: u64,
    /// Never answered 2xx, stored all the same (allowed: e.g. a publish that
    /// was confirmed just after ingress gave up waiting).
    pub unconfirmed_stored: u64,
    /// Never answered 2xx and not stored (allowed).
    pub unconfirmed_missing: u64,
    /// Rows of this run that match no webhook sent.
    pub unexpected: u64,
    /// Rows with the `drop_id` and `attempt_date` of a webhook sent but
    /// another fingerprint: the content changed on the way.
    pub mismatched: u64,
    /// `drop_id`s whose `deliveries` row is missing or is not their newest
    /// stored event (by `attempt_date`, then fingerprint), or a `deliveries`
    /// row of the run with no event at all.
    pub stale_latest: u64,
    /// `quarantined_webhooks` rows holding this run's id: the generator
    /// sends only valid webhooks, so each is a worker fault.
    pub quarantined: u64,
    /// A few of the problems, for a first look.
    pub examples: Vec<String>,
}

impl Verification {
    /// Nothing lost, duplicated, unexpected, changed, stale or quarantined.
    pub fn is_ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.mismatched == 0
            && self.stale_latest == 0
            && self.quarantined == 0
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  verify      {} after {:.1} s: {} webhooks sent, {} answered 2xx, {} of them stored exactly once",
            if self.drained {
                "drained"
            } else {
                "NOT drained (deadline)"
            },
            self.waited_secs,
            self.webhooks,
            self.confirmed,
            self.stored_once
        )?;
        writeln!(
            f,
            "              lost {}  duplicated {} (+{} rows)  unexpected {}  mismatched {}  stale latest {}  quarantined {}",
            self.lost,
            self.duplicated,
            self.extra_rows,
            self.unexpected,
            self.mismatched,
            self.stale_latest,
            self.quarantined
        )?;
        writeln!(
            f,
            "              not answered 2xx: {} stored, {} not",
            self.unconfirmed_stored, self.unconfirmed_missing
        )?;
        for example in &self.examples {
            writeln!(f, "              - {example}")?;
        }
        writeln!(
            f,
            "              {}",
            if self.is_ok() { "OK" } else { "FAILED" }
        )
    }
}

/// One distinct body sent, and the rows found for it.
#[derive(Debug)]
struct Expected {
    item: u64,
    attempt_date: DateTime<Utc>,
    fingerprint: [u8; 32],
    confirmed: bool,
    copies: u32,
}

/// Waits (at most `options.timeout`) for the pipeline to drain, then compares
/// what `db_url` holds for the run with what was sent.
pub async fn verify(
    db_url: &str,
    sent: &Sent,
    options: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let (client, connection) = tokio_postgres::connect(db_url, NoTls)
        .await
        .map_err(VerifyError::Connect)?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let run_id = sent.run_id();
    let scope = Scope::choose(&client, run_id).await?;
    let count_sql = format!(
        "SELECT count(*) FROM delivery_events WHERE {}",
        scope.condition()
    );
    let count_statement = client.prepare(&count_sql).await?;

    let mut expected = expected(sent);
    let webhooks = expected.len() as u64;

    let mut last_count = None;
    let mut changed_at = Instant::now();
    let mut checked_at_count = None;
    let result = loop {
        let count: i64 = client
            .query_one(&count_statement, &scope.params())
            .await?
            .get(0);
        let now = Instant::now();
        if last_count != Some(count) {
            last_count = Some(count);
            changed_at = now;
        }
        let still = now - changed_at;
        let drained = (u64::try_from(count) == Ok(webhooks) && still >= SETTLE.min(options.quiet))
            || still >= options.quiet;
        let timed_out = now >= deadline;
        if (drained && checked_at_count != Some(count)) || timed_out {
            checked_at_count = Some(count);
            let mut verification = check(&client, &scope, run_id, &mut expected).await?;
            if verification.lost == 0 || timed_out {
                verification.drained = drained;
                verification.waited_secs = started.elapsed().as_secs_f64();
                break verification;
            }
            // Some confirmed webhook is not there yet: wait for more rows.
        }
        tokio::time::sleep(options.poll).await;
    };
    drop(client);
    let _ = connection.await;
    Ok(result)
}

/// Every distinct body sent, with its fingerprint, sorted by item (the
/// bodies of one item in their order).
fn expected(sent: &Sent) -> Vec<Expected> {
    sent.webhooks()
        .map(|sent| Expected {
            item: sent.item,
            attempt_date: sent.webhook.attempt_date,
            fingerprint: payload::parse(&sent.webhook.body)
                .expect("the generator sends only valid webhooks")
                .fingerprint
                .0,
            confirmed: sent.confirms > 0,
            copies: 0,
        })
        .collect()
}
