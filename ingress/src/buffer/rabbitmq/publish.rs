//! Group commit: webhooks that arrive while earlier publishes await their
//! confirms leave together, as one envelope-2 message.
//!
//! A quorum-queue publish costs the broker the same Raft round and fsync
//! whatever it carries, so the broker's work per webhook falls with every
//! webhook that shares a message. Requests put their webhook in their kind's
//! queue; that kind's dispatcher takes one of the `CORRAL_PUBLISH_CONCURRENCY`
//! publish slots (shared by both kinds), then everything waiting (up to
//! `CORRAL_PUBLISH_BATCH_MAX` webhooks and `CORRAL_PUBLISH_BATCH_MAX_BYTES`),
//! and publishes it. There is no linger
//! timer: a webhook arriving when a slot is free leaves alone and at once,
//! so a quiet system answers as fast as before, and batches grow only as
//! fast as the broker falls behind.
//!
//! Each message's verdict is every one of its webhooks' verdict: one confirm
//! takes them all; a nack, a return, a closed channel or no confirm refuses
//! them all (each then goes to the spool, or is answered 503 without one). A message holds its slot until the broker resolves
//! its confirm, even after its requests gave up waiting, so a stalled broker
//! cannot pile up unresolved publishes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use corral_shared::{
    amqp::{self, Refused},
    envelope::{Charset, Kind, batch},
    telemetry::metrics,
};
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use uuid::Uuid;

use super::{Inner, PublishError, link::Link};
use crate::{
    budget::Lease,
    buffer::{
        Webhook, pack,
        rounds::{Limits, Rounds, Waiting},
    },
};

/// What a request learns about its webhook: how long the confirm of the
/// message carrying it took, or why it was not taken.
pub(super) type Verdict = Result<Duration, PublishError>;

/// A webhook waiting for a publish slot, with its request's reply.
#[derive(Debug)]
pub(super) struct Queued {
    webhook: Webhook,
    lease: Lease,
    reply: oneshot::Sender<Verdict>,
}

impl Queued {
    /// The queued webhook, and where its verdict will arrive.
    pub(super) fn new(webhook: Webhook, lease: Lease) -> (Self, oneshot::Receiver<Verdict>) {
        let (reply, verdict) = oneshot::channel();
        (
            Self {
                webhook,
                lease,
                reply,
            },
            verdict,
        )
    }
}

impl Waiting for Queued {
    /// Its request stopped waiting (answered 200 from the spool, or 503 at
    /// its deadline, or its client went away): publishing it now would
    /// store a copy nobody waits for, or a webhook its sender was told was
    /// refused.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn size(&self) -> usize {
        batch::entry_len(&self.webhook.body)
    }
}

/// Where requests put their webhooks, one queue per kind; a dispatcher per
/// kind takes them out.
///
/// A message holds webhooks of one kind only, so its routing key is that
/// kind's (`dropcowboy.sms`, `dropcowboy.rvm`, `dropcowboy.event`) as with
/// one webhook per message: a queue a customer bound to one kind still gets
/// all of that kind and nothing else.
#[derive(Debug)]
pub(super) struct Queues([mpsc::UnboundedSender<Queued>; Kind::ALL.len()]);

/// The receiving end of one kind's queue, for [`dispatch`].
pub(super) type Receiver = mpsc::UnboundedReceiver<Queued>;

impl Queues {
    /// The queues, one per kind of [`Kind::ALL`], and their receiving ends.
    pub(super) fn new() -> (Self, [Receiver; Kind::ALL.len()]) {
        // Unbounded, because what enters them is bounded before: every entry
        // holds one of `CORRAL_MAX_IN_FLIGHT` request slots and its body's
        // lease of `CORRAL_MAX_IN_FLIGHT_BYTES`.
        let channels = Kind::ALL.map(|_| mpsc::unbounded_channel());
        let (senders, receivers): (Vec<_>, Vec<_>) = channels.into_iter().unzip();
        (
            Self(senders.try_into().expect("one sender per kind")),
            receivers.try_into().expect("one receiver per kind"),
        )
    }

    /// Queues a webhook. Once its dispatcher has stopped, the webhook is
    /// dropped with its reply, which its request reads as shutting down.
    pub(super) fn send(&self, queued: Queued) {
        let index = Kind::ALL
            .iter()
            .position(|kind| *kind == queued.webhook.kind)
            .expect("every kind is in Kind::ALL");
        let _closed = self.0[index].send(queued);
    }
}

