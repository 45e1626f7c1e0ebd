//! The current API's bodies: the v2 callback with its new fields, the
//! signed events (results typed, the rest kept), and their identity.

use super::*;

const V2_CALLBACK: &str = include_str!("../../../tests/fixtures/v2-callback-rvm-failure.json");
const SMS_STATUS: &str = include_str!("../../../tests/fixtures/v2-webhook-sms-status.json");
const RVM_STATUS: &str = include_str!("../../../tests/fixtures/v2-webhook-rvm-status.json");
const RVM_RECEIPT: &str = include_str!("../../../tests/fixtures/v2-webhook-rvm-receipt.json");

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().into()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn result(body: &str) -> (corral_contract::envelope::Kind, Typed) {
    match parse_event(body.as_bytes()) {
        Ok(Signed::Result { kind, typed }) => (kind, *typed),
        other => panic!("{body}: {other:?}"),
    }
}

#[test]
fn the_v2_callback_sample_is_typed_with_every_new_field() {
    let typed = parse(V2_CALLBACK.as_bytes()).unwrap().status;
    assert_eq!(
        typed,
        DeliveryStatus {
            drop_id: "f2a4c6e8-0b1d-4f3a-9c5e-7b9d1f3a5c80".into(),
            phone_number: Some("+13125550187".into()),
            attempt_date: at("2026-12-07T00:01:02Z"),
            status: "failure".into(),
            reason: Some("VoiceMail Full".into()),
            reason_code: Some(4002),
            dnc: Some(false),
            spam: None,
            product_cost: Some(dec("0")),
            compliance_fee: Some(dec("0.0029")),
            tts_fee: Some(dec("0")),
            network_name: None,
            network_type: None,
            foreign_id: Some("order-2207-attempt-1".into()),
            caller_id: Some("+12125550111".into()),
            contact_id: Some("3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b".into()),
            team_id: Some("7a1e3c5d-2b4f-4a6c-9e8d-1f3b5c7d9e0a".into()),
            campaign_id: None,
            session_id: Some("4b6d8f0a-2c4e-4a6b-8d0f-1e3a5c7e9b2d".into()),
            log_id: Some("9d1f3b5c-7e9a-4b2d-8f4a-6c8e0a2b4d6f".into()),
            product_code: Some("rvm".into()),
            quantity: Some(1),
            proof_of_delivery_url: Some("https://receipts.example.invalid/r/Qm8vT2nYa4".into()),
            receipt_ready_at: None,
            event_id: None,
            event: None,
        }
    );
}

#[test]
fn signed_results_are_typed_with_event_at_as_their_attempt_date() {
    let (kind, typed) = result(SMS_STATUS);
    assert_eq!(kind, corral_contract::envelope::Kind::Sms);
    assert_eq!(
        typed.status,
        DeliveryStatus {
            drop_id: "d4e6f8a0-2b4c-4d6e-8f0a-1c3e5a7b9d2f".into(),
            phone_number: Some("+15550020090".into()),
            attempt_date: at("2026-12-06T23:59:58Z"),
            status: "failure".into(),
            reason: Some("Internal DNC".into()),
            reason_code: Some(4016),
            caller_id: Some("+12125550111".into()),
            contact_id: Some("3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b".into()),
            team_id: Some("7a1e3c5d-2b4f-4a6c-9e8d-1f3b5c7d9e0a".into()),
            event_id: Some("0b6f3c1e-5d2a-4e8f-9c7b-3a1d5e9f2c60".into()),
            event: Some("contact.sms.status".into()),
            ..DeliveryStatus::default()
        }
    );
    let (kind, status) = result(RVM_STATUS);
    assert_eq!(kind, corral_contract::envelope::Kind::Rvm);
    assert_eq!(
        status.status.campaign_id.as_deref(),
        Some("2e4a6c8f-0b1d-4e3f-a5c7-9d1b3f5e7a90")
    );
    assert_eq!(status.status.reason_code, Some(0));
    let (kind, receipt) = result(RVM_RECEIPT);
    assert_eq!(kind, corral_contract::envelope::Kind::Rvm);
    assert_eq!(receipt.status.drop_id, status.status.drop_id);
    assert_eq!(
        receipt.status.proof_of_delivery_url.as_deref(),
        Some("https://receipts.example.invalid/r/Zk3qP0wLx9")
    );
    assert_eq!(
        receipt.status.receipt_ready_at,
        Some(at("2026-12-07T00:03:10Z"))
    );
    assert_eq!(receipt.status.event.as_deref(), Some("contact.rvm.receipt"));
}

#[test]
fn a_retry_is_the_same_event_whatever_its_bytes() {
    let (_, first) = result(SMS_STATUS);
    let compact: serde_json::Value = serde_json::from_str(SMS_STATUS).unwrap();
    let (_, compact) = result(&compact.to_string());
    assert_eq!(first.fingerprint, compact.fingerprint);
    // Another body under the same event_id is still the same event.
    let changed = SMS_STATUS.replace("Internal DNC", "Internal DNC (again)");
    assert_eq!(result(&changed).1.fingerprint, first.fingerprint);
    // Another event_id is another event; and no callback shares the identity.
    let other = SMS_STATUS.replace("0b6f3c1e", "1b6f3c1e");
    assert_ne!(result(&other).1.fingerprint, first.fingerprint);
    assert_ne!(
        parse(V2_CALLBACK.as_bytes()).unwrap().fingerprint,
        first.fingerprint
    );
}

