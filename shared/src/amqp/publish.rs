//! A mandatory publish, and what its confirm means.
//!
//! Every corral publish is `mandatory`: a message no queue takes comes back
//! (basic.return) instead of vanishing. A publish is therefore safe only when
//! the broker *acked* it on a confirm-mode channel and did *not* return it.
//! [`check_confirmation`] is that rule, for ingress, the dead-letter replay
//! and the benchmark's probes alike.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, PublisherConfirm, options::BasicPublishOptions,
    types::ShortString,
};

use super::{AmqpError, deadline};

/// Why the broker did not take responsibility for a message it confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The broker nacked it (a queue refused it, e.g. full with reject-publish).
    #[error("nacked by the broker (is the queue full?)")]
    Nacked,
    /// No queue is bound for its routing key.
    #[error("returned as unroutable: {reply_text}")]
    Unroutable {
        /// The broker's reason (`NO_ROUTE`).
        reply_text: String,
        /// `message_id` of the message the broker returned: the client library
        /// hands a channel's returns to whichever confirm completes first, so
        /// it may belong to another publish of the same multiple-ack.
        returned_message_id: Option<String>,
    },
    /// The channel was not in confirm mode, so nothing was promised.
    #[error("the channel is not in confirm mode")]
    NotConfirmed,
}

/// Publishes `body` with `mandatory` set; the returned confirm resolves when
/// the broker answers. Needs a confirm-mode channel.
pub async fn publish_mandatory(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> lapin::Result<PublisherConfirm> {
    channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            properties,
        )
        .await
}

/// `Ok` only for an ack of a message that was routed.
pub fn check_confirmation(confirmation: Confirmation) -> Result<(), Refused> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(Refused::Unroutable {
                reply_text: returned.reply_text.to_string(),
                returned_message_id: returned
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned()),
            })
        }
        Confirmation::Nack(None) => Err(Refused::Nacked),
        Confirmation::NotRequested => Err(Refused::NotConfirmed),
    }
}

/// Why [`publish_confirmed`] did not get a message safely to the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishOutcomeError {
    /// The publish or its confirm failed or timed out on the link.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// The broker answered, but did not take the message.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Publishes with `mandatory` and waits for the confirm, each step under
/// `timeout`: for callers that publish one message at a time (operator
/// commands, probes). `Ok` means the broker holds the message.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishOutcomeError> {
    let confirm = deadline(
        "publishing",
        timeout,
        publish_mandatory(
            channel,
            exchange.into(),
            routing_key.into(),
            body,
            properties,
        ),
    )
    .await?;
    let confirmation = deadline("waiting for the confirm", timeout, confirm).await?;
    Ok(check_confirmation(confirmation)?)
}