/// Forms messages from one kind's queue and publishes them, until
/// shutdown; then publishes what is still queued and ends.
pub(super) async fn dispatch(inner: Arc<Inner>, queue: Receiver) {
    let settings = &inner.settings;
    let mut rounds = Rounds::new(
        queue,
        Limits {
            count: settings.batch_max,
            bytes: settings.batch_max_bytes,
            overhead: batch::FRAME_OVERHEAD,
        },
    );
    while let Some(first) = rounds.first(&inner.shutdown).await {
        // A slot only once there is something to send: the slots are shared
        // with the other kind's dispatcher, which must not wait behind one
        // held by an idle queue. Whatever arrives while this waits goes too.
        let Ok(slot) = inner.slots.clone().acquire_owned().await else {
            return;
        };
        let message = rounds.fill(first);
        if !message.is_empty() {
            inner
                .publishing
                .spawn(publish(inner.clone(), message, slot));
        }
    }
}

/// Publishes one message and answers each of its webhooks' requests.
async fn publish(inner: Arc<Inner>, message: Vec<Queued>, slot: OwnedSemaphorePermit) {
    let Some(link) = inner.current() else {
        return answer(replies_of(message), Err(PublishError::Unavailable));
    };
    if let Some(reason) = link.blocked_reason() {
        return answer(replies_of(message), Err(PublishError::Blocked(reason)));
    }
    let (id, packed) = pack(message.iter().map(|q| &q.webhook), Charset::Any);
    metrics::ingress_publish_batch(message.len());
    // The request bodies go now; their leases stay to count the message's
    // copy until its frames are written.
    let mut leases = Vec::with_capacity(message.len());
    let mut replies = Vec::with_capacity(message.len());
    for queued in message {
        leases.push(queued.lease);
        replies.push(queued.reply);
    }
    let sent_ms = link.now_ms();
    let confirm = match send(
        &inner,
        &link,
        packed.routing_key,
        &packed.body,
        packed.properties,
        leases,
    )
    .await
    {
        Ok(confirm) => confirm,
        Err(err) => return answer(replies, Err(err)),
    };
    drop(packed.body);
    let confirm_started = Instant::now();
    let verdict = match resolve(&inner, &link, confirm, sent_ms).await {
        Some(Ok(confirmation)) => {
            judge(&link, confirmation, id).map(|()| confirm_started.elapsed())
        }
        Some(Err(err)) => {
            link.mark_broken();
            Err(PublishError::ChannelClosed(err))
        }
        None => Err(PublishError::Timeout(inner.settings.publish_timeout)),
    };
    answer(replies, verdict);
    drop(slot);
}

fn replies_of(message: Vec<Queued>) -> Vec<oneshot::Sender<Verdict>> {
    message.into_iter().map(|queued| queued.reply).collect()
}

/// Gives every request of a message the message's verdict.
fn answer(replies: Vec<oneshot::Sender<Verdict>>, verdict: Verdict) {
    let mut late = 0_usize;
    for reply in replies {
        if reply.send(verdict.clone()).is_err() && verdict.is_ok() {
            late += 1;
        }
    }
    if late > 0 {
        // Debug, not warn: with a spool, every slow message ends this way.
        tracing::debug!(
            webhooks = late,
            "RabbitMQ confirmed webhooks whose requests had stopped waiting (answered \
             already: 200 from the spool, or 503 at their deadline; or their client went \
             away); they will be stored, and any other copy of them (spooled, or resent by \
             the sender) is stored once"
        );
    }
}

/// Puts the message on the wire; the confirm comes later. Once the frames
/// are written the client library holds no copy of the body, so the leases
/// go back; frames still queued when the deadline passes stay with the link
/// (which is being replaced), and so do the leases.
async fn send(
    inner: &Inner,
    link: &Link,
    routing_key: &'static str,
    body: &[u8],
    properties: BasicProperties,
    leases: Vec<Lease>,
) -> Result<PublisherConfirm, PublishError> {
    let timeout = inner.settings.publish_timeout;
    let publish =
        link.channel()
            .publish(inner.exchange.clone(), routing_key.into(), body, properties);
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
    inner: &Inner,
    link: &Link,
    confirm: PublisherConfirm,
    sent_ms: u64,
) -> Option<lapin::Result<Confirmation>> {
    let timeout = inner.settings.publish_timeout;
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
        Err(Refused::Nacked | Refused::NotConfirmed) => Err(PublishError::Nacked),
    }
}
