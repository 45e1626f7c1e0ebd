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
//!
//! # Layout
//!
//! - this module: the seam ([`Buffer`], [`Refusal`], [`Kept`]) and the
//!   envelope a round is packed into.
//! - `engine`: group commit, once for every path: the queues, a round's
//!   bounds, the slots, the in-flight bound, deadlines and shutdown, over a
//!   sink that supplies its bounds and sends a round.
//! - [`rabbitmq`], [`sqs`], [`spool`]: the three sinks and their buffers
//!   (a broker link, a queue check, a reachability check besides).
//! - [`primary`]: the one `CORRAL_BUFFER` chose; [`fallback`]: it, then the
//!   spool.

mod engine;
pub mod fallback;
pub mod primary;
pub mod rabbitmq;
pub mod spool;
pub mod sqs;

use std::{future::Future, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use corral_contract::envelope::{self, BatchMessage, Charset, Kind, batch};
use corral_runtime::telemetry::labels::{PublishFailure, SpoolCause};
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

/// The bounds a primary buffer's engine keeps, the same for either:
/// `CORRAL_MAX_IN_FLIGHT`, `CORRAL_PUBLISH_CONCURRENCY`,
/// `CORRAL_IN_FLIGHT_WAIT_MS` and `CORRAL_PUBLISH_TIMEOUT_MS`.
#[derive(Debug, Clone, Copy)]
pub struct Publishing {
    /// Bound on webhooks awaiting a verdict.
    pub max_in_flight: u32,
    /// Sends awaiting their answer at once.
    pub concurrency: usize,
    /// Longest wait for an in-flight slot.
    pub in_flight_wait: Duration,
    /// Deadline of a send, and of the request.
    pub publish_timeout: Duration,
}

impl Publishing {
    /// The engine's bounds for rounds within `round`, lingering `linger`
    /// for more, over `lanes` queues.
    fn bounds(&self, round: engine::Limits, linger: Duration, lanes: usize) -> engine::Bounds {
        engine::Bounds {
            round,
            linger,
            lanes,
            slots: self.concurrency,
            timeout: self.publish_timeout,
            in_flight: Some(engine::InFlightBound {
                max: self.max_in_flight as usize,
                wait: self.in_flight_wait,
            }),
        }
    }
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
