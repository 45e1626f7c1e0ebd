//! What the operator-command tests share.

use std::time::Duration;

/// Deadline of every wait.
pub(super) const WAIT: Duration = Duration::from_secs(20);
