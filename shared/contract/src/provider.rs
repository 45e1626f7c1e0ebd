//! What Drop Cowboy documents about its webhooks, needed both by the
//! payload's typing (a worker feature) and by the metric label sets every
//! binary compiles.

/// Every failure reason the provider documents for its legacy (v1)
/// callback, exactly as it spells them. Typing accepts any reason; this
/// list is what the documentation promises.
pub const FAILURE_REASONS: &[&str] = &[
    "Invalid message",
    "Spam detected",
    "Invalid caller ID or not SMS enabled",
    "No Funds",
    "Known Litigator",
    "Prohibited by carrier or not SMS enabled",
    "Message too long",
    "Opted out",
    "Internal DNC",
    "Temporarily unreachable",
    "Too Many",
    "Unregistered Brand",
];

/// A numeric `reason_code` the provider documents, and the v1 reason (one
/// of [`FAILURE_REASONS`]) that means the same, where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonCode {
    /// The code.
    pub code: i32,
    /// The code as a metric label value.
    pub label: &'static str,
    /// The provider's name for it.
    pub name: &'static str,
    /// The v1 reason of the same meaning.
    pub legacy: Option<&'static str>,
}

macro_rules! reason_codes {
    ($($code:literal $name:literal $legacy:expr;)*) => {
        /// Every reason code the provider publishes (its send-results and
        /// test-numbers pages and its quickstart's messages), in order. The
        /// suppression class of each is `corral_suppression_class` in
        /// PostgreSQL (migration V6); docs/operations/data.md tabulates both.
        pub const REASON_CODES: &[ReasonCode] = &[$(ReasonCode {
            code: $code,
            label: stringify!($code),
            name: $name,
            legacy: $legacy,
        },)*];
    };
}

reason_codes! {
    0 "Success" None;
    3000 "No Funds" Some("No Funds");
    3001 "Audio file not valid" None;
    3002 "No Voice" None;
    3007 "Not authorized" None;
    3011 "Must be E.164 format" None;
    3012 "Phone number not valid" None;
    3013 "Invalid IVR or Route" None;
    3014 "Not allowed audio_url" None;
    3015 "No TTS" None;
    3019 "Invalid Callback" None;
    3021 "TTS body too long" None;
    3022 "Not Allowed in Trial" None;
    3027 "Idempotency-Key reused" None;
    3028 "Idempotency-Key not valid" None;
    3033 "Media Not Found" None;
    3040 "Test Numbers Only" None;
    4000 "VoiceMail Not Detected" None;
    4001 "VoiceMail Not Setup" None;
    4002 "VoiceMail Full" None;
    4004 "Number not reachable" None;
    4005 "No Answer" None;
    4006 "User Busy" None;
    4008 "Spam detected" Some("Spam detected");
    4010 "No Caller ID" None;
    4011 "Outside calling hours" None;
    4013 "Too Many Attempts" Some("Too Many");
    4016 "Internal DNC" Some("Internal DNC");
    4017 "Known Litigator" Some("Known Litigator");
    4019 "RND Reassigned" None;
    4021 "RND Error" None;
    6000 "Carrier Denied Use Case" None;
    6001 "Carrier Suspension" None;
    6002 "Pool Suspended" None;
    6003 "Pool Not Ready" None;
    6004 "Opt-in Flagged" None;
    6005 "Opt-in Revoked" Some("Opted out");
    6006 "Opt-in Pending" None;
    6011 "Opt-in Missing" None;
}

/// The documented reason code `code`, if it is one.
pub fn reason_code(code: i32) -> Option<&'static ReasonCode> {
    REASON_CODES.iter().find(|known| known.code == code)
}
