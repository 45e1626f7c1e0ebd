//! The labels of `corral_worker_deliveries_total`: unlike the closed enums
//! of [`super::labels`], they come from the provider's values, each mapped
//! into a bounded set.

/// `corral_worker_deliveries_total{kind,status,reason,reason_code}`: a
/// stored result's labels, each from a bounded set whatever the payload
/// holds — the status `success`, `failure` or `other`; the reason one of
/// the twelve v1 reasons, `none`, or `other`; the reason code one the
/// provider documents, `none`, or `other` — so an unexpected value from the
/// provider cannot create new series. A documented code decides the reason
/// label too (its v1 equivalent, else `other`), so a result is labelled
/// alike whatever text came with its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryLabels {
    /// `sms` or `rvm`.
    pub kind: &'static str,
    /// `success`, `failure` or `other`.
    pub status: &'static str,
    /// A documented reason exactly as spelled, `none`, or `other`.
    pub reason: &'static str,
    /// A documented `reason_code`, `none`, or `other`.
    pub reason_code: &'static str,
}

impl DeliveryLabels {
    /// The labels of a result of `kind` with this status, reason and code.
    pub fn of(
        kind: corral_contract::envelope::Kind,
        status: &str,
        reason: Option<&str>,
        reason_code: Option<i32>,
    ) -> Self {
        let status = match status {
            "success" => "success",
            "failure" => "failure",
            _ => "other",
        };
        let text = || match reason {
            None | Some("") => "none",
            Some(reason) => corral_contract::provider::FAILURE_REASONS
                .iter()
                .find(|known| **known == reason)
                .copied()
                .unwrap_or("other"),
        };
        let (reason, reason_code) = match reason_code.map(corral_contract::provider::reason_code) {
            None => (text(), "none"),
            Some(None) => (text(), "other"),
            Some(Some(known)) => (Self::coded(known), known.label),
        };
        Self {
            kind: kind.as_str(),
            status,
            reason,
            reason_code,
        }
    }

    /// The reason label of a documented code.
    fn coded(known: &corral_contract::provider::ReasonCode) -> &'static str {
        match known.legacy {
            Some(legacy) => legacy,
            None if known.code == 0 => "none",
            None => "other",
        }
    }

    /// The series registered at zero when the worker starts, for each kind
    /// (so `increase()` sees the first event): a success without reason or
    /// code, a failure with each v1 reason or `other` and no code, and each
    /// documented code as it is labelled (`0` a success, the rest failures).
    pub fn expected() -> impl Iterator<Item = Self> {
        corral_contract::envelope::Kind::CALLBACKS
            .iter()
            .flat_map(|kind| {
                let kind = kind.as_str();
                let label = move |status, reason, reason_code| Self {
                    kind,
                    status,
                    reason,
                    reason_code,
                };
                let success = label("success", "none", "none");
                let failures = corral_contract::provider::FAILURE_REASONS
                    .iter()
                    .copied()
                    .chain(["other"])
                    .map(move |reason| label("failure", reason, "none"));
                let coded = corral_contract::provider::REASON_CODES
                    .iter()
                    .map(move |known| {
                        let status = if known.code == 0 {
                            "success"
                        } else {
                            "failure"
                        };
                        label(status, Self::coded(known), known.label)
                    });
                std::iter::once(success).chain(failures).chain(coded)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryLabels;
    use corral_contract::envelope::Kind;

    #[test]
    fn unknown_statuses_and_reasons_share_one_series_each() {
        let a = DeliveryLabels::of(Kind::Sms, "queued", Some("Carrier said maybe"), None);
        let b = DeliveryLabels::of(Kind::Sms, "delivered?", Some("Something new"), Some(9999));
        assert_eq!((a.status, a.reason), ("other", "other"));
        assert_eq!(
            (b.status, b.reason, b.reason_code),
            ("other", "other", "other")
        );
    }

    #[test]
    fn documented_reasons_keep_their_exact_spelling() {
        let labels = DeliveryLabels::of(Kind::Rvm, "failure", Some("No Funds"), None);
        assert_eq!(
            (labels.kind, labels.status, labels.reason),
            ("rvm", "failure", "No Funds")
        );
        let success = DeliveryLabels::of(Kind::Sms, "success", Some(""), None);
        assert_eq!((success.status, success.reason), ("success", "none"));
        // Case matters: the provider spells them exactly.
        assert_eq!(
            DeliveryLabels::of(Kind::Sms, "failure", Some("no funds"), None).reason,
            "other"
        );
    }

    #[test]
    fn a_documented_code_labels_the_result_whatever_its_text() {
        let of = |reason, code| DeliveryLabels::of(Kind::Sms, "failure", Some(reason), Some(code));
        let labels = |l: DeliveryLabels| (l.reason, l.reason_code);
        assert_eq!(labels(of("Something new", 3000)), ("No Funds", "3000"));
        assert_eq!(labels(of("No Funds", 3000)), ("No Funds", "3000"));
        assert_eq!(labels(of("Opted out", 4002)), ("other", "4002"));
        assert_eq!(labels(of("Opt-in Revoked", 6005)), ("Opted out", "6005"));
        // An undocumented code says nothing: the text labels the reason.
        assert_eq!(labels(of("No Funds", 3999)), ("No Funds", "other"));
        let success = DeliveryLabels::of(Kind::Rvm, "success", Some(""), Some(0));
        assert_eq!(labels(success), ("none", "0"));
    }

    #[test]
    fn registered_series_are_bounded_and_cover_every_documented_code() {
        let codes = corral_contract::provider::REASON_CODES.len();
        let expected: Vec<DeliveryLabels> = DeliveryLabels::expected().collect();
        assert_eq!(expected.len(), 2 * (1 + 12 + 1 + codes));
        for known in corral_contract::provider::REASON_CODES {
            let status = if known.code == 0 {
                "success"
            } else {
                "failure"
            };
            let labels = DeliveryLabels::of(Kind::Rvm, status, Some("any text"), Some(known.code));
            assert!(expected.contains(&labels), "{labels:?}");
        }
    }
}
