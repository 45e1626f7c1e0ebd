//! Operator commands: the dead-letter queue and the quarantine, the two places
//! where corral keeps a webhook it could not store on its own until an
//! operator has fixed the cause.
//!
//! # Dead letters
//!
//! RabbitMQ dead-letters a message after `x-delivery-limit` failed deliveries
//! (a worker crashing on it, a channel dying mid-batch, again and again) into
//! `<prefix>.dead-letter`. [`list_dead_letters`] shows them and
//! [`replay_dead_letters`] publishes them back to `<prefix>.webhooks` with
//! their original routing key and properties.
//!
//! Never losing one: a message is taken with `basic.get` and leaves the
//! dead-letter queue only by an ack, and that ack is sent only after RabbitMQ
//! has confirmed the copy published where the message goes next: the webhooks
//! exchange (replay, `mandatory`, so an unroutable copy counts as a failure) or
//! the tail of the dead-letter queue itself (a message only looked at, or one
//! whose replay failed). Nothing is ever put back with a `nack`/requeue,
//! because RabbitMQ 4 counts such returns against a quorum queue's delivery
//! limit (20 by default) and the dead-letter queue has nowhere further to send
//! a message. A crash between a confirm and its ack leaves at worst a
//! duplicate, which the worker stores once (webhooks are de-duplicated by
//! fingerprint). Only the messages present when the command starts are read,
//! so the ones it moves to the tail are not read twice.
//!
//! # Quarantine
//!
//! The worker quarantines a webhook it cannot type into `quarantined_webhooks`,
//! byte for byte. After a fix in the typing code, [`reprocess_quarantined`]
//! re-types each row with this version's [`corral_shared::payload::parse`]:
//! in one transaction per batch of rows (locked with `SKIP LOCKED`, so two
//! operators cannot process a row twice), a row that now types is stored by
//! [`crate::store::store_in`] — the worker's own SQL — and deleted from the
//! quarantine; a row that still fails stays, with its error updated. With
//! `dry_run` the same work is done and rolled back, so the report says exactly
//! what a real run would do.

use std::{io::Write, time::Duration};

use chrono::{DateTime, Utc};
use corral_shared::{
    amqp::{self, AmqpError, Topology, deadline},
    config::AmqpSettings,
    envelope::Envelope,
};
use deadpool_postgres::Pool;
use lapin::{
    BasicProperties, Channel, Connection, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use uuid::Uuid;

use crate::{
    config::{DeadLetterCommand, QuarantineCommand, WorkerConfig},
    db,
    store::{self, Incoming},
};

const SELECT_FOR_REPROCESS: &str = include_str!("ops/select_for_reprocess.sql");
const LIST_QUARANTINED: &str = include_str!("ops/list_quarantined.sql");
const DELETE_QUARANTINED: &str = include_str!("ops/delete_quarantined.sql");
const UPDATE_QUARANTINE_ERRORS: &str = include_str!("ops/update_quarantine_errors.sql");

/// Header a message gets when it is moved to the tail of the dead-letter queue
/// without an `x-death` header to remember its routing key (a message someone
/// published there by hand): the routing key it will be replayed with.
pub const ROUTING_KEY_HEADER: &str = "x-corral-routing-key";

/// Broker-owned header that counts deliveries from the queue a message was
/// in; it means nothing on a copy, so a replay drops it.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// What can go wrong in an operator command.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The broker could not be reached or refused an operation.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// A queue or exchange the command works on is not there: a wrong
    /// `CORRAL_AMQP_PREFIX`, or corral never ran against this broker.
    #[error("{name} does not exist on the broker (is CORRAL_AMQP_PREFIX right?)")]
    Missing {
        /// The queue or exchange.
        name: String,
        /// The broker's refusal.
        #[source]
        source: AmqpError,
    },
    /// RabbitMQ did not take a replayed copy; the dead-letter copy was kept.
    #[error(
        "RabbitMQ did not take the replayed message {message_id} ({cause}); it stays in the \
         dead-letter queue. {replayed} message(s) were replayed before it"
    )]
    NotReplayed {
        /// The message's `message_id`, or `-`.
        message_id: String,
        /// Nack, unroutable, timeout or a broker error.
        cause: String,
        /// Messages replayed (confirmed and removed) before this one.
        replayed: usize,
    },
    /// Moving a message to the tail of the dead-letter queue failed; it is
    /// still unacknowledged, so RabbitMQ puts it back when the connection closes.
    #[error(
        "could not move message {message_id} to the tail of the dead-letter queue ({cause}); \
         it was not acknowledged, so RabbitMQ keeps it"
    )]
    NotKept {
        /// The message's `message_id`, or `-`.
        message_id: String,
        /// Nack, unroutable, timeout or a broker error.
        cause: String,
    },
    /// A database operation failed; the transaction was rolled back.
    #[error("{context}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// PostgreSQL's or the pool's error.
        #[source]
        source: anyhow::Error,
    },
}

