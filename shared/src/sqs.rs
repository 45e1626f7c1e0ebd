//! Amazon SQS as the buffer (`CORRAL_BUFFER=sqs`): the client both binaries
//! make, the check of the queue, and what a message carries besides its body.
//!
//! A message's body is an envelope-2 body ([`crate::envelope::batch`]): one
//! or more webhooks, each with its own id, `received_at` and kind. Its
//! message attributes carry the envelope's metadata ([`metadata`] reads them
//! back, as [`crate::amqp::metadata`] reads AMQP properties), so the worker
//! reads both buffers with one code path: `content-type` (what
//! [`crate::envelope::Format::of`] reads), `message-id` (the message's own
//! UUIDv7) and `routing-key` (the kind's, or `dropcowboy.mixed`).
//!
//! The client is the official SDK's, with region and credentials from the
//! standard AWS chain and its HTTPS client on rustls with ring (the SDK's
//! default one builds aws-lc with cmake). Loading the chain is async and
//! the binaries' `build` is not, so it runs on a thread of its own.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::{Credentials, provider::ProvideCredentials as _};
use aws_sdk_sqs::{
    config::{
        ConfigBag, Intercept, RuntimeComponents,
        interceptors::{
            BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
        },
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName},
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::Metadata as Operation;
use uuid::Uuid;

use crate::{
    config::{BufferKind, BufferSettings},
    envelope::Metadata,
    telemetry::metrics,
};

pub use aws_sdk_sqs::Client;

/// Attribute naming the body's media type, as AMQP's `content_type`.
pub const CONTENT_TYPE: &str = "content-type";
/// Attribute carrying the message's own id (each webhook's is in the body).
pub const MESSAGE_ID: &str = "message-id";
/// Attribute carrying the routing key the AMQP message would have had.
pub const ROUTING_KEY: &str = "routing-key";

/// Bytes SQS counts for the attributes of a message corral makes, at most
/// (each attribute's name, type and value: about 150 today, rounded up).
pub const ATTRIBUTES_MAX: usize = 256;

/// SQS's largest message, and the largest `CORRAL_SQS_MAX_MESSAGE_BYTES`.
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024;

/// Entries per `SendMessageBatch`, `DeleteMessageBatch` and
/// `ChangeMessageVisibilityBatch`, and messages per `ReceiveMessage`.
pub const BATCH_ENTRIES: usize = 10;

/// Bound on each step of the start-up checks (credentials, the queue).
const START_CHECK: Duration = Duration::from_secs(10);

/// The queue, and the client that reaches it; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    /// The SDK's client.
    pub client: Client,
    /// `CORRAL_SQS_QUEUE_URL`.
    pub url: String,
}

/// A setting that cannot work with `CORRAL_BUFFER=sqs`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// No queue.
    #[error(
        "CORRAL_BUFFER=sqs needs CORRAL_SQS_QUEUE_URL, the queue's URL \
         (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
    )]
    NoQueueUrl,
    /// A URL that is not one.
    #[error("{setting} is not an http:// or https:// URL with a host{path}: {value:?}")]
    NotAUrl {
        /// Which setting.
        setting: &'static str,
        /// " and a path" where one is needed.
        path: &'static str,
        /// What it holds.
        value: String,
    },
}

/// Checks the SQS settings without any I/O; nothing to check for RabbitMQ.
pub fn check_settings(settings: &BufferSettings) -> Result<(), SettingsError> {
    if settings.kind != BufferKind::Sqs {
        return Ok(());
    }
    let url = settings
        .sqs_queue_url
        .as_deref()
        .filter(|url| !url.trim().is_empty())
        .ok_or(SettingsError::NoQueueUrl)?;
    if !is_url(url, true) {
        return Err(SettingsError::NotAUrl {
            setting: "CORRAL_SQS_QUEUE_URL",
            path: " and a path",
            value: url.to_owned(),
        });
    }
    if let Some(endpoint) = &settings.sqs_endpoint_url
        && !is_url(endpoint, false)
    {
        return Err(SettingsError::NotAUrl {
            setting: "CORRAL_SQS_ENDPOINT_URL",
            path: "",
            value: endpoint.clone(),
        });
    }
    Ok(())
}

