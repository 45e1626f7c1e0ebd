//! corral-ingress against the real RabbitMQ, driven over HTTP as Drop Cowboy
//! would: what lands in the queue, every rejection, token handling, a burst
//! of concurrent posts, broker loss through a per-test TCP proxy (cut,
//! black-hole, deleted queue, overload), graceful shutdown, and tokens kept
//! out of the logs.
//!
//! Each test runs in its own process under nextest, under its own AMQP prefix
//! ([`TestBroker`]), so the metrics recorder and the queue are the test's own
//! and counter deltas are exact. Nothing here touches the shared broker
//! itself: a broken path to it is a [`TcpProxy`] the test owns.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use corral_ingress::config::IngressConfig;
use corral_tests::{
    apps::{Metrics, RunningIngress, TOKEN, ingress_config},
    broker::TestBroker,
    fixtures,
    proxy::TcpProxy,
    tls::{TestCa, TlsFront},
    wait,
};
use lapin::{message::BasicGetMessage, types::AMQPValue};
use reqwest::{RequestBuilder, Response, StatusCode, header};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest wait for messages to show up in a queue.
const QUEUE_WAIT: Duration = Duration::from_secs(15);
/// Client-side bound on one request, so a hang fails the test instead of stalling it.
const REQUEST_BOUND: Duration = Duration::from_secs(20);
/// `Retry-After` the broker-loss tests configure, to check the setting is honoured.
const RETRY_AFTER_SECS: u32 = 3;
/// The rejection reasons of `corral_ingress_rejected_total`, as design.md names them.
const REJECT_REASONS: &[&str] = &[
    "unauthorized",
    "invalid_json",
    "not_object",
    "too_large",
    "unsupported_media_type",
];
/// The default `CORRAL_MAX_BODY_BYTES`.
const MAX_BODY_BYTES: usize = 65_536;

// ---------------------------------------------------------------------------
// The sample reaches the queue untouched
// ---------------------------------------------------------------------------

/// Each sample reaches the queue byte for byte, with the route's routing key
/// and the envelope design.md fixes; the answered id is the `message_id`.
#[tokio::test]
async fn a_posted_sample_arrives_in_the_queue_byte_identical_with_its_envelope() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    // Not what a serializer would write: proves the bytes are passed on, not re-encoded.
    let odd = "{ \"a\" : 1.50e0,\n\t\"b\":\"\\u00e9\\ud83d\\ude00\", \"n\": null }\r\n";
    let posts = [
        ("sms", fixtures::SMS_SUCCESS),
        ("sms", fixtures::SMS_FAILURE),
        ("rvm", fixtures::SMS_FAILURE),
        ("rvm", odd),
    ];

    let before = Utc::now();
    let mut expected = HashMap::new();
    for (kind, body) in posts {
        let id = accepted(send(authenticated(&ingress, kind).body(body)).await).await;
        assert_eq!(id.get_version_num(), 7, "message ids are UUIDv7");
        expected.insert(id, (kind, body));
    }
    let after = Utc::now();

    let messages = broker.take(&broker.queue(), posts.len(), QUEUE_WAIT).await;
    assert_eq!(messages.len(), posts.len());
    for message in &messages {
        let id = message_id(message);
        let (kind, body) = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("{id} in the queue was not answered 200 (or came twice)"));
        let delivery = &message.delivery;
        let properties = &delivery.properties;
        assert_eq!(
            delivery.data,
            body.as_bytes(),
            "{kind} body is not byte-identical"
        );
        assert_eq!(delivery.routing_key.as_str(), format!("dropcowboy.{kind}"));
        assert_eq!(delivery.exchange.as_str(), broker.topology.exchange());
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            properties.content_type().as_ref().map(|t| t.as_str()),
            Some("application/json")
        );
        assert_eq!(
            properties.app_id().as_ref().map(|a| a.as_str()),
            Some("corral-ingress")
        );
        assert_eq!(
            header(message, "x-corral-envelope"),
            Some(&AMQPValue::LongInt(1))
        );

        let received_at = header_text(message, "x-received-at")
            .unwrap_or_else(|| panic!("{id} has no text x-received-at header"));
        let fraction = received_at
            .strip_suffix('Z')
            .and_then(|rest| rest.rsplit_once('.'))
            .map(|(_, fraction)| fraction)
            .unwrap_or_else(|| panic!("x-received-at {received_at:?} is not UTC with a fraction"));
        assert!(
            fraction.len() == 6 && fraction.bytes().all(|b| b.is_ascii_digit()),
            "x-received-at {received_at:?} does not have microseconds"
        );
        let at = DateTime::parse_from_rfc3339(&received_at)
            .unwrap_or_else(|err| panic!("x-received-at {received_at:?} is not RFC 3339: {err}"))
            .with_timezone(&Utc);
        // Same clock as the ingress (same process); the header is truncated to µs.
        assert!(
            at >= before - TimeDelta::microseconds(1) && at <= after,
            "x-received-at {at} is not between {before} and {after}"
        );
        let timestamp = properties.timestamp().expect("timestamp property set");
        assert!(
            (before.timestamp() as u64..=after.timestamp() as u64).contains(&timestamp),
            "timestamp {timestamp} is not between {before} and {after}"
        );
    }

    let metrics = ingress.metrics().await;
    assert_eq!(published(&metrics, "sms"), 2.0);
    assert_eq!(published(&metrics, "rvm"), 2.0);
    assert_eq!(
        metrics.get(r#"corral_ingress_requests_total{route="sms",status="200"}"#),
        2.0
    );
    ingress.stop().await.expect("the ingress stops cleanly");
}

// ---------------------------------------------------------------------------
// Rejections: status, error body, counter, and nothing published
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_a_token_is_401_with_a_basic_challenge() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let request = unauthenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS);
    assert_rejected(&broker, &ingress, request, 401, "unauthorized").await;
}

