//! The refusal log's rate limit and its reading of `drop_id`.

use super::*;

fn read(body: &str) -> DropId {
    DropId::read(body.as_bytes())
}

fn unreadable(why: Unreadable) -> DropId {
    DropId::Unreadable(why)
}

#[test]
fn a_safe_top_level_drop_id_is_read() {
    assert_eq!(
        read(r#"{"phone_number":"+15555550100","drop_id":"5c8eb7940a057a4ab0823e1a"}"#),
        DropId::Read("5c8eb7940a057a4ab0823e1a".into())
    );
    assert_eq!(read(r#"{"drop_id":"A-z_9"}"#), DropId::Read("A-z_9".into()));
    let longest = "x".repeat(64);
    assert_eq!(
        read(&format!(r#"{{"drop_id":"{longest}"}}"#)),
        DropId::Read(longest)
    );
    // Escapes are read as the text they stand for, then judged.
    assert_eq!(
        read(r#"{"drop_\u0069d":"ab\u0063-1"}"#),
        DropId::Read("abc-1".into())
    );
}

#[test]
fn a_drop_id_that_could_break_a_log_line_is_not_read() {
    for body in [
        format!(r#"{{"drop_id":"{}"}}"#, "x".repeat(65)),
        r#"{"drop_id":""}"#.into(),
        r#"{"drop_id":"a b"}"#.into(),
        r#"{"drop_id":"a=b"}"#.into(),
        r#"{"drop_id":"a\"b"}"#.into(),
        r#"{"drop_id":"d-1\nWARN forged line"}"#.into(),
        r#"{"drop_id":"d-1\u001b[31m"}"#.into(),
        r#"{"drop_id":"d\u0000"}"#.into(),
        r#"{"drop_id":"caf\u00e9"}"#.into(),
        "{\"drop_id\":\"café\"}".into(),
    ] {
        assert_eq!(read(&body), unreadable(Unreadable::Unsafe), "{body}");
    }
}

#[test]
fn a_drop_id_that_is_not_a_string_or_not_there_is_named_so() {
    for body in [
        r#"{"drop_id":null}"#,
        r#"{"drop_id":42}"#,
        r#"{"drop_id":-1.5e3}"#,
        r#"{"drop_id":true}"#,
        r#"{"drop_id":["abc"]}"#,
        r#"{"drop_id":{"id":"abc"}}"#,
    ] {
        assert_eq!(read(body), unreadable(Unreadable::NotAString), "{body}");
    }
    for body in [
        "{}",
        r#"{"status":"SUCCESS"}"#,
        r#"{"payload":{"drop_id":"nested"}}"#,
        r#"{"list":[{"drop_id":"nested"}],"DROP_ID":"case"}"#,
    ] {
        assert_eq!(read(body), unreadable(Unreadable::Absent), "{body}");
    }
    assert_eq!(
        read(r#"{"drop_id":"a","drop_id":"b"}"#),
        unreadable(Unreadable::Unparsable),
        "a repeated key is ambiguous"
    );
}

const UNAUTHORIZED: Cause = Cause::Rejected("unauthorized");
const BROKER_DOWN: Cause = Cause::NotAccepted("unavailable");

#[test]
fn a_storm_gives_one_line_then_one_summary_per_window_and_every_refusal_is_counted() {
    let log = RefusalLog::default();
    let start = Instant::now();
    let mut lines = 0;
    let mut summarised = 0;
    // 10,000 refusals a second for 3 s, the summaries taken every 100 ms.
    for ms in 0..3_000u64 {
        let now = start + Duration::from_millis(ms);
        for _ in 0..10 {
            lines += u64::from(log.admit(BROKER_DOWN, now));
        }
        if ms % 100 == 0 {
            let due = log.take_summaries(now, false);
            lines += due.len() as u64;
            summarised += due.iter().map(|(_, more)| more).sum::<u64>();
        }
    }
    let last = log.take_summaries(start + Duration::from_secs(3), true);
    summarised += last.iter().map(|(_, more)| more).sum::<u64>();
    lines += last.len() as u64;
    assert!(lines <= 5, "{lines} lines for 3 s of refusals");
    assert_eq!(
        summarised + 1,
        30_000,
        "the first line and the summaries account for every refusal"
    );
}

#[test]
fn causes_are_limited_apart_and_a_quiet_cause_logs_at_once_again() {
    let log = RefusalLog::default();
    let start = Instant::now();
    assert!(log.admit(UNAUTHORIZED, start));
    assert!(
        log.admit(BROKER_DOWN, start),
        "another cause has its own window"
    );
    assert!(!log.admit(UNAUTHORIZED, start + Duration::from_millis(10)));
    assert!(
        !log.admit(UNAUTHORIZED, start + Duration::from_secs(2)),
        "held-back refusals are summarised before the next full line"
    );
    assert_eq!(
        log.take_summaries(start + Duration::from_secs(2), false),
        vec![(UNAUTHORIZED, 2)]
    );
    assert!(
        log.take_summaries(start + Duration::from_secs(9), true)
            .is_empty()
    );
    assert!(log.admit(UNAUTHORIZED, start + Duration::from_secs(9)));
}