#[test]
fn other_event_types_are_kept_with_their_identity_and_time() {
    let body = r#"{"event_id":"e-1","event":"contact.msg.opt_out","event_at":1796601722000,
        "data":{"anything":["goes",{"here":null}]}}"#;
    let Signed::Other(event) = parse_event(body.as_bytes()).unwrap() else {
        panic!("kept, not typed");
    };
    assert_eq!(event.event_id, "e-1");
    assert_eq!(event.event, "contact.msg.opt_out");
    assert_eq!(event.event_at, Some(at("2026-12-07T00:02:02Z")));
    // Neither data nor event_at is needed to keep an event.
    let bare = r#"{"event_id":"e-2","event":"campaign.started"}"#;
    let Signed::Other(bare) = parse_event(bare.as_bytes()).unwrap() else {
        panic!("kept, not typed");
    };
    assert_eq!(
        (bare.event_at, bare.event.as_str()),
        (None, "campaign.started")
    );
    // The provider's own test helper sends an ISO date: read as one.
    let iso = r#"{"event_id":"e-3","event":"x","event_at":"2026-12-07T00:02:02.000Z"}"#;
    let Signed::Other(iso) = parse_event(iso.as_bytes()).unwrap() else {
        panic!("kept, not typed");
    };
    assert_eq!(iso.event_at, Some(at("2026-12-07T00:02:02Z")));
}

#[test]
fn signed_events_that_cannot_be_kept_say_precisely_why() {
    let data = r#""data":{"drop_id":"d","status":"success","reason_code":0}"#;
    let head = r#""event":"contact.rvm.status","event_at":1796601722000"#;
    let cases = [
        (format!(r#"{{{head},{data}}}"#), "`event_id` is missing"),
        (
            format!(r#"{{"event_id":" ",{head},{data}}}"#),
            "`event_id` is empty",
        ),
        (
            format!(r#"{{"event_id":7,{head},{data}}}"#),
            "`event_id` must be a string, found a number",
        ),
        (
            format!(r#"{{"event_id":"e",{data}}}"#),
            "`event` is missing",
        ),
        (
            r#"{"event_id":"e","event":"contact.rvm.status","data":{"drop_id":"d","status":"s"}}"#
                .into(),
            "`event_at` is missing",
        ),
        (
            format!(r#"{{"event_id":"e","event":"x","event_at":1.5,{data}}}"#),
            "`event_at` is not Unix milliseconds (or an RFC 3339 date-time) in years 1-9999: 1.5",
        ),
        (
            format!(r#"{{"event_id":"e","event":"x","event_at":253402300800000,{data}}}"#),
            "`event_at` is not Unix milliseconds (or an RFC 3339 date-time) in years 1-9999: 253402300800000",
        ),
        (format!(r#"{{"event_id":"e",{head}}}"#), "`data` is missing"),
        (
            format!(r#"{{"event_id":"e",{head},"data":[1]}}"#),
            "`data` must be an object, found an array",
        ),
        (
            format!(r#"{{"event_id":"e",{head},"data":{{"status":"success"}}}}"#),
            "`data.drop_id` is missing",
        ),
        (
            format!(
                r#"{{"event_id":"e",{head},"data":{{"drop_id":"d","status":"s","reason_code":"40a"}}}}"#
            ),
            "`data.reason_code` is not an integer: \"40a\"",
        ),
        (
            format!(r#"{{"event_id":"e",{head},"data":{{"drop_id":"d","status":"s","to":1}}}}"#),
            "`data.to` must be a string, found a number",
        ),
        (
            r#"{"event_id":"e","event":"x","note":"a\u0000b"}"#.into(),
            "a string contains U+0000, which PostgreSQL cannot store",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            parse_event(body.as_bytes()).unwrap_err().to_string(),
            expected,
            "{body}"
        );
    }
}

#[test]
fn integer_fields_are_numbers_or_digits_within_32_bits() {
    let body = |code: &str| {
        format!(
            r#"{{"drop_id":"a","status":"failure","attempt_date":"2026-12-07T00:01:02Z","reason_code":{code}}}"#
        )
    };
    let code = |text: &str| parse(body(text).as_bytes()).map(|t| t.status.reason_code);
    assert_eq!(code("4016"), Ok(Some(4016)));
    assert_eq!(code("\"4016\""), Ok(Some(4016)));
    assert_eq!(code("null"), Ok(None));
    for bad in ["40.16", "4e3", "\"\"", "\"-\"", "2147483648", "\" 4016\""] {
        assert!(
            matches!(
                code(bad),
                Err(PayloadError::BadInteger {
                    field: "reason_code",
                    ..
                })
            ),
            "{bad}: {:?}",
            code(bad)
        );
    }
    assert_eq!(
        code("true").unwrap_err().to_string(),
        "`reason_code` must be an integer, found a boolean"
    );
}