#[tokio::test]
async fn a_wrong_token_is_401_wherever_it_is_sent() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let wrong = "wrong-token-0123456789";
    let url = format!("{}?token={wrong}", ingress.url("rvm"));
    let requests = [
        ingress
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json"),
        unauthenticated(&ingress, "rvm").bearer_auth(wrong),
        unauthenticated(&ingress, "rvm").basic_auth("corral", Some(wrong)),
        // The right token as the user name is not a password.
        unauthenticated(&ingress, "rvm").basic_auth(TOKEN, Some("x")),
        // A prefix of the right token.
        unauthenticated(&ingress, "rvm").bearer_auth(&TOKEN[..TOKEN.len() - 1]),
    ];
    for request in requests {
        let request = request.body(fixtures::SMS_SUCCESS).timeout(REQUEST_BOUND);
        assert_rejected(&broker, &ingress, request, 401, "unauthorized").await;
    }
}

#[tokio::test]
async fn invalid_json_is_400() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let truncated = &fixtures::SMS_SUCCESS[..fixtures::SMS_SUCCESS.len() / 2];
    let request = authenticated(&ingress, "sms").body(truncated.to_owned());
    let error = assert_rejected(&broker, &ingress, request, 400, "invalid_json").await;
    assert!(
        error.contains("JSON"),
        "error {error:?} should say what is wrong"
    );
}

#[tokio::test]
async fn a_json_array_is_400() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let array = format!("[{}]", fixtures::SMS_SUCCESS);
    let request = authenticated(&ingress, "sms").body(array);
    let error = assert_rejected(&broker, &ingress, request, 400, "not_object").await;
    assert!(
        error.contains("object"),
        "error {error:?} should say what is wrong"
    );
}

#[tokio::test]
async fn a_json_string_is_400() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let request = authenticated(&ingress, "rvm").body(r#""delivered""#);
    let error = assert_rejected(&broker, &ingress, request, 400, "not_object").await;
    assert!(
        error.contains("object"),
        "error {error:?} should say what is wrong"
    );
}

/// The limit is inclusive: exactly `max_body_bytes` is published whole, one
/// byte more is 413 and nothing is published.
#[tokio::test]
async fn a_body_one_byte_over_the_limit_is_413_and_one_exactly_at_it_is_accepted() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;

    let at_limit = object_of_len(MAX_BODY_BYTES);
    let id = accepted(send(authenticated(&ingress, "sms").body(at_limit.clone())).await).await;
    let messages = broker.take(&broker.queue(), 1, QUEUE_WAIT).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(message_id(&messages[0]), id);
    assert_eq!(messages[0].delivery.data, at_limit.as_bytes());

    let request = authenticated(&ingress, "sms").body(object_of_len(MAX_BODY_BYTES + 1));
    assert_rejected(&broker, &ingress, request, 413, "too_large").await;
}

/// Without a Content-Length the limit is enforced while reading the body.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_one_at_it_is_accepted() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;

    let at_limit = object_of_len(MAX_BODY_BYTES);
    let (status, response) = raw_http(ingress.port, &chunked_post(&at_limit)).await;
    assert_eq!(status, 200, "{response}");
    let messages = broker.take(&broker.queue(), 1, QUEUE_WAIT).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].delivery.data, at_limit.as_bytes());

    let before = ingress.metrics().await;
    let (status, response) = raw_http(
        ingress.port,
        &chunked_post(&object_of_len(MAX_BODY_BYTES + 1)),
    )
    .await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains(r#"{"error":"#), "{response}");
    let after = ingress.metrics().await;
    assert_eq!(
        rejected(&after, "too_large") - rejected(&before, "too_large"),
        1.0
    );
    assert_nothing_else_published(&broker, &ingress).await;
}

#[tokio::test]
async fn a_text_plain_body_is_415() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let request = ingress
        .http
        .post(ingress.url("sms"))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(fixtures::SMS_SUCCESS)
        .timeout(REQUEST_BOUND);
    assert_rejected(&broker, &ingress, request, 415, "unsupported_media_type").await;
}

/// A missing Content-Type is accepted (some senders omit it), and so are the
/// JSON media types with parameters or a `+json` suffix.
#[tokio::test]
async fn json_media_types_and_a_missing_content_type_are_accepted() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let mut ids = HashSet::new();
    let plain = ingress.http.post(ingress.url("sms")).bearer_auth(TOKEN);
    ids.insert(accepted(send(plain.body(fixtures::SMS_SUCCESS)).await).await);
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.dropcowboy+json",
    ] {
        let request = ingress
            .http
            .post(ingress.url("sms"))
            .bearer_auth(TOKEN)
            .header(header::CONTENT_TYPE, content_type)
            .body(fixtures::SMS_SUCCESS);
        ids.insert(accepted(send(request).await).await);
    }
    assert_eq!(queued_ids(&broker, ids.len()).await, ids);
}

// ---------------------------------------------------------------------------
// Tokens, routes, and the refusal to run open by accident
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_token_is_accepted_as_query_parameter_bearer_and_basic_password() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let query = ingress
        .http
        .post(format!("{}?token={TOKEN}", ingress.url("sms")))
        .header(header::CONTENT_TYPE, "application/json");
    let bearer = unauthenticated(&ingress, "sms").bearer_auth(TOKEN);
    // What a callback URL `https://corral:<token>@host/...` sends.
    let basic = unauthenticated(&ingress, "sms").basic_auth("corral", Some(TOKEN));
    let mut ids = HashSet::new();
    for request in [query, bearer, basic] {
        ids.insert(accepted(send(request.body(fixtures::SMS_SUCCESS)).await).await);
    }
    assert_eq!(queued_ids(&broker, 3).await, ids);
    assert_eq!(rejected(&ingress.metrics().await, "unauthorized"), 0.0);
}

