//! From a message of the buffer to the webhooks inside it.
//!
//! Envelope 1 is one webhook: the body, its kind from the routing key, its id
//! and `received_at` from the metadata. Envelope 2 ([`batch`]) holds several,
//! each with its own id, `received_at` and kind; each becomes its own
//! [`Incoming`], so it is typed, de-duplicated, stored or quarantined on its
//! own exactly like an envelope-1 webhook. A message whose webhooks cannot be
//! told apart is quarantined whole instead of dropped or retried: retrying
//! cannot make it readable, and it would block the queue.

use corral_contract::envelope::{
    Envelope, Format, Incoming, Metadata,
    batch::{self, UnpackError},
};

use super::Contents;

/// How the `error` of every quarantine row that holds a whole AMQP message
/// begins, rather than one webhook. Only the worker writes it (each
/// webhook's reason begins with a text of its own), and it is how
/// `quarantine reprocess` knows which rows it may unpack: a webhook's body is
/// always typed as one webhook, even one shaped like an envelope. It says
/// "AMQP" for an SQS message too: rows already stored begin with it, so the
/// text is part of the stored format and does not change.
pub const WHOLE_MESSAGE: &str = "the AMQP message is quarantined whole";

/// The reason of a message whose webhooks cannot be read, for `why`.
fn unread(why: impl std::fmt::Display) -> String {
    format!("{WHOLE_MESSAGE}, its webhooks unread: {why}")
}

/// The webhooks a message holds, or why it cannot be unpacked.
pub fn contents(metadata: &Metadata, routing_key: &str, body: Vec<u8>) -> Contents {
    let message = |body| Incoming {
        body,
        routing_key: routing_key.to_owned(),
        envelope: Envelope::read(metadata),
    };
    match Format::of(metadata) {
        Format::Single => Contents::Webhooks(vec![message(body)]),
        Format::Batch => match webhooks(&body) {
            Ok(webhooks) => Contents::Webhooks(webhooks),
            Err(err) => Contents::Unreadable {
                error: unread(&err),
                logged: unread(without_values(&err)),
                message: message(body),
            },
        },
        // The reason quotes the content type only, never the body.
        Format::Unsupported(reason) => Contents::Unreadable {
            error: unread(&reason),
            logged: unread(reason),
            message: message(body),
        },
    }
}

/// The webhooks of an envelope-2 body, one [`Incoming`] each, with its own
/// id, `received_at` and kind.
pub fn webhooks(body: &[u8]) -> Result<Vec<Incoming>, UnpackError> {
    Ok(batch::decode(body)?
        .into_iter()
        .map(|entry| Incoming {
            body: entry.body.into_owned(),
            routing_key: entry.kind.routing_key().to_owned(),
            envelope: Envelope {
                message_id: Some(entry.id),
                received_at: Some(entry.received_at),
            },
        })
        .collect())
}

/// What went wrong, without the text from the body that serde's message or
/// the `received_at` found may quote (webhook bodies stay out of logs).
fn without_values(err: &UnpackError) -> String {
    match err {
        UnpackError::Malformed(_) => "not a corral envelope-2 body".to_owned(),
        UnpackError::ReceivedAt { index, .. } => {
            format!("webhook {index} of the message has a received_at that is not RFC 3339")
        }
        UnpackError::Body { .. } | UnpackError::Empty => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use corral_contract::envelope::{Kind, MIXED_ROUTING_KEY, batch::Packing};
    use uuid::Uuid;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a test date")
            .with_timezone(&Utc)
    }

    fn webhooks(contents: Contents) -> Vec<Incoming> {
        match contents {
            Contents::Webhooks(webhooks) => webhooks,
            Contents::Unreadable { error, .. } => panic!("unreadable: {error}"),
        }
    }

    #[test]
    fn an_envelope_1_message_is_one_webhook_with_the_message_s_properties() {
        let id = Uuid::now_v7();
        let received = at("2026-11-28T14:00:00.123456Z");
        let body = b" {\"drop_id\":\"a\"}\n".to_vec();
        let unpacked = webhooks(contents(
            &Metadata::single(id, received),
            "dropcowboy.rvm",
            body.clone(),
        ));
        assert_eq!(unpacked.len(), 1);
        assert_eq!(unpacked[0].body, body);
        assert_eq!(unpacked[0].routing_key, "dropcowboy.rvm");
        assert_eq!(unpacked[0].envelope.message_id, Some(id));
        assert_eq!(unpacked[0].envelope.received_at, Some(received));
    }

    #[test]
    fn an_envelope_2_message_is_each_webhook_with_its_own_id_time_and_kind() {
        let packed = [
            (
                Kind::Sms,
                &b"{\"drop_id\":\"a\"}"[..],
                "2026-11-28T14:00:00.000001Z",
            ),
            (
                Kind::Rvm,
                &b"\t{\"drop_id\":\"b\"} "[..],
                "2026-11-28T14:00:00.000002Z",
            ),
        ];
        let packing: Vec<Packing> = packed
            .iter()
            .map(|(kind, body, received)| Packing {
                id: Uuid::now_v7(),
                received_at: at(received),
                kind: *kind,
                body,
            })
            .collect();
        let mut body = Vec::new();
        batch::encode(packing.iter().copied(), &mut body);
        let metadata = Metadata::batch(Uuid::now_v7(), packing[0].received_at, 2);
        let unpacked = webhooks(contents(&metadata, MIXED_ROUTING_KEY, body));
        assert_eq!(unpacked.len(), 2);
        for (webhook, packing) in unpacked.iter().zip(&packing) {
            assert_eq!(webhook.body, packing.body, "exact bytes");
            assert_eq!(webhook.routing_key, packing.kind.routing_key());
            assert_eq!(webhook.envelope.message_id, Some(packing.id));
            assert_eq!(webhook.envelope.received_at, Some(packing.received_at));
        }
    }

    #[test]
    fn an_unreadable_message_is_kept_whole_with_why_and_no_body_text_in_the_log() {
        let id = Uuid::now_v7();
        let metadata = Metadata::batch(id, Utc::now(), 1);
        let body = br#"{"webhooks":[{"id":"secret-value"}]}"#.to_vec();
        let Contents::Unreadable {
            message,
            error,
            logged,
        } = contents(&metadata, "dropcowboy.sms", body.clone())
        else {
            panic!("a malformed body must not unpack");
        };
        assert_eq!(message.body, body);
        assert_eq!(message.routing_key, "dropcowboy.sms");
        assert_eq!(message.envelope.message_id, Some(id));
        assert_eq!(
            error,
            "the AMQP message is quarantined whole, its webhooks unread: not a corral \
             envelope-2 body: UUID parsing failed: invalid character: found `s` at 0 at line 1 \
             column 33"
        );
        assert!(error.starts_with(WHOLE_MESSAGE), "{error}");
        assert!(!logged.contains("secret-value"), "{logged}");

        let newer = Metadata {
            content_type: Some("application/vnd.corral.webhooks+json; version=3".to_owned()),
            ..metadata
        };
        let Contents::Unreadable { error, .. } = contents(&newer, "dropcowboy.sms", body) else {
            panic!("version 3 must not be read");
        };
        assert!(error.contains("version=3"), "{error}");
        assert!(error.contains("upgrade it"), "{error}");
    }
}
