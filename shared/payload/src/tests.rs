//! The payload typing and the fingerprint, on the provider's samples and on
//! every way a payload can be wrong.

use super::*;

const SUCCESS: &str = include_str!("../../../tests/fixtures/sms-success.json");
const FAILURE: &str = include_str!("../../../tests/fixtures/sms-failure.json");

fn dec(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

#[test]
fn the_success_sample_is_typed_field_by_field() {
    let typed = parse(SUCCESS.as_bytes()).unwrap().status;
    assert_eq!(
        typed,
        DeliveryStatus {
            drop_id: "5c8eb7940a057a4ab0823e1a".into(),
            phone_number: Some("+15552224444".into()),
            attempt_date: DateTime::parse_from_rfc3339("2019-03-17T21:10:26Z")
                .unwrap()
                .into(),
            status: "success".into(),
            reason: Some(String::new()),
            dnc: Some(false),
            spam: Some(false),
            product_cost: Some(dec("0.099")),
            compliance_fee: Some(dec("0.0029")),
            tts_fee: Some(dec("0")),
            network_name: Some("Verizon Wireless:6006 - SVR/2".into()),
            network_type: Some("wireless".into()),
            foreign_id: Some("order-1842-attempt-1".into()),
            ..DeliveryStatus::default()
        }
    );
}

#[test]
fn the_failure_sample_keeps_its_reason_and_zero_cost() {
    let typed = parse(FAILURE.as_bytes()).unwrap().status;
    assert_eq!(typed.status, "failure");
    assert_eq!(typed.reason.as_deref(), Some("Invalid message"));
    assert_eq!(typed.product_cost, Some(dec("0")));
    assert_eq!(typed.foreign_id.as_deref(), Some("order-1843-attempt-1"));
}

#[test]
fn money_keeps_its_exact_digits_and_scale() {
    let body = r#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26.000Z",
        "product_cost":0.1,"compliance_fee":"0.00290","tts_fee":1.5e-3}"#;
    let typed = parse(body.as_bytes()).unwrap().status;
    assert_eq!(typed.product_cost.unwrap().to_string(), "0.1");
    assert_eq!(typed.compliance_fee.unwrap().to_string(), "0.00290");
    assert_eq!(typed.tts_fee.unwrap(), dec("0.0015"));
}

#[test]
fn money_that_would_lose_digits_is_refused() {
    for value in [
        "0.12345678901234567890123456789",
        "1e40",
        "1e-40",
        "\"ten\"",
        "true",
        "[1]",
    ] {
        let body = format!(
            r#"{{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","product_cost":{value}}}"#
        );
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                PayloadError::BadMoney {
                    field: "product_cost",
                    ..
                } | PayloadError::WrongType {
                    field: "product_cost",
                    ..
                }
            ),
            "{value}: {err}"
        );
    }
}

#[test]
fn missing_and_null_optional_fields_are_tolerated() {
    let body = r#"{"drop_id":"a","status":"failure","attempt_date":"2019-03-17T21:10:26Z",
        "network":null,"foreign_id":null,"reason":"Some reason nobody documented","extra":{"x":[1,2]}}"#;
    let typed = parse(body.as_bytes()).unwrap().status;
    assert_eq!(typed.network_name, None);
    assert_eq!(typed.foreign_id, None);
    assert_eq!(
        typed.reason.as_deref(),
        Some("Some reason nobody documented")
    );
    assert_eq!(typed.product_cost, None);
}

