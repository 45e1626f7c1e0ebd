//! The shape of a body ingress accepts: one JSON object, nested no deeper than
//! a limit. The worker's typing must cope with every such body, so the check
//! lives beside the payload contract rather than in ingress alone.
//!
//! Both passes are linear and use no call stack per level: serde_json skips a
//! value it is told to ignore with a loop of its own, and the depth is counted
//! by a scanner over the bytes. A body nested tens of thousands of levels deep
//! therefore costs what any other body of its size costs.

use serde::de::IgnoredAny;

/// The most `CORRAL_MAX_JSON_DEPTH` may allow. The worker refuses (quarantines)
/// payloads nested deeper than this, whatever reached the queue.
pub const MAX_DEPTH: usize = 128;

/// Why a body is not an acceptable JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not UTF-8, so not JSON.
    #[error("not UTF-8 ({0})")]
    NotUtf8(String),
    /// Not JSON.
    #[error("{0}")]
    Invalid(String),
    /// JSON nested deeper than allowed.
    #[error("objects and arrays are nested deeper than {limit} levels")]
    TooDeep {
        /// The limit it exceeds.
        limit: usize,
    },
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
}

/// Checks `body` is one JSON object whose objects and arrays nest at most
/// `max_depth` levels (the top-level object is level 1). Cheapest refusal
/// first; the depth is judged only on valid JSON, so the count is exact.
pub fn check_object(body: &[u8], max_depth: usize) -> Result<(), Refusal> {
    let text = std::str::from_utf8(body).map_err(|err| Refusal::NotUtf8(err.to_string()))?;
    serde_json::from_str::<IgnoredAny>(text).map_err(|err| Refusal::Invalid(err.to_string()))?;
    if nests_deeper_than(body, max_depth) {
        return Err(Refusal::TooDeep { limit: max_depth });
    }
    if text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        Ok(())
    } else {
        Err(Refusal::NotObject)
    }
}

/// Whether the objects and arrays of `json` nest more than `limit` levels
/// deep. One pass, constant memory, stopping at the first level too many;
/// brackets inside strings do not count. Meant for valid JSON (on anything
/// else it still returns, its answer then meaningless).
pub fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_objects_and_arrays_alike() {
        let provider = br#"{"drop_id":"a","network":{"name":"x","type":"y"}}"#;
        assert!(!nests_deeper_than(provider, 2));
        assert!(nests_deeper_than(provider, 1));
        assert!(!nests_deeper_than(br#"{"a":[{"b":[]}]}"#, 4));
        assert!(nests_deeper_than(br#"{"a":[{"b":[]}]}"#, 3));
        assert!(!nests_deeper_than(b"42", 0));
        assert!(nests_deeper_than(b"{}", 0));
        // Siblings do not add up.
        assert!(!nests_deeper_than(br#"{"a":{},"b":{},"c":[[],[]]}"#, 3));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let body = br#"{"a":"[[[[{{{{","b\"[[":"\\","c":"\"{{{{"}"#;
        assert!(!nests_deeper_than(body, 1));
        // An escaped backslash ends its escape: the quote after it closes the string.
        assert!(nests_deeper_than(br#"{"a":"\\",  "b":[[]]}"#, 2));
    }

    #[test]
    fn the_limit_is_inclusive() {
        assert!(!nests_deeper_than(nested(32).as_bytes(), 32));
        assert!(nests_deeper_than(nested(33).as_bytes(), 32));
        assert!(nests_deeper_than(nested(100_000).as_bytes(), 32));
    }

    #[test]
    fn check_object_refuses_cheapest_first_and_names_why() {
        assert_eq!(check_object(b" {\"a\": [1, {\"b\": null}]}\n", 3), Ok(()));
        assert_eq!(
            check_object(b" {\"a\": [1, {\"b\": null}]}\n", 2),
            Err(Refusal::TooDeep { limit: 2 })
        );
        assert!(matches!(
            check_object(b"{\"a\":\xff}", 32),
            Err(Refusal::NotUtf8(_))
        ));
        assert!(matches!(
            check_object(b"{\"a\":1", 32),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            check_object(b"{} {}", 32),
            Err(Refusal::Invalid(_))
        ));
        // Invalid and too deep: invalid is what is wrong first.
        assert!(matches!(
            check_object(&nested(40).as_bytes()[..70], 32),
            Err(Refusal::Invalid(_))
        ));
        // A deep array is too deep before it is not an object.
        assert_eq!(
            check_object(nested(40).as_bytes(), 32),
            Err(Refusal::TooDeep { limit: 32 })
        );
        assert_eq!(check_object(b"[1]", 32), Err(Refusal::NotObject));
        let deep_object = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
        assert_eq!(
            check_object(deep_object.as_bytes(), 32),
            Err(Refusal::TooDeep { limit: 32 })
        );
    }
}
