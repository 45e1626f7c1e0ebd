//! A test's own SQS queue, with a dead-letter queue behind it, on the local
//! moto server (`scripts/services` starts it on 127.0.0.1:4566): the real
//! SDK against a real server speaking SQS's API, no AWS account. Dropping a
//! [`TestQueue`] deletes both queues.

use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use corral_contract::envelope::{self, batch};
use corral_runtime::{
    config::{BufferKind, BufferSettings, SqsIdentity},
    sqs::{self, Client},
};
use uuid::Uuid;

/// Where the local moto server answers.
pub const ENDPOINT: &str = "http://127.0.0.1:4566";

/// moto takes any region and key pair; these are what the tests sign with.
pub fn identity() -> SqsIdentity {
    SqsIdentity {
        region: "us-east-1".into(),
        access_key_id: "corral-test".into(),
        secret_access_key: "corral-test-secret".into(),
    }
}

/// The environment a child process needs for the same (the standard chain's
/// variables; the instance metadata service is never asked).
pub fn identity_env() -> [(&'static str, String); 4] {
    let identity = identity();
    [
        ("AWS_REGION", identity.region),
        ("AWS_ACCESS_KEY_ID", identity.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", identity.secret_access_key),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// How a test's queue is made.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// The queue's default visibility timeout, in seconds.
    pub visibility_secs: u32,
    /// Receives after which a message moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// The queue's `MaximumMessageSize`, in bytes.
    pub maximum_message_size: u32,
    /// A FIFO queue (and dead-letter queue), named `….fifo`.
    pub fifo: bool,
    /// Whether the queue has a redrive policy naming the dead-letter queue
    /// (which is made either way).
    pub redrive: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_secs: 30,
            max_receive_count: 5,
            maximum_message_size: 262_144,
            fifo: false,
            redrive: true,
        }
    }
}

/// A queue of one test's own, and its dead-letter queue.
#[derive(Debug)]
pub struct TestQueue {
    /// A client on the moto server.
    pub client: Client,
    /// The queue's URL.
    pub url: String,
    /// The dead-letter queue's URL.
    pub dead_letter_url: String,
}

impl TestQueue {
    /// A fresh queue with the default options.
    pub async fn new() -> Self {
        Self::with(QueueOptions::default()).await
    }

    /// A fresh queue, its dead-letter queue, and the redrive policy between them.
    pub async fn with(options: QueueOptions) -> Self {
        let client = client(ENDPOINT).await;
        let name = crate::unique_name("test");
        let (suffix, fifo) = if options.fifo {
            (
                ".fifo",
                vec![(QueueAttributeName::FifoQueue, "true".to_owned())],
            )
        } else {
            ("", Vec::new())
        };
        let dead_letter_url = create(&client, &format!("{name}-dead{suffix}"), &fifo).await;
        let dead_letter_arn = client
            .get_queue_attributes()
            .queue_url(&dead_letter_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the dead-letter queue's ARN")
            .attributes()
            .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
            .expect("an ARN");
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": options.max_receive_count.to_string(),
        })
        .to_string();
        let mut attributes = vec![
            (
                QueueAttributeName::VisibilityTimeout,
                options.visibility_secs.to_string(),
            ),
            (
                QueueAttributeName::MaximumMessageSize,
                options.maximum_message_size.to_string(),
            ),
        ];
        attributes.extend(fifo);
        if options.redrive {
            attributes.push((QueueAttributeName::RedrivePolicy, redrive));
        }
        let url = create(&client, &format!("{name}{suffix}"), &attributes).await;
        Self {
            client,
            url,
            dead_letter_url,
        }
    }

    /// The buffer settings naming this queue on the moto server.
    pub fn settings(&self) -> BufferSettings {
        self.settings_via(ENDPOINT)
    }

    /// The same, reaching moto through `endpoint` (a proxy, a closed port).
    pub fn settings_via(&self, endpoint: &str) -> BufferSettings {
        BufferSettings {
            kind: BufferKind::Sqs,
            sqs_queue_url: Some(self.url.clone()),
            sqs_endpoint_url: Some(endpoint.to_owned()),
            sqs_identity: Some(identity()),
        }
    }

    /// Sends `webhooks` as one message, packed and with the attributes
    /// ingress gives one. Returns the message's own id.
    pub async fn send_batch(&self, webhooks: &[batch::Packing<'_>]) -> Uuid {
        self.send_batch_to(&self.url, webhooks, 0).await.0
    }

    /// The same, visible only `delay_secs` after it is sent (`DelaySeconds`).
    pub async fn send_delayed(&self, webhooks: &[batch::Packing<'_>], delay_secs: i32) -> Uuid {
        self.send_batch_to(&self.url, webhooks, delay_secs).await.0
    }

    /// The same, straight into the dead-letter queue, as SQS would have
    /// moved it there. Returns the message's own id and SQS's `MessageId`.
    pub async fn send_dead_letter(&self, webhooks: &[batch::Packing<'_>]) -> (Uuid, String) {
        self.send_batch_to(&self.dead_letter_url, webhooks, 0).await
    }

    async fn send_batch_to(
        &self,
        url: &str,
        webhooks: &[batch::Packing<'_>],
        delay_secs: i32,
    ) -> (Uuid, String) {
        let id = Uuid::now_v7();
        let message = envelope::batch_message(id, webhooks, envelope::Charset::Sqs);
        let fifo = sqs::is_fifo(url);
        let sent = self
            .client
            .send_message()
            .queue_url(url)
            .set_message_group_id(fifo.then(|| "corral-test".to_owned()))
            .set_message_deduplication_id(fifo.then(|| id.to_string()))
            .message_body(String::from_utf8(message.body).expect("a UTF-8 envelope"))
            .set_message_attributes(Some(sqs::attributes(
                id,
                message.routing_key,
                batch::CONTENT_TYPE,
            )))
            .set_delay_seconds((delay_secs > 0).then_some(delay_secs))
            .send()
            .await
            .expect("sending a test message");
        (id, sent.message_id().expect("a MessageId").to_owned())
    }

    /// Receives what is there (waiting up to a second), making it invisible
    /// for `visibility`, and never deletes it: a consumer that stalled or died.
    pub async fn take_and_hold(&self, visibility: Duration) -> Vec<Message> {
        receive(&self.client, &self.url, visibility).await
    }

    /// Receives what is in the dead-letter queue (invisible for a minute).
    pub async fn dead_letters(&self) -> Vec<Message> {
        receive(&self.client, &self.dead_letter_url, Duration::from_secs(60)).await
    }

    /// Messages visible, and in flight (received, not deleted), by SQS's count.
    pub async fn counts(&self) -> (u64, u64) {
        counts(&self.client, &self.url).await
    }

    /// The same for the dead-letter queue.
    pub async fn dead_letter_counts(&self) -> (u64, u64) {
        counts(&self.client, &self.dead_letter_url).await
    }
}

async fn counts(client: &Client, url: &str) -> (u64, u64) {
    let depth = sqs::depth(client, url).await.expect("the queue's counts");
    (depth.visible, depth.in_flight)
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let urls = [self.url.clone(), self.dead_letter_url.clone()];
        crate::block_on_cleanup(async move {
            let client = client(ENDPOINT).await;
            for url in urls {
                let _ = client.delete_queue().queue_url(url).send().await;
            }
        });
    }
}

/// A client on `endpoint` with the test identity.
pub async fn client(endpoint: &str) -> Client {
    let settings = BufferSettings {
        kind: BufferKind::Sqs,
        sqs_queue_url: None,
        sqs_endpoint_url: Some(endpoint.to_owned()),
        sqs_identity: Some(identity()),
    };
    sqs::client(&settings)
        .await
        .expect("an SQS client for the tests")
}

async fn create(
    client: &Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> String {
    let mut request = client.create_queue().queue_name(name);
    for (attribute, value) in attributes {
        request = request.attributes(attribute.clone(), value);
    }
    request
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "the SQS tests need moto on {ENDPOINT} (scripts/services): {}",
                aws_sdk_sqs::error::DisplayErrorContext(&err)
            )
        })
        .queue_url()
        .expect("a queue URL")
        .to_owned()
}

async fn receive(client: &Client, url: &str, visibility: Duration) -> Vec<Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .visibility_timeout(visibility.as_secs() as i32)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receiving from a test queue")
        .messages
        .unwrap_or_default()
}
