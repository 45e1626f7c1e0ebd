//! The RabbitMQ sink: a round is one envelope-2 message, published with
//! publisher confirms.
//!
//! A quorum-queue publish costs the broker the same Raft round and fsync
//! whatever it carries, so the broker's work per webhook falls with every
//! webhook that shares a message. Each kind has its own lane (a message holds
//! webhooks of one kind, so its routing key is that kind's, as with one
//! webhook per message: a queue a customer bound to one kind still gets all
//! of that kind and nothing else); the lanes share the
//! `CORRAL_PUBLISH_CONCURRENCY` publish slots, and a message carries up to
//! `CORRAL_PUBLISH_BATCH_MAX` webhooks and `CORRAL_PUBLISH_BATCH_MAX_BYTES`.
//! There is no linger timer: a webhook arriving when a slot is free leaves
//! alone and at once, so a quiet system answers as fast as before, and
//! messages grow only as fast as the broker falls behind.
//!
//! Each message's verdict is every one of its webhooks' verdict: one confirm
//! takes them all; a nack, a return, a closed channel or no confirm refuses
//! them all (each then goes to the spool, or is answered 503 without one).
//! A message holds its slot until the broker resolves its confirm, even
//! after its requests gave up waiting, so a stalled broker cannot pile up
//! unresolved publishes.

use std::time::{Duration, Instant};

use corral_contract::envelope::{Charset, Kind, batch};
use corral_runtime::{
    amqp::{self, Refused},
    telemetry::metrics,
};
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use uuid::Uuid;

use super::{Broker, PublishError, link::Link};
use crate::{
    budget::Lease,
    buffer::{
        Webhook,
        engine::{Bounds, Limits, Round, Sink},
        pack,
    },
};

impl Sink for Broker {
    type Error = PublishError;

    fn bounds(&self) -> Bounds {
        let settings = &self.settings;
        let round = Limits {
            count: settings.batch_max,
            bytes: settings.batch_max_bytes,
            overhead: batch::FRAME_OVERHEAD,
        };
        // No linger: a webhook arriving when a slot is free leaves at once.
        let lanes = Kind::ALL.len();
        settings.publishing.bounds(round, Duration::ZERO, lanes)
    }

    fn size(&self, webhook: &Webhook) -> usize {
        batch::entry_len(&webhook.body)
    }

    fn lane(&self, webhook: &Webhook) -> usize {
        Kind::ALL
            .iter()
            .position(|kind| *kind == webhook.kind)
            .expect("every kind is in Kind::ALL")
    }

    /// Refused at once rather than after a wait in the queue: the publish
    /// would find the same.
    fn ready(&self) -> Result<(), PublishError> {
        let link = self.current().ok_or(PublishError::Unavailable)?;
        match link.blocked_reason() {
            Some(reason) => Err(PublishError::Blocked(reason)),
            None => Ok(()),
        }
    }

    async fn send(&self, mut round: Round<PublishError>) {
        let verdict = publish(self, &mut round).await;
        round.answer_all(&verdict);
    }
}

/// Publishes one message: how long its confirm took, or why it was refused.
async fn publish(
    broker: &Broker,
    round: &mut Round<PublishError>,
) -> Result<Duration, PublishError> {
    let link = broker.current().ok_or(PublishError::Unavailable)?;
    if let Some(reason) = link.blocked_reason() {
        return Err(PublishError::Blocked(reason));
    }
    let (id, packed) = pack(round.webhooks().iter(), Charset::Any);
    metrics::ingress_publish_batch(round.len());
    // The request bodies go now; their leases stay to count the message's
    // copy until its frames are written.
    drop(round.take_webhooks());
    let sent_ms = link.now_ms();
    let confirm = send(
        broker,
        &link,
        packed.routing_key,
        &packed.body,
        broker.shards.stamp(amqp::properties(&packed.metadata)),
        round.take_leases(),
    )
    .await?;
    drop(packed.body);
    let confirm_started = Instant::now();
    match resolve(broker, &link, confirm, sent_ms).await {
        Some(Ok(confirmation)) => {
            judge(&link, confirmation, id).map(|()| confirm_started.elapsed())
        }
        Some(Err(err)) => {
            link.mark_broken();
            Err(PublishError::ChannelClosed(err))
        }
        None => Err(PublishError::Timeout(
            broker.settings.publishing.publish_timeout,
        )),
    }
}

