//! The traffic: ids, the mix, the bodies, the ledger.

use std::collections::BTreeSet;

use super::*;
use corral_payload as payload;

fn traffic(mix: Mix) -> Traffic {
    Traffic::new(RunId::random(), 7, mix)
}

#[test]
fn drop_ids_carry_the_run_and_the_item() {
    let run = RunId::from_hex("00c0ffee42").unwrap();
    let drop_id = run.drop_id(0x1234);
    assert_eq!(drop_id, "00c0ffee4200000000001234");
    assert_eq!(drop_id.len(), 24);
    assert_eq!(run.item_of(&drop_id), Some(0x1234));
    assert_eq!(run.item_of("00c0ffee4300000000001234"), None);
    assert_eq!(run.item_of("00c0ffee42000000000012"), None);
    assert_eq!(RunId::from_hex(&run.hex()), Some(run));
    assert_eq!(RunId::from_hex("00C0FFEE42"), None);
}

#[test]
fn every_body_is_a_valid_webhook_the_worker_can_type() {
    let traffic = traffic(Mix {
        duplicates: 0.2,
        out_of_order: 0.2,
        ..Mix::default()
    });
    for index in 0..2_000 {
        let item = traffic.item(index);
        for webhook in &item.bodies {
            let typed = payload::parse(&webhook.body)
                .unwrap_or_else(|err| panic!("{err}: {:?}", webhook.body));
            assert_eq!(typed.status.drop_id, webhook.drop_id);
            assert_eq!(typed.status.attempt_date, webhook.attempt_date);
            assert_eq!(typed.status.status, webhook.status);
            assert_eq!(typed.status.reason.as_deref(), Some(webhook.reason));
            assert_eq!(typed.status.foreign_id, webhook.foreign_id);
            let value: serde_json::Value = serde_json::from_slice(&webhook.body).unwrap();
            assert!(value.is_object());
        }
    }
}