/// Whether the queue is a FIFO queue (SQS requires their names to end in
/// `.fifo`): messages then need a group and a deduplication id.
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.trim_end_matches('/').ends_with(".fifo")
}

/// `http(s)://host[/path]`, with a path when `needs_path`.
fn is_url(text: &str, needs_path: bool) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_ok = !host.is_empty() && !host.contains(char::is_whitespace);
    let path_ok = !needs_path || !path.trim_matches('/').is_empty();
    host_ok && path_ok && !text.contains(char::is_whitespace)
}

/// Makes the client and checks, once, what can only be checked by asking:
/// a region, credentials, and the queue. A queue SQS says is missing or
/// refuses to this identity is an error; a queue SQS does not answer for is
/// not (the binary starts unready and keeps asking).
pub fn connect(settings: &BufferSettings) -> anyhow::Result<Queue> {
    check_settings(settings)?;
    let settings = settings.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for loading the AWS configuration")?;
        runtime.block_on(load(&settings))
    })
    .join()
    .map_err(|_| anyhow!("loading the AWS configuration panicked"))?
}

async fn load(settings: &BufferSettings) -> anyhow::Result<Queue> {
    let url = settings
        .sqs_queue_url
        .clone()
        .ok_or(SettingsError::NoQueueUrl)?;
    // Asked with a client of its own: connections made on this thread's
    // runtime die with it, and the binary's client must not pool them.
    let probe = Queue {
        client: client(settings).await?,
        url,
    };
    let checked = tokio::time::timeout(START_CHECK, check(&probe)).await;
    let queue = Queue {
        client: client(settings).await?,
        url: probe.url,
    };
    match checked {
        Ok(Err(err @ CheckError::Refused { .. })) => {
            Err(anyhow!(err).context(format!("checking the SQS queue {}", queue.url)))
        }
        Ok(Err(err)) => {
            tracing::warn!(
                queue = queue.url,
                error = %err,
                "SQS does not answer yet; starting unready and asking again"
            );
            Ok(queue)
        }
        Err(_elapsed) => {
            tracing::warn!(
                queue = queue.url,
                "SQS did not answer within {START_CHECK:?}; starting unready and asking again"
            );
            Ok(queue)
        }
        Ok(Ok(())) => Ok(queue),
    }
}

/// The SDK's client: region and credentials from the standard chain (or
/// `sqs_identity`), both checked; the endpoint from `CORRAL_SQS_ENDPOINT_URL`,
/// else the SDK's own `AWS_ENDPOINT_URL_SQS`, else AWS's.
pub async fn client(settings: &BufferSettings) -> anyhow::Result<Client> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(identity) = &settings.sqs_identity {
        loader = loader
            .region(Region::new(identity.region.clone()))
            .credentials_provider(Credentials::new(
                identity.access_key_id.clone(),
                identity.secret_access_key.clone(),
                None,
                None,
                "corral-embedded",
            ));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!("no AWS region for SQS: set AWS_REGION (or a region in the AWS profile)");
    }
    let provider = sdk.credentials_provider().ok_or_else(|| {
        anyhow!("no AWS credentials provider for SQS (the standard chain is not configured)")
    })?;
    tokio::time::timeout(START_CHECK, provider.provide_credentials())
        .await
        .map_err(|_| anyhow!("no AWS credentials for SQS within {START_CHECK:?}"))?
        .map_err(|err| {
            anyhow!(
                "no AWS credentials for SQS (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 a profile, or a web identity or container role): {}",
                DisplayErrorContext(&err)
            )
        })?;
    let mut config = aws_sdk_sqs::config::Builder::from(&sdk).interceptor(CountRequests);
    metrics::register_sqs();
    if let Some(endpoint) = &settings.sqs_endpoint_url {
        config = config.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(config.build()))
}

