//! Whatever a message holds (its body; its entries' `kind`, `id`,
//! `received_at` and body; its routing key and header values), the worker's
//! unpacking and its batch write take it: the batch commits, and every
//! webhook in it, or the message kept whole, is stored, a duplicate, or
//! quarantined. A message is a batch of messages here, written with the
//! worker's own code against the test's real database, exactly as the
//! consumer writes what a source hands it.
//!
//! Each case is a transaction on the real PostgreSQL, so the count is modest:
//! 64 cases, or `PROPTEST_CASES`
//! (`PROPTEST_CASES=2000 cargo nextest run -p corral-suites proptest`).

use corral_contract::envelope::{self, Kind, batch};
use corral_payload as payload;
use corral_testkit::{database::TestDatabase, fixtures};
use corral_worker::{
    db,
    source::{Contents, unpack},
    store::{self, Incoming},
};
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use uuid::Uuid;

/// Cases when `PROPTEST_CASES` does not say.
const CASES: u32 = 64;

/// Text with what PostgreSQL, JSON or a header may choke on: U+0000 and
/// other controls, quotes, backslashes, non-ASCII and astral characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.-]{0,10}",
        "[\u{0}-\u{1f}\"\\\\/ é中🐄a-z]{0,12}",
        any::<String>(),
        Just("\u{0}".to_owned()),
    ]
}

/// A webhook body: a valid one (its drop id from a few, so duplicates
/// happen; its foreign id any text, U+0000 included), any text, or any bytes.
fn webhook() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0..4u8, text()).prop_map(|(drop, foreign_id)| {
            fixtures::DeliveryStatus {
                drop_id: &format!("proptest-{drop}"),
                foreign_id: &foreign_id,
                ..fixtures::DeliveryStatus::default()
            }
            .body()
            .into_bytes()
        }),
        1 => text().prop_map(String::into_bytes),
        1 => any::<Vec<u8>>(),
    ]
}

/// A JSON string of `value`.
fn json(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialize")
}