/// Puts the message on the wire; the confirm comes later. Once the frames
/// are written the client library holds no copy of the body, so the leases
/// go back; frames still queued when the deadline passes stay with the link
/// (which is being replaced), and so do the leases.
async fn send(
    broker: &Broker,
    link: &Link,
    routing_key: &'static str,
    body: &[u8],
    properties: BasicProperties,
    leases: Vec<Lease>,
) -> Result<PublisherConfirm, PublishError> {
    let timeout = broker.settings.publishing.publish_timeout;
    let publish = link.channel().publish(
        broker.exchange.clone(),
        routing_key.into(),
        body,
        properties,
    );
    match tokio::time::timeout(timeout, publish).await {
        Ok(Ok(confirm)) => Ok(confirm),
        Ok(Err(err)) => {
            link.mark_broken();
            Err(PublishError::ChannelClosed(err))
        }
        Err(_elapsed) => {
            link.strand(leases);
            link.mark_broken_unless_blocked();
            Err(PublishError::Timeout(timeout))
        }
    }
}

/// Awaits the broker's answer until lapin resolves it; `None` if it never
/// does, even after the link was replaced. The requests stop waiting at
/// their own deadline; the slot is kept until the end, so the slots count
/// exactly what lapin still tracks.
async fn resolve(
    broker: &Broker,
    link: &Link,
    confirm: PublisherConfirm,
    sent_ms: u64,
) -> Option<lapin::Result<Confirmation>> {
    let timeout = broker.settings.publishing.publish_timeout;
    let mut confirm = std::pin::pin!(confirm);
    let mut periods = 0_u32;
    loop {
        match tokio::time::timeout(timeout, confirm.as_mut()).await {
            Ok(outcome) => return Some(outcome),
            // A blocked broker answers once it unblocks; until then the slot
            // stays taken (new webhooks are refused anyway).
            Err(_) if link.is_blocked() => {}
            // Other confirms arrived since this one was sent: the link is
            // alive and this confirm slow; give it one more period.
            Err(_) if periods == 0 && link.acked_since(sent_ms) => {}
            // Nothing acked since: the link is dead in a way the socket has
            // not noticed (a cut network path). Replacing it closes its
            // channels, which resolves every confirm lapin tracks on them.
            Err(_) if !link.is_broken() => {
                tracing::warn!(
                    "no confirm from RabbitMQ on this link for {timeout:?}; replacing the connection"
                );
                link.mark_broken();
            }
            // Replaced and still unresolved: the link, and lapin's state with
            // it, is gone; nothing is left to pile up.
            Err(_) => return None,
        }
        periods += 1;
    }
}

/// What the broker's answer means for the message.
fn judge(link: &Link, confirmation: Confirmation, message_id: Uuid) -> Result<(), PublishError> {
    match amqp::check_confirmation(confirmation) {
        Ok(()) => {
            link.acked();
            Ok(())
        }
        Err(Refused::Unroutable {
            reply_text,
            returned_message_id,
        }) => {
            // Every routing key matches the binding we declare, so a return
            // means the topology is gone (a queue deleted under us). Only a
            // reconnect re-declares it; without this the link stays "up" and
            // every webhook is refused by the broker until something else breaks it.
            link.mark_broken();
            if returned_message_id.as_deref() != Some(message_id.to_string().as_str()) {
                // The return may belong to another publish of the same ack,
                // which may then have been answered 200 unrouted.
                tracing::error!(
                    %message_id,
                    returned = returned_message_id.as_deref().unwrap_or("none"),
                    "RabbitMQ returned another message than this one as unroutable: \
                     its webhooks may have been answered 200 without being queued \
                     (the queue or its binding was removed under live traffic)"
                );
            }
            Err(PublishError::Unroutable(reply_text))
        }
        // confirm_select is set on every channel before it is used, so
        // `NotConfirmed` cannot happen; were it to, it is no promise either.
        Err(Refused::Nacked | Refused::NotConfirmed) => {
            replace_if_only_nacking(link);
            Err(PublishError::Nacked)
        }
    }
}

/// How long a link may nack every publish before it is replaced.
const NACK_STREAK: Duration = Duration::from_secs(1);

/// A link that has acked nothing for [`NACK_STREAK`] and nacks is replaced.
/// A connection made while a quorum queue's leader was dead (a client
/// reconnecting within the election) was seen to have every later publish
/// nacked on RabbitMQ 3.10, for as long as it lived, although the queue had a
/// new leader within a second; fresh channels on the next broker publish
/// again. A queue that refuses on purpose (`x-overflow: reject-publish`)
/// goes on refusing on the new link too, which costs a reconnect a period.
fn replace_if_only_nacking(link: &Link) {
    let period = NACK_STREAK.as_millis() as u64;
    let since = link.now_ms().saturating_sub(period);
    if since > 0 && !link.acked_since(since) && !link.is_broken() {
        tracing::warn!(
            "RabbitMQ has nacked every publish on this link for {NACK_STREAK:?}; replacing the connection"
        );
        link.mark_broken();
    }
}
