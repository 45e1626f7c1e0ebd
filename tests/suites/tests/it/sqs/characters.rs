//! Characters SQS refuses in a message body, which a webhook may still carry
//! raw inside a JSON string (U+FFFE, U+FFFF): such a webhook is taken like
//! any other, what corral sends SQS holds only characters SQS takes, and it
//! is stored exactly as sent.
//!
//! moto does not enforce SQS's character rule, so the test asserts the rule
//! on what corral sent, read back from the queue, rather than on moto's
//! answer.

use std::{cell::RefCell, collections::HashMap, time::Duration};

use corral_contract::envelope::batch;
use corral_testkit::{fixtures, stack::Stack, wait};
use uuid::Uuid;

use super::{WAIT, assert_each_once, kind};
use crate::ingress::helpers::accepted;

/// What SQS takes in a message body, as its API reference spells it:
/// `#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`.
fn sqs_takes(c: char) -> bool {
    matches!(u32::from(c), 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// `foreign_id`s the customer chose: some with the characters SQS refuses,
/// beside ordinary ones that share their messages.
const FOREIGN_IDS: [&str; 8] = [
    "o-\u{FFFE}",
    "plain-1",
    "o-\u{FFFF}",
    "plain-2",
    "\u{FFFE}\u{FFFF}\u{FFFD}\u{1F600}",
    "plain-3",
    "tab\tand \u{FFFF} escaped",
    "é-plain-4",
];

#[tokio::test]
async fn a_body_with_characters_sqs_refuses_is_taken_sent_escaped_and_stored_exactly() {
    let mut stack = Stack::builder()
        .sqs()
        // One call at a time: the webhooks share messages, as under load.
        .ingress(|ingress| ingress.publish_concurrency = 1)
        .database()
        .start()
        .await;
    let (queue, ingress) = (stack.queue(), stack.ingress());

    let bodies: Vec<String> = FOREIGN_IDS
        .iter()
        .enumerate()
        .map(|(i, foreign_id)| {
            let body = fixtures::delivery_status(
                &format!("chars{i:019}"),
                "2026-11-27T05:24:31.000Z",
                "",
                foreign_id,
            );
            // One with blanks around its object too (`body_text` already).
            if i == 2 { format!(" {body}\n") } else { body }
        })
        .collect();
    assert!(
        bodies[0].contains('\u{FFFE}'),
        "raw in the body: {}",
        bodies[0]
    );
    let posts = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| ingress.post(kind(i), body.clone()));
    let mut sent: HashMap<Uuid, Vec<u8>> = HashMap::new();
    for (body, response) in bodies
        .iter()
        .zip(futures_util::future::join_all(posts).await)
    {
        sent.insert(accepted(response).await, body.as_bytes().to_vec());
    }

    // What ingress sent, received back (and left to come back for the
    // worker once its visibility timeout runs out).
    let received = RefCell::new(HashMap::new());
    wait::until_true("every webhook in a message on the queue", WAIT, || async {
        for message in queue.take_and_hold(Duration::from_secs(1)).await {
            let text = message.body().expect("a message body");
            let refused: Vec<String> = text
                .chars()
                .filter(|&c| !sqs_takes(c))
                .map(|c| format!("U+{:04X}", u32::from(c)))
                .collect();
            assert!(
                refused.is_empty(),
                "corral sent SQS characters it refuses, {refused:?}, in {text:?}"
            );
            for webhook in batch::decode(text.as_bytes()).expect("an envelope-2 body") {
                received
                    .borrow_mut()
                    .insert(webhook.id, webhook.body.into_owned());
            }
        }
        received.borrow().len() >= sent.len()
    })
    .await;
    assert!(
        received.into_inner() == sent,
        "every webhook read back from SQS is the body posted, byte for byte"
    );

    stack.start_worker().await;
    let client = stack.client().await;
    let ids: Vec<Uuid> = sent.keys().copied().collect();
    assert_each_once(&client, &ids).await;
    for row in client
        .query("SELECT message_id, payload FROM delivery_events", &[])
        .await
        .expect("the stored payloads")
    {
        let id: Uuid = row.get(0);
        let payload: serde_json::Value = row.get(1);
        let posted: serde_json::Value = serde_json::from_slice(&sent[&id]).expect("JSON");
        assert_eq!(payload, posted, "the payload as sent");
    }
    stack.stop_worker().await.expect("the worker stops");
    stack.stop_ingress().await.expect("the ingress stops");
}
