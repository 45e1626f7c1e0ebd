//! Envelope 2: several webhooks in one AMQP message.
//!
//! A quorum-queue publish costs the broker the same Raft round and fsync
//! whether it carries one webhook or a hundred, so ingress sends whatever
//! arrived while its earlier publishes awaited their confirms as one message.
//! The body is JSON a person can read in the management UI's "Get messages"
//! and any consumer can parse with a stock JSON library:
//!
//! ```json
//! {"webhooks":[
//!   {"id":"019…","received_at":"2026-11-28T14:00:00.123456Z","kind":"sms","body":{"drop_id":"…"}},
//!   {"id":"019…","received_at":"2026-11-28T14:00:00.123501Z","kind":"rvm","body_text":" {\"drop_id\":\"…\"}\n"}
//! ]}
//! ```
//!
//! Each entry is one webhook: `id` (the UUID answered to its sender),
//! `received_at` (RFC 3339, microseconds, UTC), `kind` (`sms` / `rvm`) and
//! its request body, byte for byte, in one of two forms. `body` holds the
//! body itself as raw JSON, unparsed and unchanged (ingress only accepts a
//! JSON object, so it is always valid JSON): the bytes between `"body":` and
//! the entry's closing `}` are exactly the bytes received. A body with
//! whitespace before or after its object would lose it there, and a body
//! holding a character the buffer cannot carry (SQS: U+FFFE, U+FFFF,
//! [`Charset`]) cannot go raw, so such a body goes as the JSON string
//! `body_text` instead, whose value is the exact text.
//!
//! corral-ingress puts webhooks of one kind in a message and routes it with
//! that kind's key (`dropcowboy.sms`, `dropcowboy.rvm`), so a queue bound to
//! one kind gets all of that kind; a reader must still take each entry's
//! `kind` as the truth (a message of both kinds is routed
//! `dropcowboy.mixed`).
//!
//! The message says what it is in its metadata: `content_type`
//! [`CONTENT_TYPE`] and header `x-corral-envelope` = 2. A message without
//! them is envelope 1, a single webhook whose body is the request body.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{Charset, Kind, format_received_at};

/// The media type of an envelope-2 message, without parameters.
pub const MEDIA_TYPE: &str = "application/vnd.corral.webhooks+json";
/// `content_type` of an envelope-2 message.
pub const CONTENT_TYPE: &str = "application/vnd.corral.webhooks+json; version=2";
/// The envelope version of a batch.
pub const VERSION: i32 = 2;

/// Bytes an entry adds to its body, at most: the `id`, `received_at` and
/// `kind` fields and the punctuation around them (93 today; rounded up).
pub const ENTRY_OVERHEAD: usize = 128;
/// Bytes of `{"webhooks":[` and `]}`.
pub const FRAME_OVERHEAD: usize = 16;

/// One webhook to pack.
#[derive(Debug, Clone, Copy)]
pub struct Packing<'a> {
    /// The id answered to the sender.
    pub id: Uuid,
    /// When ingress received it.
    pub received_at: DateTime<Utc>,
    /// SMS or RVM.
    pub kind: Kind,
    /// The request body: a JSON object, byte for byte.
    pub body: &'a [u8],
}

/// Appends `webhooks` to `out` as one envelope-2 body for AMQP (any
/// bytes: [`encode_for`] with [`Charset::Any`]).
pub fn encode<'a>(webhooks: impl IntoIterator<Item = Packing<'a>>, out: &mut Vec<u8>) {
    encode_for(Charset::Any, webhooks, out);
}

/// Appends `webhooks` to `out` as one envelope-2 body holding only
/// characters of `charset`.
///
/// Written by hand rather than through serde: the bodies go in unparsed,
/// and nothing else needs escaping (UUIDs, timestamps and kinds are ASCII).
pub fn encode_for<'a>(
    charset: Charset,
    webhooks: impl IntoIterator<Item = Packing<'a>>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"webhooks\":[");
    for (i, webhook) in webhooks.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(
            webhook
                .id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"received_at\":\"");
        out.extend_from_slice(format_received_at(webhook.received_at).as_bytes());
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(webhook.kind.as_str().as_bytes());
        if goes_raw(charset, webhook.body) {
            out.extend_from_slice(b"\",\"body\":");
            out.extend_from_slice(webhook.body);
        } else {
            out.extend_from_slice(b"\",\"body_text\":");
            // Ingress only packs bodies it checked are UTF-8 JSON; anything
            // else is still kept exactly, as the lossless string of its bytes
            // would not be, so refuse loudly in tests and degrade in release.
            let text = String::from_utf8_lossy(webhook.body);
            debug_assert!(matches!(text, Cow::Borrowed(_)), "bodies are UTF-8");
            charset.write_json_string(&text, out);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// Whether `body` can travel as raw JSON: it starts with its object's `{`
/// and ends with its `}`, so nothing around the object would be lost, and
/// holds only characters of `charset`.
fn goes_raw(charset: Charset, body: &[u8]) -> bool {
    body.first() == Some(&b'{') && body.last() == Some(&b'}') && !charset.refuses_any_of(body)
}

/// Bytes [`encode`] writes for one webhook with `body`, at most.
pub fn entry_len(body: &[u8]) -> usize {
    entry_len_for(Charset::Any, body)
}

/// Bytes [`encode_for`] writes for one webhook with `body`, at most (a
/// `body_text` can grow by escaping; ingress sends those rare bodies alone
/// when they would not fit).
pub fn entry_len_for(charset: Charset, body: &[u8]) -> usize {
    if goes_raw(charset, body) {
        body.len() + ENTRY_OVERHEAD
    } else {
        // Every byte escaped as `\u00XX` is the worst case (a character
        // only SQS refuses takes 3 bytes and is written in 6).
        body.len() * 6 + 2 + ENTRY_OVERHEAD
    }
}

/// One webhook read back from an envelope-2 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked<'a> {
    /// The id answered to its sender.
    pub id: Uuid,
    /// When ingress received it.
    pub received_at: DateTime<Utc>,
    /// SMS or RVM.
    pub kind: Kind,
    /// The request body, byte for byte.
    pub body: Cow<'a, [u8]>,
}