/// Counts every request the client sends (each attempt), and what AWS bills
/// for it: SQS is paid per request, each 64 KiB of payload counting as one.
#[derive(Debug)]
struct CountRequests;

/// AWS bills each 64 KiB of a request's payload as one request.
const BILLED_CHUNK: u64 = 64 * 1024;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "corral::CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let operation = operation_of(cfg);
        metrics::sqs_request(operation);
        // A receive's payload is in its answer, counted there.
        if operation != "ReceiveMessage" {
            let bytes = context.request().body().content_length().unwrap_or(0);
            metrics::sqs_billed(operation, billed_requests(bytes));
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let operation = operation_of(cfg);
        if operation == "ReceiveMessage" {
            let response = context.response();
            let bytes = response
                .headers()
                .get("content-length")
                .and_then(|length| length.parse().ok())
                .or_else(|| response.body().content_length())
                .unwrap_or(0);
            metrics::sqs_billed(operation, billed_requests(bytes));
        }
        Ok(())
    }
}

/// The operation a request is for, as one of the bounded set of labels.
fn operation_of(cfg: &ConfigBag) -> &'static str {
    label_of(cfg.load::<Operation>().map(Operation::name))
}

/// `named` if corral knows it, else `other`.
fn label_of(named: Option<&str>) -> &'static str {
    metrics::SQS_OPERATIONS
        .iter()
        .find(|known| Some(**known) == named)
        .copied()
        .unwrap_or("other")
}

/// Requests AWS bills for a call whose larger payload is `bytes` long.
fn billed_requests(bytes: u64) -> u64 {
    bytes.div_ceil(BILLED_CHUNK).max(1)
}

/// Why the queue could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// SQS answered, and refused: no such queue, a denied identity, a bad
    /// signature. Waiting does not mend these.
    #[error("SQS refused ({code}): {reason}")]
    Refused {
        /// The error code SQS sent.
        code: String,
        /// Its message.
        reason: String,
    },
    /// No answer, or one saying to try later (throttled, unavailable).
    #[error("SQS did not answer: {0}")]
    Unreachable(String),
}

/// Error codes that mean a setting is wrong, not that SQS is away.
const REFUSALS: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAddress",
    "InvalidSecurity",
    "KMS.AccessDeniedException",
];

/// Asks SQS about the queue (`GetQueueAttributes`): what readiness reports.
pub async fn check(queue: &Queue) -> Result<(), CheckError> {
    let asked = queue
        .client
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await;
    match asked {
        Ok(_) => Ok(()),
        Err(err) => Err(classify(&err)),
    }
}

/// A failed call as [`CheckError`]: refused when SQS answered with one of
/// the codes that mean a wrong setting.
pub fn classify<E, R>(err: &SdkError<E, R>) -> CheckError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = err.as_service_error()
        && let Some(code) = service.code()
        && REFUSALS.contains(&code)
    {
        return CheckError::Refused {
            code: code.to_owned(),
            reason: service.message().unwrap_or("no message").to_owned(),
        };
    }
    CheckError::Unreachable(DisplayErrorContext(err).to_string())
}

/// The attributes of a message holding webhooks routed `routing_key`,
/// named `message_id`, whose body has media type `content_type`.
pub fn attributes(
    message_id: Uuid,
    routing_key: &str,
    content_type: &str,
) -> HashMap<String, MessageAttributeValue> {
    let string = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("the data type is set")
    };
    HashMap::from([
        (CONTENT_TYPE.to_owned(), string(content_type)),
        (MESSAGE_ID.to_owned(), string(&message_id.to_string())),
        (ROUTING_KEY.to_owned(), string(routing_key)),
    ])
}