#[test]
fn untypeable_payloads_say_precisely_why() {
    let date = r#""attempt_date":"2019-03-17T21:10:26Z""#;
    let cases = [
        (
            format!(r#"{{"status":"success",{date}}}"#),
            "`drop_id` is missing",
        ),
        (
            format!(r#"{{"drop_id":"","status":"success",{date}}}"#),
            "`drop_id` is empty",
        ),
        (
            format!(r#"{{"drop_id":7,"status":"success",{date}}}"#),
            "`drop_id` must be a string, found a number",
        ),
        (
            format!(r#"{{"drop_id":"a","status":true,{date}}}"#),
            "`status` must be a string, found a boolean",
        ),
        (
            r#"{"drop_id":"a","status":"success","attempt_date":"yesterday"}"#.into(),
            "`attempt_date` is not an RFC 3339 date-time in years 1-9999: \"yesterday\"",
        ),
        (
            r#"{"drop_id":"a","status":"success","attempt_date":"10000-01-01T00:00:00Z"}"#.into(),
            "`attempt_date` is not an RFC 3339 date-time in years 1-9999: \"10000-01-01T00:00:00Z\"",
        ),
        (
            format!(r#"{{"drop_id":"a","status":"success",{date},"dnc":"no"}}"#),
            "`dnc` must be a boolean, found a string",
        ),
        (
            format!(r#"{{"drop_id":"a","status":"success",{date},"network":"att"}}"#),
            "`network` must be an object, found a string",
        ),
        (
            format!(r#"{{"drop_id":"a","status":"success",{date},"network":{{"name":1}}}}"#),
            "`network.name` must be a string, found a number",
        ),
        (
            format!(r#"{{"drop_id":"a","status":"success",{date},"note":"a\u0000b"}}"#),
            "a string contains U+0000, which PostgreSQL cannot store",
        ),
        ("[1,2]".into(), "body is JSON but not an object"),
    ];
    for (body, expected) in cases {
        assert_eq!(
            parse(body.as_bytes()).unwrap_err().to_string(),
            expected,
            "{body}"
        );
    }
    assert!(matches!(
        parse(b"{\"a\":\xff}"),
        Err(PayloadError::NotUtf8(_))
    ));
    assert!(matches!(
        parse(b"{\"a\":"),
        Err(PayloadError::InvalidJson(_))
    ));
}

#[test]
fn dates_without_an_offset_are_utc_and_offsets_are_honoured() {
    let at = |text: &str| parse_date(text).unwrap();
    assert_eq!(at("2019-03-17T21:10:26.000"), at("2019-03-17T21:10:26Z"));
    assert_eq!(at("2019-03-17T23:10:26+02:00"), at("2019-03-17T21:10:26Z"));
    assert_eq!(at("2019-03-17 21:10:26.5"), at("2019-03-17T21:10:26.500Z"));
}

/// A webhook whose extra field makes it nest `depth` levels in all.
fn nested_webhook(depth: usize) -> String {
    format!(
        r#"{{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":{}1{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

#[test]
fn nesting_up_to_the_cap_types_and_past_it_is_refused() {
    assert!(parse(nested_webhook(MAX_DEPTH).as_bytes()).is_ok());
    let err = parse(nested_webhook(MAX_DEPTH + 1).as_bytes()).unwrap_err();
    assert_eq!(err, PayloadError::TooDeep { limit: MAX_DEPTH });
    assert_eq!(
        err.to_string(),
        "objects and arrays are nested deeper than 128 levels"
    );
    // Objects count as arrays do, also inside a member a later one replaces.
    let objects = format!(
        r#"{{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","x":{}1{},"x":1}}"#,
        r#"{"k":"#.repeat(MAX_DEPTH),
        "}".repeat(MAX_DEPTH)
    );
    assert_eq!(
        parse(objects.as_bytes()).unwrap_err(),
        PayloadError::TooDeep { limit: MAX_DEPTH }
    );
}

/// The shape a hostile sender would use: 64 KiB nested 32,000 deep, typed on
/// a thread with a 256 KiB stack (a tokio worker thread has 2 MiB).
#[test]
fn a_body_nested_thousands_deep_is_refused_without_recursing() {
    let body = nested_webhook(32_000);
    let typed = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || parse(body.as_bytes()))
        .unwrap()
        .join()
        .expect("typing does not overflow the stack");
    assert_eq!(
        typed.unwrap_err(),
        PayloadError::TooDeep { limit: MAX_DEPTH }
    );
}

#[test]
fn a_repeated_key_keeps_its_last_value_and_only_that_one_is_judged() {
    let head = r#""drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z""#;
    let repeated =
        parse(format!(r#"{{{head},"x":"a\u0000","x":{{"\ud800":1}},"x":2}}"#).as_bytes());
    let single = parse(format!(r#"{{{head},"x":2}}"#).as_bytes());
    assert_eq!(repeated.unwrap().fingerprint, single.unwrap().fingerprint);
    // The one kept is judged: U+0000, or a key that does not decode.
    assert_eq!(
        parse(format!(r#"{{{head},"x":2,"x":"a\u0000"}}"#).as_bytes()).unwrap_err(),
        PayloadError::NulCharacter
    );
    assert!(matches!(
        parse(format!(r#"{{{head},"x":[{{"\ud800":1}}]}}"#).as_bytes()).unwrap_err(),
        PayloadError::InvalidJson(_)
    ));
    assert_eq!(
        parse(format!(r#"{{{head},"x":{{"a\u0000":1}}}}"#).as_bytes()).unwrap_err(),
        PayloadError::NulCharacter
    );
}

#[test]
fn errors_for_logs_carry_no_value_from_the_body() {
    let secret = "the day after tomorrow 15551234567";
    for body in [
        format!(r#"{{"drop_id":"d","status":"success","attempt_date":"{secret}"}}"#),
        format!(
            r#"{{"drop_id":"d","status":"success","attempt_date":"2019-03-17T21:10:26Z","product_cost":"{secret}"}}"#
        ),
    ] {
        let err = parse(body.as_bytes()).expect_err("refused");
        assert!(
            err.to_string().contains(secret),
            "the row keeps the value: {err}"
        );
        assert!(
            !err.without_values().contains(secret),
            "{}",
            err.without_values()
        );
    }
}

#[test]
fn numeric_foreign_ids_are_kept_as_text() {
    let typed = parse(br#"{"drop_id":"a","status":"success","attempt_date":"2019-03-17T21:10:26Z","foreign_id":12345678901234567890}"#)
        .unwrap()
        .status;
    assert_eq!(typed.foreign_id.as_deref(), Some("12345678901234567890"));
}

#[test]
fn exact_decimal_accepts_json_numbers_only() {
    assert_eq!(exact_decimal("0.0029"), Some(dec("0.0029")));
    assert_eq!(exact_decimal("-1.50"), Some(dec("-1.50")));
    assert_eq!(exact_decimal("25e-4"), Some(dec("0.0025")));
    assert_eq!(exact_decimal("1E2"), Some(dec("100")));
    for bad in [
        "",
        "abc",
        "1.2.3",
        "--1",
        "e5",
        "NaN",
        "Infinity",
        "1.5e-9223372036854775808",
        "1e9223372036854775807",
    ] {
        assert_eq!(exact_decimal(bad), None, "{bad}");
    }
}
