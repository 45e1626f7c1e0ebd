//! Quarantine: The worker quarantines a webhook it cannot type into `quarantined_webhooks`,
//! byte for byte. After a fix in the typing code, [`reprocess_quarantined`]
//! re-types each row with this version's [`corral_payload::parse`]
//! (a signed event's with [`corral_payload::parse_event`]):
//! in one transaction per batch of rows (locked with `SKIP LOCKED`, so two
//! operators cannot process a row twice), a row that now types is stored by
//! [`crate::store::store_in`] — the worker's own SQL — and deleted from the
//! quarantine; a row that still fails stays, with its error updated. With
//! `dry_run` the same work is done and rolled back, so the report says exactly
//! what a real run would do.
//!
//! Only a row the worker itself quarantined as a whole AMQP message (its
//! error begins with [`unpack::WHOLE_MESSAGE`], which no webhook's reason
//! does) is unpacked, and each of its webhooks re-typed; the row leaves the
//! quarantine once every one of them is stored, and otherwise stays whole,
//! its error naming the webhook that still fails (those already stored are
//! duplicates the next time). Every other row is one webhook, whatever its
//! body looks like: a client may post a body shaped like an envelope, whose
//! entries would carry an id, a `received_at` and a kind of its choosing.
//!
//! The one exception is the operator's to make: an envelope-2 message a
//! worker older than 0.2 took for one webhook (an upgrade that rolled
//! ingress first) looks exactly like such a post. `as_messages`, for rows the
//! operator names by id, unpacks those rows as messages; one that still
//! fails is then marked a whole message, so later runs unpack it too.

use chrono::{DateTime, Utc};
use corral_contract::envelope::Envelope;
use corral_runtime::postgres::text::storable;
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::OpsError;
use crate::{
    config::WorkerConfig,
    db,
    source::unpack,
    store::{self, Incoming},
};

const SELECT_FOR_REPROCESS: &str = include_str!("select_for_reprocess.sql");
const LIST_QUARANTINED: &str = include_str!("list_quarantined.sql");
const DELETE_QUARANTINED: &str = include_str!("delete_quarantined.sql");
const UPDATE_QUARANTINE_ERRORS: &str = include_str!("update_quarantine_errors.sql");

/// A row of `quarantined_webhooks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// `quarantined_webhooks.id`.
    pub id: i64,
    /// The ingress id, if the message had one.
    pub message_id: Option<Uuid>,
    /// The routing key it came with.
    pub routing_key: Option<String>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// Why it was (or still is) quarantined.
    pub error: String,
    /// When ingress received it, if known.
    pub received_at: Option<DateTime<Utc>>,
    /// When the worker quarantined it.
    pub quarantined_at: DateTime<Utc>,
}

impl Quarantined {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get("id"),
            message_id: row.get("message_id"),
            routing_key: row.get("routing_key"),
            body: row.get("body"),
            error: row.get("error"),
            received_at: row.get("received_at"),
            quarantined_at: row.get("quarantined_at"),
        }
    }

    /// Whether the worker quarantined the row as a whole AMQP message
    /// ([`unpack::WHOLE_MESSAGE`]) rather than as one webhook: only such a
    /// row is unpacked without the operator naming it.
    pub fn is_whole_message(&self) -> bool {
        self.error.starts_with(unpack::WHOLE_MESSAGE)
    }

    /// What to type again: a whole message's webhooks (or, with
    /// `as_message`, those of a body that unpacks), else the one webhook.
    fn retyping(&self, as_message: bool) -> Retyping {
        if !(as_message || self.is_whole_message()) {
            return Retyping::Webhook(self.incoming());
        }
        match unpack::webhooks(&self.body) {
            Ok(webhooks) => Retyping::Message(webhooks),
            Err(_) if self.is_whole_message() => Retyping::Unreadable,
            Err(_) => Retyping::Webhook(self.incoming()),
        }
    }

    /// Why a row typed as one webhook still fails: `error`, and when its
    /// body has the shape of an envelope, why that is not unpacked.
    fn webhook_failure(&self, error: String) -> String {
        if unpack::webhooks(&self.body).is_err() {
            return error;
        }
        format!(
            "{error}; the body is shaped like a corral envelope-2 message but was received as \
             one webhook, so it is not unpacked (only an operator can say otherwise: \
             quarantine reprocess --as-messages --id ID)"
        )
    }

    /// The message as the worker got it, to type it again.
    fn incoming(&self) -> Incoming {
        Incoming {
            body: self.body.clone(),
            routing_key: self.routing_key.clone().unwrap_or_default(),
            envelope: Envelope {
                message_id: self.message_id,
                // Closer to the truth than "now" for a message without one.
                received_at: Some(self.received_at.unwrap_or(self.quarantined_at)),
            },
        }
    }
}

