//! The body check on any bytes at all: refused with a 4xx and a reason, or
//! accepted because it is exactly a JSON object within the depth limit.
//!
//! The case count is proptest's (256, or `PROPTEST_CASES`); a long run:
//! `PROPTEST_CASES=100000 cargo nextest run -p corral-ingress proptest`.

use actix_web::ResponseError;
use proptest::prelude::*;
use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::value::RawValue;

use super::{WebhookError, check_json_object};

/// The values of an object or the items of an array, unparsed: no number
/// or string is decoded, so the oracle judges structure only, as ingress does.
struct Members<'a>(Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Members(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut values = Vec::new();
                while let Some((IgnoredAny, value)) = map.next_entry()? {
                    values.push(value);
                }
                Ok(Members(values))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Depth of a valid JSON value: the top-level object or array is level 1.
fn depth(raw: &RawValue) -> usize {
    match raw.get().as_bytes().first() {
        Some(b'[' | b'{') => {
            let members: Members<'_> = serde_json::from_str(raw.get()).expect("valid JSON");
            1 + members.0.into_iter().map(depth).max().unwrap_or(0)
        }
        _ => 0,
    }
}

/// JSON text, often valid, nested up to ~40 levels, in objects or arrays.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        "-?[0-9]{1,5}(\\.[0-9]{1,3})?([eE][-+]?[0-9]{1,3})?",
        "\"([a-z\\[\\]{}:,]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}){0,8}\"",
    ];
    leaf.prop_recursive(40, 200, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec(("[a-z{}\\[\\]]{0,3}", inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(key, value)| format!("\"{key}\" : {value}"))
                    .collect();
                format!("{{ {} }}", members.join(" ,"))
            }),
        ]
    })
}

/// Bytes of every kind: random, JSON, and JSON with one byte changed or cut short.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_text().prop_map(String::into_bytes),
        (json_text(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(text, at, byte)| {
            let mut bytes = text.into_bytes();
            let at = at.index(bytes.len().max(1));
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            bytes
        }),
        (json_text(), any::<prop::sample::Index>()).prop_map(|(text, at)| {
            let bytes = text.into_bytes();
            let at = at.index(bytes.len() + 1);
            bytes[..at].to_vec()
        }),
    ]
}

proptest! {
    #[test]
    fn proptest_any_body_is_refused_with_a_reason_or_is_an_object_within_the_limit(
        body in body(),
        limit in 1usize..40,
    ) {
        let text = std::str::from_utf8(&body).ok();
        let valid = text.is_some_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
        // Depth and type by an oracle that recurses, which is fine here.
        let parsed = text
            .filter(|_| valid)
            .map(|text| serde_json::from_str::<&RawValue>(text).expect("valid JSON"));
        let shape = parsed.map(|raw| (raw.get().starts_with('{'), depth(raw)));
        match check_json_object(&body, limit) {
            Ok(()) => {
                let (object, depth) = shape.expect("accepted, so valid");
                prop_assert!(object);
                prop_assert!(depth <= limit);
            }
            Err(err) => {
                prop_assert!(err.status_code().is_client_error(), "{:?}", err);
                prop_assert!(err.reject_reason().is_some(), "{:?}", err);
                match err {
                    WebhookError::InvalidJson(_) => prop_assert!(!valid),
                    WebhookError::TooDeep { limit: said } => {
                        prop_assert_eq!(said, limit);
                        let (_, depth) = shape.expect("too deep, so valid");
                        prop_assert!(depth > limit);
                    }
                    WebhookError::NotObject => {
                        let (object, depth) = shape.expect("not an object, so valid");
                        prop_assert!(!object);
                        prop_assert!(depth <= limit);
                    }
                    other => prop_assert!(false, "unexpected refusal {:?}", other),
                }
            }
        }
    }
}
