//! Properties of typing and of the canonical form, on generated payloads.
//!
//! The case count is proptest's (256, or `PROPTEST_CASES`); a long run:
//! `PROPTEST_CASES=100000 cargo nextest run -p corral-payload proptest`.

use proptest::prelude::*;

use super::{PayloadError, fingerprint::canonical, parse};
use corral_contract::json;

/// A JSON value whose text is under the test's control: numbers are kept as
/// the text they are written with, object keys are distinct.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?",
    ]
}

/// Strings with what needs escaping: quotes, backslashes, controls, U+0000,
/// non-ASCII and astral characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        any::<String>(),
        "[\"\\\\/\u{0}-\u{1f} é中🐄a-z]{0,12}",
    ]
}

/// Keys, the payload's own among them, so generated bodies sometimes type.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "drop_id",
            "status",
            "attempt_date",
            "phone_number",
            "reason",
            "dnc",
            "spam",
            "product_cost",
            "compliance_fee",
            "tts_fee",
            "network",
            "name",
            "type",
            "foreign_id",
        ])
        .prop_map(str::to_owned),
        text(),
    ]
}

fn scalar() -> impl Strategy<Value = Node> {
    prop_oneof![
        Just(Node::Null),
        any::<bool>().prop_map(Node::Bool),
        number().prop_map(Node::Number),
        text().prop_map(Node::String),
        Just(Node::String("2019-03-17T21:10:26.000Z".into())),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    scalar().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Node::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|members| Node::Object(members.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Node> {
    prop::collection::btree_map(key(), node(), 0..10)
        .prop_map(|members| Node::Object(members.into_iter().collect()))
}

/// Writes a node as JSON, with choices (member order, whitespace, which
/// characters are written as `\u` escapes) taken from `noise`.
struct Writer<'a> {
    noise: &'a [u8],
    at: usize,
    out: String,
}

impl Writer<'_> {
    fn pick(&mut self) -> u8 {
        let byte = self.noise.get(self.at % self.noise.len().max(1)).copied();
        self.at += 1;
        byte.unwrap_or(0)
    }

    fn blank(&mut self) {
        let blank = [" ", "", "\n", "\t ", "\r\n  ", ""][usize::from(self.pick()) % 6];
        self.out.push_str(blank);
    }

    fn string(&mut self, value: &str) {
        self.out.push('"');
        for c in value.chars() {
            let escape = self.pick().is_multiple_of(3);
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 || escape => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn node(&mut self, node: &Node) {
        self.blank();
        match node {
            Node::Null => self.out.push_str("null"),
            Node::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Node::Number(n) => self.out.push_str(n),
            Node::String(s) => self.string(s),
            Node::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.node(item);
                }
                self.blank();
                self.out.push(']');
            }
            Node::Object(members) => {
                let mut order: Vec<&(String, Node)> = members.iter().collect();
                if !order.is_empty() {
                    let turn = usize::from(self.pick()) % order.len();
                    order.rotate_left(turn);
                    if self.pick().is_multiple_of(2) {
                        order.reverse();
                    }
                }
                self.out.push('{');
                for (i, (key, value)) in order.into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.blank();
                    self.string(key);
                    self.blank();
                    self.out.push(':');
                    self.node(value);
                }
                self.blank();
                self.out.push('}');
            }
        }
        self.blank();
    }
}

fn write(node: &Node, noise: &[u8]) -> String {
    let mut writer = Writer {
        noise,
        at: 0,
        out: String::new(),
    };
    writer.node(node);
    writer.out
}

/// Whether any string (key or value) holds U+0000, which the canonical form refuses.
fn has_nul(node: &Node) -> bool {
    match node {
        Node::String(s) => s.contains('\0'),
        Node::Array(items) => items.iter().any(has_nul),
        Node::Object(members) => members.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

proptest! {
    /// Idempotent, and blind to member order, whitespace and escaping.
    #[test]
    fn proptest_canonical_form_ignores_formatting(
        node in object(),
        noise_a in prop::collection::vec(any::<u8>(), 1..64),
        noise_b in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let a = write(&node, &noise_a);
        let b = write(&node, &noise_b);
        if has_nul(&node) {
            prop_assert_eq!(canonical(&a), Err(PayloadError::NulCharacter));
            prop_assert_eq!(canonical(&b), Err(PayloadError::NulCharacter));
        } else {
            let canon = canonical(&a).unwrap();
            prop_assert_eq!(&canonical(&b).unwrap(), &canon, "{} vs {}", a, b);
            let text = String::from_utf8(canon.clone()).unwrap();
            prop_assert_eq!(&canonical(&text).unwrap(), &canon, "not idempotent");
            // The same document, written the one way (serde_json refuses
            // numbers past f64's range as values: then both are refused).
            let parsed = serde_json::from_str::<serde_json::Value>(&a).ok();
            let reparsed = serde_json::from_str::<serde_json::Value>(&text).ok();
            prop_assert_eq!(parsed, reparsed);
        }
    }

    /// A body ingress accepts is typed or refused with a reason, never a
    /// panic, and never refused for its shape (ingress already judged that).
    #[test]
    fn proptest_bodies_ingress_accepts_are_typed_or_refused_with_a_reason(
        node in object(),
        noise in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let body = write(&node, &noise);
        prop_assert!(json::check_object(body.as_bytes(), json::MAX_DEPTH).is_ok(), "{}", body);
        if let Err(err) = parse(body.as_bytes()) {
            prop_assert!(
                !matches!(
                    err,
                    PayloadError::NotUtf8(_) | PayloadError::NotObject | PayloadError::TooDeep { .. }
                ),
                "{}: {}", body, err
            );
        }
    }

    /// Any bytes at all: typing answers, whatever they are.
    #[test]
    fn proptest_any_bytes_are_typed_or_refused(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&body);
    }

    /// Generated JSON, mangled: cut short, a byte changed, or nested deep.
    #[test]
    fn proptest_mangled_bodies_are_typed_or_refused(
        node in object(),
        noise in prop::collection::vec(any::<u8>(), 1..64),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        depth in 0usize..300,
    ) {
        let body = write(&node, &noise).into_bytes();
        let at = cut.index(body.len() + 1);
        let _ = parse(&body[..at]);
        let mut changed = body.clone();
        if let Some(b) = changed.get_mut(at) {
            *b = byte;
        }
        let _ = parse(&changed);
        let deep = format!("{}{}{}", "[".repeat(depth), String::from_utf8_lossy(&body), "]".repeat(depth));
        let wrapped = format!(r#"{{"x":{deep}}}"#);
        // Refused as too deep exactly when it is.
        prop_assert_eq!(
            matches!(parse(wrapped.as_bytes()), Err(PayloadError::TooDeep { .. })),
            json::nests_deeper_than(wrapped.as_bytes(), json::MAX_DEPTH)
        );
    }
}
