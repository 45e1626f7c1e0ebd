//! The broker first, the PostgreSQL spool when the broker cannot take a
//! webhook in time: a 503 only when both fail.
//!
//! A webhook goes to the broker. If the broker refuses it (no link, an alarm,
//! a nack, a return, a closed channel) it goes to the spool at once; if the
//! broker has not confirmed it within `CORRAL_SPOOL_AFTER_MS`, it goes to the
//! spool as well, while the publish goes on. Whichever path commits first
//! answers the request 200. A webhook that ends up both published and spooled
//! is stored once: the worker recognises the second copy by its fingerprint.
//! Everything happens within the request's one deadline,
//! `CORRAL_PUBLISH_TIMEOUT_MS`.

use std::{fmt, pin::pin, time::Duration};

use corral_runtime::telemetry::labels::{PublishFailure, SpoolCause};
use tokio::time::Instant;

use super::{Buffer, Kept, Refusal, Webhook, spool::Spool, spool::SpoolError};
use crate::budget::Lease;

/// A buffer with the spool behind it (or alone, when no spool is configured).
#[derive(Debug, Clone)]
pub struct Fallback<B> {
    primary: B,
    spool: Option<Spool>,
    spool_after: Duration,
    deadline: Duration,
}

/// Neither path took the webhook: why.
#[derive(Debug)]
pub struct NotKept<E> {
    /// Why the broker did not.
    pub primary: E,
    /// Why the spool did not, if it was tried.
    pub spool: Option<SpoolError>,
}

impl<E: fmt::Display> fmt::Display for NotKept<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.spool {
            None => write!(f, "{}", self.primary),
            Some(spool) => write!(f, "{}; and the spool: {spool}", self.primary),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for NotKept<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.primary.source()
    }
}

impl<E: Refusal> Refusal for NotKept<E> {
    fn failure(&self) -> PublishFailure {
        self.primary.failure()
    }

    fn spool_cause(&self) -> Option<SpoolCause> {
        None
    }
}

impl<B: Buffer> Fallback<B> {
    /// `primary`, and `spool` behind it. `deadline` is the request's whole
    /// wait; `spool_after` how long the primary has alone.
    pub fn new(
        primary: B,
        spool: Option<Spool>,
        spool_after: Duration,
        deadline: Duration,
    ) -> Self {
        Self {
            primary,
            spool,
            spool_after,
            deadline,
        }
    }

    /// The primary buffer.
    pub fn primary(&self) -> &B {
        &self.primary
    }

    /// The spool, if one is configured.
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    async fn keep_either(
        &self,
        spool: &Spool,
        webhook: Webhook,
        lease: Lease,
    ) -> Result<Kept, NotKept<B::Error>> {
        let deadline = Instant::now() + self.deadline;
        let copy = webhook.clone();
        let mut publish = pin!(self.primary.keep(webhook, lease.clone()));
        let refused = tokio::select! {
            biased;
            kept = &mut publish => match kept {
                Ok(kept) => return Ok(kept),
                Err(err) => match err.spool_cause() {
                    Some(cause) => Some((cause, err)),
                    None => return Err(NotKept { primary: err, spool: None }),
                },
            },
            () = tokio::time::sleep(self.spool_after) => None,
        };
        let mut spooled = pin!(spool.keep_until(copy, lease, deadline));
        if let Some((cause, primary)) = refused {
            return match spooled.await {
                Ok(_) => Ok(Kept::Spooled(cause)),
                Err(spool) => Err(NotKept {
                    primary,
                    spool: Some(spool),
                }),
            };
        }
        // Slow: both race; the first to hold it answers. Dropping the loser
        // leaves its copy out if it was still waiting for a round or message.
        tokio::select! {
            kept = &mut publish => match kept {
                Ok(kept) => Ok(kept),
                Err(primary) => match spooled.await {
                    Ok(_) => Ok(Kept::Spooled(SpoolCause::Slow)),
                    Err(spool) => Err(NotKept { primary, spool: Some(spool) }),
                },
            },
            committed = &mut spooled => match committed {
                Ok(_) => Ok(Kept::Spooled(SpoolCause::Slow)),
                Err(spool) => publish.await.map_err(|primary| NotKept {
                    primary,
                    spool: Some(spool),
                }),
            },
        }
    }
}

impl<B: Buffer> Buffer for Fallback<B> {
    type Error = NotKept<B::Error>;

    async fn keep(&self, webhook: Webhook, lease: Lease) -> Result<Kept, Self::Error> {
        match &self.spool {
            None => self
                .primary
                .keep(webhook, lease)
                .await
                .map_err(|primary| NotKept {
                    primary,
                    spool: None,
                }),
            Some(spool) => self.keep_either(spool, webhook, lease).await,
        }
    }
}
