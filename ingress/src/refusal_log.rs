//! Log lines for refused webhooks: at most one per cause per second, and,
//! for every 503, one line on its own target.
//!
//! During a broker outage every webhook is refused (503); at 10,000 webhooks/s
//! one line per request would flood the log pipeline with identical lines. The
//! first refusal of a cause is logged at once with its details; the others
//! are counted, and a summary line (`more=<count>`) per cause follows at most
//! once per second while they last. The metrics count every refusal exactly.
//!
//! A 503 is different from the other refusals: Drop Cowboy documents no
//! retry, so the webhook may be lost for good, and reconciling it with the
//! provider needs its `drop_id`. Each one gets a line of its own on the
//! [`REFUSED_TARGET`] target ([`log_refused`]), never rate-limited, which an
//! operator can turn off on its own with `CORRAL_LOG`
//! (`info,corral_ingress::refused=off`).
//!
//! A small piece of our own: rate-limiter crates (governor and the like)
//! decide whether to let an event through, but do not count what they held
//! back per cause for a summary, which is the point here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use corral_shared::envelope::Kind;
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a cause may reach the log.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What a refusal was, as far as its log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Refused before publishing (`corral_ingress_rejected_total{reason}`).
    Rejected(&'static str),
    /// Not taken by the buffer: 503 (`corral_ingress_publish_failures_total{cause}`).
    NotAccepted(&'static str),
}

#[derive(Debug, Default)]
struct Slot {
    /// When this cause last reached the log.
    last_line: Option<Instant>,
    /// Refusals since then that did not.
    held_back: u64,
}

/// The per-cause state, shared by every HTTP worker.
#[derive(Debug, Clone, Default)]
pub struct RefusalLog {
    slots: Arc<Mutex<HashMap<Cause, Slot>>>,
}

impl RefusalLog {
    /// Whether this refusal is logged in full now (the first of its cause in
    /// a window); otherwise it is counted for the next summary.
    pub fn admit(&self, cause: Cause, now: Instant) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(cause).or_default();
        let quiet = slot
            .last_line
            .is_none_or(|last| now.duration_since(last) >= WINDOW);
        if quiet && slot.held_back == 0 {
            slot.last_line = Some(now);
            true
        } else {
            slot.held_back += 1;
            false
        }
    }

    /// Takes the counts of the causes whose window has passed (all of them
    /// when `all`, at shutdown), for their summary lines.
    pub fn take_summaries(&self, now: Instant, all: bool) -> Vec<(Cause, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        for (cause, slot) in slots.iter_mut() {
            let window_over = slot
                .last_line
                .is_none_or(|last| now.duration_since(last) >= WINDOW);
            if slot.held_back > 0 && (all || window_over) {
                due.push((*cause, slot.held_back));
                slot.held_back = 0;
                slot.last_line = Some(now);
            }
        }
        due
    }

    /// Writes the summary lines every [`WINDOW`] until `stop`, then the last ones.
    pub async fn run_summaries(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.write_summaries(false),
                () = stop.cancelled() => {
                    self.write_summaries(true);
                    return;
                }
            }
        }
    }

    fn write_summaries(&self, all: bool) {
        for (cause, more) in self.take_summaries(Instant::now(), all) {
            match cause {
                Cause::Rejected(reason) => tracing::info!(
                    reason,
                    more,
                    "webhook rejected, and more like it since the previous line"
                ),
                Cause::NotAccepted(cause) => tracing::warn!(
                    cause,
                    more,
                    "webhook not accepted: 503, and more like it since the previous line"
                ),
            }
        }
    }
}

/// The `tracing` target of the one-per-503 lines: spelled out rather than
/// taken from the module path, because operators name it in `CORRAL_LOG`.
pub const REFUSED_TARGET: &str = "corral_ingress::refused";

/// Longest `drop_id` logged (the provider's are 24 characters).
const DROP_ID_MAX: usize = 64;

/// What the 503 line says about the webhook's top-level `drop_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropId {
    /// 1–64 characters of `[A-Za-z0-9_-]`: safe to put in a log line as is.
    Read(String),
    /// Not logged, and why.
    Unreadable(Unreadable),
}

/// Why a 503 line carries no `drop_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// The object has no top-level `drop_id`.
    Absent,
    /// It is there, but not a string (`null` included).
    NotAString,
    /// A string, but empty, longer than 64 characters or with a character
    /// outside `[A-Za-z0-9_-]`: its text could forge or break log lines.
    Unsafe,
    /// The body could not be read as an object with one `drop_id` (a key
    /// repeated, or nesting past the parser's own limit).
    Unparsable,
    /// The 503 came before the body was read (`CORRAL_MAX_IN_FLIGHT_BYTES`
    /// exhausted), and it is not read just to be logged.
    BodyNotRead,
}

impl Unreadable {
    /// The `drop_id_unreadable` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Unreadable::Absent => "absent",
            Unreadable::NotAString => "not_a_string",
            Unreadable::Unsafe => "unsafe",
            Unreadable::Unparsable => "unparsable",
            Unreadable::BodyNotRead => "body_not_read",
        }
    }
}

impl DropId {
    /// Reads the top-level `drop_id` of `body`, a JSON object already
    /// checked. Only called on the 503 path: accepted webhooks are never
    /// parsed by ingress.
    pub fn read(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct TopLevel {
            #[serde(default)]
            drop_id: Field,
        }
        match serde_json::from_slice::<TopLevel>(body) {
            Ok(TopLevel { drop_id }) => match drop_id {
                Field::Safe(id) => DropId::Read(id),
                Field::Absent => DropId::Unreadable(Unreadable::Absent),
                Field::NotAString => DropId::Unreadable(Unreadable::NotAString),
                Field::Unsafe => DropId::Unreadable(Unreadable::Unsafe),
            },
            Err(_) => DropId::Unreadable(Unreadable::Unparsable),
        }
    }
}

/// The `drop_id` member as the reader judged it. Deserialized by hand so a
/// string is judged where the parser holds it (unescaped, borrowed): an
/// unsafe one, however long, is never copied.
#[derive(Default)]
enum Field {
    #[default]
    Absent,
    Safe(String),
    NotAString,
    Unsafe,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Field, E> {
        let safe = (1..=DROP_ID_MAX).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        Ok(if safe {
            Field::Safe(value.to_owned())
        } else {
            Field::Unsafe
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field, E> {
        Ok(Field::NotAString)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field, E> {
        Ok(Field::NotAString)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field, E> {
        Ok(Field::NotAString)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field, E> {
        Ok(Field::NotAString)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::NotAString)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::NotAString)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::NotAString)
    }
}

/// The line for one webhook answered 503, on [`REFUSED_TARGET`] at WARN:
/// its route, the `corral_ingress_publish_failures_total{cause}` label, the
/// id ingress gave it, and its `drop_id` or why there is none. Nothing else
/// of the body (phone numbers), nor the request (the query holds tokens).
pub fn log_refused(kind: Kind, cause: &'static str, message_id: Uuid, drop_id: &DropId) {
    // Exactly one of the two fields is set: a `None` is left out of the line.
    let (id, unreadable) = match drop_id {
        DropId::Read(id) => (Some(id.as_str()), None),
        DropId::Unreadable(why) => (None, Some(why.as_str())),
    };
    tracing::warn!(
        target: REFUSED_TARGET,
        kind = %kind.as_str(),
        %cause,
        %message_id,
        drop_id = id.map(tracing::field::display),
        drop_id_unreadable = unreadable.map(tracing::field::display),
        "webhook refused: 503"
    );
}

#[cfg(test)]
mod tests {
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
}
