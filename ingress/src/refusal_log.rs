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

use corral_contract::envelope::Kind;
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
mod tests;