#[test]
fn the_same_traffic_makes_the_same_items() {
    let traffic = traffic(Mix {
        out_of_order: 0.5,
        ..Mix::default()
    });
    for index in [0, 1, 99, 123_456] {
        let (a, b) = (traffic.item(index), traffic.item(index));
        assert_eq!(a.shape, b.shape);
        let bodies = |item: &Item| {
            item.bodies
                .iter()
                .map(|w| w.body.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(&a), bodies(&b));
    }
}

#[test]
fn the_mix_is_honoured_and_covers_every_reason() {
    let traffic = traffic(Mix {
        rvm: 0.3,
        success: 0.5,
        duplicates: 0.1,
        out_of_order: 0.2,
        without_foreign_id: 0.1,
        ..Mix::default()
    });
    let n = 20_000;
    let items: Vec<Item> = (0..n).map(|index| traffic.item(index)).collect();
    let share = |count: usize| count as f64 / n as f64;
    let count = |shape| items.iter().filter(|item| item.shape == shape).count();
    assert!((share(count(Shape::Duplicate)) - 0.1).abs() < 0.02);
    assert!((share(count(Shape::OutOfOrder)) - 0.2).abs() < 0.02);
    let firsts: Vec<&Webhook> = items.iter().map(|item| &item.bodies[0]).collect();
    let rvm = firsts.iter().filter(|w| w.kind == Kind::Rvm).count();
    assert!((share(rvm) - 0.3).abs() < 0.02);
    let success = firsts.iter().filter(|w| w.status == "success").count();
    assert!((share(success) - 0.5).abs() < 0.02);
    let without = firsts.iter().filter(|w| w.foreign_id.is_none()).count();
    assert!((share(without) - 0.1).abs() < 0.02);
    for reason in FAILURE_REASONS {
        assert!(
            firsts.iter().any(|w| w.reason == *reason),
            "{reason} never drawn"
        );
    }
}

#[test]
fn an_out_of_order_pair_sends_the_newer_event_first() {
    let traffic = traffic(Mix {
        out_of_order: 1.0,
        ..Mix::default()
    });
    let item = traffic.item(5);
    assert_eq!(item.steps, [Step::once(0), Step::once(1)]);
    let (newer, older) = (&item.bodies[0], &item.bodies[1]);
    assert_eq!(newer.drop_id, older.drop_id);
    assert!(newer.attempt_date > older.attempt_date);
    assert_eq!(older.reason, RETRIED_REASON);
}

#[test]
fn the_ledger_counts_distinct_webhooks() {
    let traffic = traffic(Mix {
        duplicates: 0.34,
        out_of_order: 0.33,
        ..Mix::default()
    });
    let first = |shape| (0..).find(|&i| traffic.item(i).shape == shape).unwrap();
    let records = vec![
        ItemRecord {
            item: first(Shape::Duplicate),
            shape: Shape::Duplicate,
            sends: [2, 0, 0],
            confirms: [2, 0, 0],
        },
        ItemRecord {
            item: first(Shape::OutOfOrder),
            shape: Shape::OutOfOrder,
            sends: [1, 1, 0],
            confirms: [1, 0, 0],
        },
        ItemRecord {
            item: first(Shape::Single),
            shape: Shape::Single,
            sends: [1, 0, 0],
            confirms: [0, 0, 0],
        },
    ];
    let sent = Sent::new(traffic, records);
    assert!(sent.records().windows(2).all(|w| w[0].item < w[1].item));
    let summary = sent.summary();
    assert_eq!(summary.items, 3);
    assert_eq!(summary.webhooks, 4);
    assert_eq!(summary.confirmed, 2);
    assert_eq!(summary.resent, 1);
    assert_eq!(summary.resent_confirmed_twice, 1);
    assert_eq!(summary.out_of_order_pairs, 1);
    assert_eq!(sent.webhooks().count(), 4);
    assert_eq!(sent.out_of_order_pairs().count(), 1);
}

/// A traffic whose every choice is fixed: run id, seed and epoch.
fn pinned(mix: Mix) -> Traffic {
    Traffic {
        run_id: RunId::from_hex("00c0ffee42").unwrap(),
        seed: 7,
        mix,
        epoch: DateTime::from_timestamp_millis(1_796_601_600_000).unwrap(),
    }
}

/// The callback traffic is byte for byte what the generator sent before it
/// could sign (these bodies were made by that version), with signed items
/// in the mix or not.
#[test]
fn callback_items_are_what_they_were_before_signed_traffic() {
    let before = [
        (
            0,
            Shape::Duplicate,
            vec![
                r#"{"drop_id":"00c0ffee4200000000000000","phone_number":"+17674272098","attempt_date":"2026-12-07T00:00:00.000Z","status":"success","reason":"","dnc":false,"spam":false,"product_cost":0.045,"compliance_fee":0.0029,"tts_fee":0,"network":{"name":"Frontier Communications","type":"landline"},"foreign_id":"lg-00c0ffee42-order-0"}"#,
            ],
        ),
        (
            5,
            Shape::OutOfOrder,
            vec![
                r#"{"drop_id":"00c0ffee4200000000000005","phone_number":"+15434575283","attempt_date":"2026-12-07T00:07:39.005Z","status":"success","reason":"","dnc":false,"spam":false,"product_cost":0.045,"compliance_fee":0.0029,"tts_fee":0.0125,"network":{"name":"AT&T Wireless:6010 - SVR/2","type":"wireless"},"foreign_id":"lg-00c0ffee42-order-5"}"#,
                r#"{"drop_id":"00c0ffee4200000000000005","phone_number":"+15434575283","attempt_date":"2026-12-07T00:00:00.005Z","status":"failure","reason":"Temporarily unreachable","dnc":false,"spam":false,"product_cost":0,"compliance_fee":0.0029,"tts_fee":0,"network":{"name":"AT&T Wireless:6010 - SVR/2","type":"wireless"},"foreign_id":"lg-00c0ffee42-order-5"}"#,
            ],
        ),
    ];
    let mix = Mix {
        duplicates: 0.3,
        out_of_order: 0.3,
        ..Mix::default()
    };
    let unsigned = pinned(mix.clone());
    for (index, shape, bodies) in before {
        let item = unsigned.item(index);
        assert_eq!(item.shape, shape);
        let sent: Vec<&[u8]> = item.bodies.iter().map(|w| &w.body[..]).collect();
        let expected: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
        assert_eq!(sent, expected, "item {index}");
    }
    let half_signed = pinned(Mix { signed: 0.5, ..mix });
    let mut callbacks = 0;
    for index in 0..2_000 {
        let item = half_signed.item(index);
        if item.bodies.iter().all(|w| w.event.is_none()) {
            callbacks += 1;
            let alone = unsigned.item(index);
            assert_eq!(item.shape, alone.shape);
            assert_eq!(item.steps, alone.steps);
            for (a, b) in item.bodies.iter().zip(&alone.bodies) {
                assert_eq!(a.body, b.body, "item {index}");
            }
        }
    }
    assert!(
        (800..1200).contains(&callbacks),
        "{callbacks} callback items"
    );
}

#[test]
fn event_ids_are_uuids_carrying_the_run_the_item_and_the_body() {
    let run = RunId::from_hex("00c0ffee42").unwrap();
    let id = run.event_id(0x1234, 2);
    assert_eq!(id, "00c0ffee-4200-0000-0000-123402000000");
    assert!(id.starts_with(&run.event_prefix()));
    assert_eq!(run.event_prefix(), "00c0ffee-42");
    assert_eq!(run.event_of(&id), Some((0x1234, 2)));
    let other = RunId::from_hex("00c0ffee43").unwrap();
    assert_eq!(other.event_of(&id), None);
    for not_ours in [
        "00c0ffee42000000000012340200000",
        "00c0ffee-4200-0000-0000-123402000001",
        "00c0ffee-4200-0000-0000-12340200000",
        "00C0FFEE-4200-0000-0000-123402000000",
        "00c0ffee-4200-0000-000012-3402000000",
    ] {
        assert_eq!(run.event_of(not_ours), None, "{not_ours}");
    }
}

/// Every signed item over many: its bodies are the provider's envelope,
/// results carry the item's `drop_id`, `reason_code` and reason, a receipt
/// follows only a result the provider sends one for, and a drop on both
/// channels has a callback the worker types, with the same result.
#[test]
fn every_signed_body_is_an_event_the_provider_could_send() {
    let traffic = traffic(Mix {
        signed: 1.0,
        both_channels: 0.3,
        other_events: 0.2,
        retries: 0.3,
        receipts: 1.0,
        rvm: 0.5,
        success: 0.5,
        ..Mix::default()
    });
    let mut names = BTreeSet::new();
    for index in 0..3_000 {
        let item = traffic.item(index);
        assert!(item.bodies.len() <= MAX_BODIES);
        for (at, webhook) in item.bodies.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_slice(&webhook.body)
                .unwrap_or_else(|err| panic!("{err}: {:?}", webhook.body));
            let Some(event) = &webhook.event else {
                assert_eq!((item.shape, at), (Shape::BothChannels, 0));
                let typed = payload::parse(&webhook.body).expect("the worker types it");
                assert_eq!(typed.status.drop_id, webhook.drop_id);
                assert_eq!(typed.status.attempt_date, webhook.attempt_date);
                assert_eq!(value["reason_code"], webhook.reason_code.unwrap());
                let status = &item.bodies[1];
                assert_eq!(status.reason_code, webhook.reason_code);
                assert_eq!(value["phone_number"], status_data(&status.body)["to"]);
                continue;
            };
            assert!(item.shape.is_signed(at));
            assert_eq!(webhook.kind, Kind::Event);
            assert_eq!(event.id, traffic.run_id.event_id(index, at));
            assert_eq!(value["event_id"], event.id);
            assert_eq!(value["event"], event.name);
            assert_eq!(value["event_at"], webhook.attempt_date.timestamp_millis());
            names.insert(event.name);
            let data = &value["data"];
            assert!(data.is_object());
            if event.destination == Destination::ProviderEvents {
                assert!(OTHER_EVENTS.contains(&event.name));
                assert!(data.get("drop_id").is_none());
                continue;
            }
            assert_eq!(data["drop_id"], webhook.drop_id);
            assert_eq!(data["reason_code"], webhook.reason_code.unwrap());
            assert_eq!(data["reason"], webhook.reason);
            assert_eq!(data["status"], webhook.status);
            let code = webhook.reason_code.unwrap();
            assert_eq!(code == 0, webhook.reason.is_empty());
            assert!(
                REASON_CODES
                    .iter()
                    .any(|(known, text)| (*known, *text) == (code, webhook.reason))
            );
            if event.name == "contact.rvm.receipt" {
                let status = &item.bodies[at - 1];
                assert_eq!(status.event.as_ref().unwrap().name, "contact.rvm.status");
                assert!([0, 4001, 4002].contains(&code));
                assert!(webhook.attempt_date > status.attempt_date);
                assert!(
                    data["proof_of_delivery_url"]
                        .as_str()
                        .unwrap()
                        .starts_with("https://")
                );
                assert!(data["receipt_ready_at"].is_string());
            }
        }
    }
    for name in [
        "contact.sms.status",
        "contact.rvm.status",
        "contact.rvm.receipt",
    ]
    .into_iter()
    .chain(OTHER_EVENTS.iter().copied())
    {
        assert!(names.contains(name), "{name} never sent");
    }
}

