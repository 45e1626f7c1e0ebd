//! The identity of a webhook: the SHA-256 of its canonical form (object keys
//! sorted, no insignificant whitespace, strings re-escaped one way, numbers as
//! their exact text), so the same webhook sent twice is recognised even when
//! its bytes differ in formatting.
//!
//! The canonical form is written in one pass over the text with an explicit
//! stack, never by recursion: a body nested thousands of levels deep costs
//! time in proportion to its length and no call stack, and is refused at
//! [`MAX_DEPTH`] levels.

use std::fmt;

use sha2::{Digest, Sha256};

use super::PayloadError;

/// The deepest nesting of objects and arrays a payload may have (the top-level
/// object is level 1; the provider's payload has 2): the most ingress can be
/// configured to accept. Deeper ones are refused with
/// [`PayloadError::TooDeep`]. It also bounds the cost of a hostile body: each
/// level's canonical text is copied once into its parent.
pub const MAX_DEPTH: usize = corral_contract::json::MAX_DEPTH;

/// SHA-256 of a payload's canonical form: the identity of a webhook.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

impl Fingerprint {
    /// The fingerprint of a JSON document that serde_json has already
    /// accepted as a whole (the canonical pass relies on its syntax).
    pub(super) fn of(text: &str) -> Result<Self, PayloadError> {
        Ok(Self(Sha256::digest(canonical(text)?).into()))
    }
}

/// A value's canonical text, or why it has none. An error stays with the
/// value it came from: a member that a later one of the same key replaces
/// never counts, so it cannot fail the document.
type Canonical = Result<Vec<u8>, PayloadError>;

/// An object or array whose closing bracket has not been read yet.
enum Open {
    Object {
        /// Every member so far, in document order, keys decoded.
        members: Vec<(Result<String, PayloadError>, Canonical)>,
        /// The key whose value is being read.
        key: Option<Result<String, PayloadError>>,
    },
    Array {
        /// `[` and the items so far, comma-separated; `Err` once an item failed.
        out: Canonical,
        empty: bool,
    },
}

/// The canonical form of a JSON document: object keys sorted by their decoded
/// text (a repeated key keeps its last value), no insignificant whitespace,
/// strings re-escaped the one way serde_json does, numbers as their exact
/// text. Refuses U+0000 anywhere it would be stored, and nesting deeper than
/// [`MAX_DEPTH`].
///
/// `text` must be a document serde_json accepted; anything else is refused as
/// invalid JSON, never a panic.
pub(super) fn canonical(text: &str) -> Canonical {
    let mut scan = Scanner { text, at: 0 };
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let Some(mut value) = start_value(&mut scan, &mut stack)? else {
            continue;
        };
        // The value is complete: hand it to its container, and close every
        // container that ends with it.
        loop {
            let Some(open) = stack.last_mut() else {
                scan.end()?;
                return value;
            };
            if !take(open, value, &mut scan)? {
                break;
            }
            value = match stack.pop() {
                Some(open) => close(open),
                None => unreachable!("the stack had a last element"),
            };
        }
    }
}

/// Reads the value that starts here: `Some` when it is complete (a scalar,
/// a string, an empty container), `None` when it opened a container, now
/// on the stack.
fn start_value(
    scan: &mut Scanner<'_>,
    stack: &mut Vec<Open>,
) -> Result<Option<Canonical>, PayloadError> {
    Ok(Some(match scan.next_token()? {
        b'{' | b'[' if stack.len() == MAX_DEPTH => {
            return Err(PayloadError::TooDeep { limit: MAX_DEPTH });
        }
        b'{' if scan.eat(b'}') => Ok(b"{}".to_vec()),
        b'{' => {
            let key = Some(scan.key()?);
            stack.push(Open::Object {
                members: Vec::new(),
                key,
            });
            return Ok(None);
        }
        b'[' if scan.eat(b']') => Ok(b"[]".to_vec()),
        b'[' => {
            stack.push(Open::Array {
                out: Ok(vec![b'[']),
                empty: true,
            });
            return Ok(None);
        }
        b'"' => scan.string().and_then(|string| {
            let value = string.decoded?;
            if value.contains('\0') {
                return Err(PayloadError::NulCharacter);
            }
            Ok(string.canonical.unwrap_or_else(|| escaped(&value)))
        }),
        _ => Ok(scan.scalar()?.as_bytes().to_vec()),
    }))
}

/// Gives `value` to its container and reads what follows it: `true` when
/// that closed the container, `false` when another member or item follows.
fn take(open: &mut Open, value: Canonical, scan: &mut Scanner<'_>) -> Result<bool, PayloadError> {
    match open {
        Open::Object { members, key } => {
            let member_key = key.take().ok_or_else(|| unexpected(scan))?;
            members.push((member_key, value));
            match scan.next_token()? {
                b',' => {
                    *key = Some(scan.key()?);
                    Ok(false)
                }
                b'}' => Ok(true),
                _ => Err(unexpected(scan)),
            }
        }
        Open::Array { out, empty } => {
            match value {
                Ok(item) => {
                    if let Ok(bytes) = out {
                        if !*empty {
                            bytes.push(b',');
                        }
                        bytes.extend_from_slice(&item);
                    }
                }
                // The first item that fails is the array's error.
                Err(err) => {
                    if out.is_ok() {
                        *out = Err(err);
                    }
                }
            }
            *empty = false;
            match scan.next_token()? {
                b',' => Ok(false),
                b']' => Ok(true),
                _ => Err(unexpected(scan)),
            }
        }
    }
}

