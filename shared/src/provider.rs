//! What Drop Cowboy documents about its webhooks, needed both by the
//! payload's typing (a worker feature) and by the metric label sets every
//! binary compiles.

/// Every failure reason the provider documents, exactly as it spells them.
/// Typing accepts any reason; this list is what the documentation promises.
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
