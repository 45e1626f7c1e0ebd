//! The envelope's metadata as SQS message attributes, and back: what the
//! AMQP properties say, said as attributes.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use uuid::Uuid;

use corral_contract::envelope::Metadata;

/// Attribute naming the body's media type, as AMQP's `content_type`.
pub const CONTENT_TYPE: &str = "content-type";
/// Attribute carrying the message's own id (each webhook's is in the body).
pub const MESSAGE_ID: &str = "message-id";
/// Attribute carrying the routing key the AMQP message would have had.
pub const ROUTING_KEY: &str = "routing-key";

/// Bytes SQS counts for the attributes of a message corral makes, at most
/// (each attribute's name, type and value: about 150 today, rounded up).
pub const ATTRIBUTES_MAX: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_read_back_as_metadata() {
        let id = Uuid::now_v7();
        let message = Message::builder()
            .message_id("sqs-own-id")
            .set_message_attributes(Some(attributes(
                id,
                "dropcowboy.sms",
                corral_contract::envelope::batch::CONTENT_TYPE,
            )))
            .attributes(MessageSystemAttributeName::SentTimestamp, "1764338400123")
            .build();
        let (metadata, routing_key) = metadata(&message);
        assert_eq!(routing_key, "dropcowboy.sms");
        assert_eq!(
            corral_contract::envelope::Format::of(&metadata),
            corral_contract::envelope::Format::Batch
        );
        let envelope = corral_contract::envelope::Envelope::read(&metadata);
        assert_eq!(envelope.message_id, Some(id));
        assert_eq!(
            envelope.received_at,
            chrono::DateTime::from_timestamp(1_764_338_400, 0)
        );
        let bytes: usize = attributes(
            id,
            "dropcowboy.mixed",
            corral_contract::envelope::batch::CONTENT_TYPE,
        )
        .iter()
        .map(|(name, value)| {
            name.len() + value.data_type().len() + value.string_value().unwrap_or("").len()
        })
        .sum();
        assert!(bytes <= ATTRIBUTES_MAX, "{bytes}");
    }
}
