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

    /// `corral_worker_pruned_rows_total{table}`: the table the retention
    /// deleted rows from (whole days of `delivery_events` are dropped, and
    /// counted in `corral_worker_partitions_dropped_total` instead).
    PrunedTable {
        /// `delivery_results_outbox`: result events of dropped events.
        DeliveryResultsOutbox,
        /// `deliveries`: drops whose latest event is past the retention.
        Deliveries,
        /// `provider_events`, by `stored_at`.
        ProviderEvents,
        /// `quarantined_webhooks`, by `quarantined_at`.
        QuarantinedWebhooks,
        /// `delivery_summary`, by hour (`CORRAL_SUMMARY_RETENTION`).
        DeliverySummary,
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

pub use super::delivery_labels::DeliveryLabels;

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