/// A closed container's canonical text.
fn close(open: Open) -> Canonical {
    match open {
        Open::Object { members, .. } => object(members),
        Open::Array { out, .. } => out.map(|mut bytes| {
            bytes.push(b']');
            bytes
        }),
    }
}

/// An object's canonical text from its members in document order.
fn object(mut members: Vec<(Result<String, PayloadError>, Canonical)>) -> Canonical {
    // A key that does not decode makes the whole object undecodable, as it
    // would for any map type.
    if let Some(position) = members.iter().position(|(key, _)| key.is_err()) {
        let (key, _) = members.swap_remove(position);
        return Err(key.expect_err("found by position"));
    }
    let mut members: Vec<(String, Canonical)> = members
        .into_iter()
        .map(|(key, value)| (key.expect("every key decoded"), value))
        .collect();
    // Stable, so among equal keys the last in the document stays last: it
    // is the one kept.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = vec![b'{'];
    let mut members = members.into_iter().peekable();
    let mut first = true;
    while let Some((key, value)) = members.next() {
        if members.peek().is_some_and(|(next, _)| *next == key) {
            continue;
        }
        if key.contains('\0') {
            return Err(PayloadError::NulCharacter);
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&escaped(&key));
        out.push(b':');
        out.extend_from_slice(&value?);
    }
    out.push(b'}');
    Ok(out)
}

/// A string as serde_json writes it.
fn escaped(value: &str) -> Vec<u8> {
    serde_json::to_vec(value).expect("a string always serialises")
}

fn unexpected(scan: &Scanner<'_>) -> PayloadError {
    PayloadError::InvalidJson(format!("unexpected input at byte {}", scan.at))
}

/// A JSON string token.
struct StringToken {
    /// Its value, or why it has none (an escape serde_json refuses to decode,
    /// such as a lone surrogate).
    decoded: Result<String, PayloadError>,
    /// The token itself when it already is canonical: without a backslash a
    /// JSON string has no escapes and (being valid JSON) no quote or control
    /// character, so serde_json would write it back unchanged.
    canonical: Option<Vec<u8>>,
}

/// A cursor over the document's bytes. Tokens are found by their delimiters
/// (serde_json has already checked the grammar); strings are decoded by
/// serde_json, one token at a time.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl Scanner<'_> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// The next non-blank byte, consumed (strings and scalars are then read
    /// from just before it).
    fn next_token(&mut self) -> Result<u8, PayloadError> {
        self.skip_whitespace();
        let byte = *self
            .text
            .as_bytes()
            .get(self.at)
            .ok_or_else(|| PayloadError::InvalidJson("unexpected end of input".into()))?;
        self.at += 1;
        Ok(byte)
    }

    /// Consumes `byte` if it is the next non-blank one.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.text.as_bytes().get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A member's key and its colon.
    fn key(&mut self) -> Result<Result<String, PayloadError>, PayloadError> {
        if self.next_token()? != b'"' {
            return Err(unexpected(self));
        }
        let key = self.string()?.decoded;
        if self.next_token()? != b':' {
            return Err(unexpected(self));
        }
        Ok(key)
    }

    /// The string whose opening quote was just consumed.
    fn string(&mut self) -> Result<StringToken, PayloadError> {
        let start = self.at - 1;
        let bytes = self.text.as_bytes();
        let mut escapes = false;
        loop {
            match bytes.get(self.at) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escapes = true;
                    self.at += 2;
                }
                Some(_) => self.at += 1,
                None => return Err(PayloadError::InvalidJson("unterminated string".into())),
            }
        }
        self.at += 1;
        let token = self
            .text
            .get(start..self.at)
            .ok_or_else(|| unexpected(self))?;
        Ok(if escapes {
            StringToken {
                decoded: serde_json::from_str(token)
                    .map_err(|err| PayloadError::InvalidJson(err.to_string())),
                canonical: None,
            }
        } else {
            StringToken {
                decoded: Ok(token
                    .get(1..token.len() - 1)
                    .ok_or_else(|| unexpected(self))?
                    .to_owned()),
                canonical: Some(token.as_bytes().to_vec()),
            }
        })
    }

    /// The number or literal whose first byte was just consumed, as written.
    fn scalar(&mut self) -> Result<&str, PayloadError> {
        let start = self.at - 1;
        while let Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') =
            self.text.as_bytes().get(self.at)
        {
            self.at += 1;
        }
        self.text
            .get(start..self.at)
            .filter(|token| {
                token
                    .bytes()
                    .next()
                    .is_some_and(|b| b == b'-' || b.is_ascii_alphanumeric())
            })
            .ok_or_else(|| unexpected(self))
    }

    /// Nothing but blanks may follow the document.
    fn end(&mut self) -> Result<(), PayloadError> {
        self.skip_whitespace();
        if self.at >= self.text.len() {
            Ok(())
        } else {
            Err(unexpected(self))
        }
    }
}