/// Two configured tokens (a rotation in progress) are both accepted.
#[tokio::test]
async fn both_tokens_of_a_rotation_are_accepted() {
    let broker = TestBroker::new().await;
    let mut config = ingress_config(broker.prefix());
    let (old, new) = ("rotation-old-0123456789", "rotation-new-9876543210");
    config.webhook_tokens = vec![old.into(), new.into()];
    let ingress = RunningIngress::start(config).await;
    let mut ids = HashSet::new();
    for token in [old, new] {
        let request = unauthenticated(&ingress, "rvm")
            .bearer_auth(token)
            .body(fixtures::SMS_SUCCESS);
        ids.insert(accepted(send(request).await).await);
        let query = ingress
            .http
            .post(format!("{}?token={token}", ingress.url("rvm")))
            .body(fixtures::SMS_FAILURE);
        ids.insert(accepted(send(query).await).await);
    }
    assert_eq!(queued_ids(&broker, 4).await, ids);
    // The built-in test token is not among the configured ones.
    let request = authenticated(&ingress, "rvm").body(fixtures::SMS_SUCCESS);
    refused(send(request).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(rejected(&ingress.metrics().await, "unauthorized"), 1.0);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_on_a_webhook_route_405() {
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let base = format!("http://127.0.0.1:{}", ingress.port);
    for path in [
        "/webhooks/dropcowboy/fax",
        "/",
        "/webhooks/dropcowboy/sms/extra",
    ] {
        let request = ingress
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(fixtures::SMS_SUCCESS);
        refused(send(request).await, StatusCode::NOT_FOUND).await;
    }
    for (method, kind) in [(reqwest::Method::GET, "sms"), (reqwest::Method::PUT, "rvm")] {
        let request = ingress
            .http
            .request(method.clone(), ingress.url(kind))
            .bearer_auth(TOKEN)
            .body(fixtures::SMS_SUCCESS);
        let (_, headers) = refused(send(request).await, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(
            headers.get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"POST"[..]),
            "{method} {kind}"
        );
    }
    assert_nothing_else_published(&broker, &ingress).await;
}

/// Without a token the ingress does not build, unless
/// `allow_unauthenticated` is set, and then it says so loudly and accepts
/// webhooks without one.
#[tokio::test]
async fn the_ingress_refuses_to_build_without_a_token_unless_unauthenticated_is_allowed() {
    let logs = CapturedLogs::install();
    let broker = TestBroker::new().await;
    for tokens in [vec![], vec![String::new(), "  ".to_owned()]] {
        let mut config = ingress_config(broker.prefix());
        config.webhook_tokens = tokens.clone();
        let err = corral_ingress::Application::build(config, CancellationToken::new())
            .expect_err("an ingress without tokens must not build");
        assert!(
            format!("{err:#}").contains("CORRAL_WEBHOOK_TOKENS"),
            "{tokens:?}: the error should name the setting: {err:#}"
        );
    }

    let mut config = ingress_config(broker.prefix());
    config.webhook_tokens = vec![];
    config.allow_unauthenticated = true;
    let ingress = RunningIngress::start(config).await;
    let id =
        accepted(send(unauthenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(queued_ids(&broker, 1).await, HashSet::from([id]));
    let warned = logs
        .lines()
        .into_iter()
        .any(|line| line.contains("WARN") && line.contains("AUTHENTICATION IS OFF"));
    assert!(warned, "no loud warning that authentication is off");
}

// ---------------------------------------------------------------------------
// TLS to RabbitMQ
// ---------------------------------------------------------------------------

/// Over `amqps://` with the CA file, the ingress publishes and confirms as
/// over plain AMQP; the link really is TLS (a front with a throwaway CA).
#[tokio::test]
async fn publishes_over_amqps_verified_with_the_ca_file() {
    let broker = TestBroker::new().await;
    let ca = TestCa::new("trusted");
    let front = TlsFront::amqps(&ca).await;
    let mut config = ingress_config(broker.prefix());
    config.amqp.url = front.amqps_url();
    config.amqp.ca_file = Some(ca.pem_file().to_owned());
    let ingress = RunningIngress::start(config).await;

    let id = post_sample(&ingress).await;
    assert_eq!(queued_ids(&broker, 1).await, HashSet::from([id]));
    assert!(front.handshakes() >= 1, "no TLS handshake was made");
}

/// A broker whose certificate does not verify is never talked to: the ingress
/// stays unready and webhooks get 503, never 200.
#[tokio::test]
async fn refuses_a_broker_whose_certificate_does_not_verify() {
    let broker = TestBroker::new().await;
    let trusted = TestCa::new("trusted");
    let impostor = TestCa::new("impostor");
    let front = TlsFront::amqps(&impostor).await;
    let mut config = ingress_config(broker.prefix());
    config.amqp.url = front.amqps_url();
    config.amqp.ca_file = Some(trusted.pem_file().to_owned());
    config.amqp.reconnect_max_ms = 200;
    config.retry_after_secs = RETRY_AFTER_SECS;
    let ingress = RunningIngress::start_unready(config).await;

    wait::until_true("the ingress to try the impostor", QUEUE_WAIT, || async {
        front.failed_handshakes() >= 2
    })
    .await;
    ingress.wait_ready(false).await;
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(
        front.handshakes(),
        0,
        "a handshake with the impostor completed"
    );
    assert_eq!(broker.ready_count(&broker.queue()).await, 0);
}

/// A CA file next to a plain `amqp://` URL, or one that cannot be read, stops
/// the ingress at start with the reason.
#[tokio::test]
async fn amqp_tls_settings_are_checked_at_start() {
    let broker = TestBroker::new().await;
    let trusted = TestCa::new("trusted");
    let cases = [
        (
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            trusted.pem_file().to_owned(),
            "use amqps://",
        ),
        (
            "amqps://guest:guest@127.0.0.1:5671/%2f",
            std::env::temp_dir().join("corral-no-such-ca.pem"),
            "CORRAL_AMQP_CA_FILE",
        ),
    ];
    for (url, ca_file, reason) in cases {
        let mut config = ingress_config(broker.prefix());
        config.amqp.url = url.to_owned();
        config.amqp.ca_file = Some(ca_file);
        let err = corral_ingress::Application::build(config, CancellationToken::new())
            .expect_err("the ingress must refuse this configuration");
        assert!(format!("{err:#}").contains(reason), "{url}: {err:#}");
    }
}

// ---------------------------------------------------------------------------
// A burst
// ---------------------------------------------------------------------------

/// 2,000 posts at once: 2,000 200s with distinct ids, and exactly those
/// 2,000 messages in the queue, each with the body that got its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_posts_each_land_exactly_once() {
    const POSTS: usize = 2_000;
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_BOUND)
        .build()
        .expect("http client");

    let mut posts = JoinSet::new();
    for i in 0..POSTS {
        let kind = if i % 2 == 0 { "sms" } else { "rvm" };
        let body = fixtures::delivery_status(
            &format!("{i:024x}"),
            "2019-03-17T21:10:26.000Z",
            "",
            &format!("burst-{i}"),
        );
        let request = client
            .post(ingress.url(kind))
            .bearer_auth(TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        posts.spawn(async move { (kind, body, request.send().await) });
    }
    let mut sent = HashMap::new();
    while let Some(joined) = posts.join_next().await {
        let (kind, body, response) = joined.expect("a post task panicked");
        let id = accepted(response.expect("every post is answered")).await;
        assert!(
            sent.insert(id, (kind, body)).is_none(),
            "id {id} answered twice"
        );
    }
    assert_eq!(sent.len(), POSTS);

    let messages = broker
        .take(&broker.queue(), POSTS, Duration::from_secs(25))
        .await;
    assert_eq!(messages.len(), POSTS, "exactly one message per 200");
    let mut seen = HashSet::new();
    for message in &messages {
        let id = message_id(message);
        assert!(seen.insert(id), "{id} is in the queue twice");
        let (kind, body) = sent
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is in the queue but was not answered 200"));
        assert_eq!(message.delivery.data, body.as_bytes(), "{id}");
        assert_eq!(
            message.delivery.routing_key.as_str(),
            format!("dropcowboy.{kind}")
        );
    }
    let metrics = ingress.metrics().await;
    assert_eq!(
        published(&metrics, "sms") + published(&metrics, "rvm"),
        POSTS as f64
    );
}

// ---------------------------------------------------------------------------
// Broker loss, through a proxy the test owns
// ---------------------------------------------------------------------------

/// The broker connection is cut: posts get 503 with Retry-After (never 200)
/// and /readyz 503; once the path is back the same process serves again.
#[tokio::test]
async fn a_cut_broker_connection_gives_503_until_it_is_back_then_serves_without_restart() {
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    let ingress = RunningIngress::start(via_proxy(&broker, &proxy)).await;
    let mut accepted_ids = HashSet::from([post_sample(&ingress).await]);

    proxy.cut();
    // Right after the cut the ingress may not have noticed yet; still no 200.
    for _ in 0..3 {
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    }
    ingress.wait_ready(false).await;
    let before = ingress.metrics().await;
    for _ in 0..3 {
        unavailable(send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE)).await).await;
    }
    let after = ingress.metrics().await;
    assert_eq!(
        publish_failures(&after, "unavailable") - publish_failures(&before, "unavailable"),
        3.0,
        "with the link down, the cause is `unavailable`"
    );
    assert_eq!(published(&after, "sms") + published(&after, "rvm"), 1.0);
    assert_eq!(after.get("corral_broker_connected"), 0.0);

    proxy.restore();
    ingress.wait_ready(true).await;
    accepted_ids.insert(post_sample(&ingress).await);
    // Nothing passed the cut, so the queue holds exactly what was answered 200.
    assert_eq!(queued_ids(&broker, 2).await, accepted_ids);
    assert_eq!(ingress.metrics().await.get("corral_broker_connected"), 1.0);
    ingress.stop().await.expect("the ingress stops cleanly");
}

/// Started while the broker cannot be reached, the ingress still serves:
/// /healthz 200, /readyz and webhooks 503; it connects by itself once the
/// broker can be reached, with no restart.
#[tokio::test]
async fn an_ingress_started_without_its_broker_answers_503_then_serves_when_it_appears() {
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    proxy.cut();
    let ingress = RunningIngress::start_unready(via_proxy(&broker, &proxy)).await;
    let healthz = ingress
        .http
        .get(format!("http://127.0.0.1:{}/healthz", ingress.admin_port))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(healthz.status(), StatusCode::OK);
    ingress.wait_ready(false).await;
    for _ in 0..2 {
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    }
    let metrics = ingress.metrics().await;
    assert_eq!(publish_failures(&metrics, "unavailable"), 2.0);
    assert!(
        metrics.get(r#"corral_broker_connect_attempts_total{outcome="failure"}"#) >= 1.0,
        "it should keep trying to connect"
    );

    proxy.restore();
    ingress.wait_ready(true).await;
    let id = post_sample(&ingress).await;
    assert_eq!(queued_ids(&broker, 1).await, HashSet::from([id]));
}

/// An idle link whose path silently stops carrying bytes is noticed by the
/// AMQP heartbeat alone (no request needed): /readyz turns 503, and once the
/// stalled sockets are dropped the ingress reconnects by itself.
#[tokio::test]
async fn an_idle_black_holed_link_is_noticed_by_the_heartbeat() {
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    let mut config = via_proxy(&broker, &proxy);
    config.amqp.heartbeat_secs = 1;
    let ingress = RunningIngress::start(config).await;

    proxy.blackhole();
    ingress.wait_ready(false).await;
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(
        publish_failures(&ingress.metrics().await, "timeout"),
        0.0,
        "the link was known dead before any publish had to time out"
    );

    proxy.drop_connections();
    ingress.wait_ready(true).await;
    let id = post_sample(&ingress).await;
    assert_eq!(queued_ids(&broker, 1).await, HashSet::from([id]));
}

/// The path to the broker silently stops carrying bytes (sockets open, no
/// confirm ever comes): posts get 503 once the publish timeout passes, never
/// 200, and the ingress recovers by itself once bytes flow again, whether
/// the stalled sockets resume (`restore`) or are dropped (`drop_connections`).
#[tokio::test]
async fn a_black_holed_broker_gives_503_on_the_publish_timeout_then_recovers_by_itself() {
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    let mut config = via_proxy(&broker, &proxy);
    // Long enough that the publish timeout, not the heartbeat, gives the verdict.
    config.amqp.heartbeat_secs = 10;
    let ingress = RunningIngress::start(config).await;
    let mut accepted_ids = HashSet::from([post_sample(&ingress).await]);
    let mut refused_count = 0;

    for recover in [
        TcpProxy::restore as fn(&TcpProxy),
        TcpProxy::drop_connections,
    ] {
        proxy.blackhole();
        let before = ingress.metrics().await;
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
        let after = ingress.metrics().await;
        assert_eq!(
            publish_failures(&after, "timeout") - publish_failures(&before, "timeout"),
            1.0,
            "the publish must have waited for its confirm and timed out"
        );
        // A link that confirms nothing is replaced; new ones cannot connect.
        ingress.wait_ready(false).await;
        for _ in 0..2 {
            unavailable(send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE)).await)
                .await;
        }
        refused_count += 3;

        recover(&proxy);
        ingress.wait_ready(true).await;
        accepted_ids.insert(post_sample(&ingress).await);
    }

    // Every 200 is in the queue. A 503'd publish may be there too: its
    // confirm can arrive after the answer once the stalled socket resumes
    // (the worker stores a sender's retry once), but nothing else can be.
    let queued = queued_ids(&broker, accepted_ids.len()).await;
    assert!(
        queued.is_superset(&accepted_ids),
        "a webhook answered 200 is missing"
    );
    assert!(queued.len() <= accepted_ids.len() + refused_count);
}

