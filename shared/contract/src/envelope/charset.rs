//! The characters an envelope-2 body may hold, by the buffer it travels in.
//!
//! An AMQP body is bytes: anything goes, and every body that can goes in
//! raw. An SQS message body is text, and SQS refuses a message holding a
//! character outside `#x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD |
//! #x10000–#x10FFFF`. Of the characters outside that set, a body ingress
//! accepts (UTF-8 JSON, `crate::json`) can hold only U+FFFE and
//! U+FFFF: UTF-8 cannot encode a surrogate, JSON allows no raw control
//! character inside a string and only tab, LF, CR and space between tokens,
//! but lets a string hold any other character raw (a `foreign_id` is the
//! customer's own text). Such a body travels as the entry's `body_text`, the
//! characters SQS refuses written `\uXXXX`, which decodes to the exact bytes.

use std::io;

use serde::Serialize as _;
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

/// What a message body may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// Any bytes: an AMQP body.
    Any,
    /// The characters SQS takes in a message body.
    Sqs,
}

impl Charset {
    /// Whether a body of this charset may hold `c` as it is.
    pub fn admits(self, c: char) -> bool {
        match self {
            Charset::Any => true,
            // `char` is never a surrogate (U+D800–U+DFFF).
            Charset::Sqs => matches!(
                c,
                '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}'
            ),
        }
    }

    /// Whether the UTF-8 text `body` holds a character this charset does
    /// not admit. Bytes that are not UTF-8 hold no character; whoever sends
    /// them decides (the SQS buffer refuses them).
    pub fn refuses_any_of(self, body: &[u8]) -> bool {
        self != Charset::Any
            && std::str::from_utf8(body).is_ok_and(|text| text.chars().any(|c| !self.admits(c)))
    }

    /// Appends `text` to `out` as a JSON string: escaped as serde_json
    /// escapes (`"`, `\` and the control characters), and every other
    /// character this charset does not admit as `\uXXXX` (UTF-16 units).
    pub fn write_json_string(self, text: &str, out: &mut Vec<u8>) {
        let mut serializer = Serializer::with_formatter(&mut *out, Escaping(self));
        text.serialize(&mut serializer)
            .expect("writing to a Vec cannot fail");
    }
}

/// serde_json's compact output, escaping too what a charset does not admit.
/// serde_json hands a string to [`Formatter::write_string_fragment`] in
/// runs between the characters it escapes itself, so only those runs need
/// a look.
struct Escaping(Charset);

impl Formatter for Escaping {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| !self.0.admits(c)) {
            CompactFormatter.write_string_fragment(writer, &rest[..at])?;
            for unit in c.encode_utf16(&mut [0; 2]) {
                write!(writer, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        CompactFormatter.write_string_fragment(writer, rest)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json_string(charset: Charset, text: &str) -> String {
        let mut out = Vec::new();
        charset.write_json_string(text, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    /// SQS's rule as its documentation spells it, apart from [`Charset::admits`].
    fn sqs_takes(c: char) -> bool {
        let c = u32::from(c);
        c == 0x9
            || c == 0xA
            || c == 0xD
            || (0x20..=0xD7FF).contains(&c)
            || (0xE000..=0xFFFD).contains(&c)
            || (0x10000..=0x10FFFF).contains(&c)
    }

    #[test]
    fn sqs_admits_exactly_its_documented_characters() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(
                Charset::Sqs.admits(c),
                sqs_takes(c),
                "U+{:04X}",
                u32::from(c)
            );
            assert!(Charset::Any.admits(c));
        }
    }

    #[test]
    fn the_non_characters_json_allows_raw_are_escaped_for_sqs_alone() {
        let text = "id-\u{FFFE}-\u{FFFF}\u{FFFF}-\u{FFFD}-\u{10FFFF}-é";
        assert_eq!(
            json_string(Charset::Sqs, text),
            "\"id-\\ufffe-\\uffff\\uffff-\u{FFFD}-\u{10FFFF}-é\""
        );
        assert_eq!(json_string(Charset::Any, text), format!("\"{text}\""));
        // What serde_json escapes it still escapes, as it does.
        assert_eq!(
            json_string(Charset::Sqs, "a\"\\\n\t\u{0}\u{1F}\u{FFFE}"),
            r#""a\"\\\n\t\u0000\u001f\ufffe""#
        );
        assert_eq!(json_string(Charset::Sqs, ""), "\"\"");
        assert_eq!(json_string(Charset::Sqs, "\u{FFFF}"), "\"\\uffff\"");
    }

    #[test]
    fn only_a_body_with_a_refused_character_needs_escaping() {
        let body = "{\"foreign_id\":\"a\u{FFFE}\"}";
        assert!(Charset::Sqs.refuses_any_of(body.as_bytes()));
        assert!(!Charset::Any.refuses_any_of(body.as_bytes()));
        assert!(!Charset::Sqs.refuses_any_of("{\"a\":\"\u{FFFD}\u{1F600}\"}\r\n".as_bytes()));
        assert!(!Charset::Sqs.refuses_any_of(b"{\"a\":\xff}"));
        assert!(Charset::Sqs.refuses_any_of(b"{\"a\":\"\x01\"}"));
    }

    /// The other characters SQS refuses are the control characters (a
    /// surrogate is no `char`, nor UTF-8): the body check ingress applies
    /// refuses each of them raw, inside a string or between tokens.
    #[test]
    fn of_the_characters_sqs_refuses_ingress_accepts_only_u_fffe_and_u_ffff() {
        let accepts = |body: String| crate::json::check_object(body.as_bytes(), 32).is_ok();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if Charset::Sqs.admits(c) {
                continue;
            }
            let in_string = accepts(format!("{{\"a\":\"{c}\"}}"));
            let between = accepts(format!("{{\"a\":{c}1}}")) || accepts(format!("{c}{{}}"));
            let expected = matches!(c, '\u{FFFE}' | '\u{FFFF}');
            assert_eq!(in_string, expected, "U+{:04X} in a string", u32::from(c));
            assert!(!between, "U+{:04X} between tokens", u32::from(c));
        }
    }

    proptest! {
        /// Whatever the text, what is written for SQS holds only what SQS
        /// takes, and reads back as exactly the text.
        #[test]
        fn any_text_written_for_sqs_is_legal_and_reads_back_exactly(
            text in any::<String>(),
            specials in proptest::collection::vec(
                prop_oneof![Just('\u{FFFE}'), Just('\u{FFFF}'), Just('\u{0}'), Just('"')],
                0..4,
            ),
        ) {
            let text: String = text.chars().chain(specials).collect();
            let written = json_string(Charset::Sqs, &text);
            prop_assert!(written.chars().all(sqs_takes), "{written:?}");
            prop_assert_eq!(serde_json::from_str::<String>(&written).unwrap(), text);
        }
    }
}
