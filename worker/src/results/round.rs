//! One round of the relay: one transaction that locks a slice of the
//! outbox, publishes every event in it with all their confirms in flight,
//! and deletes the ones RabbitMQ confirmed and routed. The others stay.

use std::time::Duration;

use corral_contract::{
    envelope::Kind,
    results::{self, DeliveryResult},
};
use corral_runtime::{
    amqp::{self, AmqpError, Refused},
    telemetry::{labels::ResultRefusal, metrics},
};
use deadpool_postgres::Pool;
use futures_util::future::try_join_all;
use lapin::{Channel, Confirmation, PublisherConfirm};
use tokio::time::Instant;
use tokio_postgres::Row;

const SELECT: &str = include_str!("select.sql");
const DELETE: &str = "DELETE FROM delivery_results_outbox WHERE id = ANY($1)";

/// Where a round publishes and how long it may take.
pub(super) struct Target<'a> {
    pub channel: &'a Channel,
    pub exchange: &'a str,
    /// Events per round at most.
    pub limit: usize,
    /// Deadline of the database work.
    pub db_timeout: Duration,
    /// Deadline of the publishes, then of all their confirms.
    pub amqp_timeout: Duration,
}

/// What a round did.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// Events it locked and published.
    pub events: usize,
    /// Of those, confirmed, routed and deleted.
    pub confirmed: usize,
    /// Outbox ids of the events RabbitMQ refused, with why; they stay.
    pub refused: Vec<(i64, ResultRefusal)>,
    /// The link failed before every confirm came: the events without one
    /// stay, and the relay reconnects.
    pub lost: Option<AmqpError>,
}

/// Why a round left every event where it was.
#[derive(Debug, thiserror::Error)]
pub(super) enum RoundError {
    /// No pooled connection.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement or the COMMIT failed.
    #[error("the outbox round failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The round's database work outlived its deadline.
    #[error("no answer from the database within {0:?}")]
    Timeout(Duration),
    /// The link failed while the events were handed to it: every one
    /// stays, and the relay reconnects.
    #[error(transparent)]
    Link(AmqpError),
}

/// Locks the oldest events with outbox ids in `(after, upto]` that no
/// other relay holds, publishes them, and deletes those confirmed and routed.
pub(super) async fn round(
    target: &Target<'_>,
    pool: &Pool,
    after: i64,
    upto: i64,
) -> Result<Round, RoundError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let limit = i64::try_from(target.limit).unwrap_or(i64::MAX);
    let rows = within(target.db_timeout, tx.query(SELECT, &[&limit, &after])).await?;
    // Rows above `upto` are not published; the rollback or COMMIT releases them.
    let events: Vec<(i64, DeliveryResult)> = rows
        .iter()
        .map(|row| (row.get("outbox_id"), row))
        .take_while(|(id, _)| *id <= upto)
        .map(|(id, row)| (id, event(row)))
        .collect();
    if events.is_empty() {
        return Ok(Round::default());
    }
    let confirms = publish(target, &events).await.map_err(RoundError::Link)?;
    let (answers, lost) = answers(confirms, target.amqp_timeout).await;
    let mut round = Round {
        events: events.len(),
        lost,
        ..Round::default()
    };
    let mut confirmed = Vec::with_capacity(events.len());
    for ((outbox_id, _), verdict) in events.iter().zip(verdicts(&events, answers)) {
        match verdict {
            Verdict::Confirmed => confirmed.push(*outbox_id),
            Verdict::Refused(cause) => round.refused.push((*outbox_id, cause)),
            Verdict::Unanswered => {}
        }
    }
    // Without a COMMIT the transaction rolls back when dropped: the rows
    // stay, released.
    if !confirmed.is_empty() {
        let finish = async {
            tx.execute(DELETE, &[&confirmed]).await?;
            tx.commit().await
        };
        within(target.db_timeout, finish).await?;
    }
    round.confirmed = confirmed.len();
    metrics::worker_result_events_published(round.confirmed);
    for cause in ResultRefusal::ALL {
        let refused = round.refused.iter().filter(|(_, c)| c == cause).count();
        if refused > 0 {
            metrics::worker_result_events_refused(*cause, refused);
        }
    }
    Ok(round)
}

async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, RoundError> {
    Ok(tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| RoundError::Timeout(timeout))??)
}

