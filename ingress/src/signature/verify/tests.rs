//! The rule against our signature vectors (`tests/fixtures`, from
//! `../shared/samples/`), each assertion the provider's receivers must pass
//! on theirs, the edges of the tolerance and of the header syntax, and a
//! property: a signed body changed in any way is refused.

use proptest::prelude::*;

use super::*;

/// `v2-signature-vectors.json`.
const VECTORS: &str = include_str!("../../../../tests/fixtures/v2-signature-vectors.json");

#[derive(Debug, serde::Deserialize)]
struct Vectors {
    tolerance_seconds: u64,
    secret: String,
    other_secret: String,
    timestamp: String,
    now_valid: u64,
    now_stale: u64,
    raw_body: String,
    signature: String,
    signature_other_secret: String,
    tampered_raw_body: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("the vectors parse")
}

/// The whole check, headers then body, as the signed route runs it.
fn check(
    secrets: &[&str],
    signature: Option<&str>,
    timestamp: Option<&str>,
    version: Option<&str>,
    now: u64,
    body: &[u8],
) -> Result<(), Refusal> {
    let keys: Vec<hmac::Key> = secrets.iter().map(|secret| key(secret)).collect();
    let headers = Headers {
        signature: signature.map(str::as_bytes),
        timestamp: timestamp.map(str::as_bytes),
        version: version.map(str::as_bytes),
    };
    let signed = check_headers(headers, now, 300)?;
    verify(&keys, &signed, body)
}

/// The vectors' delivery as sent: their secret, signature, timestamp,
/// `v1`, at `now`.
fn delivered(v: &Vectors, signature: &str, now: u64, body: &str) -> Result<(), Refusal> {
    check(
        &[&v.secret],
        Some(signature),
        Some(&v.timestamp),
        Some("v1"),
        now,
        body.as_bytes(),
    )
}

#[test]
fn vector_assertions_1_to_4_hold_for_our_vectors() {
    let v = vectors();
    assert_eq!(v.tolerance_seconds, 300);
    // 1. The signature verifies at `now_valid`.
    assert_eq!(
        delivered(&v, &v.signature, v.now_valid, &v.raw_body),
        Ok(())
    );
    // 2. The same at `now_stale` is stale.
    assert_eq!(
        delivered(&v, &v.signature, v.now_stale, &v.raw_body),
        Err(Refusal::Stale)
    );
    // 3. The tampered body is refused.
    assert_eq!(
        delivered(&v, &v.signature, v.now_valid, &v.tampered_raw_body),
        Err(Refusal::Invalid)
    );
    // 4. Another secret's signature is refused.
    assert_eq!(
        delivered(&v, &v.signature_other_secret, v.now_valid, &v.raw_body),
        Err(Refusal::Invalid)
    );
}

#[test]
fn vector_assertion_5_any_of_several_secrets_verifies() {
    let v = vectors();
    // 5. Two secrets configured, the second matches: accepted (either order).
    for secrets in [[&v.other_secret, &v.secret], [&v.secret, &v.other_secret]] {
        let secrets = secrets.map(String::as_str);
        for signature in [&v.signature, &v.signature_other_secret] {
            let at = Some(v.timestamp.as_str());
            let sent = (Some(signature.as_str()), at, None, v.now_valid);
            assert_eq!(
                check(
                    &secrets,
                    sent.0,
                    sent.1,
                    sent.2,
                    sent.3,
                    v.raw_body.as_bytes()
                ),
                Ok(())
            );
        }
    }
    assert_eq!(
        check(
            &[&v.other_secret],
            Some(&v.signature),
            Some(&v.timestamp),
            None,
            v.now_valid,
            v.raw_body.as_bytes()
        ),
        Err(Refusal::Invalid)
    );
}