/// The queue is deleted under a running ingress: publishes come back
/// unroutable and are answered 503, never 200, and the ingress declares its
/// topology again by itself and serves.
#[tokio::test]
async fn a_queue_deleted_under_a_running_ingress_gives_503_then_is_declared_again() {
    let broker = TestBroker::new().await;
    let mut config = ingress_config(broker.prefix());
    config.amqp.reconnect_max_ms = 200;
    config.retry_after_secs = RETRY_AFTER_SECS;
    let ingress = RunningIngress::start(config).await;
    post_sample(&ingress).await;

    broker.delete_queue(&broker.queue()).await;
    let before = ingress.metrics().await;
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    let after = ingress.metrics().await;
    assert_eq!(
        publish_failures(&after, "unroutable") - publish_failures(&before, "unroutable"),
        1.0
    );

    // Every answer until it is back is a 503; then a 200, in the new queue.
    let id = wait::until(
        "the ingress to declare its queue again and accept",
        Duration::from_secs(20),
        || async {
            let response = send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await;
            if response.status() == StatusCode::OK {
                Some(accepted(response).await)
            } else {
                unavailable(response).await;
                None
            }
        },
    )
    .await;
    ingress.wait_ready(true).await;
    assert_eq!(queued_ids(&broker, 1).await, HashSet::from([id]));
}

