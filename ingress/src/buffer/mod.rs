//! Where a webhook goes to be safe before it is answered.
//!
//! The webhook handler answers `200` only once [`Buffer::keep`] returned
//! `Ok`: from then on the buffer holds the webhook durably, and the worker
//! takes it from there. Whatever else happens is an error the handler answers
//! with `503` and `Retry-After`, counted by its [`PublishFailure`] cause.
//!
//! One implementation today, [`rabbitmq::RabbitMq`]: persistent, mandatory
//! publishes into a quorum queue, confirmed by the broker, each carrying
//! every webhook that arrived while the earlier ones awaited their confirms
//! (group commit). The trait is only as
//! wide as that one needs; a second buffer will shape it further.

pub mod rabbitmq;

use std::{future::Future, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use corral_shared::{envelope::Kind, telemetry::labels::PublishFailure};
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
}

/// Durable storage a webhook is handed to before it is answered.
pub trait Buffer: Send + Sync + 'static {
    /// Why a webhook was not taken.
    type Error: Refusal;

    /// Hands `webhook` over. `Ok` only once it is durably held, with how long
    /// the buffer took to confirm it (for `corral_ingress_publish_confirm_seconds`).
    /// `lease` holds the body's bytes of `CORRAL_MAX_IN_FLIGHT_BYTES`: the
    /// buffer keeps it for as long as it (or its client library) may still
    /// hold a copy of the body, which can outlive the request.
    fn keep(
        &self,
        webhook: Webhook,
        lease: Lease,
    ) -> impl Future<Output = Result<Duration, Self::Error>> + Send;
}