#[test]
fn vector_assertions_6_to_9_refuse_with_their_codes() {
    let v = vectors();
    // 6. A missing signature or timestamp.
    for (signature, timestamp) in [
        (None, Some(v.timestamp.as_str())),
        (Some(&*v.signature), None),
    ] {
        let body = v.raw_body.as_bytes();
        let got = check(&[&v.secret], signature, timestamp, None, v.now_valid, body);
        assert_eq!(got, Err(Refusal::Missing));
    }
    // 7. The hex without its `sha256=` prefix.
    let bare = v.signature.strip_prefix("sha256=").expect("the prefix");
    assert_eq!(
        delivered(&v, bare, v.now_valid, &v.raw_body),
        Err(Refusal::Invalid)
    );
    // 8. A timestamp that is not a number.
    let body = v.raw_body.as_bytes();
    let sig = Some(v.signature.as_str());
    let got = check(
        &[&v.secret],
        sig,
        Some("yesterday"),
        None,
        v.now_valid,
        body,
    );
    assert_eq!(got, Err(Refusal::Stale));
    // 9. A signature version other than v1.
    let got = check(
        &[&v.secret],
        sig,
        Some(&v.timestamp),
        Some("v2"),
        v.now_valid,
        body,
    );
    assert_eq!(got, Err(Refusal::Invalid));
}

#[test]
fn the_tolerance_takes_300_seconds_either_way_and_not_301() {
    let v = vectors();
    let signed_at: u64 = v.timestamp.parse().expect("digits");
    for (now, expected) in [
        (signed_at + 300, Ok(())),
        (signed_at - 300, Ok(())),
        (signed_at, Ok(())),
        (signed_at + 301, Err(Refusal::Stale)),
        (signed_at - 301, Err(Refusal::Stale)),
    ] {
        assert_eq!(
            delivered(&v, &v.signature, now, &v.raw_body),
            expected,
            "now = signed_at {:+}",
            now as i64 - signed_at as i64
        );
    }
}

#[test]
fn a_timestamp_of_anything_but_ascii_digits_is_stale() {
    let v = vectors();
    let signed_at: u64 = v.timestamp.parse().expect("digits");
    for timestamp in [
        "yesterday".to_owned(),
        format!("{signed_at}.5"),
        "-5".to_owned(),
        format!("+{signed_at}"),
        format!(" {signed_at}"),
        format!("{signed_at}\n"),
        format!("{signed_at}000"),
        "١٧٩٦٦٠١٦٠٠".to_owned(),
        "9".repeat(40),
    ] {
        let got = check_headers(
            Headers {
                signature: Some(v.signature.as_bytes()),
                timestamp: Some(timestamp.as_bytes()),
                version: None,
            },
            signed_at,
            300,
        );
        assert_eq!(got, Err(Refusal::Stale), "{timestamp:?}");
    }
}

#[test]
fn empty_headers_are_missing_and_an_empty_version_is_no_version() {
    let v = vectors();
    let body = v.raw_body.as_bytes();
    let (sig, ts, now) = (
        Some(v.signature.as_str()),
        Some(v.timestamp.as_str()),
        v.now_valid,
    );
    assert_eq!(
        check(&[&v.secret], Some(""), ts, None, now, body),
        Err(Refusal::Missing)
    );
    assert_eq!(
        check(&[&v.secret], sig, Some(""), None, now, body),
        Err(Refusal::Missing)
    );
    assert_eq!(check(&[&v.secret], sig, ts, Some(""), now, body), Ok(()));
    assert_eq!(check(&[&v.secret], sig, ts, None, now, body), Ok(()));
    for version in ["V1", "v1 ", "v2", "1"] {
        let got = check(&[&v.secret], sig, ts, Some(version), now, body);
        assert_eq!(got, Err(Refusal::Invalid), "{version:?}");
    }
    // A missing header is missing even when the version is wrong too.
    assert_eq!(
        check(&[&v.secret], None, ts, Some("v2"), now, body),
        Err(Refusal::Missing)
    );
}

