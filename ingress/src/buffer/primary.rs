//! The buffer in front of the spool, as `CORRAL_BUFFER` chose it.

use std::time::Duration;

use corral_runtime::telemetry::labels::{PublishFailure, SpoolCause};

use super::{
    Buffer, Kept, Refusal, Webhook,
    rabbitmq::{PublishError, RabbitMq},
    sqs::{Sqs, SqsError},
};
use crate::budget::Lease;

/// RabbitMQ or SQS.
#[derive(Debug, Clone)]
pub enum Primary {
    /// `CORRAL_BUFFER=rabbitmq`.
    RabbitMq(RabbitMq),
    /// `CORRAL_BUFFER=sqs`.
    Sqs(Sqs),
}

/// Why the chosen buffer did not take a webhook.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// RabbitMQ's reason.
    #[error(transparent)]
    RabbitMq(#[from] PublishError),
    /// SQS's reason.
    #[error(transparent)]
    Sqs(#[from] SqsError),
}

impl Refusal for PrimaryError {
    fn failure(&self) -> PublishFailure {
        match self {
            PrimaryError::RabbitMq(err) => err.failure(),
            PrimaryError::Sqs(err) => err.failure(),
        }
    }

    fn spool_cause(&self) -> Option<SpoolCause> {
        match self {
            PrimaryError::RabbitMq(err) => err.spool_cause(),
            PrimaryError::Sqs(err) => err.spool_cause(),
        }
    }
}

impl Buffer for Primary {
    type Error = PrimaryError;

    async fn keep(&self, webhook: Webhook, lease: Lease) -> Result<Kept, PrimaryError> {
        match self {
            Primary::RabbitMq(buffer) => Ok(buffer.keep(webhook, lease).await?),
            Primary::Sqs(buffer) => Ok(buffer.keep(webhook, lease).await?),
        }
    }
}

impl Primary {
    /// Sends what is queued, waits (bounded) for the verdicts still to
    /// come, and closes.
    pub async fn close(&self, timeout: Duration) {
        match self {
            Primary::RabbitMq(buffer) => buffer.close(timeout).await,
            Primary::Sqs(buffer) => buffer.close(timeout).await,
        }
    }
}