fn status_data(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["data"].clone()
}

/// The provider's retries: the same body again, attempt after attempt (at
/// most 3), each signed at its own second a minute apart, the last now; a
/// retry re-serialised keeps the content and changes the bytes.
#[test]
fn retries_deliver_the_same_event_again_attempt_by_attempt() {
    let traffic = traffic(Mix {
        signed: 1.0,
        both_channels: 0.5,
        retries: 0.5,
        receipts: 1.0,
        rvm: 1.0,
        success: 1.0,
        ..Mix::default()
    });
    let (mut retried, mut thirds, mut reserialised, mut callback_first) = (0, 0, 0, 0);
    for index in 0..2_000 {
        let item = traffic.item(index);
        let mut attempts = vec![0u8; item.bodies.len()];
        for (at, step) in item.steps.iter().enumerate() {
            let is_signed = item.bodies[step.body].event.is_some();
            if !is_signed {
                assert_eq!(*step, Step::once(step.body));
                callback_first += usize::from(at == 0);
                continue;
            }
            attempts[step.body] += 1;
            assert_eq!(step.attempt, attempts[step.body], "attempts in order");
            let last = item.steps[at..]
                .iter()
                .filter(|later| later.body == step.body)
                .count();
            assert_eq!(step.signed_secs_ago, 60 * (last as u64 - 1));
            assert!(!step.reserialised || step.attempt > 1);
            if step.reserialised {
                reserialised += 1;
                let payload = item.payload(step);
                let original = &item.bodies[step.body].body;
                assert_ne!(payload, original);
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&payload).unwrap(),
                    serde_json::from_slice::<serde_json::Value>(original).unwrap()
                );
            }
        }
        assert!(attempts.iter().all(|&n| n <= 3));
        retried += attempts.iter().filter(|&&n| n > 1).count();
        thirds += attempts.iter().filter(|&&n| n == 3).count();
        if item.shape == Shape::BothChannels {
            assert_eq!(item.steps.iter().filter(|s| s.body == 0).count(), 1);
        }
    }
    assert!(retried > 1_000, "{retried}");
    assert!(thirds > 100, "{thirds}");
    assert!(reserialised > 500, "{reserialised}");
    assert!((300..700).contains(&callback_first), "{callback_first}");
}

