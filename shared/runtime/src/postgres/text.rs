//! Text from untrusted bytes, made safe to bind to a PostgreSQL `text`
//! parameter.
//!
//! PostgreSQL's `text` cannot hold U+0000 (and `jsonb` refuses `\u0000`).
//! Rust strings can, and anything a client or a publisher controls may carry
//! one into a text the worker writes: an AMQP routing key, serde's error
//! quoting an envelope's field, a header value quoted in a reason. A bound
//! parameter with one fails its whole statement, so every such text goes
//! through [`storable`] on its way in. The values of a webhook itself are not
//! rewritten: typing refuses a payload with U+0000 (it is quarantined, byte
//! for byte), since changing a customer's data silently would be worse.

use std::borrow::Cow;

/// `text` as PostgreSQL can store it: each U+0000 written as the six
/// characters `\u0000`, everything else unchanged. (A text that already held
/// those six characters reads the same; the exact bytes are kept elsewhere,
/// the quarantine's `body`.)
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` in printable ASCII only, every other character escaped as
/// `\u{…}`: for a last resort, when PostgreSQL refused a text even after
/// [`storable`] (a database whose encoding is not UTF-8, or a constraint),
/// since any server encoding holds it.
pub fn ascii(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_writes_each_nul_as_its_escape_and_borrows_the_rest() {
        assert_eq!(storable("a\0b\0"), r"a\u0000b\u0000");
        assert!(matches!(
            storable("dropcowboy.sms é🐄\u{1}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn ascii_escapes_every_character_but_printable_ascii() {
        assert_eq!(
            ascii("kind `\0` é\n🐄"),
            r"kind `\u{0}` \u{e9}\u{a}\u{1f404}"
        );
        assert!(matches!(ascii("SQLSTATE 23514: \"x\""), Cow::Borrowed(_)));
    }
}
