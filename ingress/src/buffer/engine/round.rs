//! A round as its sink sees it: the webhooks to send, the leases on their
//! bodies, and the answer to each one's request.

use tokio::sync::oneshot;

use super::{Verdict, rounds::Waiting};
use crate::{budget::Lease, buffer::Webhook};

/// A webhook waiting for a round, with its request's reply.
#[derive(Debug)]
pub(super) struct Entry<E> {
    webhook: Webhook,
    /// What it adds to a round's size, reckoned once (it may read the body).
    size: usize,
    lease: Lease,
    reply: oneshot::Sender<Verdict<E>>,
}

impl<E> Entry<E> {
    /// The entry, and where its verdict will arrive.
    pub(super) fn new(
        webhook: Webhook,
        size: usize,
        lease: Lease,
    ) -> (Self, oneshot::Receiver<Verdict<E>>) {
        let (reply, verdict) = oneshot::channel();
        let entry = Self {
            webhook,
            size,
            lease,
            reply,
        };
        (entry, verdict)
    }
}

impl<E> Waiting for Entry<E> {
    /// Its request stopped waiting (answered 200 by another path, or 503 at
    /// its deadline, or its client went away): sending it now would store a
    /// copy nobody waits for, or a webhook its sender was told was refused.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn size(&self) -> usize {
        self.size
    }
}

/// Webhooks sent together, in the order they arrived. A request whose
/// webhook is never answered learns that the buffer is shutting down.
#[derive(Debug)]
pub(in crate::buffer) struct Round<E> {
    webhooks: Vec<Webhook>,
    /// The bodies' leases: a client library may hold a copy of a body until
    /// its send has ended, so they live as long as the round unless the
    /// sink takes them.
    leases: Vec<Lease>,
    replies: Vec<Option<oneshot::Sender<Verdict<E>>>>,
    /// Webhooks taken after their requests had stopped waiting.
    late: usize,
}

impl<E: Clone> Round<E> {
    pub(super) fn new(entries: Vec<Entry<E>>) -> Self {
        let mut round = Self {
            webhooks: Vec::with_capacity(entries.len()),
            leases: Vec::with_capacity(entries.len()),
            replies: Vec::with_capacity(entries.len()),
            late: 0,
        };
        for entry in entries {
            round.webhooks.push(entry.webhook);
            round.leases.push(entry.lease);
            round.replies.push(Some(entry.reply));
        }
        round
    }

    /// How many webhooks the round carries.
    pub(in crate::buffer) fn len(&self) -> usize {
        self.replies.len()
    }

    /// The webhooks, in order (empty once taken).
    pub(in crate::buffer) fn webhooks(&self) -> &[Webhook] {
        &self.webhooks
    }

    /// The webhooks, for a sink that is done with them before its verdict.
    pub(in crate::buffer) fn take_webhooks(&mut self) -> Vec<Webhook> {
        std::mem::take(&mut self.webhooks)
    }

    /// The leases, for a sink that knows better when its copies are gone.
    pub(in crate::buffer) fn take_leases(&mut self) -> Vec<Lease> {
        std::mem::take(&mut self.leases)
    }

    /// Answers the request of the webhook at `index` (once).
    pub(in crate::buffer) fn answer(&mut self, index: usize, verdict: &Verdict<E>) {
        let Some(reply) = self.replies.get_mut(index).and_then(Option::take) else {
            return;
        };
        if reply.send(verdict.clone()).is_err() && verdict.is_ok() {
            self.late += 1;
        }
    }

    /// Answers every request of the round still waiting with `verdict`.
    pub(in crate::buffer) fn answer_all(&mut self, verdict: &Verdict<E>) {
        for index in 0..self.replies.len() {
            self.answer(index, verdict);
        }
    }
}

impl<E> Drop for Round<E> {
    fn drop(&mut self) {
        if self.late > 0 {
            // Debug, not warn: with a spool, every slow round ends this way.
            tracing::debug!(
                webhooks = self.late,
                "the buffer took webhooks whose requests had stopped waiting (answered \
                 already: 200 from the other path, or 503 at their deadline; or their client \
                 went away); they will be stored, and any other copy of them (spooled, or \
                 resent by the sender) is stored once"
            );
        }
    }
}
