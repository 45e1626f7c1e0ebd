//! A signed webhook through SQS: its message carries the routing key
//! `dropcowboy.event` as an attribute, and its entry kind `event` with the
//! exact bytes received.

use std::time::Duration;

use corral_contract::envelope::{Kind, batch};
use corral_testkit::{stack::Stack, wait};

use super::WAIT;
use crate::ingress::{
    helpers::{accepted, send},
    signed::{Delivery, SECRET, fresh_event},
};

#[tokio::test]
async fn a_signed_delivery_travels_through_sqs_as_kind_event() {
    let mut stack = Stack::builder()
        .sqs()
        .ingress(|ingress| ingress.signing.secrets = vec![SECRET.into()])
        .start()
        .await;
    let (queue, ingress) = (stack.queue(), stack.ingress());
    let delivery = Delivery::new(SECRET, fresh_event());
    let id = accepted(send(delivery.request(ingress)).await).await;

    let messages = wait::until("the message in the queue", WAIT, || async {
        let held = queue.take_and_hold(Duration::from_secs(30)).await;
        (!held.is_empty()).then_some(held)
    })
    .await;
    let [message] = messages.as_slice() else {
        panic!("one message, got {}", messages.len());
    };
    let (_, routing_key) = corral_runtime::sqs::metadata(message);
    assert_eq!(routing_key, "dropcowboy.event");
    let body = message.body().expect("a body");
    let webhooks = batch::decode(body.as_bytes()).expect("envelope 2");
    let [webhook] = webhooks.as_slice() else {
        panic!("one webhook, got {}", webhooks.len());
    };
    assert_eq!(
        (webhook.id, webhook.kind, &*webhook.body),
        (id, Kind::Event, delivery.body.as_slice())
    );
    stack.stop_ingress().await.expect("the ingress stops");
}