/// With one publish slot held by a publish the black-holed broker never
/// confirms, further requests get 503 `overloaded` after the short slot wait,
/// while the first is still waiting for its confirm.
#[tokio::test]
async fn past_max_in_flight_requests_get_503_overloaded_while_the_slot_is_held() {
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    let mut config = via_proxy(&broker, &proxy);
    config.max_in_flight = 1;
    config.in_flight_wait_ms = 250;
    config.publish_timeout_ms = 5_000;
    config.amqp.heartbeat_secs = 30;
    let ingress = RunningIngress::start(config).await;

    proxy.blackhole();
    let first = tokio::spawn(
        authenticated(&ingress, "sms")
            .body(fixtures::SMS_SUCCESS)
            .send(),
    );
    wait::until_true(
        "the first publish to hold the only slot",
        Duration::from_secs(10),
        || async {
            ingress
                .metrics()
                .await
                .get("corral_ingress_publishes_in_flight")
                == 1.0
        },
    )
    .await;

    let before = ingress.metrics().await;
    let others = futures_util::future::join_all(
        (0..3).map(|_| send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE))),
    )
    .await;
    assert!(
        !first.is_finished(),
        "the overloaded requests should be answered before the first times out"
    );
    for response in others {
        unavailable(response).await;
    }
    let after = ingress.metrics().await;
    assert_eq!(
        publish_failures(&after, "overloaded") - publish_failures(&before, "overloaded"),
        3.0
    );

    let first = first
        .await
        .expect("first post task")
        .expect("first post answered");
    unavailable(first).await;
    assert_eq!(
        publish_failures(&ingress.metrics().await, "timeout"),
        1.0,
        "the slot holder ends on the publish timeout"
    );
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