/// Publishes every event at once (lapin queues all their frames for one
/// write, rather than one round trip to its I/O thread each), each
/// `mandatory` on the confirm-mode channel.
async fn publish(
    target: &Target<'_>,
    events: &[(i64, DeliveryResult)],
) -> Result<Vec<PublisherConfirm>, AmqpError> {
    let bodies: Vec<Vec<u8>> = events.iter().map(|(_, event)| event.body()).collect();
    let publishes = events.iter().zip(&bodies).map(|((_, event), body)| {
        amqp::publish_mandatory(
            target.channel,
            target.exchange.into(),
            event.routing_key().into(),
            body,
            amqp::result_properties(event),
        )
    });
    amqp::deadline(
        "publishing result events",
        target.amqp_timeout,
        try_join_all(publishes),
    )
    .await
}

/// Each confirm's answer, `None` for one that did not come: all of them
/// share one deadline, and once the link fails the rest get only what has
/// already arrived.
async fn answers(
    confirms: Vec<PublisherConfirm>,
    timeout: Duration,
) -> (Vec<Option<Confirmation>>, Option<AmqpError>) {
    let until = Instant::now() + timeout;
    let mut lost = None;
    let mut answers = Vec::with_capacity(confirms.len());
    for confirm in confirms {
        if lost.is_some() {
            answers.push(futures_util::FutureExt::now_or_never(confirm).and_then(Result::ok));
            continue;
        }
        let operation = "waiting for result events' confirms";
        match tokio::time::timeout_at(until, confirm).await {
            Ok(Ok(confirmation)) => answers.push(Some(confirmation)),
            Ok(Err(source)) => {
                lost = Some(AmqpError::Broker { operation, source });
                answers.push(None);
            }
            Err(_) => {
                lost = Some(AmqpError::Timeout { operation, timeout });
                answers.push(None);
            }
        }
    }
    (answers, lost)
}

/// What became of one event of the round.
enum Verdict {
    /// Acked and routed: it leaves the outbox.
    Confirmed,
    /// Nacked or returned: it stays, held back for a retry.
    Refused(ResultRefusal),
    /// No answer before the link failed: it stays.
    Unanswered,
}

/// Each event's verdict, by [`amqp::check_confirmations`] of the answered.
fn verdicts(events: &[(i64, DeliveryResult)], answers: Vec<Option<Confirmation>>) -> Vec<Verdict> {
    let ids: Vec<String> = events
        .iter()
        .map(|(_, event)| event.id.to_string())
        .collect();
    let (answered, confirmations): (Vec<usize>, Vec<Confirmation>) = answers
        .into_iter()
        .enumerate()
        .filter_map(|(i, answer)| Some((i, answer?)))
        .unzip();
    let checked =
        amqp::check_confirmations(answered.iter().map(|i| ids[*i].as_str()).zip(confirmations));
    let mut verdicts: Vec<Verdict> = events.iter().map(|_| Verdict::Unanswered).collect();
    for (i, checked) in answered.into_iter().zip(checked) {
        verdicts[i] = match checked {
            Ok(()) => Verdict::Confirmed,
            Err(Refused::Unroutable { .. }) => Verdict::Refused(ResultRefusal::Unroutable),
            // confirm_select is set before the channel is used, so
            // `NotConfirmed` cannot happen; were it to, nothing was promised.
            Err(Refused::Nacked | Refused::NotConfirmed) => Verdict::Refused(ResultRefusal::Nack),
        };
    }
    verdicts
}

/// The event of one row of `select.sql`.
fn event(row: &Row) -> DeliveryResult {
    DeliveryResult {
        version: results::VERSION,
        id: row.get("message_id"),
        event_id: row.get("event_id"),
        drop_id: row.get("drop_id"),
        foreign_id: row.get("foreign_id"),
        // The table's CHECK allows only these two.
        kind: match row.get::<_, &str>("kind") {
            "rvm" => Kind::Rvm,
            _ => Kind::Sms,
        },
        phone_number: row.get("phone_number"),
        status: row.get("status"),
        reason: row.get("reason"),
        dnc: row.get("dnc"),
        spam: row.get("spam"),
        product_cost: row.get("product_cost"),
        compliance_fee: row.get("compliance_fee"),
        tts_fee: row.get("tts_fee"),
        attempt_date: row.get("attempt_date"),
        received_at: row.get("received_at"),
        stored_at: row.get("stored_at"),
        latest: row.get("latest"),
        suppressions: row.get("suppressions"),
        new_suppressions: row.get("new_suppressions"),
        reason_code: row.get("reason_code"),
        event: row.get("event"),
        provider_event_id: row.get("provider_event_id"),
        contact_id: row.get("contact_id"),
        proof_of_delivery_url: row.get("proof_of_delivery_url"),
    }
}
