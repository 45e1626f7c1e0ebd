//! Where a webhook goes to be safe before it is answered.
//!
//! The webhook handler answers `200` only once [`Buffer::keep`] returned
//! `Ok`: from then on the webhook is held durably, and the worker takes it
//! from there. Whatever else happens is an error the handler answers with
//! `503` and `Retry-After`, counted by its [`PublishFailure`] cause.
//!
//! The buffer is chosen by `CORRAL_BUFFER` ([`primary::Primary`]):
//! [`rabbitmq::RabbitMq`], persistent, mandatory publishes into a quorum
//! queue, confirmed by the broker, each carrying every webhook that arrived
//! while the earlier ones awaited their confirms (group commit); or
//! [`sqs::Sqs`], `SendMessageBatch` calls with the same group commit, a
//! webhook taken once SQS accepted its message. [`fallback::Fallback`] puts
//! the [`spool::Spool`] behind either: a webhook the buffer refuses, or does
//! not take within `CORRAL_SPOOL_AFTER_MS`, is committed into PostgreSQL
//! instead, and only one neither path took gets 503.

pub mod fallback;
pub mod primary;
pub mod rabbitmq;
mod rounds;
pub mod spool;
pub mod sqs;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use corral_shared::{
    envelope::{self, BatchMessage, Charset, Kind, batch},
    telemetry::{
        labels::{PublishFailure, SpoolCause},
        metrics,
    },
};
use uuid::Uuid;

use crate::budget::Lease;

/// A webhook on its way into the buffer.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// SMS or RVM, from the route.
    pub kind: Kind,
    /// The request body, byte for byte. Owned (a reference-counted view of
    /// the request's buffer, never a copy): a buffer may keep it beyond the
    /// call, to send it together with others.
    pub body: Bytes,
    /// The id answered to the sender.
    pub message_id: Uuid,
    /// When ingress received it.
    pub received_at: DateTime<Utc>,
}

/// Why a buffer did not take a webhook.
pub trait Refusal: std::error::Error + Send + Sync + 'static {
    /// The `corral_ingress_publish_failures_total{cause}` label.
    fn failure(&self) -> PublishFailure;

    /// Whether the spool should take the webhook instead, and the
    /// `corral_ingress_spooled_total{cause}` label if so. `None` for a
    /// refusal that would refuse the spool too (ingress is over its own
    /// bounds), so must not bypass them.
    fn spool_cause(&self) -> Option<SpoolCause>;
}

/// Where a webhook is now held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Confirmed by the broker, after this long
    /// (`corral_ingress_publish_confirm_seconds`).
    Published(Duration),
    /// Committed in the PostgreSQL spool, because of `cause`.
    Spooled(SpoolCause),
}

/// Durable storage a webhook is handed to before it is answered.
pub trait Buffer: Send + Sync + 'static {
    /// Why a webhook was not taken.
    type Error: Refusal;

    /// Hands `webhook` over. `Ok` only once it is durably held, saying where.
    /// `lease` holds the body's bytes of `CORRAL_MAX_IN_FLIGHT_BYTES`: the
    /// buffer keeps it for as long as it (or its client library) may still
    /// hold a copy of the body, which can outlive the request.
    fn keep(
        &self,
        webhook: Webhook,
        lease: Lease,
    ) -> impl Future<Output = Result<Kept, Self::Error>> + Send;
}

/// One envelope-2 message carrying `webhooks` in `charset`, and the fresh id
/// it is sent under: what either buffer sends for a round (or part of one).
fn pack<'a>(webhooks: impl Iterator<Item = &'a Webhook>, charset: Charset) -> (Uuid, BatchMessage) {
    let packing: Vec<batch::Packing> = webhooks
        .map(|webhook| batch::Packing {
            id: webhook.message_id,
            received_at: webhook.received_at,
            kind: webhook.kind,
            body: &webhook.body,
        })
        .collect();
    let id = Uuid::now_v7();
    (id, envelope::batch_message(id, &packing, charset))
}

/// Webhooks awaiting a buffer's verdict (`corral_ingress_publishes_in_flight`).
#[derive(Debug, Default)]
struct InFlightCount(AtomicUsize);

/// Counts a webhook awaiting its verdict for as long as it lives.
struct InFlight(Arc<InFlightCount>);

impl InFlight {
    fn enter(count: &Arc<InFlightCount>) -> Self {
        let now = count.0.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::ingress_in_flight(now);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::ingress_in_flight(now);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}
