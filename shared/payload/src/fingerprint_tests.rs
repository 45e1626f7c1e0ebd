//! The fingerprint: what it ignores (formatting), what it keeps (content),
//! and that it never changes for a payload that had one.

use super::{fingerprint::canonical, *};

const SUCCESS: &str = include_str!("../../../tests/fixtures/sms-success.json");
const FAILURE: &str = include_str!("../../../tests/fixtures/sms-failure.json");

#[test]
fn the_fingerprint_ignores_formatting_but_not_content() {
    let a = parse(
        br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9"}"#,
    )
    .unwrap();
    let b = parse(
        "{ \"x\" : \"\u{e9}\",\n \"attempt_date\":\"2019-03-17T21:10:26Z\", \"status\":\"success\", \"drop_id\":\"a\" }"
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(a.fingerprint, b.fingerprint);
    let c = parse(
        br#"{"drop_id":"a","status":"failure","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9"}"#,
    )
    .unwrap();
    assert_ne!(a.fingerprint, c.fingerprint);
    let d = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9","n":1.0}"#).unwrap();
    let e = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":"\u00e9","n":1}"#).unwrap();
    assert_ne!(
        d.fingerprint, e.fingerprint,
        "numbers are compared as exact text"
    );
}

#[test]
fn unescaped_strings_are_already_canonical() {
    for raw in [
        r#""plain""#,
        r#""Verizon Wireless:6006 - SVR/2""#,
        "\"é ü 中 🐄\"",
        r#""a/b<c>&'d""#,
        r#""""#,
    ] {
        let value: String = serde_json::from_str(raw).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), raw);
        assert_eq!(canonical(raw).unwrap(), raw.as_bytes());
    }
}

/// Fingerprints are stored in `delivery_events` and decide what is a
/// duplicate: the canonical form must never change for a payload that had one.
/// Each body's fingerprint here was computed by the first implementation.
#[test]
fn fingerprints_of_known_payloads_never_change() {
    let head = r#""drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z""#;
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let deep_objects = format!("{}1{}", r#"{"k":"#.repeat(100), "}".repeat(100));
    let cases: Vec<(String, &str)> = vec![
        (SUCCESS.to_owned(), PINNED[0]),
        (FAILURE.to_owned(), PINNED[1]),
        // Keys out of order, whitespace everywhere.
        (
            format!(
                "\n{{ \"x\" :\t[ 1 , {{ \"b\" : 2 , \"a\" : [ ] }} , {{ }} ] ,\r\n {head} }}\n"
            ),
            PINNED[2],
        ),
        // Escapes that decode, and ones that must stay escaped.
        (
            format!(r#"{{{head},"x":"\u00e9\n\t\/\"\\\u001f\ud83d\udc04","y":"é 中 🐄 <&>'"}}"#),
            PINNED[3],
        ),
        // Keys that need escaping, and a key spelled two ways (the last wins).
        (
            format!(r#"{{{head},"k\"ey\n":1,"\u0078":"first","x":"second"}}"#),
            PINNED[4],
        ),
        // Numbers keep their exact text; literals.
        (
            format!(
                r#"{{{head},"n":[1.0,1,-0,1e5,1E+2,2.50e-3,12345678901234567890123],"t":[true,false,null]}}"#
            ),
            PINNED[5],
        ),
        // A repeated key whose first value could not be stored: only the last counts.
        (
            format!(r#"{{{head},"x":"a\u0000b","x":{{"\ud800":[1]}},"x":2}}"#),
            PINNED[6],
        ),
        // Nesting well past anything the provider sends.
        (
            format!(r#"{{{head},"x":{deep},"y":{deep_objects}}}"#),
            PINNED[7],
        ),
        // Sorting is by the decoded key's bytes, not by its escaped text.
        (
            format!(r#"{{{head},"\u00e9":1,"z":2,"\u0041":3,"é2":4}}"#),
            PINNED[8],
        ),
    ];
    let mut got = Vec::new();
    for (body, _) in &cases {
        let fingerprint = parse(body.as_bytes())
            .unwrap_or_else(|err| panic!("{body}: {err}"))
            .fingerprint;
        got.push(hex(&fingerprint.0));
    }
    let expected: Vec<&str> = cases.iter().map(|(_, pinned)| *pinned).collect();
    assert_eq!(got, expected);
}

const PINNED: [&str; 9] = [
    "d6ac8a93652311067e28671ae0c6bc92d432fce0c36b1edddfb451922e90bd84",
    "caef60c308a75f1f80ebd218a12ca8804deabdf0771f4b00f14bccd6aedf1695",
    "de11c2088298d63a95d519bf737965f93838f449226948052a84cc24914f43ab",
    "dde755d73211a24bb7065bd69eb83e14f5045a2c822b0d0426a17015a0a1f658",
    "693d493f6da09ede8e4106d72dec975eda05ef20cabda6e34d3ee50feab43817",
    "d4a64898132bde7fc2e4b4376479029a4ba25309af52ef4a20094098639b8643",
    "04c24a636086facca17becd828350d116a42ffd36d36d464ad598b1f66ac756a",
    "0d7112dfbc296896d8b13594e516169963780d7b25f58ef7b1159a807377fc99",
    "565e7419329a87c567c5b526ba56892426e8b79db4e65d37b90ff38c85f9756b",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
