//! A mandatory publish, and what its confirm means.
//!
//! Every corral publish is `mandatory`: a message no queue takes comes back
//! (basic.return) instead of vanishing. A publish is therefore safe only when
//! the broker *acked* it on a confirm-mode channel and did *not* return it.
//! [`check_confirmation`] is that rule, for ingress, the dead-letter replay
//! and the benchmark's probes alike; [`check_confirmations`] applies it to
//! many publishes whose confirms were in flight together (the result relay).

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, PublisherConfirm, message::BasicReturnMessage,
    options::BasicPublishOptions, types::ShortString,
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
    let (answer, returned) = split(confirmation);
    match returned {
        Some(returned) => Err(unroutable(&returned)),
        None => answer,
    }
}

/// [`check_confirmation`] for each of many publishes whose confirms were in
/// flight together on one channel, given with each publish's `message_id`:
/// one verdict each, in the same order. The client library hands a returned
/// message to whichever confirm completes next, possibly another publish's
/// of the same multiple-ack, so a return counts against the message it
/// names, not the confirm that carried it; one naming none of them (no id,
/// or an id not given) cannot be placed and refuses them all.
pub fn check_confirmations<'a>(
    answers: impl IntoIterator<Item = (&'a str, Confirmation)>,
) -> Vec<Result<(), Refused>> {
    let mut ids = Vec::new();
    let mut verdicts = Vec::new();
    let mut returns = Vec::new();
    for (id, confirmation) in answers {
        let (answer, returned) = split(confirmation);
        ids.push(id);
        verdicts.push(answer);
        returns.extend(returned);
    }
    for returned in returns {
        let refused = unroutable(&returned);
        let named = returned.delivery.properties.message_id().as_ref();
        let mut placed = false;
        for (id, verdict) in ids.iter().zip(&mut verdicts) {
            if named.is_some_and(|named| named.as_str() == *id) {
                *verdict = Err(refused.clone());
                placed = true;
            }
        }
        if !placed {
            verdicts.fill(Err(refused));
        }
    }
    verdicts
}

/// The broker's answer to the publish itself, and the returned message the
/// confirm carries (which may be another publish's, see
/// [`check_confirmations`]).
fn split(confirmation: Confirmation) -> (Result<(), Refused>, Option<BasicReturnMessage>) {
    match confirmation {
        Confirmation::Ack(returned) => (Ok(()), returned),
        Confirmation::Nack(returned) => (Err(Refused::Nacked), returned),
        Confirmation::NotRequested => (Err(Refused::NotConfirmed), None),
    }
}

fn unroutable(returned: &BasicReturnMessage) -> Refused {
    Refused::Unroutable {
        reply_text: returned.reply_text.to_string(),
        returned_message_id: returned
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
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

#[cfg(test)]
mod tests {
    use lapin::message::Delivery;

    use super::*;

    /// A message the broker returned as unroutable, with its `message_id`.
    fn returned(message_id: Option<&str>) -> BasicReturnMessage {
        let mut delivery = Delivery::mock(0, "x".into(), "sms".into(), false, Vec::new());
        if let Some(id) = message_id {
            delivery.properties = BasicProperties::default().with_message_id(id.into());
        }
        BasicReturnMessage {
            delivery,
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        }
    }

    fn unroutable(message_id: &str) -> Result<(), Refused> {
        Err(Refused::Unroutable {
            reply_text: "NO_ROUTE".into(),
            returned_message_id: Some(message_id.into()),
        })
    }

    #[test]
    fn one_confirm_is_judged_with_whatever_it_carries() {
        assert_eq!(check_confirmation(Confirmation::Ack(None)), Ok(()));
        assert_eq!(
            check_confirmation(Confirmation::Nack(None)),
            Err(Refused::Nacked)
        );
        assert_eq!(
            check_confirmation(Confirmation::Ack(Some(returned(Some("b"))))),
            unroutable("b")
        );
        assert_eq!(
            check_confirmation(Confirmation::NotRequested),
            Err(Refused::NotConfirmed)
        );
    }

    #[test]
    fn a_return_counts_against_the_message_it_names_not_the_confirm_carrying_it() {
        let verdicts = check_confirmations([
            ("a", Confirmation::Ack(Some(returned(Some("c"))))),
            ("b", Confirmation::Nack(None)),
            ("c", Confirmation::Ack(None)),
            ("d", Confirmation::Ack(None)),
        ]);
        assert_eq!(
            verdicts,
            [Ok(()), Err(Refused::Nacked), unroutable("c"), Ok(())]
        );
    }

    #[test]
    fn a_return_that_names_none_of_them_refuses_them_all() {
        for named in [None, Some("elsewhere")] {
            let verdicts = check_confirmations([
                ("a", Confirmation::Ack(None)),
                ("b", Confirmation::Ack(Some(returned(named)))),
            ]);
            assert_eq!(verdicts.len(), 2);
            assert!(
                verdicts
                    .iter()
                    .all(|verdict| matches!(verdict, Err(Refused::Unroutable { .. }))),
                "{verdicts:?}"
            );
        }
    }
}