/// What an SQS message says about itself: `content_type` and `message_id`
/// from its attributes (the id SQS gave it when it has none of corral's),
/// `timestamp` from when SQS took it; and its routing key (empty when it
/// has none).
pub fn metadata(message: &Message) -> (Metadata, String) {
    let attribute = |name: &str| {
        message
            .message_attributes()
            .and_then(|attributes| attributes.get(name))
            .and_then(MessageAttributeValue::string_value)
    };
    let metadata = Metadata {
        content_type: attribute(CONTENT_TYPE).map(str::to_owned),
        message_id: attribute(MESSAGE_ID)
            .or(message.message_id())
            .map(str::to_owned),
        timestamp: sent_at_millis(message).map(|millis| millis / 1000),
        ..Metadata::default()
    };
    let routing_key = attribute(ROUTING_KEY).unwrap_or_default().to_owned();
    (metadata, routing_key)
}

/// When SQS took the message (`SentTimestamp`), in milliseconds, when it
/// says so: received with that system attribute asked for.
pub fn sent_at_millis(message: &Message) -> Option<u64> {
    message
        .attributes()
        .and_then(|system| system.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|millis| millis.parse::<u64>().ok())
}

/// A queue's message counts, as `GetQueueAttributes` reports them
/// (approximate on AWS), and its redrive policy, from one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not yet deleted.
    pub in_flight: u64,
    /// `ApproximateNumberOfMessagesDelayed`: sent with a delay not yet over.
    pub delayed: u64,
    /// `RedrivePolicy`, the JSON SQS keeps, when the queue has one.
    pub redrive_policy: Option<String>,
}

/// Asks SQS for the message counts and the redrive policy of the queue at `url`.
pub async fn depth(client: &Client, url: &str) -> Result<Depth, CheckError> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|err| classify(&err))?;
    let attributes = output.attributes();
    let get = |name: QueueAttributeName| attributes.and_then(|all| all.get(&name));
    let count = |name| get(name).and_then(|value| value.parse().ok()).unwrap_or(0);
    Ok(Depth {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        redrive_policy: get(QueueAttributeName::RedrivePolicy)
            .filter(|policy| !policy.trim().is_empty())
            .cloned(),
    })
}

/// The dead-letter queue a redrive policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    /// `deadLetterTargetArn`.
    pub arn: String,
    /// The account that owns it (the ARN's fifth field).
    pub account: String,
    /// Its name (the ARN's last field).
    pub name: String,
}

