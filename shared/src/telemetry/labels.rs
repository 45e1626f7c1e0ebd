//! The closed sets of label values, one enum each. The code that counts an
//! event names it with a variant; registration at start and the tests read
//! the same enum through `ALL`, so a new value cannot be counted without also
//! being registered and checked.

use strum::IntoStaticStr;

/// A closed set of label values, for code that registers every value.
pub trait Label: Copy + Into<&'static str> + 'static {
    /// Every value.
    fn all() -> &'static [Self];
}

macro_rules! labels {
    ($($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* })*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr)]
            #[strum(serialize_all = "snake_case")]
            pub enum $name { $($(#[$vmeta])* $variant,)* }
            impl Label for $name {
                fn all() -> &'static [Self] {
                    Self::ALL
                }
            }
            impl $name {
                /// Every value, in declaration order.
                pub const ALL: &'static [Self] = &[$($name::$variant,)*];

                /// The label value as exported.
                pub fn as_str(self) -> &'static str {
                    self.into()
                }
            }
        )*
    };
}

/// Which binary: `corral_build_info{binary}` and what registration covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr)]
pub enum Binary {
    /// `corral-ingress`.
    #[strum(serialize = "corral-ingress")]
    Ingress,
    /// `corral-worker`.
    #[strum(serialize = "corral-worker")]
    Worker,
}
impl Label for Binary {
    fn all() -> &'static [Self] {
        &[Binary::Ingress, Binary::Worker]
    }
}
impl Binary {
    /// The binary's name, as exported.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

labels! {
    /// `corral_broker_connect_attempts_total{outcome}`.
    ConnectOutcome {
        /// Connected and declared the topology.
        Success,
        /// Could not.
        Failure,
    }

    /// `corral_ingress_rejected_total{reason}`: why a webhook was refused
    /// before anything was published.
    RejectReason {
        /// No token, or not an accepted one.
        Unauthorized,
        /// Signed route: no `X-Signature` or no `X-Timestamp` (or an empty one).
        MissingSignature,
        /// Signed route: `X-Timestamp` not all digits, or further from now
        /// than `CORRAL_SIGNATURE_TOLERANCE_SECS`.
        StaleTimestamp,
        /// Signed route: no configured secret signed these bytes, or an
        /// `X-Signature-Version` other than `v1`.
        InvalidSignature,
        /// Not JSON (or not UTF-8, or the body could not be read).
        InvalidJson,
        /// JSON, but not an object.
        NotObject,
        /// Over `CORRAL_MAX_BODY_BYTES`.
        TooLarge,
        /// A `Content-Type` that is not JSON.
        UnsupportedMediaType,
        /// The body did not arrive within `CORRAL_BODY_TIMEOUT_MS`.
        BodyTimeout,
        /// JSON nested deeper than `CORRAL_MAX_JSON_DEPTH`.
        TooDeep,
        /// A `Content-Encoding` other than `identity` (a compressed body).
        UnsupportedEncoding,
    }

    /// `corral_ingress_publish_failures_total{cause}`: why the buffer did not
    /// take a webhook (answered 503).
    PublishFailure {
        /// No broker link.
        Unavailable,
        /// The broker blocks publishers (memory or disk alarm).
        Blocked,
        /// Too many publishes in flight.
        Overloaded,
        /// The broker nacked it.
        Nack,
        /// The broker returned it as unroutable.
        Unroutable,
        /// The channel closed before the confirm.
        ChannelClosed,
        /// No confirm within the deadline.
        Timeout,
        /// Shutdown closed the link first.
        ShuttingDown,
    }

    /// `corral_ingress_spooled_total{cause}`: why a webhook went to the
    /// PostgreSQL spool rather than (or as well as) RabbitMQ.
    SpoolCause {
        /// No broker link.
        Unavailable,
        /// The broker blocks publishers (memory or disk alarm).
        Blocked,
        /// The broker nacked it.
        Nack,
        /// The broker returned it as unroutable.
        Unroutable,
        /// The channel closed before the confirm.
        ChannelClosed,
        /// No confirm within `CORRAL_SPOOL_AFTER_MS`; the publish went on,
        /// and the worker stores the webhook once whichever way it comes.
        Slow,
        /// Shutdown closed the link first.
        ShuttingDown,
    }

    /// `corral_worker_messages_total{outcome}`: how a committed message ended.
    MessageOutcome {
        /// A new `delivery_events` row.
        Stored,
        /// Already stored: a redelivery or a resend.
        Duplicate,
        /// Could not be typed; kept in `quarantined_webhooks`.
        Quarantined,
    }

    /// `corral_worker_db_errors_total{kind}`.
    DbErrorKind {
        /// Retried unchanged, nothing acknowledged.
        Transient,
        /// The batch was split and the culprit quarantined.
        Data,
    }

    /// `corral_worker_result_events_refused_total{cause}`: why RabbitMQ did
    /// not take a result event (it stays in the outbox and is retried).
    ResultRefusal {
        /// Nacked: a bound queue refused it (e.g. full with
        /// `x-overflow: reject-publish`); the other bound queues have it.
        Nack,
        /// Returned: no queue is bound to the exchange.
        Unroutable,
    }

    /// `corral_worker_sqs_queue_messages{queue}`: which SQS queue.
    SqsQueue {
        /// `CORRAL_SQS_QUEUE_URL`.
        Main,
        /// The dead-letter queue its redrive policy names.
        DeadLetter,
    }

    /// `corral_worker_sqs_queue_messages{state}`: the messages SQS counts.
    SqsMessageState {
        /// Waiting to be received (`ApproximateNumberOfMessages`).
        Visible,
        /// Received and not yet deleted (`ApproximateNumberOfMessagesNotVisible`).
        InFlight,
        /// Sent with a delay not yet over (`ApproximateNumberOfMessagesDelayed`).
        Delayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_the_exported_spellings() {
        assert_eq!(Binary::Ingress.as_str(), "corral-ingress");
        assert_eq!(Binary::Worker.as_str(), "corral-worker");
        assert_eq!(
            RejectReason::UnsupportedMediaType.as_str(),
            "unsupported_media_type"
        );
        assert_eq!(PublishFailure::ChannelClosed.as_str(), "channel_closed");
        assert_eq!(MessageOutcome::Quarantined.as_str(), "quarantined");
        assert_eq!(SqsQueue::DeadLetter.as_str(), "dead_letter");
        assert_eq!(SqsMessageState::InFlight.as_str(), "in_flight");
    }

    /// The spellings design.md and the dashboard rely on.
    #[test]
    fn every_label_set_is_the_documented_one() {
        assert_eq!(
            RejectReason::ALL
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
            [
                "unauthorized",
                "missing_signature",
                "stale_timestamp",
                "invalid_signature",
                "invalid_json",
                "not_object",
                "too_large",
                "unsupported_media_type",
                "body_timeout",
                "too_deep",
                "unsupported_encoding"
            ]
        );
        assert_eq!(
            PublishFailure::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            [
                "unavailable",
                "blocked",
                "overloaded",
                "nack",
                "unroutable",
                "channel_closed",
                "timeout",
                "shutting_down"
            ]
        );
        assert_eq!(
            SpoolCause::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            [
                "unavailable",
                "blocked",
                "nack",
                "unroutable",
                "channel_closed",
                "slow",
                "shutting_down"
            ]
        );
        assert_eq!(
            MessageOutcome::ALL
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>(),
            ["stored", "duplicate", "quarantined"]
        );
        assert_eq!(
            DbErrorKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            ["transient", "data"]
        );
        assert_eq!(
            ResultRefusal::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            ["nack", "unroutable"]
        );
    }
}

/// `corral_worker_deliveries_total{kind,status,reason}`: a stored event's
/// labels, each from a bounded set whatever the payload holds — the status
/// `success`, `failure` or `other`; the reason one of the twelve the
/// provider documents, `none`, or `other` — so an unexpected value from the
/// provider cannot create new series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryLabels {
    /// `sms` or `rvm`.
    pub kind: &'static str,
    /// `success`, `failure` or `other`.
    pub status: &'static str,
    /// A documented reason exactly as spelled, `none`, or `other`.
    pub reason: &'static str,
}

impl DeliveryLabels {
    /// The labels of an event of `kind` with this status and reason.
    pub fn of(kind: crate::envelope::Kind, status: &str, reason: Option<&str>) -> Self {
        let status = match status {
            "success" => "success",
            "failure" => "failure",
            _ => "other",
        };
        let reason = match reason {
            None | Some("") => "none",
            Some(reason) => crate::provider::FAILURE_REASONS
                .iter()
                .find(|known| **known == reason)
                .copied()
                .unwrap_or("other"),
        };
        Self {
            kind: kind.as_str(),
            status,
            reason,
        }
    }

