//! What a message says about itself besides its body, whatever carried it.
//!
//! [`Metadata`] names the fields corral writes and reads; each transport
//! adapts it at its edge (`amqp::properties` and
//! `amqp::metadata` for AMQP properties and headers, `sqs::metadata`
//! for SQS message attributes), so neither the envelope nor the worker
//! speaks any client library's type. [`Format`] and [`Envelope`] read it;
//! [`Incoming`] is one webhook as it came off the buffer.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ENVELOPE_VERSION, batch};

/// A message's metadata, as corral makes and reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The body's media type: what [`Format::of`] tells the envelope by.
    pub content_type: Option<String>,
    /// The message's own id (a UUIDv7 made at ingress; any text from a
    /// message corral did not make).
    pub message_id: Option<String>,
    /// When the message was made (AMQP `timestamp`) or sent (SQS
    /// `SentTimestamp`), in whole seconds: `received_at`'s fallback.
    pub timestamp: Option<u64>,
    /// `x-received-at`: when ingress received an envelope-1 webhook.
    pub received_at: Option<DateTime<Utc>>,
    /// `x-corral-envelope`: the version of the contract.
    pub version: Option<i32>,
    /// `x-corral-webhooks`: how many webhooks an envelope-2 message holds,
    /// for people reading a management UI (the body is what counts).
    pub webhooks: Option<i32>,
}

impl Metadata {
    /// An envelope-1 message: one webhook named `message_id`.
    pub fn single(message_id: Uuid, received_at: DateTime<Utc>) -> Self {
        Self {
            content_type: Some("application/json".to_owned()),
            message_id: Some(message_id.to_string()),
            timestamp: Some(received_at.timestamp().max(0) as u64),
            received_at: Some(received_at),
            version: Some(ENVELOPE_VERSION),
            webhooks: None,
        }
    }

    /// An envelope-2 message: `message_id` names the message (each
    /// webhook's own id is in the body), `timestamp` is when its first
    /// webhook was received.
    pub fn batch(message_id: Uuid, first_received_at: DateTime<Utc>, webhooks: usize) -> Self {
        Self {
            content_type: Some(batch::CONTENT_TYPE.to_owned()),
            message_id: Some(message_id.to_string()),
            timestamp: Some(first_received_at.timestamp().max(0) as u64),
            received_at: None,
            version: Some(batch::VERSION),
            webhooks: Some(i32::try_from(webhooks).unwrap_or(i32::MAX)),
        }
    }
}

/// What a message's metadata says its body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Envelope 1 (or a message corral did not make): the body is one webhook.
    Single,
    /// Envelope 2: [`batch::decode`] reads the body.
    Batch,
    /// A corral message of a version this build cannot read (a newer
    /// ingress than worker; upgrade workers first), with what it says.
    Unsupported(String),
}

impl Format {
    /// Reads the format from the content type: [`batch::MEDIA_TYPE`] with
    /// `version=2` is a batch; any other version of it is unsupported;
    /// anything else is a single webhook.
    pub fn of(metadata: &Metadata) -> Self {
        let Some(content_type) = metadata.content_type.as_deref() else {
            return Self::Single;
        };
        let mut parts = content_type.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case(batch::MEDIA_TYPE) {
            return Self::Single;
        }
        let version = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("version"))
            .map(|(_, value)| value.trim().trim_matches('"'));
        if version == Some("2") {
            Self::Batch
        } else {
            Self::Unsupported(format!(
                "content type {content_type:?}: this corral-worker reads version=2 only; upgrade it"
            ))
        }
    }
}

/// What the worker reads back from a message's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `message_id` when it is a UUID; `None` for a message not made by ingress.
    pub message_id: Option<Uuid>,
    /// `x-received-at`, else the timestamp; `None` when neither is there.
    pub received_at: Option<DateTime<Utc>>,
}

impl Envelope {
    /// Reads the envelope; never fails, because a message with odd metadata
    /// is still a webhook to keep (the worker fills the gaps and says so).
    pub fn read(metadata: &Metadata) -> Self {
        let message_id = metadata
            .message_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok());
        let received_at = metadata.received_at.or_else(|| {
            metadata
                .timestamp
                .and_then(|secs| i64::try_from(secs).ok())
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
        });
        Self {
            message_id,
            received_at,
        }
    }
}

/// One webhook as it came off the buffer: an envelope-1 message, or one
/// entry of an envelope-2 message (with its kind's routing key and its own
/// id and `received_at`).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The webhook body, byte for byte.
    pub body: Vec<u8>,
    /// `dropcowboy.sms` / `dropcowboy.rvm` / `dropcowboy.event` (anything
    /// else is quarantined).
    pub routing_key: String,
    /// The webhook's id and `received_at`.
    pub envelope: Envelope,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_webhook_s_metadata_reads_back_as_its_envelope() {
        let id = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2026-11-27T05:24:31.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Envelope::read(&Metadata::single(id, at)),
            Envelope {
                message_id: Some(id),
                received_at: Some(at)
            }
        );
    }

    #[test]
    fn foreign_messages_fall_back_to_the_timestamp() {
        let metadata = Metadata {
            message_id: Some("not-a-uuid".to_owned()),
            timestamp: Some(1_552_857_026),
            ..Metadata::default()
        };
        let envelope = Envelope::read(&metadata);
        assert_eq!(envelope.message_id, None);
        assert_eq!(
            envelope.received_at,
            DateTime::from_timestamp(1_552_857_026, 0)
        );
    }

    #[test]
    fn formats_are_told_apart_by_content_type() {
        let with = |ct: &str| Metadata {
            content_type: Some(ct.to_owned()),
            ..Metadata::default()
        };
        assert_eq!(Format::of(&Metadata::default()), Format::Single);
        assert_eq!(Format::of(&with("application/json")), Format::Single);
        let metadata = Metadata::batch(Uuid::now_v7(), Utc::now(), 3);
        assert_eq!(Format::of(&metadata), Format::Batch);
        assert_eq!(
            Format::of(&with("Application/VND.corral.webhooks+json;version=\"2\"")),
            Format::Batch
        );
        for ct in [
            "application/vnd.corral.webhooks+json",
            "application/vnd.corral.webhooks+json; version=3",
        ] {
            assert!(matches!(Format::of(&with(ct)), Format::Unsupported(why) if why.contains(ct)));
        }
    }
}