/// One entry of an envelope-2 body, as JSON text: each field as corral
/// writes it or any text, the body in either form (or in neither).
fn entry() -> impl Strategy<Value = String> {
    // Mostly as corral writes them, so many messages unpack and their
    // webhooks reach the event insert.
    let id = prop_oneof![
        16 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        1 => text(),
    ];
    let received_at = prop_oneof![
        12 => Just("2026-11-28T14:00:00.000001Z".to_owned()),
        1 => Just("9999-12-31T23:59:59.999999Z".to_owned()),
        1 => Just("0000-01-01T00:00:00+23:59".to_owned()),
        1 => text(),
    ];
    let kind = prop_oneof![
        8 => Just("sms".to_owned()),
        8 => Just("rvm".to_owned()),
        1 => text(),
    ];
    let body = prop_oneof![
        16 => webhook().prop_map(|body| match String::from_utf8(body) {
            Ok(text) if text.starts_with('{') && text.ends_with('}') => format!(r#""body":{text}"#),
            Ok(text) => format!(r#""body_text":{}"#, json(&text)),
            Err(err) => format!(
                r#""body_text":{}"#,
                json(&String::from_utf8_lossy(err.as_bytes()))
            ),
        }),
        1 => Just(r#""body_text":"{}","body":{}"#.to_owned()),
        1 => Just(r#""note":1"#.to_owned()),
    ];
    (id, received_at, kind, body).prop_map(|(id, received_at, kind, body)| {
        format!(
            r#"{{"id":{},"received_at":{},"kind":{},{body}}}"#,
            json(&id),
            json(&received_at),
            json(&kind)
        )
    })
}

/// A message body: envelope 2 (what the content type says or not), or any
/// webhook body.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(entry(), 1..4)
            .prop_map(|entries| format!(r#"{{"webhooks":[{}]}}"#, entries.join(",")).into_bytes()),
        1 => Just(br#"{"webhooks":[]}"#.to_vec()),
        2 => webhook(),
    ]
}

/// One AMQP message as anyone who may publish to the exchange could make it.
#[derive(Clone)]
struct Message {
    routing_key: String,
    properties: BasicProperties,
    body: Vec<u8>,
}

/// The body as text a person can read in a failure's minimal input.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut message = f.debug_struct("Message");
        message
            .field("routing_key", &self.routing_key)
            .field("properties", &self.properties);
        match std::str::from_utf8(&self.body) {
            Ok(text) => message.field("body", &text),
            Err(_) => message.field("body", &format_args!("b\"{}\"", self.body.escape_ascii())),
        }
        .finish()
    }
}

fn message() -> impl Strategy<Value = Message> {
    let routing_key = prop_oneof![
        Just(Kind::Sms.routing_key().to_owned()),
        Just(Kind::Rvm.routing_key().to_owned()),
        Just(envelope::MIXED_ROUTING_KEY.to_owned()),
        text(),
    ];
    let content_type = prop_oneof![
        4 => Just(Some(batch::CONTENT_TYPE.to_owned())),
        2 => Just(None),
        1 => Just(Some(format!("{}; version=3", batch::MEDIA_TYPE))),
        1 => text().prop_map(|t| Some(format!("{}; version={t}", batch::MEDIA_TYPE))),
        1 => text().prop_map(Some),
    ];
    let message_id = prop_oneof![
        any::<u128>().prop_map(|n| Some(Uuid::from_u128(n).to_string())),
        Just(None),
        text().prop_map(Some),
    ];
    let received_at = prop_oneof![
        Just(None),
        Just(Some(AMQPValue::LongString(LongString::from(
            "2026-11-28T14:00:00.000001Z"
        )))),
        any::<Vec<u8>>().prop_map(|bytes| Some(AMQPValue::LongString(LongString::from(bytes)))),
        text().prop_map(|t| Some(AMQPValue::ShortString(ShortString::from(t)))),
    ];
    let timestamp = prop_oneof![Just(None), any::<u64>().prop_map(Some)];
    (
        routing_key,
        content_type,
        message_id,
        received_at,
        timestamp,
        body(),
    )
        .prop_map(
            |(routing_key, content_type, message_id, received_at, timestamp, body)| {
                let mut properties = BasicProperties::default();
                if let Some(content_type) = content_type {
                    properties = properties.with_content_type(ShortString::from(content_type));
                }
                if let Some(id) = message_id {
                    properties = properties.with_message_id(ShortString::from(id));
                }
                if let Some(at) = timestamp {
                    properties = properties.with_timestamp(at);
                }
                let mut headers = FieldTable::default();
                headers.insert(envelope::ENVELOPE_HEADER.into(), AMQPValue::LongInt(2));
                if let Some(value) = received_at {
                    headers.insert(envelope::RECEIVED_AT_HEADER.into(), value);
                }
                Message {
                    routing_key,
                    properties: properties.with_headers(headers),
                    body,
                }
            },
        )
}

/// Whether `incoming` is a `delivery_events` row (by fingerprint, when it
/// types) or a `quarantined_webhooks` row (by the SHA-256 of its body).
async fn landed(client: &tokio_postgres::Client, incoming: &Incoming) -> bool {
    let fingerprint = Kind::from_routing_key(&incoming.routing_key)
        .and(payload::parse(&incoming.body).ok())
        .map(|typed| typed.fingerprint.0.to_vec());
    client
        .query_one(
            "SELECT EXISTS (SELECT FROM delivery_events WHERE fingerprint = $1)
                 OR EXISTS (SELECT FROM quarantined_webhooks WHERE body_sha256 = sha256($2))",
            &[&fingerprint, &incoming.body],
        )
        .await
        .expect("looking the webhook up")
        .get(0)
}

async fn rows(client: &tokio_postgres::Client, table: &str) -> usize {
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("counting rows")
        .get(0);
    usize::try_from(count).expect("a count")
}

/// Unpacks and writes `messages` as the consumer does one batch, and checks
/// that it committed and where each webhook went.
async fn write(
    pool: &deadpool_postgres::Pool,
    check: &tokio_postgres::Client,
    messages: &[Message],
) -> Result<(), TestCaseError> {
    let (events, quarantined) = (
        rows(check, "delivery_events").await,
        rows(check, "quarantined_webhooks").await,
    );
    let mut webhooks = Vec::new();
    let mut unreadable = Vec::new();
    for message in messages {
        match unpack::contents(
            &corral_runtime::amqp::metadata(&message.properties),
            &message.routing_key,
            message.body.clone(),
        ) {
            Contents::Webhooks(inside) => webhooks.extend(inside),
            Contents::Unreadable {
                message,
                error,
                logged,
            } => unreadable.push((message, error, logged)),
        }
    }
    let mut prepared = store::prepare_all(&webhooks).with_result_events(true);
    for (message, error, logged) in &unreadable {
        prepared.quarantine(message, error, logged);
    }
    let mut client = pool.get().await.expect("a pooled connection");
    let outcome = store::write_batch(&mut client, &prepared)
        .await
        .map_err(|err| TestCaseError::fail(format!("the batch did not commit: {err:?}")))?;
    prop_assert_eq!(
        outcome.stored + outcome.duplicate + outcome.quarantined,
        webhooks.len() + unreadable.len()
    );
    prop_assert_eq!(
        rows(check, "delivery_events").await,
        events + outcome.stored
    );
    prop_assert_eq!(
        rows(check, "quarantined_webhooks").await,
        quarantined + outcome.quarantined
    );
    for incoming in webhooks.iter().chain(unreadable.iter().map(|(m, _, _)| m)) {
        prop_assert!(
            landed(check, incoming).await,
            "neither stored nor quarantined: {incoming:?}"
        );
    }
    Ok(())
}

#[test]
fn proptest_any_batch_of_messages_commits_and_each_webhook_lands() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let database = runtime.block_on(TestDatabase::migrated());
    let target = db::Target::new(&database.url, None, std::time::Duration::from_secs(10))
        .expect("the test database URL");
    let pool = db::pool(&target, 1).expect("a pool");
    let check = runtime.block_on(database.client());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&prop::collection::vec(message(), 1..5), |messages| {
        runtime.block_on(write(&pool, &check, &messages))
    });
    if let Err(err) = outcome {
        panic!("{err}");
    }
    // The generators must reach both tables, or the property says little.
    let (events, quarantined) = runtime.block_on(async {
        (
            rows(&check, "delivery_events").await,
            rows(&check, "quarantined_webhooks").await,
        )
    });
    if cases >= CASES {
        assert!(
            events > 0 && quarantined > 0,
            "{events} events, {quarantined} quarantined"
        );
    }
}
