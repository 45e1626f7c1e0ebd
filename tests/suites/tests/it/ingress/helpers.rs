//! What the ingress tests share: settings, requests, answers, and reading the
//! queue and the metrics.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use corral_ingress::config::IngressConfig;
use corral_runtime::telemetry::labels::RejectReason;
use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    broker::TestBroker,
    fixtures,
    metrics::Metrics,
    stack::{Stack, StackBuilder, Via},
};
use lapin::{message::BasicGetMessage, types::AMQPValue};
use reqwest::{RequestBuilder, Response, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Longest wait for messages to show up in a queue.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(15);

/// Client-side bound on one request, so a hang fails the test instead of stalling it.
pub(super) const REQUEST_BOUND: Duration = Duration::from_secs(20);

/// `Retry-After` the broker-loss tests configure, to check the setting is honoured.
pub(crate) const RETRY_AFTER_SECS: u32 = 3;

/// The default `CORRAL_MAX_BODY_BYTES`.
pub(crate) const MAX_BODY_BYTES: usize = 65_536;

/// An ingress of `stack`, ready.
pub(super) async fn start(stack: &Stack) -> RunningIngress {
    RunningIngress::start(stack.ingress_config()).await
}

/// A stack whose ingresses reach the broker through a proxy the test
/// controls, with [`quick_broker_recovery`].
pub(crate) fn broker_via_proxy() -> StackBuilder {
    Stack::builder()
        .amqp_proxy(Via::Ingress)
        .ingress_settings(quick_broker_recovery)
}

/// Short deadlines, so a broken broker link is seen and mended in seconds,
/// and the `Retry-After` the broker-loss tests check.
pub(crate) fn quick_broker_recovery(config: &mut IngressConfig) {
    config.publish_timeout_ms = 1_000;
    config.amqp.connect_timeout_ms = 2_000;
    config.amqp.reconnect_max_ms = 200;
    config.amqp.heartbeat_secs = 2;
    config.retry_after_secs = RETRY_AFTER_SECS;
}

/// A JSON POST to `kind`'s route without credentials.
pub(crate) fn unauthenticated(ingress: &RunningIngress, kind: &str) -> RequestBuilder {
    ingress
        .http
        .post(ingress.url(kind))
        .header(header::CONTENT_TYPE, "application/json")
        .timeout(REQUEST_BOUND)
}

/// A JSON POST to `kind`'s route with the test token as a Bearer token.
pub(crate) fn authenticated(ingress: &RunningIngress, kind: &str) -> RequestBuilder {
    unauthenticated(ingress, kind).bearer_auth(TOKEN)
}

pub(crate) async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("the ingress should answer")
}

/// Posts the success sample and returns its id (asserting the 200).
pub(super) async fn post_sample(ingress: &RunningIngress) -> Uuid {
    accepted(send(authenticated(ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await
}

/// Asserts `200 {"id": "<uuid>"}` and returns the id.
pub(crate) async fn accepted(response: Response) -> Uuid {
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
pub(crate) async fn refused(response: Response, status: StatusCode) -> (String, header::HeaderMap) {
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
pub(crate) async fn unavailable(response: Response) {
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

/// An HTTP client whose every request fails after [`REQUEST_BOUND`], for
/// tests that send many requests at once.
pub(super) fn bounded_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_BOUND)
        .build()
        .expect("http client")
}

/// Sends `request`, asserts `status` with its error body and headers, that
/// `corral_ingress_rejected_total{reason}` rose by exactly one (and no other
/// reason moved), and that nothing was published. Returns the error text.
pub(super) async fn assert_rejected(
    broker: &TestBroker,
    ingress: &RunningIngress,
    request: RequestBuilder,
    status: u16,
    reason: RejectReason,
) -> String {
    let status = StatusCode::from_u16(status).expect("a status");
    let before = ingress.metrics().await;
    let (error, headers) = refused(send(request).await, status).await;
    let after = ingress.metrics().await;
    // Every reason the binary can count, so a refusal counted under the
    // wrong reason fails here too.
    for each in RejectReason::ALL {
        let expected = if *each == reason { 1.0 } else { 0.0 };
        let label = each.as_str();
        assert_eq!(
            rejected(&after, label) - rejected(&before, label),
            expected,
            "corral_ingress_rejected_total{{reason=\"{label}\"}} after a {status} for {reason:?}"
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
/// webhook posted now is confirmed after them, and must be the only webhook
/// in the queue. Leaves the queue empty.
pub(super) async fn assert_nothing_else_published(broker: &TestBroker, ingress: &RunningIngress) {
    let sentinel = post_sample(ingress).await;
    let queued: Vec<Uuid> = broker
        .take_webhooks(&broker.queue(), 1, QUEUE_WAIT)
        .await
        .iter()
        .map(|webhook| webhook.id)
        .collect();
    assert_eq!(queued, vec![sentinel], "a refused request was published");
}

/// Takes at least `count` webhooks and returns their ids, asserting none
/// appears twice.
pub(super) async fn queued_ids(broker: &TestBroker, count: usize) -> HashSet<Uuid> {
    let webhooks = broker
        .take_webhooks(&broker.queue(), count, QUEUE_WAIT)
        .await;
    let ids: HashSet<Uuid> = webhooks.iter().map(|webhook| webhook.id).collect();
    assert_eq!(
        ids.len(),
        webhooks.len(),
        "a webhook id is in the queue twice"
    );
    ids
}

pub(super) fn header<'m>(message: &'m BasicGetMessage, name: &str) -> Option<&'m AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name))
}

pub(super) fn rejected(metrics: &Metrics, reason: &str) -> f64 {
    metrics.get(&format!(
        "corral_ingress_rejected_total{{reason=\"{reason}\"}}"
    ))
}

pub(crate) fn publish_failures(metrics: &Metrics, cause: &str) -> f64 {
    metrics.get(&format!(
        "corral_ingress_publish_failures_total{{cause=\"{cause}\"}}"
    ))
}

pub(super) fn published(metrics: &Metrics, kind: &str) -> f64 {
    metrics.get(&format!(
        "corral_ingress_published_total{{kind=\"{kind}\"}}"
    ))
}

/// A JSON object of exactly `len` bytes.
pub(crate) fn object_of_len(len: usize) -> String {
    let pad = len - r#"{"pad":""}"#.len();
    format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad))
}

/// A chunked POST of `body` to the sms route, without Content-Length.
pub(super) fn chunked_post(body: &str) -> Vec<u8> {
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
pub(super) async fn raw_http(port: u16, request: &[u8]) -> (u16, String) {
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

/// The JSON of `/readyz` on `admin_port`, whatever its status.
pub(crate) async fn readyz(admin_port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .await
        .expect("/readyz answers")
        .json()
        .await
        .expect("/readyz is JSON")
}

/// Every log line of the process, captured by a global subscriber at TRACE
/// (each test is its own process under nextest, so this is the test's own).
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub(crate) fn install() -> Self {
        let logs = Self::default();
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .try_init()
            .expect("no other global subscriber in this test process");
        logs
    }

    pub(crate) fn lines(&self) -> Vec<String> {
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