/// A redrive policy that does not name a queue.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the redrive policy {policy:?} names no dead-letter queue: {reason}")]
pub struct RedrivePolicyError {
    /// The policy as SQS returned it.
    pub policy: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads `deadLetterTargetArn` (`arn:<partition>:sqs:<region>:<account>:<name>`)
/// out of a redrive policy.
pub fn dead_letter_target(policy: &str) -> Result<DeadLetterTarget, RedrivePolicyError> {
    let wrong = |reason: &str| RedrivePolicyError {
        policy: policy.to_owned(),
        reason: reason.to_owned(),
    };
    let json: serde_json::Value =
        serde_json::from_str(policy).map_err(|err| wrong(&format!("not JSON ({err})")))?;
    let arn = json
        .get("deadLetterTargetArn")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| wrong("no deadLetterTargetArn"))?;
    match arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => {
            Ok(DeadLetterTarget {
                arn: arn.to_owned(),
                account: account.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(wrong("deadLetterTargetArn is not an SQS queue's ARN")),
    }
}

/// The URL of `target` (`GetQueueUrl` with its name and owner account).
pub async fn dead_letter_url(
    client: &Client,
    target: &DeadLetterTarget,
) -> Result<String, CheckError> {
    let output = client
        .get_queue_url()
        .queue_name(&target.name)
        .queue_owner_aws_account_id(&target.account)
        .send()
        .await
        .map_err(|err| classify(&err))?;
    output
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| CheckError::Unreachable("GetQueueUrl answered without a URL".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqs(queue: Option<&str>, endpoint: Option<&str>) -> BufferSettings {
        BufferSettings {
            kind: BufferKind::Sqs,
            sqs_queue_url: queue.map(str::to_owned),
            sqs_endpoint_url: endpoint.map(str::to_owned),
            sqs_identity: None,
        }
    }

    #[test]
    fn an_sqs_buffer_needs_a_queue_url_with_a_host_and_a_path() {
        let good = "https://sqs.eu-west-1.amazonaws.com/123456789012/corral";
        assert!(check_settings(&sqs(Some(good), None)).is_ok());
        assert!(matches!(
            check_settings(&sqs(None, None)),
            Err(SettingsError::NoQueueUrl)
        ));
        for bad in [
            "sqs.eu-west-1.amazonaws.com/1/corral",
            "https://",
            "https://host",
            "https://host/",
            "ftp://host/1/q",
        ] {
            let err = check_settings(&sqs(Some(bad), None)).expect_err(bad);
            assert!(err.to_string().contains("CORRAL_SQS_QUEUE_URL"), "{err}");
        }
        let err = check_settings(&sqs(Some(good), Some("localhost:4566"))).unwrap_err();
        assert!(err.to_string().contains("CORRAL_SQS_ENDPOINT_URL"), "{err}");
        assert!(check_settings(&sqs(Some(good), Some("http://127.0.0.1:4566"))).is_ok());
    }

    #[test]
    fn rabbitmq_needs_no_sqs_setting() {
        let mut settings = sqs(None, None);
        settings.kind = BufferKind::Rabbitmq;
        assert!(check_settings(&settings).is_ok());
    }

    #[test]
    fn requests_are_labelled_by_operation_and_billed_per_64_kib() {
        assert_eq!(label_of(Some("SendMessageBatch")), "SendMessageBatch");
        assert_eq!(label_of(Some("ListQueues")), "other");
        assert_eq!(label_of(None), "other");
        assert_eq!(billed_requests(0), 1);
        assert_eq!(billed_requests(65_536), 1);
        assert_eq!(billed_requests(65_537), 2);
        assert_eq!(billed_requests(262_144), 4);
    }

    #[test]
    fn attributes_read_back_as_metadata() {
        let id = Uuid::now_v7();
        let message = Message::builder()
            .message_id("sqs-own-id")
            .set_message_attributes(Some(attributes(
                id,
                "dropcowboy.sms",
                crate::envelope::batch::CONTENT_TYPE,
            )))
            .attributes(MessageSystemAttributeName::SentTimestamp, "1764338400123")
            .build();
        let (metadata, routing_key) = metadata(&message);
        assert_eq!(routing_key, "dropcowboy.sms");
        assert_eq!(
            crate::envelope::Format::of(&metadata),
            crate::envelope::Format::Batch
        );
        let envelope = crate::envelope::Envelope::read(&metadata);
        assert_eq!(envelope.message_id, Some(id));
        assert_eq!(
            envelope.received_at,
            chrono::DateTime::from_timestamp(1_764_338_400, 0)
        );
        let bytes: usize = attributes(id, "dropcowboy.mixed", crate::envelope::batch::CONTENT_TYPE)
            .iter()
            .map(|(name, value)| {
                name.len() + value.data_type().len() + value.string_value().unwrap_or("").len()
            })
            .sum();
        assert!(bytes <= ATTRIBUTES_MAX, "{bytes}");
    }

    #[test]
    fn a_redrive_policy_names_its_dead_letter_queue() {
        let target = dead_letter_target(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:corral-dead","maxReceiveCount":"5"}"#,
        )
        .unwrap();
        assert_eq!(target.account, "123456789012");
        assert_eq!(target.name, "corral-dead");
        for bad in [
            "",
            "{}",
            r#"{"deadLetterTargetArn":"arn:aws:sns:eu-west-1:1:topic"}"#,
            r#"{"deadLetterTargetArn":"corral-dead"}"#,
        ] {
            assert!(dead_letter_target(bad).is_err(), "{bad}");
        }
    }
}