/// What one request in the shutdown burst got.
#[derive(Debug)]
enum Outcome {
    /// An HTTP answer: status, body text, and the body posted.
    Answered(StatusCode, String, String),
    /// No (complete) answer: refused connection, connection closed, …
    NoAnswer(String),
}

/// The shutdown token (what SIGTERM cancels) is cancelled while senders keep
/// posting: every request answered 200 is in the queue, every other request
/// got 503 or no answer at all, and the application returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_burst_keeps_every_webhook_answered_200() {
    const SENDERS: usize = 48;
    const MAX_PER_SENDER: usize = 400;
    const ANSWERS_BEFORE_SHUTDOWN: usize = 300;
    let broker = TestBroker::new().await;
    let ingress = start(&broker).await;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_BOUND)
        .build()
        .expect("http client");
    let answered = Arc::new(AtomicUsize::new(0));

    let mut senders = JoinSet::new();
    for sender in 0..SENDERS {
        let (client, answered, url) = (client.clone(), answered.clone(), ingress.url("sms"));
        senders.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..MAX_PER_SENDER {
                let body = fixtures::delivery_status(
                    &format!("{sender:012x}{i:012x}"),
                    "2019-03-17T21:10:26.000Z",
                    "",
                    &format!("shutdown-{sender}-{i}"),
                );
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let outcome = match response {
                    Ok(response) => {
                        let status = response.status();
                        match response.text().await {
                            Ok(text) => Outcome::Answered(status, text, body),
                            Err(err) => Outcome::NoAnswer(format!("{status}, then {err}")),
                        }
                    }
                    Err(err) => Outcome::NoAnswer(err.to_string()),
                };
                let stop = matches!(outcome, Outcome::NoAnswer(_));
                outcomes.push(outcome);
                answered.fetch_add(1, Ordering::SeqCst);
                if stop {
                    break;
                }
            }
            outcomes
        });
    }
    wait::until_true(
        "the burst to be under way",
        Duration::from_secs(20),
        || async { answered.load(Ordering::SeqCst) >= ANSWERS_BEFORE_SHUTDOWN },
    )
    .await;
    ingress.shutdown.cancel();

    let mut accepted_bodies = HashMap::new();
    let (mut unavailable_count, mut no_answer) = (0, 0);
    let mut no_answer_reasons = HashSet::new();
    while let Some(joined) = senders.join_next().await {
        for outcome in joined.expect("a sender panicked") {
            match outcome {
                Outcome::Answered(StatusCode::OK, text, body) => {
                    let value: serde_json::Value = serde_json::from_str(&text).expect("a JSON 200");
                    let id: Uuid = value["id"]
                        .as_str()
                        .expect("an id")
                        .parse()
                        .expect("a UUID");
                    assert!(accepted_bodies.insert(id, body).is_none(), "{id} twice");
                }
                Outcome::Answered(StatusCode::SERVICE_UNAVAILABLE, _, _) => unavailable_count += 1,
                Outcome::Answered(status, text, _) => panic!("unexpected {status}: {text}"),
                Outcome::NoAnswer(reason) => {
                    no_answer += 1;
                    no_answer_reasons.insert(reason);
                }
            }
        }
    }
    eprintln!(
        "{} answered 200, {unavailable_count} answered 503, {no_answer} without an answer: \
         {no_answer_reasons:?}",
        accepted_bodies.len()
    );
    let stopped = tokio::time::timeout(Duration::from_secs(25), ingress.task)
        .await
        .expect("the ingress did not stop within its shutdown timeout")
        .expect("the ingress task panicked");
    stopped.expect("the ingress returns Ok after a graceful shutdown");
    assert!(accepted_bodies.len() >= ANSWERS_BEFORE_SHUTDOWN - SENDERS);
    assert!(
        no_answer > 0,
        "the shutdown should have happened during the burst"
    );

    let messages = broker
        .take(&broker.queue(), accepted_bodies.len(), QUEUE_WAIT)
        .await;
    let mut queued = HashSet::new();
    for message in &messages {
        let id = message_id(message);
        assert!(queued.insert(id), "{id} is in the queue twice");
        if let Some(body) = accepted_bodies.get(&id) {
            assert_eq!(message.delivery.data, body.as_bytes(), "{id}");
        }
    }
    let missing: Vec<_> = accepted_bodies
        .keys()
        .filter(|id| !queued.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "answered 200 but not in the queue: {missing:?}"
    );
    // A message in the queue that was not answered 200 can only belong to a
    // request whose answer was lost (at most one per sender).
    assert!(
        messages.len() <= accepted_bodies.len() + no_answer,
        "{} queued, {} accepted, {unavailable_count} answered 503, {no_answer} without an answer",
        messages.len(),
        accepted_bodies.len()
    );
}

/// During `drain_delay_ms` after the shutdown signal, /readyz says 503 (so a
/// load balancer stops sending) while the listener still serves webhooks.
#[tokio::test]
async fn during_the_drain_delay_readyz_is_503_and_webhooks_are_still_served() {
    let broker = TestBroker::new().await;
    let mut config = ingress_config(broker.prefix());
    config.drain_delay_ms = 4_000;
    let ingress = RunningIngress::start(config).await;

    ingress.shutdown.cancel();
    ingress.wait_ready(false).await;
    let readiness: serde_json::Value = ingress
        .http
        .get(format!("http://127.0.0.1:{}/readyz", ingress.admin_port))
        .send()
        .await
        .expect("/readyz during the drain")
        .json()
        .await
        .expect("a JSON readiness");
    assert_eq!(readiness["draining"], true, "{readiness}");
    assert_eq!(readiness["broker"], true, "{readiness}");

    let id = post_sample(&ingress).await;
    assert!(
        !ingress.task.is_finished(),
        "the ingress should still be draining"
    );
    assert_eq!(queued_ids(&broker, 1).await, HashSet::from([id]));

    let RunningIngress {
        task, http, port, ..
    } = ingress;
    tokio::time::timeout(Duration::from_secs(25), task)
        .await
        .expect("the ingress did not stop after its drain delay")
        .expect("the ingress task panicked")
        .expect("the ingress returns Ok");
    let after = http
        .post(format!("http://127.0.0.1:{port}/webhooks/dropcowboy/sms"))
        .bearer_auth(TOKEN)
        .body(fixtures::SMS_SUCCESS)
        .timeout(REQUEST_BOUND)
        .send()
        .await;
    assert!(after.is_err(), "the listener should be closed: {after:?}");
}