/// What a quarantined row holds to type again.
enum Retyping {
    /// One webhook: the row's body.
    Webhook(Incoming),
    /// The webhooks of the envelope-2 message the row's body is.
    Message(Vec<Incoming>),
    /// A message quarantined whole that still does not unpack: it keeps
    /// its reason.
    Unreadable,
}

/// Which quarantined rows a re-processing takes.
#[derive(Debug, Clone)]
pub struct ReprocessOptions {
    /// Do the work and roll it back: the report says what a real run would do.
    pub dry_run: bool,
    /// At most this many rows; all when `None`.
    pub limit: Option<u64>,
    /// Only these ids; all when empty.
    pub ids: Vec<i64>,
    /// Rows per transaction.
    pub batch: u32,
    /// Unpack the rows named in `ids` whose body is an envelope-2 message,
    /// as if the worker had quarantined them whole: for messages a worker
    /// older than 0.2 took for one webhook. Only with `ids`: the body's shape
    /// alone never decides it.
    pub as_messages: bool,
}

impl Default for ReprocessOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            limit: None,
            ids: Vec::new(),
            batch: 100,
            as_messages: false,
        }
    }
}

/// What happened (or, in a dry run, would happen) to one quarantined row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It types now and is stored (or was already stored: a duplicate); the
    /// quarantine row is deleted.
    Resolved,
    /// It still cannot be stored; the row stays with this error.
    StillFailing(String),
}

/// What a re-processing did.
#[derive(Debug, Clone, Default)]
pub struct ReprocessReport {
    /// Whether everything was rolled back.
    pub dry_run: bool,
    /// New `delivery_events` rows.
    pub stored: usize,
    /// Rows that typed but were already stored (same fingerprint).
    pub duplicate: usize,
    /// Every row examined, by id, with its verdict.
    pub rows: Vec<(i64, Verdict)>,
}

impl ReprocessReport {
    /// Rows that left the quarantine (or would have).
    pub fn resolved(&self) -> usize {
        self.rows.len() - self.still_failing()
    }

    /// Rows that are still quarantined.
    pub fn still_failing(&self) -> usize {
        self.rows
            .iter()
            .filter(|(_, verdict)| matches!(verdict, Verdict::StillFailing(_)))
            .count()
    }
}

pub(super) fn ops_pool(config: &WorkerConfig) -> Result<Pool, OpsError> {
    config
        .db
        .target()
        .and_then(|target| db::pool(&target, 1))
        .map_err(|source| OpsError::Database {
            context: "building the database pool",
            source,
        })
}

pub(super) async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, OpsError> {
    pool.get().await.map_err(|err| OpsError::Database {
        context: "connecting to PostgreSQL",
        source: err.into(),
    })
}

/// The oldest `limit` quarantined webhooks.
pub async fn list_quarantined(
    config: &WorkerConfig,
    limit: u64,
) -> Result<Vec<Quarantined>, OpsError> {
    let pool = ops_pool(config)?;
    let client = client(&pool).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(LIST_QUARANTINED, &[&limit])
        .await
        .map_err(OpsError::database("listing quarantined webhooks"))?;
    Ok(rows.iter().map(Quarantined::from_row).collect())
}

/// Re-types quarantined webhooks (see the module documentation).
pub async fn reprocess_quarantined(
    config: &WorkerConfig,
    options: &ReprocessOptions,
) -> Result<ReprocessReport, OpsError> {
    reprocess_quarantined_with(config, options, &mut |_| {}).await
}