    /// The series registered at zero when the worker starts: a success
    /// without reason, and a failure with each documented reason or
    /// `other`, for each kind (so `increase()` sees the first event).
    pub fn expected() -> impl Iterator<Item = Self> {
        crate::envelope::Kind::CALLBACKS.iter().flat_map(|kind| {
            let success = Self::of(*kind, "success", None);
            let failures = crate::provider::FAILURE_REASONS
                .iter()
                .copied()
                .chain(["other"])
                .map(|reason| Self {
                    kind: kind.as_str(),
                    status: "failure",
                    reason,
                });
            std::iter::once(success).chain(failures)
        })
    }
}

#[cfg(test)]
mod delivery_label_tests {
    use super::DeliveryLabels;
    use crate::envelope::Kind;

    #[test]
    fn unknown_statuses_and_reasons_share_one_series_each() {
        let a = DeliveryLabels::of(Kind::Sms, "queued", Some("Carrier said maybe"));
        let b = DeliveryLabels::of(Kind::Sms, "delivered?", Some("Something new"));
        assert_eq!((a.status, a.reason), ("other", "other"));
        assert_eq!((b.status, b.reason), ("other", "other"));
    }

    #[test]
    fn documented_reasons_keep_their_exact_spelling() {
        let labels = DeliveryLabels::of(Kind::Rvm, "failure", Some("No Funds"));
        assert_eq!(
            (labels.kind, labels.status, labels.reason),
            ("rvm", "failure", "No Funds")
        );
        let success = DeliveryLabels::of(Kind::Sms, "success", Some(""));
        assert_eq!((success.status, success.reason), ("success", "none"));
        // Case matters: the provider spells them exactly.
        assert_eq!(
            DeliveryLabels::of(Kind::Sms, "failure", Some("no funds")).reason,
            "other"
        );
    }

    #[test]
    fn registered_series_are_bounded() {
        assert_eq!(DeliveryLabels::expected().count(), 2 * (1 + 12 + 1));
    }
}