impl OpsError {
    fn database(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |err| Self::Database {
            context,
            source: err.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------

/// A dead-lettered message, as an operator needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The `message_id` property (the id ingress answered), if any.
    pub message_id: Option<String>,
    /// The routing key it was first published with, and will be replayed with.
    pub routing_key: String,
    /// Why RabbitMQ dead-lettered it (`x-first-death-reason`: `delivery_limit`,
    /// `rejected`, `expired`, `maxlen`), if the message says.
    pub reason: Option<String>,
    /// The queue it died in (`x-first-death-queue`), if the message says.
    pub queue: Option<String>,
    /// How many times it was dead-lettered (the sum of the `x-death` counts).
    pub deaths: i64,
    /// When ingress received it (`x-received-at`, else `timestamp`).
    pub received_at: Option<DateTime<Utc>>,
    /// The webhook body, byte for byte.
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// Reads what the message's properties and headers say.
    pub fn read(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers().as_ref();
        let get = |name: &str| headers.and_then(|table| table.inner().get(name));
        let deaths: Vec<&FieldTable> = match get("x-death") {
            Some(AMQPValue::FieldArray(array)) => array
                .as_slice()
                .iter()
                .filter_map(|value| match value {
                    AMQPValue::FieldTable(table) => Some(table),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        // `x-death` is newest first; its routing keys are those the message
        // was published with (corral sets no dead-letter routing key).
        let death_routing_key = deaths
            .iter()
            .filter_map(|death| match death.inner().get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(text),
                _ => None,
            })
            .next_back();
        let routing_key = death_routing_key
            .or_else(|| get(ROUTING_KEY_HEADER).and_then(text))
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let reason = get("x-first-death-reason").and_then(text).or_else(|| {
            deaths
                .last()
                .and_then(|death| death.inner().get("reason"))
                .and_then(text)
        });
        let queue = get("x-first-death-queue").and_then(text).or_else(|| {
            deaths
                .last()
                .and_then(|death| death.inner().get("queue"))
                .and_then(text)
        });
        let count = deaths
            .iter()
            .filter_map(|death| death.inner().get("count").and_then(integer))
            .sum();
        Self {
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            routing_key,
            reason,
            queue,
            deaths: count,
            received_at: Envelope::read(&delivery.properties).received_at,
            body: delivery.data.clone(),
        }
    }

    /// The `message_id`, or `-` for a message without one.
    pub fn id(&self) -> &str {
        self.message_id.as_deref().unwrap_or("-")
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only report what would be replayed.
    pub dry_run: bool,
    /// At most this many; all when `None`.
    pub limit: Option<u64>,
    /// Only messages with one of these `message_id`s; all when empty.
    pub message_ids: Vec<String>,
}

/// What a dead-letter command did.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterReport {
    /// Messages in the dead-letter queue when the command started.
    pub queued_at_start: u32,
    /// The messages selected: replayed when `replayed`, else only looked at
    /// (`list`, `--dry-run`) and still in the dead-letter queue.
    pub letters: Vec<DeadLetter>,
    /// Whether `letters` were replayed.
    pub replayed: bool,
    /// Messages read that did not match `--message-id`; still in the queue.
    pub passed_over: usize,
}

/// Shows up to `limit` dead-lettered messages, removing none.
pub async fn list_dead_letters(
    settings: &AmqpSettings,
    limit: u64,
) -> Result<DeadLetterReport, OpsError> {
    walk_dead_letters(
        settings,
        &ReplayOptions {
            dry_run: true,
            limit: Some(limit),
            message_ids: Vec::new(),
        },
    )
    .await
}

/// Publishes dead-lettered messages back to the webhooks exchange (see the
/// module documentation for why none can be lost). On a failure it stops: the
/// message that failed stays in the dead-letter queue, and the error says how
/// many were replayed before it.
pub async fn replay_dead_letters(
    settings: &AmqpSettings,
    options: &ReplayOptions,
) -> Result<DeadLetterReport, OpsError> {
    walk_dead_letters(settings, options).await
}

/// A confirm-mode channel on its own connection, and the names.
struct DeadLetterSession {
    connection: Connection,
    channel: Channel,
    topology: Topology,
    timeout: Duration,
}

impl DeadLetterSession {
    /// Connects and checks (passively: an operator command never creates
    /// topology) that the queues and the exchange exist.
    async fn open(settings: &AmqpSettings) -> Result<(Self, u32), OpsError> {
        let timeout = settings.connect_timeout();
        let connection = amqp::connect(settings, "corral-worker ops").await?;
        let session = Self {
            channel: deadline("opening a channel", timeout, connection.create_channel()).await?,
            connection,
            topology: Topology::new(settings),
            timeout,
        };
        match session.check().await {
            Ok(count) => Ok((session, count)),
            Err(err) => {
                session.close().await;
                Err(err)
            }
        }
    }

    async fn check(&self) -> Result<u32, OpsError> {
        let passive_queue = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let dead_letters = self.topology.dead_letter_queue();
        let declared = deadline(
            "checking the dead-letter queue",
            self.timeout,
            self.channel.queue_declare(
                dead_letters.as_str().into(),
                passive_queue,
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|source| OpsError::Missing {
            name: dead_letters,
            source,
        })?;
        let exchange = self.topology.exchange();
        deadline(
            "checking the webhooks exchange",
            self.timeout,
            self.channel.exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|source| OpsError::Missing {
            name: exchange,
            source,
        })?;
        deadline(
            "confirm mode",
            self.timeout,
            self.channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(declared.message_count())
    }

    async fn close(self) {
        let _ = tokio::time::timeout(
            self.timeout,
            self.connection.close(200, "corral-worker ops done".into()),
        )
        .await;
    }

    /// Publishes with `mandatory` and waits for the confirm; `Err` says why
    /// RabbitMQ did not take the message.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), String> {
        let confirm = deadline(
            "publishing",
            self.timeout,
            self.channel.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            ),
        )
        .await
        .map_err(|err| amqp::error_chain(&err))?;
        let confirmation = deadline("waiting for the confirm", self.timeout, confirm)
            .await
            .map_err(|err| amqp::error_chain(&err))?;
        if !confirmation.is_ack() {
            return Err("nacked by the broker (is the queue full?)".into());
        }
        if confirmation.take_message().is_some() {
            return Err(format!(
                "unroutable: no queue is bound to {exchange} for {routing_key:?}"
            ));
        }
        Ok(())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), String> {
        match deadline(
            "acknowledging",
            self.timeout,
            delivery.acker.ack(BasicAckOptions::default()),
        )
        .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err("the channel closed before the ack".into()),
            Err(err) => Err(amqp::error_chain(&err)),
        }
    }

    /// Moves a message to the tail of the dead-letter queue: publishes a copy
    /// there through the default exchange (so nothing else bound to the
    /// dead-letter exchange gets one), then acks the original.
    async fn keep(&self, delivery: &Delivery, letter: &DeadLetter) -> Result<(), OpsError> {
        let has_death = delivery
            .properties
            .headers()
            .as_ref()
            .is_some_and(|headers| headers.contains_key("x-death"));
        let properties = if has_death {
            delivery.properties.clone()
        } else {
            with_headers(&delivery.properties, |headers| {
                headers.insert(
                    ROUTING_KEY_HEADER.into(),
                    AMQPValue::LongString(letter.routing_key.as_str().into()),
                );
            })
        };
        let failed = |cause: String| OpsError::NotKept {
            message_id: letter.id().to_owned(),
            cause,
        };
        self.publish_confirmed(
            "",
            &self.topology.dead_letter_queue(),
            &delivery.data,
            properties,
        )
        .await
        .map_err(failed)?;
        // The copy is safe; a failed ack only leaves a duplicate.
        self.ack(delivery).await.map_err(failed)
    }

    /// Publishes a message back to the webhooks exchange, then acks the
    /// dead-letter copy.
    async fn replay(&self, delivery: &Delivery, letter: &DeadLetter) -> Result<(), String> {
        let properties = without_headers(
            &delivery.properties,
            &[DELIVERY_COUNT_HEADER, ROUTING_KEY_HEADER],
        );
        self.publish_confirmed(
            &self.topology.exchange(),
            &letter.routing_key,
            &delivery.data,
            properties,
        )
        .await?;
        if let Err(cause) = self.ack(delivery).await {
            // The replayed copy is in the main queue; the dead-letter copy
            // comes back when the connection closes and is a duplicate.
            tracing::warn!(
                message_id = letter.id(),
                cause,
                "replayed, but the dead-letter copy could not be acknowledged; it will be replayed again as a duplicate"
            );
        }
        Ok(())
    }
}

fn with_headers(
    properties: &BasicProperties,
    edit: impl FnOnce(&mut FieldTable),
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    edit(&mut headers);
    properties.clone().with_headers(headers)
}

fn without_headers(properties: &BasicProperties, names: &[&str]) -> BasicProperties {
    match properties.headers() {
        Some(headers) if names.iter().any(|name| headers.contains_key(name)) => {
            let mut kept = FieldTable::default();
            for (name, value) in headers {
                if !names.contains(&name.as_str()) {
                    kept.insert(name.clone(), value.clone());
                }
            }
            properties.clone().with_headers(kept)
        }
        _ => properties.clone(),
    }
}

async fn walk_dead_letters(
    settings: &AmqpSettings,
    options: &ReplayOptions,
) -> Result<DeadLetterReport, OpsError> {
    let (session, queued_at_start) = DeadLetterSession::open(settings).await?;
    let mut report = DeadLetterReport {
        queued_at_start,
        replayed: !options.dry_run,
        ..Default::default()
    };
    let result = walk(&session, options, &mut report).await;
    session.close().await;
    result.map(|()| report)
}

async fn walk(
    session: &DeadLetterSession,
    options: &ReplayOptions,
    report: &mut DeadLetterReport,
) -> Result<(), OpsError> {
    let queue = session.topology.dead_letter_queue();
    let limit = options.limit.unwrap_or(u64::MAX);
    // Only the messages there at the start: those moved to the tail are not
    // read again.
    for _ in 0..report.queued_at_start {
        if report.letters.len() as u64 >= limit {
            break;
        }
        let got = deadline(
            "basic.get on the dead-letter queue",
            session.timeout,
            session
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
        )
        .await?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        let letter = DeadLetter::read(&delivery);
        let selected = options.message_ids.is_empty()
            || letter
                .message_id
                .as_ref()
                .is_some_and(|id| options.message_ids.contains(id));
        if selected && !options.dry_run {
            if let Err(cause) = session.replay(&delivery, &letter).await {
                // Put it back where it was (the tail), then stop: whatever
                // refused this one would refuse the next.
                session.keep(&delivery, &letter).await?;
                return Err(OpsError::NotReplayed {
                    message_id: letter.id().to_owned(),
                    cause,
                    replayed: report.letters.len(),
                });
            }
            tracing::info!(
                message_id = letter.id(),
                routing_key = letter.routing_key,
                "replayed a dead-lettered message"
            );
        } else {
            session.keep(&delivery, &letter).await?;
        }
        if selected {
            report.letters.push(letter);
        } else {
            report.passed_over += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Quarantine
// ---------------------------------------------------------------------------

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
}

impl Default for ReprocessOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            limit: None,
            ids: Vec::new(),
            batch: 100,
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
        self.stored + self.duplicate
    }

    /// Rows that are still quarantined.
    pub fn still_failing(&self) -> usize {
        self.rows.len() - self.resolved()
    }
}

fn ops_pool(config: &WorkerConfig) -> Result<Pool, OpsError> {
    config
        .database()
        .and_then(|target| db::pool(&target, 1))
        .map_err(|source| OpsError::Database {
            context: "building the database pool",
            source,
        })
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, OpsError> {
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
        let incoming: Vec<Incoming> = quarantined.iter().map(Quarantined::incoming).collect();
        let stored = store::store_in(&mut tx, &incoming)
            .await
            .map_err(OpsError::database("storing re-typed webhooks"))?;

        let mut still_failing = vec![None; quarantined.len()];
        for (index, error) in stored.refused {
            still_failing[index] = Some(error);
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
        if options.dry_run {
            tx.rollback()
                .await
                .map_err(OpsError::database("rolling back the dry run"))?;
        } else {
            tx.commit()
                .await
                .map_err(OpsError::database("committing re-processed webhooks"))?;
        }
        report.stored += stored.outcome.stored;
        report.duplicate += stored.outcome.duplicate;
        remaining = remaining.saturating_sub(quarantined.len() as u64);
    }
    Ok(report)
}

/// The first `max` characters of a body, lossily decoded, on one line: what
/// an operator needs to recognise a webhook in a listing.
pub fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        line.push('…');
    }
    line
}

// ---------------------------------------------------------------------------
// The commands as `corral-worker` runs them: the work above, then a report.
// ---------------------------------------------------------------------------

/// Runs `corral-worker dead-letters …` and writes its report to `out`
/// (tab-separated columns, one message per line, then a summary line).
pub async fn dead_letters_command(
    command: DeadLetterCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let queue = Topology::new(&config.amqp).dead_letter_queue();
    let (report, verb) = match command {
        DeadLetterCommand::List { limit } => {
            (list_dead_letters(&config.amqp, limit).await?, "listed")
        }
        DeadLetterCommand::Replay {
            dry_run,
            limit,
            message_ids,
        } => {
            let options = ReplayOptions {
                dry_run,
                limit,
                message_ids,
            };
            let verb = if dry_run { "would replay" } else { "replayed" };
            (replay_dead_letters(&config.amqp, &options).await?, verb)
        }
    };
    writeln!(
        out,
        "# {queue}: {} message(s) queued at start",
        report.queued_at_start
    )?;
    writeln!(
        out,
        "# message_id\trouting_key\treason\tdeaths\treceived_at\tbody"
    )?;
    for letter in &report.letters {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            letter.id(),
            letter.routing_key,
            letter.reason.as_deref().unwrap_or("-"),
            letter.deaths,
            letter
                .received_at
                .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
            preview(&letter.body, 120),
        )?;
    }
    let kept = if report.replayed {
        String::new()
    } else {
        "; none removed".to_owned()
    };
    writeln!(
        out,
        "# {verb} {} message(s){kept}; {} passed over",
        report.letters.len(),
        report.passed_over
    )?;
    Ok(())
}

/// Runs `corral-worker quarantine …` and writes its report to `out`.
pub async fn quarantine_command(
    command: QuarantineCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List { limit } => {
            let rows = list_quarantined(config, limit).await?;
            writeln!(
                out,
                "# id\tmessage_id\trouting_key\treceived_at\tquarantined_at\terror\tbody"
            )?;
            for row in &rows {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    row.id,
                    row.message_id
                        .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                    row.routing_key.as_deref().unwrap_or("-"),
                    row.received_at
                        .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
                    row.quarantined_at.to_rfc3339(),
                    preview(row.error.as_bytes(), 200),
                    preview(&row.body, 120),
                )?;
            }
            writeln!(out, "# listed {} row(s)", rows.len())?;
        }
        QuarantineCommand::Reprocess {
            dry_run,
            limit,
            ids,
            batch,
        } => {
            let options = ReprocessOptions {
                dry_run,
                limit,
                ids,
                batch,
            };
            let report = reprocess_quarantined(config, &options).await?;
            writeln!(out, "# id\tverdict")?;
            for (id, verdict) in &report.rows {
                match verdict {
                    Verdict::Resolved => writeln!(out, "{id}\tstored")?,
                    Verdict::StillFailing(error) => {
                        writeln!(
                            out,
                            "{id}\tstill failing: {}",
                            preview(error.as_bytes(), 200)
                        )?;
                    }
                }
            }
            let mode = if report.dry_run {
                " (dry run: nothing was changed)"
            } else {
                ""
            };
            writeln!(
                out,
                "# {} row(s): {} stored, {} already stored (duplicates), {} still quarantined{mode}",
                report.rows.len(),
                report.stored,
                report.duplicate,
                report.still_failing(),
            )?;
        }
    }
    Ok(())
}