#[test]
fn the_signed_mix_is_honoured() {
    let traffic = traffic(Mix {
        signed: 0.6,
        both_channels: 0.2,
        other_events: 0.1,
        retries: 0.2,
        receipts: 0.5,
        rvm: 0.4,
        success: 0.7,
        ..Mix::default()
    });
    let n = 20_000;
    let items: Vec<Item> = (0..n).map(|index| traffic.item(index)).collect();
    let count = |shape: Shape| items.iter().filter(|item| item.shape == shape).count() as f64;
    let signed = count(Shape::Signed) + count(Shape::BothChannels) + count(Shape::OtherEvent);
    assert!((signed / n as f64 - 0.6).abs() < 0.02, "{signed}");
    assert!((count(Shape::BothChannels) / signed - 0.2).abs() < 0.02);
    assert!((count(Shape::OtherEvent) / signed - 0.1).abs() < 0.02);
    let results: Vec<&Item> = items
        .iter()
        .filter(|item| matches!(item.shape, Shape::Signed | Shape::BothChannels))
        .collect();
    let status = |item: &&Item| {
        item.bodies
            .iter()
            .find(|w| w.event.is_some())
            .unwrap()
            .clone()
    };
    let share = |test: &dyn Fn(&Webhook) -> bool, of: &[&Item]| {
        of.iter().filter(|item| test(&status(item))).count() as f64 / of.len() as f64
    };
    let is_rvm = |w: &Webhook| w.event.as_ref().unwrap().name == "contact.rvm.status";
    assert!((share(&is_rvm, &results) - 0.4).abs() < 0.02);
    assert!((share(&|w: &Webhook| w.status == "success", &results) - 0.7).abs() < 0.02);
    let receiptable: Vec<&Item> = results
        .iter()
        .copied()
        .filter(|item| {
            let status = status(item);
            is_rvm(&status) && [0, 4001, 4002].contains(&status.reason_code.unwrap())
        })
        .collect();
    let receipted = receiptable
        .iter()
        .filter(|item| {
            item.bodies.last().unwrap().event.as_ref().unwrap().name == "contact.rvm.receipt"
        })
        .count() as f64;
    assert!((receipted / receiptable.len() as f64 - 0.5).abs() < 0.04);
    let events: Vec<usize> = items
        .iter()
        .flat_map(|item| {
            (0..item.bodies.len())
                .filter(|&at| item.bodies[at].event.is_some())
                .map(|at| item.steps.iter().filter(|s| s.body == at).count())
                .collect::<Vec<_>>()
        })
        .collect();
    let retried = events.iter().filter(|&&n| n > 1).count() as f64;
    assert!((retried / events.len() as f64 - 0.2).abs() < 0.02);
}

