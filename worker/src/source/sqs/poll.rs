//! Receiving: one long poll at a time while there is room, each message
//! received put in the ledger and handed out.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use aws_sdk_sqs::{
    error::DisplayErrorContext,
    types::{Message, MessageSystemAttributeName},
};
use corral_runtime::{admin::Health, retry, sqs};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{ANSWER_BOUND, Held, Ledger, SqsAck};
use crate::source::{
    Delivery,
    budget::{Reservation, Room, SQS_LARGEST_MESSAGE},
    unpack,
};

/// Receives while there is room, until stopped.
pub(super) async fn poll(
    ledger: Arc<Ledger>,
    sender: mpsc::UnboundedSender<Delivery<SqsAck>>,
    health: Health,
    stop: CancellationToken,
) {
    let room = Room::new(
        ledger.settings.max_in_hand,
        ledger.settings.max_in_hand_bytes,
        SQS_LARGEST_MESSAGE,
    );
    let mut delays = retry::delays(ledger.settings.retry_max);
    let mut answering = false;
    loop {
        if !answering {
            if !until_answering(&ledger, &health, &stop, &mut delays).await {
                return;
            }
            answering = true;
            delays = retry::delays(ledger.settings.retry_max);
        }
        let mut permits = Vec::with_capacity(sqs::BATCH_ENTRIES);
        let Some(first) = reserve(&ledger, &room, &stop).await else {
            return;
        };
        permits.push(first);
        permits.extend(std::iter::from_fn(|| room.try_reserve()).take(sqs::BATCH_ENTRIES - 1));
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = receive(&ledger, permits.len()) => received,
        };
        match received {
            Ok(messages) => {
                for (message, permit) in messages.into_iter().zip(permits.drain(..)) {
                    let Some(delivery) = hold(&ledger, message, permit) else {
                        continue;
                    };
                    if sender.send(delivery).is_err() {
                        return;
                    }
                }
            }
            Err(why) => {
                answering = false;
                health.set_broker(false);
                tracing::warn!(queue = ledger.queue.url, error = %why, "ReceiveMessage failed");
                if pause(&stop, delays.next()).await {
                    return;
                }
            }
        }
    }
}

/// Asks SQS whether the queue is there until it answers, readiness
/// following; `false` when stopped meanwhile.
async fn until_answering(
    ledger: &Ledger,
    health: &Health,
    stop: &CancellationToken,
    delays: &mut impl Iterator<Item = Duration>,
) -> bool {
    loop {
        // A silent path (no answer, no error) must not hold the poller
        // past the check's bound: it asks again after the pause.
        let check = tokio::time::timeout(ANSWER_BOUND, sqs::check(&ledger.queue));
        let checked = tokio::select! {
            () = stop.cancelled() => return false,
            checked = check => checked.unwrap_or_else(|_elapsed| {
                Err(sqs::CheckError::Unreachable(format!("no answer within {ANSWER_BOUND:?}")))
            }),
        };
        match checked {
            Ok(()) => {
                health.set_broker(true);
                tracing::info!(queue = ledger.queue.url, "receiving from SQS");
                return true;
            }
            Err(err) => {
                health.set_broker(false);
                tracing::warn!(queue = ledger.queue.url, error = %err, "SQS does not answer; asking again");
                if pause(stop, delays.next()).await {
                    return false;
                }
            }
        }
    }
}

/// Room for one message, waiting (and saying so) when there is none; `None`
/// when stopped meanwhile.
async fn reserve(ledger: &Ledger, room: &Room, stop: &CancellationToken) -> Option<Reservation> {
    if let Some(reservation) = room.try_reserve() {
        return Some(reservation);
    }
    ledger.starved.store(true, Ordering::SeqCst);
    let reserved = tokio::select! {
        () = stop.cancelled() => None,
        reservation = room.reserve() => Some(reservation),
    };
    ledger.starved.store(false, Ordering::SeqCst);
    reserved
}

/// Waits `delay` (or a second); `true` when stopped meanwhile.
async fn pause(stop: &CancellationToken, delay: Option<Duration>) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(1))) => false,
    }
}

/// One long poll for up to `count` messages.
async fn receive(ledger: &Ledger, count: usize) -> Result<Vec<Message>, String> {
    let settings = &ledger.settings;
    let call = ledger
        .queue
        .client
        .receive_message()
        .queue_url(&ledger.queue.url)
        .max_number_of_messages(count as i32)
        .wait_time_seconds(settings.wait.as_secs() as i32)
        .visibility_timeout(settings.visibility_secs())
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send();
    // The SDK has no deadline of its own on a call; SQS answers a long poll
    // by its wait at the latest.
    let bound = settings.wait + Duration::from_secs(10);
    match tokio::time::timeout(bound, call).await {
        Ok(Ok(output)) => Ok(output.messages.unwrap_or_default()),
        Ok(Err(err)) => Err(DisplayErrorContext(&err).to_string()),
        Err(_elapsed) => Err(format!("no answer within {bound:?}")),
    }
}

/// Puts a received message in the ledger and makes its delivery; `None`
/// for one without a receipt handle (SQS always sends one).
fn hold(ledger: &Arc<Ledger>, message: Message, room: Reservation) -> Option<Delivery<SqsAck>> {
    let receipt = message.receipt_handle()?.to_owned();
    let size = message.body().map_or(0, str::len) + receipt.len() + sqs::ATTRIBUTES_MAX;
    if let Some(sent) = sqs::sent_at_millis(&message) {
        ledger.settings.oldest.received(sent);
    }
    let (metadata, routing_key) = sqs::metadata(&message);
    let body = message.body.unwrap_or_default().into_bytes();
    let seq = ledger.next_seq.fetch_add(1, Ordering::SeqCst);
    ledger.held().insert(
        seq,
        Held {
            receipt,
            visible_at: Instant::now() + ledger.settings.visibility,
            _room: room.keep(size),
        },
    );
    Some(Delivery {
        contents: unpack::contents(&metadata, &routing_key, body),
        ack: SqsAck {
            seq,
            ledger: ledger.clone(),
        },
    })
}