#[test]
fn upper_case_hex_verifies_and_malformed_signatures_are_invalid_without_panicking() {
    let v = vectors();
    let hex = v.signature.strip_prefix("sha256=").expect("the prefix");
    let upper = format!("sha256={}", hex.to_ascii_uppercase());
    assert_eq!(delivered(&v, &upper, v.now_valid, &v.raw_body), Ok(()));
    for signature in [
        format!("SHA256={hex}"),
        format!("sha256={hex}00"),
        format!("sha256={}", &hex[..62]),
        format!("sha256= {hex}"),
        format!("sha1={hex}"),
        "sha256=abc".to_owned(),
        "sha256=not-hex".to_owned(),
        "sha256=é".to_owned(),
        "sha256=".to_owned(),
    ] {
        assert_eq!(
            delivered(&v, &signature, v.now_valid, &v.raw_body),
            Err(Refusal::Invalid),
            "{signature:?}"
        );
    }
}

#[test]
fn only_the_exact_bytes_and_the_exact_secret_verify() {
    let v = vectors();
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&v.raw_body).expect("JSON"),
    )
    .expect("serializes");
    assert_eq!(
        delivered(&v, &v.signature, v.now_valid, &pretty),
        Err(Refusal::Invalid)
    );
    // The secret is used as it is: the file and the setting trim, the
    // rule does not.
    let padded = format!("{} ", v.secret);
    let sent = (Some(v.signature.as_str()), Some(v.timestamp.as_str()));
    let got = check(
        &[&padded],
        sent.0,
        sent.1,
        None,
        v.now_valid,
        v.raw_body.as_bytes(),
    );
    assert_eq!(got, Err(Refusal::Invalid));
    assert_eq!(
        verify(&[], &signed(&v), v.raw_body.as_bytes()),
        Err(Refusal::Invalid),
        "no key verifies nothing"
    );
}

fn signed(v: &Vectors) -> Signed {
    check_headers(
        Headers {
            signature: Some(v.signature.as_bytes()),
            timestamp: Some(v.timestamp.as_bytes()),
            version: Some(b"v1"),
        },
        v.now_valid,
        300,
    )
    .expect("the vectors' headers pass")
}

/// One change to a body: a byte replaced, the end cut, or bytes added.
#[derive(Debug, Clone)]
enum Change {
    Replace { at: usize, with: u8 },
    Truncate { to: usize },
    Extend { with: Vec<u8> },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, with)| Change::Replace { at, with }),
        any::<usize>().prop_map(|to| Change::Truncate { to }),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(|with| Change::Extend { with }),
    ]
}

/// `body` changed, or `None` when the change leaves it as it was (a byte
/// replaced by itself).
fn changed(body: &[u8], change: &Change) -> Option<Vec<u8>> {
    let mut out = body.to_vec();
    match change {
        Change::Replace { at, with } => {
            let at = at % body.len();
            if out[at] == *with {
                return None;
            }
            out[at] = *with;
        }
        Change::Truncate { to } => out.truncate(to % body.len()),
        Change::Extend { with } => out.extend_from_slice(with),
    }
    Some(out)
}

proptest! {
    #[test]
    fn a_signed_body_changed_in_any_way_is_refused(change in change()) {
        let v = vectors();
        let signed = signed(&v);
        let keys = [key(&v.secret), key(&v.other_secret)];
        prop_assert_eq!(verify(&keys, &signed, v.raw_body.as_bytes()), Ok(()));
        if let Some(body) = changed(v.raw_body.as_bytes(), &change) {
            prop_assert_eq!(verify(&keys, &signed, &body), Err(Refusal::Invalid));
        }
    }

    #[test]
    fn any_signature_header_at_all_is_judged_without_panicking(header in any::<Vec<u8>>()) {
        let v = vectors();
        let got = check_headers(
            Headers {
                signature: Some(&header),
                timestamp: Some(v.timestamp.as_bytes()),
                version: None,
            },
            v.now_valid,
            300,
        );
        match got {
            Ok(signed) => {
                let verified = verify(&[key(&v.secret)], &signed, b"{\"a\":1}");
                prop_assert_eq!(verified, Err(Refusal::Invalid));
            }
            Err(refusal) => prop_assert_eq!(refusal, Refusal::Missing, "only an empty one"),
        }
    }
}
