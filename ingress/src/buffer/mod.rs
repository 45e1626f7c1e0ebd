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

use std::{future::Future, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use corral_shared::{
    envelope::Kind,
    telemetry::labels::{PublishFailure, SpoolCause},
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
