//! `--verify`: after a run, wait until the pipeline has drained, then prove
//! that every webhook ingress answered 2xx is stored exactly once — a
//! callback in `delivery_events`, a signed event by its `event_id` (a result
//! in `delivery_events.event_id`, any other event in
//! `provider_events.event_id`) — that nothing else of the run is there, and
//! that `deliveries` shows the newest stored event of every `drop_id` (and,
//! for a drop reported on both channels, the callback's `foreign_id`).
//!
//! # How a row is matched to a webhook
//!
//! Independently of how the worker recognises duplicates: each distinct body
//! a run sends has its own `(drop_id, attempt_date)` (the generator makes
//! them so), and the body's fingerprint is made again from the same bytes
//! with the worker's own canonical form
//! ([`corral_payload::parse`]). A row with the key and the
//! fingerprint of a sent body is a copy of it; with the key but another
//! fingerprint it is *mismatched* (the content changed on the way); a row of
//! the run with a key never sent is *unexpected*. Per webhook: no copy is
//! *lost* if ingress answered it 2xx, more than one copy is *duplicated*
//! (whatever ingress answered, and however often it was sent).
//!
//! A signed event is matched by its `event_id` alone, whatever the worker
//! made of its bytes: the provider retries it with a new signature and
//! perhaps re-serialised, and it must still be one row. Every `event_id` of a
//! run names the run, the item and the body
//! ([`RunId::event_id`](crate::RunId::event_id)), so a row of the run with an
//! `event_id` never sent is *unexpected*, and one in the other table (a
//! result in `provider_events`, or under another `drop_id`) *mismatched*. A
//! database whose worker keeps no signed events (no
//! `delivery_events.event_id` or `provider_events`) cannot hold them: each
//! answered 2xx is lost, at once, without waiting for it.
//!
//! # Finding the run's rows
//!
//! Every `drop_id` of a run starts with the run id's ten hex digits, so the
//! run's rows are one range scan of the `drop_id` index:
//! `drop_id >= '<run>' AND drop_id < '<run>g'`. That range holds exactly the
//! run's hex `drop_id`s wherever digits sort before `a`–`f` and those before
//! `g` (C, and every common collation); the verifier checks this on the
//! database and otherwise falls back to an exact `left(drop_id, 10)` scan.
//! The run's `provider_events` are found the same way on `event_id`.
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
//! - [`check`](mod@check): One pass over the run's rows: events, copies, latest state,
//!   quarantine.
//! - [`signed`]: What the database can hold of signed events, the run's
//!   `provider_events`, and the drops reported on both channels.
//! - [`scope`]: Selecting the run's rows by `drop_id` (or `event_id`), on
//!   the index where the collation allows.

mod check;
mod scope;
mod signed;

use std::{
    fmt,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use corral_payload as payload;
use serde::Serialize;
use tokio_postgres::{NoTls, types::ToSql};

use self::{
    check::check,
    scope::Scope,
    signed::{BothChannels, both_channels, keeps_signed_events},
};
use super::traffic::{Destination, Event, Sent, Shape};

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
    /// Distinct webhooks sent at least once (a signed event once, however
    /// often it was delivered).
    pub webhooks: u64,
    /// Of those, signed events (distinct `event_id`s).
    pub signed_events: u64,
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
    /// Drops whose result was answered 2xx on both channels (the callback
    /// and the status event): each must be one `deliveries` row.
    pub both_channels: u64,
    /// Of those, drops whose `deliveries` row does not hold the callback's
    /// `foreign_id` (what only the callback brings was not merged in).
    pub unmerged: u64,
    /// A few of the problems, for a first look.
    pub examples: Vec<String>,
}