// ---------------------------------------------------------------------------
// Tokens stay out of logs
// ---------------------------------------------------------------------------

/// Wrong and right tokens, in the query and in headers, never reach a log
/// line (at any level), while the rejection is logged once per request.
#[tokio::test]
async fn a_token_never_appears_in_a_log_line() {
    let logs = CapturedLogs::install();
    let broker = TestBroker::new().await;
    let right = format!("supersecret-right-{}", Uuid::now_v7().simple());
    let wrong = format!("supersecret-wrong-{}", Uuid::now_v7().simple());
    let mut config = ingress_config(broker.prefix());
    config.webhook_tokens = vec![right.clone()];
    let ingress = RunningIngress::start(config).await;

    let with_query = |token: &str| {
        ingress
            .http
            .post(format!("{}?token={token}", ingress.url("sms")))
            .header(header::CONTENT_TYPE, "application/json")
            .timeout(REQUEST_BOUND)
    };
    let basic =
        |password: &str| unauthenticated(&ingress, "sms").basic_auth("corral", Some(password));
    for request in [
        with_query(&wrong),
        unauthenticated(&ingress, "sms").bearer_auth(&wrong),
        basic(&wrong),
    ] {
        let response = send(request.body(fixtures::SMS_SUCCESS)).await;
        refused(response, StatusCode::UNAUTHORIZED).await;
    }
    for request in [
        with_query(&right),
        unauthenticated(&ingress, "sms").bearer_auth(&right),
        basic(&right),
    ] {
        accepted(send(request.body(fixtures::SMS_SUCCESS)).await).await;
    }
    // Each token, and the Basic credentials each was sent in.
    let mut secrets = Vec::new();
    for token in [&right, &wrong] {
        let request = basic(token).build().expect("a request");
        let credentials = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .expect("Basic credentials");
        secrets.extend([token.clone(), credentials.to_owned()]);
    }
    let metrics = ingress.metrics().await;
    ingress.stop().await.expect("the ingress stops cleanly");

    let lines = logs.lines();
    let rejections: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("webhook rejected"))
        .collect();
    assert_eq!(
        rejections.len(),
        3,
        "one line per rejected request: {rejections:#?}"
    );
    for line in &rejections {
        assert!(line.contains("unauthorized"), "{line}");
        assert!(line.contains("/webhooks/dropcowboy/sms"), "{line}");
    }
    for form in &secrets {
        let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(form)).collect();
        assert!(leaks.is_empty(), "a token reached the logs: {leaks:#?}");
        assert!(
            metrics.0.keys().all(|series| !series.contains(form)),
            "a token reached a metric label"
        );
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// An ingress on `broker`'s prefix, ready.
async fn start(broker: &TestBroker) -> RunningIngress {
    RunningIngress::start(ingress_config(broker.prefix())).await
}

/// An ingress configuration whose broker link goes through `proxy`, with
/// short deadlines so a broken link is seen and mended in seconds.
fn via_proxy(broker: &TestBroker, proxy: &TcpProxy) -> IngressConfig {
    let mut config = ingress_config(broker.prefix());
    config.amqp.url = proxy.amqp_url();
    config.publish_timeout_ms = 1_000;
    config.amqp.connect_timeout_ms = 2_000;
    config.amqp.reconnect_max_ms = 200;
    config.amqp.heartbeat_secs = 2;
    config.retry_after_secs = RETRY_AFTER_SECS;
    config
}

/// A JSON POST to `kind`'s route without credentials.
fn unauthenticated(ingress: &RunningIngress, kind: &str) -> RequestBuilder {
    ingress
        .http
        .post(ingress.url(kind))
        .header(header::CONTENT_TYPE, "application/json")
        .timeout(REQUEST_BOUND)
}

/// A JSON POST to `kind`'s route with the test token as a Bearer token.
fn authenticated(ingress: &RunningIngress, kind: &str) -> RequestBuilder {
    unauthenticated(ingress, kind).bearer_auth(TOKEN)
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("the ingress should answer")
}

