//! Webhooks as they sit in a queue: the messages taken off it, unpacked
//! whatever their envelope, so a test asserts on each webhook.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use corral_contract::envelope::{Envelope, Format, Kind, batch};
use corral_runtime::amqp;
use lapin::message::BasicGetMessage;
use uuid::Uuid;

use crate::broker::TestBroker;

/// One webhook read off a queue.
#[derive(Debug, Clone)]
pub struct QueuedWebhook {
    /// The id ingress answered.
    pub id: Uuid,
    /// When ingress received it.
    pub received_at: DateTime<Utc>,
    /// SMS or RVM.
    pub kind: Kind,
    /// The request body, byte for byte.
    pub body: Vec<u8>,
    /// The AMQP message that carried it (shared by every webhook in it).
    pub message: Arc<BasicGetMessage>,
}

/// Every webhook in `message`, in order; panics on a message ingress could
/// not have made (that is a failed test).
pub fn unpack(message: BasicGetMessage) -> Vec<QueuedWebhook> {
    let message = Arc::new(message);
    let delivery = &message.delivery;
    let metadata = amqp::metadata(&delivery.properties);
    match Format::of(&metadata) {
        Format::Batch => batch::decode(&delivery.data)
            .unwrap_or_else(|err| panic!("an unreadable envelope-2 message: {err}"))
            .into_iter()
            .map(|webhook| QueuedWebhook {
                id: webhook.id,
                received_at: webhook.received_at,
                kind: webhook.kind,
                body: webhook.body.into_owned(),
                message: message.clone(),
            })
            .collect(),
        Format::Single => {
            let envelope = Envelope::read(&metadata);
            vec![QueuedWebhook {
                id: envelope.message_id.expect("a single webhook's message_id"),
                received_at: envelope
                    .received_at
                    .expect("a single webhook's x-received-at"),
                kind: Kind::from_routing_key(delivery.routing_key.as_str())
                    .expect("a single webhook's routing key names its kind"),
                body: delivery.data.clone(),
                message: message.clone(),
            }]
        }
        Format::Unsupported(why) => panic!("an unsupported message: {why}"),
    }
}

impl TestBroker {
    /// Takes messages off `queue` until they hold at least `count` webhooks,
    /// or panics once `timeout` has passed; returns every webhook taken.
    pub async fn take_webhooks(
        &self,
        queue: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<QueuedWebhook> {
        let taken = std::cell::RefCell::new(Vec::new());
        let taken_ref = &taken;
        crate::wait::until_true(
            &format!("{count} webhooks in {queue}"),
            timeout,
            move || async move {
                while let Some(message) = self.get(queue).await {
                    taken_ref.borrow_mut().extend(unpack(message));
                }
                taken_ref.borrow().len() >= count
            },
        )
        .await;
        taken.into_inner()
    }
}