/// [`reprocess_quarantined`], calling `on_batch` with the report so far after
/// each batch is committed (or rolled back, in a dry run): a long run's
/// running count, and what was done when a later batch fails.
pub async fn reprocess_quarantined_with(
    config: &WorkerConfig,
    options: &ReprocessOptions,
    on_batch: &mut (dyn FnMut(&ReprocessReport) + Send),
) -> Result<ReprocessReport, OpsError> {
    if options.as_messages && options.ids.is_empty() {
        return Err(OpsError::Usage(
            "--as-messages unpacks only the rows named with --id: a body shaped like an \
             envelope may be a webhook a client posted"
                .to_owned(),
        ));
    }
    let pool = ops_pool(config)?;
    let mut client = client(&pool).await?;
    let mut report = ReprocessReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    let mut remaining = options.limit.unwrap_or(u64::MAX);
    // Keyset pagination: a row that still fails is not read again.
    let mut after: i64 = 0;
    while remaining > 0 {
        let take = i64::try_from(remaining.min(u64::from(options.batch.max(1)))).unwrap_or(1);
        let mut tx = client
            .transaction()
            .await
            .map_err(OpsError::database("starting a transaction"))?;
        let rows = tx
            .query(SELECT_FOR_REPROCESS, &[&after, &take, &options.ids])
            .await
            .map_err(OpsError::database("reading quarantined webhooks"))?;
        if rows.is_empty() {
            break;
        }
        let quarantined: Vec<Quarantined> = rows.iter().map(Quarantined::from_row).collect();
        after = quarantined.last().map_or(after, |row| row.id);
        reprocess(&mut tx, &quarantined, config, options, &mut report).await?;
        if options.dry_run {
            tx.rollback()
                .await
                .map_err(OpsError::database("rolling back the dry run"))?;
        } else {
            tx.commit()
                .await
                .map_err(OpsError::database("committing re-processed webhooks"))?;
        }
        on_batch(&report);
        remaining = remaining.saturating_sub(quarantined.len() as u64);
    }
    Ok(report)
}

/// Re-types one batch of rows in `tx`: stores what types, deletes the rows
/// that are resolved and updates the errors of the others.
async fn reprocess(
    tx: &mut deadpool_postgres::Transaction<'_>,
    quarantined: &[Quarantined],
    config: &WorkerConfig,
    options: &ReprocessOptions,
    report: &mut ReprocessReport,
) -> Result<(), OpsError> {
    let Retype {
        incoming,
        origins,
        mut still_failing,
    } = Retype::of(quarantined, options.as_messages);
    let stored = store::store_in(tx, &incoming, config.results.result_events)
        .await
        .map_err(OpsError::database("storing re-typed webhooks"))?;
    for (at, error) in stored.refused {
        let (index, place) = origins[at];
        // The first failure of a message is its reason; it stays whole, and
        // a whole message.
        still_failing[index].get_or_insert_with(|| match place {
            Some(place) => format!(
                "{}; webhook {place} of it still fails: {error}",
                unpack::WHOLE_MESSAGE
            ),
            None => quarantined[index].webhook_failure(error),
        });
    }
    let mut resolved_ids = Vec::new();
    let mut failed_ids = Vec::new();
    let mut failed_errors = Vec::new();
    for (row, failure) in quarantined.iter().zip(still_failing) {
        match failure {
            None => {
                resolved_ids.push(row.id);
                report.rows.push((row.id, Verdict::Resolved));
            }
            Some(error) => {
                let error = storable(&error).into_owned();
                failed_ids.push(row.id);
                failed_errors.push(error.clone());
                report.rows.push((row.id, Verdict::StillFailing(error)));
            }
        }
    }
    tx.execute(DELETE_QUARANTINED, &[&resolved_ids])
        .await
        .map_err(OpsError::database("deleting re-processed quarantine rows"))?;
    tx.execute(UPDATE_QUARANTINE_ERRORS, &[&failed_ids, &failed_errors])
        .await
        .map_err(OpsError::database("updating quarantine errors"))?;
    report.stored += stored.outcome.stored;
    report.duplicate += stored.outcome.duplicate;
    Ok(())
}

/// The webhooks a batch of rows holds to re-type.
struct Retype {
    /// Every webhook, in order.
    incoming: Vec<Incoming>,
    /// For each, the row it came from and its place in that row's message
    /// (`None` for a row that is one webhook).
    origins: Vec<(usize, Option<usize>)>,
    /// Per row, why it still fails, for the whole messages that still do
    /// not unpack; filled in by the re-typing.
    still_failing: Vec<Option<String>>,
}

impl Retype {
    fn of(quarantined: &[Quarantined], as_messages: bool) -> Self {
        let mut retype = Self {
            incoming: Vec::new(),
            origins: Vec::new(),
            still_failing: vec![None; quarantined.len()],
        };
        for (index, row) in quarantined.iter().enumerate() {
            match row.retyping(as_messages) {
                Retyping::Webhook(webhook) => {
                    retype.origins.push((index, None));
                    retype.incoming.push(webhook);
                }
                Retyping::Message(webhooks) => {
                    for (place, webhook) in webhooks.into_iter().enumerate() {
                        retype.origins.push((index, Some(place)));
                        retype.incoming.push(webhook);
                    }
                }
                Retyping::Unreadable => retype.still_failing[index] = Some(row.error.clone()),
            }
        }
        retype
    }
}
