//! Amazon SQS as the buffer (`CORRAL_BUFFER=sqs`): the client both binaries
//! make, the check of the queue, and what a message carries besides its body.
//!
//! A message's body is an envelope-2 body ([`corral_contract::envelope::batch`]): one
//! or more webhooks, each with its own id, `received_at` and kind. Its
//! message attributes carry the envelope's metadata ([`metadata`] reads them
//! back, as [`crate::amqp::metadata`] reads AMQP properties), so the worker
//! reads both buffers with one code path: `content-type` (what
//! [`corral_contract::envelope::Format::of`] reads), `message-id` (the message's own
//! UUIDv7) and `routing-key` (the kind's, or `dropcowboy.mixed`).
//!
//! # Layout
//!
//! - this module: the settings' checks, the queue, SQS's limits.
//! - `client`: making the SDK's client, the start-up checks, counting
//!   requests and what AWS bills for them.
//! - `attributes`: the envelope's metadata as message attributes, and back
//!   (the SQS edge of the transport-neutral contract).
//! - `queue`: asking about a queue: reachability, depth, its dead-letter queue.
//!
//! The client is the official SDK's, with region and credentials from the
//! standard AWS chain and its HTTPS client on rustls with ring (the SDK's
//! default one builds aws-lc with cmake). Loading the chain is async and
//! the binaries' `build` is not, so it runs on a thread of its own.

use crate::config::{BufferKind, BufferSettings};

mod attributes;
mod client;
mod queue;

pub use attributes::{
    ATTRIBUTES_MAX, CONTENT_TYPE, MESSAGE_ID, ROUTING_KEY, attributes, metadata, sent_at_millis,
};
pub use aws_sdk_sqs::Client;
pub use client::{client, connect};
pub use queue::{
    CheckError, DeadLetterTarget, Depth, RedrivePolicyError, check, classify, dead_letter_target,
    dead_letter_url, depth,
};

/// SQS's largest message, and the largest `CORRAL_SQS_MAX_MESSAGE_BYTES`.
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024;

/// Entries per `SendMessageBatch`, `DeleteMessageBatch` and
/// `ChangeMessageVisibilityBatch`, and messages per `ReceiveMessage`.
pub const BATCH_ENTRIES: usize = 10;

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
    /// Sharded queues asked of SQS, which has no use for them.
    #[error(
        "CORRAL_AMQP_QUEUES={0} is for RabbitMQ: an SQS standard queue is already spread over \
         many hosts and takes any rate, so with CORRAL_BUFFER=sqs leave it unset (1)"
    )]
    Sharded(u16),
}

/// Refuses `CORRAL_AMQP_QUEUES` (`queues`) > 1 with the SQS buffer, where
/// it would be ignored.
pub fn check_queues(settings: &BufferSettings, queues: u16) -> Result<(), SettingsError> {
    match settings.kind {
        BufferKind::Sqs if queues > 1 => Err(SettingsError::Sharded(queues)),
        _ => Ok(()),
    }
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
    fn sqs_refuses_sharded_queues_and_rabbitmq_takes_them() {
        let queue = Some("https://sqs.eu-west-1.amazonaws.com/1/q");
        assert!(check_queues(&sqs(queue, None), 1).is_ok());
        let refused = check_queues(&sqs(queue, None), 3).expect_err("SQS has no use for shards");
        assert!(
            refused
                .to_string()
                .starts_with("CORRAL_AMQP_QUEUES=3 is for RabbitMQ")
        );
        let rabbitmq = BufferSettings {
            kind: BufferKind::Rabbitmq,
            ..sqs(None, None)
        };
        assert!(check_queues(&rabbitmq, 3).is_ok());
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
}
