//! The engine over a sink of a few lines: what every real sink relies on.

use std::sync::Mutex;

use bytes::Bytes;
use chrono::Utc;
use corral_contract::envelope::Kind;
use uuid::Uuid;

use super::*;
use crate::budget::BodyBudget;

/// Takes a round once the test lets it (one permit of `open` per round),
/// refusing every second webhook of it.
#[derive(Debug)]
struct Gated {
    bounds: Bounds,
    open: Semaphore,
    sent: Mutex<Vec<Vec<Uuid>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    Engine(Stopped),
    Odd,
}

impl From<Stopped> for Refused {
    fn from(stopped: Stopped) -> Self {
        Refused::Engine(stopped)
    }
}

impl Sink for Gated {
    type Error = Refused;

    fn bounds(&self) -> Bounds {
        self.bounds
    }

    fn size(&self, webhook: &Webhook) -> usize {
        webhook.body.len()
    }

    async fn send(&self, mut round: Round<Refused>) {
        self.open.acquire().await.expect("never closed").forget();
        let ids = round.webhooks().iter().map(|w| w.message_id).collect();
        self.sent.lock().unwrap().push(ids);
        for i in 0..round.len() {
            let verdict = if i % 2 == 0 {
                Ok(Duration::ZERO)
            } else {
                Err(Refused::Odd)
            };
            round.answer(i, &verdict);
        }
    }
}

/// An engine over a closed gate: one slot, rounds of up to 10, in flight
/// at most `max`, each request waiting at most 50 ms.
fn gated(max: usize) -> (Engine<Gated>, Arc<Gated>) {
    let sink = Arc::new(Gated {
        bounds: Bounds {
            round: Limits {
                count: 10,
                bytes: 1000,
                overhead: 0,
            },
            linger: Duration::ZERO,
            lanes: 1,
            slots: 1,
            timeout: Duration::from_millis(50),
            in_flight: Some(InFlightBound {
                max,
                wait: Duration::from_millis(5),
            }),
        },
        open: Semaphore::new(0),
        sent: Mutex::default(),
    });
    (Engine::start(sink.clone(), CancellationToken::new()), sink)
}

/// Keeps webhook number `n` in the background.
async fn keep(engine: &Engine<Gated>, n: u128) -> tokio::task::JoinHandle<Verdict<Refused>> {
    let lease = BodyBudget::new(1000)
        .lease(1, Duration::ZERO)
        .await
        .unwrap();
    let webhook = Webhook {
        kind: Kind::Sms,
        body: Bytes::from_static(b"{}"),
        message_id: Uuid::from_u128(n),
        received_at: Utc::now(),
    };
    let engine = engine.clone();
    tokio::spawn(async move { engine.keep(webhook, lease).await })
}

/// Yields until every slot is taken: a round is in the sink.
async fn sending(engine: &Engine<Gated>) {
    while engine.inner.slots.available_permits() > 0 {
        tokio::task::yield_now().await;
    }
}

/// Yields until `count` webhooks await their verdict.
async fn in_flight(engine: &Engine<Gated>, count: usize) {
    while engine.inner.in_flight.0.load(Ordering::Relaxed) < count {
        tokio::task::yield_now().await;
    }
}

fn sent(sink: &Gated) -> Vec<Vec<u128>> {
    let sent = sink.sent.lock().unwrap();
    sent.iter()
        .map(|round| round.iter().map(|id| id.as_u128()).collect())
        .collect()
}

#[tokio::test]
async fn what_waits_for_the_slot_leaves_as_one_round_and_each_webhook_gets_its_own_verdict() {
    let (engine, sink) = gated(10);
    let first = keep(&engine, 0).await;
    sending(&engine).await;
    let mut waiting = Vec::new();
    for n in 1..=3 {
        waiting.push(keep(&engine, n).await);
    }
    in_flight(&engine, 4).await;
    sink.open.add_permits(2);
    assert_eq!(first.await.unwrap(), Ok(Duration::ZERO));
    let mut verdicts = Vec::new();
    for request in waiting {
        verdicts.push(request.await.unwrap());
    }
    let ok = Ok(Duration::ZERO);
    assert_eq!(verdicts, [ok.clone(), Err(Refused::Odd), ok]);
    assert_eq!(sent(&sink), [vec![0], vec![1, 2, 3]]);
}

#[tokio::test(start_paused = true)]
async fn a_full_in_flight_bound_refuses_at_once_as_overloaded() {
    let (engine, sink) = gated(1);
    let first = keep(&engine, 0).await;
    in_flight(&engine, 1).await;
    let refused = keep(&engine, 1).await.await.unwrap();
    assert_eq!(refused, Err(Refused::Engine(Stopped::Overloaded)));
    sink.open.add_permits(1);
    assert_eq!(first.await.unwrap(), Ok(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_webhook_past_its_deadline_times_out_and_is_left_out_of_the_next_round() {
    let (engine, sink) = gated(10);
    let first = keep(&engine, 0).await;
    sending(&engine).await;
    let late = keep(&engine, 1).await;
    let timeout = Duration::from_millis(50);
    assert_eq!(
        late.await.unwrap(),
        Err(Refused::Engine(Stopped::Timeout(timeout)))
    );
    sink.open.add_permits(2);
    assert_eq!(
        first.await.unwrap(),
        Err(Refused::Engine(Stopped::Timeout(timeout)))
    );
    engine.close(Duration::from_secs(1)).await;
    assert_eq!(sent(&sink), [vec![0]]);
}

#[tokio::test]
async fn close_sends_what_is_queued_then_refuses_as_shutting_down() {
    let (engine, sink) = gated(10);
    let first = keep(&engine, 0).await;
    sending(&engine).await;
    let queued = keep(&engine, 1).await;
    in_flight(&engine, 2).await;
    let closing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.close(Duration::from_secs(5)).await }
    });
    sink.open.add_permits(2);
    assert_eq!(first.await.unwrap(), Ok(Duration::ZERO));
    assert_eq!(queued.await.unwrap(), Ok(Duration::ZERO));
    closing.await.unwrap();
    let after = keep(&engine, 2).await.await.unwrap();
    assert_eq!(after, Err(Refused::Engine(Stopped::ShuttingDown)));
    assert_eq!(sent(&sink), [vec![0], vec![1]]);
}