/// Posts the success sample and returns its id (asserting the 200).
async fn post_sample(ingress: &RunningIngress) -> Uuid {
    accepted(send(authenticated(ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await
}

/// Asserts `200 {"id": "<uuid>"}` and returns the id.
async fn accepted(response: Response) -> Uuid {
    let status = response.status();
    let body = response.text().await.expect("reading the body");
    assert_eq!(status, StatusCode::OK, "body: {body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    value["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no UUID id in {body}"))
}

/// Asserts `status` with a JSON `{"error": "<non-empty>"}` body; returns the
/// error text and the headers.
async fn refused(response: Response, status: StatusCode) -> (String, header::HeaderMap) {
    let got = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("reading the body");
    assert_eq!(got, status, "body: {body}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{status} has Content-Type {content_type:?}"
    );
    let value: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("{status} body {body:?} is not JSON: {err}"));
    let error = value["error"]
        .as_str()
        .filter(|error| !error.is_empty())
        .unwrap_or_else(|| panic!("{status} body {body} has no error text"))
        .to_owned();
    (error, headers)
}

/// Asserts a 503 with the configured `Retry-After` and a JSON error body.
async fn unavailable(response: Response) {
    let (_, headers) = refused(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    assert_eq!(
        retry_after,
        Some(RETRY_AFTER_SECS),
        "503 without the configured Retry-After: {headers:?}"
    );
}

/// Sends `request`, asserts `status` with its error body and headers, that
/// `corral_ingress_rejected_total{reason}` rose by exactly one (and no other
/// reason moved), and that nothing was published. Returns the error text.
async fn assert_rejected(
    broker: &TestBroker,
    ingress: &RunningIngress,
    request: RequestBuilder,
    status: u16,
    reason: &str,
) -> String {
    let status = StatusCode::from_u16(status).expect("a status");
    let before = ingress.metrics().await;
    let (error, headers) = refused(send(request).await, status).await;
    let after = ingress.metrics().await;
    for each in REJECT_REASONS {
        let expected = if *each == reason { 1.0 } else { 0.0 };
        assert_eq!(
            rejected(&after, each) - rejected(&before, each),
            expected,
            "corral_ingress_rejected_total{{reason=\"{each}\"}} after a {status} for {reason}"
        );
    }
    for kind in ["sms", "rvm"] {
        assert_eq!(published(&after, kind), published(&before, kind));
    }
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some(r#"Basic realm="corral""#)
        );
    }
    assert_nothing_else_published(broker, ingress).await;
    error
}

/// Proves nothing was published by the requests just refused: a valid
/// webhook posted now is confirmed after them, and must be the only message
/// in the queue. Leaves the queue empty.
async fn assert_nothing_else_published(broker: &TestBroker, ingress: &RunningIngress) {
    let sentinel = post_sample(ingress).await;
    let queued: Vec<Uuid> = broker
        .take(&broker.queue(), 1, QUEUE_WAIT)
        .await
        .iter()
        .map(message_id)
        .collect();
    assert_eq!(queued, vec![sentinel], "a refused request was published");
}

/// Takes at least `count` messages and returns their ids, asserting none
/// appears twice.
async fn queued_ids(broker: &TestBroker, count: usize) -> HashSet<Uuid> {
    let messages = broker.take(&broker.queue(), count, QUEUE_WAIT).await;
    let ids: HashSet<Uuid> = messages.iter().map(message_id).collect();
    assert_eq!(
        ids.len(),
        messages.len(),
        "a message id is in the queue twice"
    );
    ids
}

fn message_id(message: &BasicGetMessage) -> Uuid {
    let id = message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .expect("message_id set");
    id.as_str()
        .parse()
        .unwrap_or_else(|err| panic!("message_id {id:?} is not a UUID: {err}"))
}

fn header<'m>(message: &'m BasicGetMessage, name: &str) -> Option<&'m AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name))
}

fn header_text(message: &BasicGetMessage, name: &str) -> Option<String> {
    match header(message, name)? {
        AMQPValue::LongString(text) => String::from_utf8(text.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

fn rejected(metrics: &Metrics, reason: &str) -> f64 {
    metrics.get(&format!(
        "corral_ingress_rejected_total{{reason=\"{reason}\"}}"
    ))
}

fn publish_failures(metrics: &Metrics, cause: &str) -> f64 {
    metrics.get(&format!(
        "corral_ingress_publish_failures_total{{cause=\"{cause}\"}}"
    ))
}

fn published(metrics: &Metrics, kind: &str) -> f64 {
    metrics.get(&format!(
        "corral_ingress_published_total{{kind=\"{kind}\"}}"
    ))
}

/// A JSON object of exactly `len` bytes.
fn object_of_len(len: usize) -> String {
    let pad = len - r#"{"pad":""}"#.len();
    format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad))
}

/// A chunked POST of `body` to the sms route, without Content-Length.
fn chunked_post(body: &str) -> Vec<u8> {
    let mut request = format!(
        "POST /webhooks/dropcowboy/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(4_000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Writes a raw HTTP/1.1 request (with `Connection: close`) and reads the
/// answer; returns the status and the whole response text.
async fn raw_http(port: u16, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the ingress");
    stream
        .write_all(request)
        .await
        .expect("writing the request");
    let mut response = Vec::new();
    // The server may reset the connection after answering a body it did not
    // read to the end; what arrived before is the answer.
    let _ = tokio::time::timeout(REQUEST_BOUND, stream.read_to_end(&mut response))
        .await
        .expect("the ingress should answer");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

/// Every log line of the process, captured by a global subscriber at TRACE
/// (each test is its own process under nextest, so this is the test's own).
#[derive(Debug, Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn install() -> Self {
        let logs = Self::default();
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .try_init()
            .expect("no other global subscriber in this test process");
        logs
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A client that sends the headers and then trickles (here: stops sending)
/// the body is answered 408 once `CORRAL_BODY_TIMEOUT_MS` has passed, instead
/// of holding a connection and a buffer for ever; nothing is published.
#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_408() {
    let broker = TestBroker::new().await;
    let mut config = ingress_config(broker.prefix());
    config.body_timeout_ms = 300;
    let ingress = RunningIngress::start(config).await;
    let before = ingress.metrics().await;
    let partial = format!(
        "POST /webhooks/dropcowboy/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{\"drop_id\":"
    );
    let (status, response) = raw_http(ingress.port, partial.as_bytes()).await;
    assert_eq!(status, 408, "{response}");
    assert!(response.contains(r#"{"error":"#), "{response}");
    let after = ingress.metrics().await;
    assert_eq!(
        rejected(&after, "body_timeout") - rejected(&before, "body_timeout"),
        1.0
    );
    assert_nothing_else_published(&broker, &ingress).await;
}
