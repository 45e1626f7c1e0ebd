//! The signed route, `POST /webhooks/dropcowboy`, against the real RabbitMQ:
//! every case of the provider's receiver conformance suite, the route
//! without a secret, secrets kept out of every output, and the start-up
//! rules.
//!
//! # Layout
//!
//! - `conformance`: the provider's suite, case by case (`05-webhooks`),
//!   with our own secrets: each refusal's status, `code` and counter with
//!   nothing published, each acceptance published byte for byte.
//! - `setup`: no secret configured, the secrets file, the secrets never in
//!   a log line, `--help` or `/readyz`, and the deadline check at start.

mod conformance;
mod setup;

use std::collections::BTreeMap;

use corral_runtime::telemetry::labels::RejectReason;
use corral_testkit::{
    apps::RunningIngress, broker::TestBroker, fixtures, metrics::Metrics, stack::Stack,
};
use reqwest::{RequestBuilder, header};
use uuid::Uuid;

use super::helpers::*;

/// The secret of the webhook most tests sign with.
pub(crate) const SECRET: &str = "corral-test-signing-4f1c9a2e-7b3d";
/// A second webhook's secret, configured beside [`SECRET`].
pub(super) const SECOND_SECRET: &str = "corral-test-signing-second-8e2a";

/// An ingress with the test token and `secrets`, written as the provider's
/// conformance runner sets them: comma and space between, so trimming counts.
pub(crate) async fn start_signed(stack: &Stack, secrets: &[&str]) -> RunningIngress {
    let mut config = stack.ingress_config();
    config.signing.secrets = vec![secrets.join(", ")];
    config.retry_after_secs = RETRY_AFTER_SECS;
    RunningIngress::start(config).await
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A delivery the way Drop Cowboy sends one (the conformance suite's
/// defaults): JSON, its user agent, signed with the secret at the
/// timestamp, `X-Signature-Version: v1`, `X-Attempt: 1`.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) body: Vec<u8>,
    headers: BTreeMap<&'static str, String>,
}

impl Delivery {
    /// `body` signed with `secret`, now.
    pub(crate) fn new(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::at(secret, &now().to_string(), body)
    }

    /// `body` signed with `secret` at `timestamp`, which it is sent with.
    pub(crate) fn at(secret: &str, timestamp: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let headers = BTreeMap::from([
            ("content-type", "application/json".to_owned()),
            ("user-agent", "DropCowboy-Webhook/1.0".to_owned()),
            ("x-signature", fixtures::signature(secret, timestamp, &body)),
            ("x-timestamp", timestamp.to_owned()),
            ("x-signature-version", "v1".to_owned()),
            ("x-attempt", "1".to_owned()),
        ]);
        Self { body, headers }
    }

    /// With a header set (or replaced).
    pub(crate) fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.insert(name, value.into());
        self
    }

    /// Without a header.
    pub(super) fn without(mut self, name: &'static str) -> Self {
        self.headers.remove(name);
        self
    }

    /// The header's value.
    pub(super) fn header(&self, name: &str) -> &str {
        &self.headers[name]
    }

    /// The POST to the signed route.
    pub(crate) fn request(&self, ingress: &RunningIngress) -> RequestBuilder {
        self.request_to(&ingress.http, &ingress.base_url())
    }

    /// The POST to the signed route of the ingress at `base_url`.
    pub(super) fn request_to(&self, client: &reqwest::Client, base_url: &str) -> RequestBuilder {
        let mut request = client
            .post(format!("{base_url}/webhooks/dropcowboy"))
            .timeout(REQUEST_BOUND)
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request
    }
}

/// A signed event body with a fresh `event_id`.
pub(crate) fn fresh_event() -> String {
    fixtures::event_body(&Uuid::now_v7().to_string())
}

fn requests(metrics: &Metrics, status: u16) -> f64 {
    metrics.get(&format!(
        "corral_ingress_requests_total{{route=\"event\",status=\"{status}\"}}"
    ))
}

/// Sends `delivery` and asserts it was refused with `status` and, for a
/// signature's refusal, `code` (`{"error": <text>, "code": <code>}`
/// exactly; otherwise `{"error": <text>}`), `reason` counted once and no
/// other, no token challenge, the route's request counted, and nothing
/// published.
pub(super) async fn assert_refused(
    broker: &TestBroker,
    ingress: &RunningIngress,
    delivery: &Delivery,
    status: u16,
    code: Option<&str>,
    reason: Option<RejectReason>,
) {
    let before = ingress.metrics().await;
    let response = send(delivery.request(ingress)).await;
    let headers = match code {
        Some(code) => refused_with_code(response, status, code).await,
        None => {
            let status = reqwest::StatusCode::from_u16(status).expect("a status");
            refused(response, status).await.1
        }
    };
    let code = code.unwrap_or("-");
    let after = ingress.metrics().await;
    for each in RejectReason::ALL {
        let expected = if Some(*each) == reason { 1.0 } else { 0.0 };
        let label = each.as_str();
        assert_eq!(
            rejected(&after, label) - rejected(&before, label),
            expected,
            "corral_ingress_rejected_total{{reason=\"{label}\"}} after a {status} {code}"
        );
    }
    assert_eq!(requests(&after, status) - requests(&before, status), 1.0);
    assert_eq!(published(&after, "event"), published(&before, "event"));
    assert!(
        headers.get(header::WWW_AUTHENTICATE).is_none(),
        "{headers:?}"
    );
    assert_nothing_else_published(broker, ingress).await;
}

/// Asserts `status` with `{"error": "<non-empty>", "code": <code>}` and
/// nothing else in the JSON body; returns the headers.
pub(super) async fn refused_with_code(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> header::HeaderMap {
    let got = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("reading the body");
    assert_eq!(got, status, "body: {body}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type:?}"
    );
    let value: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["code", "error"], "{body}");
    assert_eq!(value["code"], code, "{body}");
    assert!(
        value["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{body}"
    );
    headers
}

/// Sends `delivery`, asserts `200 {"id"}`, and that exactly its bytes were
/// published, as kind `event` under `dropcowboy.event`, with the answered id.
pub(super) async fn assert_published(
    broker: &TestBroker,
    ingress: &RunningIngress,
    delivery: &Delivery,
) -> Uuid {
    let before = ingress.metrics().await;
    let id = accepted(send(delivery.request(ingress)).await).await;
    let taken = broker.take_webhooks(&broker.queue(), 1, QUEUE_WAIT).await;
    let [webhook] = taken.as_slice() else {
        panic!(
            "exactly the one webhook in the queue, found {}",
            taken.len()
        );
    };
    assert_eq!(webhook.id, id, "the queued webhook carries the answered id");
    assert_eq!(webhook.kind, corral_contract::envelope::Kind::Event);
    assert_eq!(webhook.body, delivery.body, "the exact bytes received");
    assert_eq!(
        webhook.message.delivery.routing_key.as_str(),
        "dropcowboy.event"
    );
    let after = ingress.metrics().await;
    assert_eq!(
        published(&after, "event") - published(&before, "event"),
        1.0
    );
    assert_eq!(requests(&after, 200) - requests(&before, 200), 1.0);
    id
}

#[test]
fn the_kit_signs_as_our_vectors_say() {
    let vectors: serde_json::Value =
        serde_json::from_str(fixtures::SIGNATURE_VECTORS).expect("the vectors parse");
    let text = |name: &str| vectors[name].as_str().expect("a string").to_owned();
    assert_eq!(
        fixtures::signature(
            &text("secret"),
            &text("timestamp"),
            text("raw_body").as_bytes()
        ),
        text("signature")
    );
}