#[test]
fn the_ledger_counts_signed_events_retries_and_both_channels() {
    let traffic = traffic(Mix {
        signed: 1.0,
        both_channels: 0.5,
        other_events: 0.2,
        ..Mix::default()
    });
    let first = |shape| (0..).find(|&i| traffic.item(i).shape == shape).unwrap();
    let records = vec![
        ItemRecord {
            item: first(Shape::BothChannels),
            shape: Shape::BothChannels,
            sends: [1, 3, 1],
            confirms: [1, 2, 0],
        },
        ItemRecord {
            item: first(Shape::Signed),
            shape: Shape::Signed,
            sends: [2, 0, 0],
            confirms: [2, 0, 0],
        },
        ItemRecord {
            item: first(Shape::OtherEvent),
            shape: Shape::OtherEvent,
            sends: [1, 0, 0],
            confirms: [1, 0, 0],
        },
    ];
    let summary = Sent::new(traffic, records).summary();
    assert_eq!(summary.items, 3);
    assert_eq!(summary.webhooks, 5);
    assert_eq!(summary.confirmed, 4);
    assert_eq!(summary.signed_events, 4);
    assert_eq!(summary.signed_retried, 2);
    assert_eq!(summary.both_channels, 1);
    assert_eq!(summary.resent, 0);
    assert_eq!(summary.out_of_order_pairs, 0);
}