impl Verification {
    /// Nothing lost, duplicated, unexpected, changed, stale, quarantined or
    /// left unmerged.
    pub fn is_ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.mismatched == 0
            && self.stale_latest == 0
            && self.quarantined == 0
            && self.unmerged == 0
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
        if self.signed_events > 0 {
            writeln!(
                f,
                "              signed events {}; drops on both channels {}, unmerged {}",
                self.signed_events, self.both_channels, self.unmerged
            )?;
        }
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

/// One distinct body sent (a signed event once, whatever its deliveries),
/// and the rows found for it.
#[derive(Debug)]
struct Expected {
    item: u64,
    /// Its index in the item's bodies.
    body: usize,
    attempt_date: DateTime<Utc>,
    /// A callback's: matched by `(drop_id, attempt_date, fingerprint)`.
    fingerprint: Option<[u8; 32]>,
    /// A signed event's: matched by its `event_id`.
    event: Option<Event>,
    confirmed: bool,
    copies: u32,
}

impl Expected {
    /// Whether a row can be expected for it in a database that keeps
    /// signed events (`signed`) or not.
    fn storable(&self, signed: bool) -> bool {
        self.event.is_none() || signed
    }
}

/// What the verifier compares the database with.
#[derive(Debug)]
struct Plan {
    /// Every distinct body sent, sorted by item, then body.
    expected: Vec<Expected>,
    /// The drops answered 2xx on both channels, sorted by item.
    both: Vec<BothChannels>,
    /// Whether the database keeps signed events.
    signed: bool,
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
    let drops = Scope::choose(&client, run_id.hex()).await?;
    let events = Scope::choose(&client, run_id.event_prefix()).await?;
    let signed = keeps_signed_events(&client).await?;
    let (count_sql, count_params) = count_rows((&drops, &events), signed);
    let count_statement = client.prepare(&count_sql).await?;

    let mut plan = Plan {
        expected: expected(sent),
        both: both_channels(sent),
        signed,
    };
    let storable = plan.expected.iter().filter(|e| e.storable(signed)).count() as u64;
    // Answered 2xx, and never to be there: the worker keeps no signed events.
    let cannot_arrive = plan
        .expected
        .iter()
        .filter(|e| e.confirmed && !e.storable(signed))
        .count() as u64;

    let mut last_count = None;
    let mut changed_at = Instant::now();
    let mut checked_at_count = None;
    let result = loop {
        let count: i64 = client
            .query_one(&count_statement, &count_params)
            .await?
            .get(0);
        let now = Instant::now();
        if last_count != Some(count) {
            last_count = Some(count);
            changed_at = now;
        }
        let still = now - changed_at;
        let drained = (u64::try_from(count) == Ok(storable) && still >= SETTLE.min(options.quiet))
            || still >= options.quiet;
        let timed_out = now >= deadline;
        if (drained && checked_at_count != Some(count)) || timed_out {
            checked_at_count = Some(count);
            let mut verification = check(&client, (&drops, &events), run_id, &mut plan).await?;
            if verification.lost <= cannot_arrive || timed_out {
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

/// The statement counting the run's rows (in `provider_events` too where
/// the database keeps `signed` events), and its parameters.
fn count_rows<'a>(
    (drops, events): (&'a Scope, &'a Scope),
    signed: bool,
) -> (String, Vec<&'a (dyn ToSql + Sync)>) {
    let mut sql = format!(
        "SELECT (SELECT count(*) FROM delivery_events WHERE {})",
        drops.condition("drop_id", 1)
    );
    let mut params = drops.params();
    if signed {
        sql += &format!(
            " + (SELECT count(*) FROM provider_events WHERE {})",
            events.condition("event_id", params.len() + 1)
        );
        params.extend(events.params());
    }
    (sql, params)
}

/// Every distinct body sent, with a callback's fingerprint, sorted by item
/// (the bodies of one item in their order).
fn expected(sent: &Sent) -> Vec<Expected> {
    sent.webhooks()
        .map(|sent| Expected {
            item: sent.item,
            body: sent.body_index,
            attempt_date: sent.webhook.attempt_date,
            fingerprint: sent.webhook.event.is_none().then(|| {
                payload::parse(&sent.webhook.body)
                    .expect("the generator sends only valid webhooks")
                    .fingerprint
                    .0
            }),
            event: sent.webhook.event,
            confirmed: sent.confirms > 0,
            copies: 0,
        })
        .collect()
}