/// Why an envelope-2 body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnpackError {
    /// Not JSON of the documented shape.
    #[error("not a corral envelope-2 body: {0}")]
    Malformed(String),
    /// An entry with neither or both body forms.
    #[error(
        "webhook {index} of the message has {found} of `body` and `body_text`; exactly one is required"
    )]
    Body {
        /// Position in `webhooks`.
        index: usize,
        /// `neither` or `both`.
        found: &'static str,
    },
    /// A `received_at` that is not RFC 3339.
    #[error("webhook {index} of the message has received_at {found:?}, which is not RFC 3339")]
    ReceivedAt {
        /// Position in `webhooks`.
        index: usize,
        /// What it says.
        found: String,
    },
    /// No webhook at all.
    #[error("the message holds no webhook")]
    Empty,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    webhooks: Vec<WireEntry<'a>>,
}

#[derive(Deserialize)]
struct WireEntry<'a> {
    id: Uuid,
    received_at: Cow<'a, str>,
    kind: Kind,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body_text: Option<Cow<'a, str>>,
}

/// Reads an envelope-2 body: every webhook, in order, or why it cannot be read.
pub fn decode(message: &[u8]) -> Result<Vec<Unpacked<'_>>, UnpackError> {
    // A body is taken as raw JSON, which serde_json skips over without
    // recursing, so its nesting does not count towards serde_json's
    // recursion limit (a test holds it to that).
    let mut deserializer = serde_json::Deserializer::from_slice(message);
    let wire = Wire::deserialize(&mut deserializer)
        .and_then(|wire| deserializer.end().map(|()| wire))
        .map_err(|err| UnpackError::Malformed(err.to_string()))?;
    if wire.webhooks.is_empty() {
        return Err(UnpackError::Empty);
    }
    wire.webhooks
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let body = match (entry.body, entry.body_text) {
                (Some(raw), None) => Cow::Borrowed(raw.get().as_bytes()),
                (None, Some(Cow::Borrowed(text))) => Cow::Borrowed(text.as_bytes()),
                (None, Some(Cow::Owned(text))) => Cow::Owned(text.into_bytes()),
                (None, None) => {
                    return Err(UnpackError::Body {
                        index,
                        found: "neither",
                    });
                }
                (Some(_), Some(_)) => {
                    return Err(UnpackError::Body {
                        index,
                        found: "both",
                    });
                }
            };
            let received_at = DateTime::parse_from_rfc3339(&entry.received_at)
                .map_err(|_| UnpackError::ReceivedAt {
                    index,
                    found: entry.received_at.chars().take(64).collect(),
                })?
                .with_timezone(&Utc);
            Ok(Unpacked {
                id: entry.id,
                received_at,
                kind: entry.kind,
                body,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn round_trip(bodies: &[(&[u8], Kind)]) -> Vec<u8> {
        round_trip_for(Charset::Any, bodies)
    }

    fn round_trip_for(charset: Charset, bodies: &[(&[u8], Kind)]) -> Vec<u8> {
        let packing: Vec<Packing> = bodies
            .iter()
            .enumerate()
            .map(|(i, (body, kind))| Packing {
                id: Uuid::from_u128(i as u128 + 1),
                received_at: at("2026-11-28T14:00:00.000001Z")
                    + chrono::Duration::microseconds(i as i64),
                kind: *kind,
                body,
            })
            .collect();
        let mut out = Vec::new();
        encode_for(charset, packing.iter().copied(), &mut out);
        let unpacked = decode(&out).expect("decodes");
        assert_eq!(unpacked.len(), packing.len());
        for (packed, unpacked) in packing.iter().zip(&unpacked) {
            assert_eq!(unpacked.id, packed.id);
            assert_eq!(unpacked.received_at, packed.received_at);
            assert_eq!(unpacked.kind, packed.kind);
            assert_eq!(&*unpacked.body, packed.body, "exact bytes");
            let bound = packing
                .iter()
                .map(|p| entry_len_for(charset, p.body))
                .sum::<usize>();
            assert!(out.len() <= FRAME_OVERHEAD + bound);
        }
        out
    }

    #[test]
    fn for_sqs_a_body_with_a_character_sqs_refuses_goes_escaped_and_comes_back_exactly() {
        let refused = "{\"foreign_id\":\"\u{FFFE}x\u{FFFF}\"}";
        let bodies: &[(&[u8], Kind)] = &[
            (br#"{"drop_id":"a"}"#, Kind::Sms),
            (refused.as_bytes(), Kind::Sms),
            (" {\"a\":\"\u{FFFF}\"}\n".as_bytes(), Kind::Rvm),
            ("{\"a\":\"\u{FFFD}\u{1F600}\"}".as_bytes(), Kind::Sms),
        ];
        let out = round_trip_for(Charset::Sqs, bodies);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.chars().all(|c| Charset::Sqs.admits(c)), "{text}");
        assert!(text.contains(r#""body_text":"{\"foreign_id\":\"\ufffex\uffff\"}""#));
        // What SQS takes still goes raw.
        assert!(text.contains(r#""body":{"drop_id":"a"}"#));
        assert!(text.contains("\"body\":{\"a\":\"\u{FFFD}\u{1F600}\"}"));
        // AMQP carries the same body raw.
        let amqp = round_trip(bodies);
        assert!(
            std::str::from_utf8(&amqp)
                .unwrap()
                .contains(&format!("\"body\":{refused}"))
        );
    }

    #[test]
    fn bodies_come_back_byte_for_byte() {
        let bodies: &[(&[u8], Kind)] = &[
            (
                br#"{"drop_id":"a","cost":0.0100, "note":"\u00e9\"\\"}"#,
                Kind::Sms,
            ),
            (b"{ }", Kind::Rvm),
            (b" {\"drop_id\":\"b\"}\n", Kind::Sms),
            ("{\"name\":\"Zoë \u{1F600}\"}".as_bytes(), Kind::Rvm),
            (b"\t{\"x\":[1,2,{\"y\":null}]}\r\n", Kind::Sms),
        ];
        round_trip(bodies);
    }

    #[test]
    fn a_bare_body_is_readable_json_inside_the_message() {
        let out = round_trip(&[(br#"{"drop_id":"d-1"}"#, Kind::Sms)]);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            r#"{"webhooks":[{"id":"00000000-0000-0000-0000-000000000001","received_at":"2026-11-28T14:00:00.000001Z","kind":"sms","body":{"drop_id":"d-1"}}]}"#
        );
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["webhooks"][0]["body"]["drop_id"], "d-1");
    }

    #[test]
    fn bodies_nested_to_the_ingress_limit_unpack() {
        let depth = crate::json::MAX_DEPTH;
        let body = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        round_trip(&[(body.as_bytes(), Kind::Sms)]);
    }

    #[test]
    fn malformed_messages_say_why() {
        let entry = r#""id":"00000000-0000-0000-0000-000000000001","received_at":"2026-11-28T14:00:00Z","kind":"sms""#;
        let cases: Vec<(String, &str)> = vec![
            (
                "{}".into(),
                "not a corral envelope-2 body: missing field `webhooks` at line 1 column 2",
            ),
            (r#"{"webhooks":[]}"#.into(), "the message holds no webhook"),
            (
                format!(r#"{{"webhooks":[{{{entry}}}]}}"#),
                "webhook 0 of the message has neither of `body` and `body_text`; exactly one is required",
            ),
            (
                format!(r#"{{"webhooks":[{{{entry},"body":{{}},"body_text":"{{}}"}}]}}"#),
                "webhook 0 of the message has both of `body` and `body_text`; exactly one is required",
            ),
            (
                format!(r#"{{"webhooks":[{{{entry},"body":{{}}}}]}} x"#),
                "not a corral envelope-2 body: trailing characters at line 1 column 122",
            ),
        ];
        for (message, error) in cases {
            assert_eq!(
                decode(message.as_bytes()).unwrap_err().to_string(),
                error,
                "{message}"
            );
        }
        let late = r#"{"webhooks":[{"id":"00000000-0000-0000-0000-000000000001","received_at":"yesterday","kind":"sms","body":{}}]}"#;
        assert_eq!(
            decode(late.as_bytes()).unwrap_err().to_string(),
            r#"webhook 0 of the message has received_at "yesterday", which is not RFC 3339"#
        );
        let fax = r#"{"webhooks":[{"id":"00000000-0000-0000-0000-000000000001","received_at":"2026-11-28T14:00:00Z","kind":"fax","body":{}}]}"#;
        assert!(
            matches!(decode(fax.as_bytes()), Err(UnpackError::Malformed(m)) if m.contains("unknown variant `fax`"))
        );
    }
}
