//! Operator commands: the dead-letter queue and the quarantine, the two places
//! where corral keeps a webhook it could not store on its own until an
//! operator has fixed the cause.
//!
//! # Layout
//!
//! - [`dead_letters`]: reading and replaying the dead-letter queue, behind
//!   one [`DeadLetters`] trait with a RabbitMQ and an SQS implementation.
//! - [`quarantine`]: listing and re-typing `quarantined_webhooks`.
//! - [`suppressions`]: listing and lifting `suppressions`.
//!
//! The commands that run them and print their reports: [`crate::commands`].

pub mod dead_letters;
pub mod quarantine;
pub mod suppressions;

use corral_runtime::{
    amqp::{AmqpError, PublishOutcomeError},
    error_chain,
};

pub use dead_letters::{
    DeadLetter, DeadLetterReport, DeadLetters, LetterWebhook, RabbitmqDeadLetters, ReplayOptions,
    SqsDeadLetters,
};
pub use quarantine::{
    Quarantined, ReprocessOptions, ReprocessReport, Verdict, list_quarantined,
    reprocess_quarantined, reprocess_quarantined_with,
};

/// What can go wrong in an operator command.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The broker could not be reached or refused an operation.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// A queue or exchange the command works on is not there: a wrong
    /// `CORRAL_AMQP_PREFIX`, or corral never ran against this broker.
    #[error("{name} does not exist on the broker (is CORRAL_AMQP_PREFIX right?)")]
    Missing {
        /// The queue or exchange.
        name: String,
        /// The broker's refusal.
        #[source]
        source: AmqpError,
    },
    /// RabbitMQ did not take a replayed copy; the dead-letter copy was kept.
    #[error(
        "RabbitMQ did not take the replayed message {message_id} ({cause}); it stays in the \
         dead-letter queue. {replayed} message(s) were replayed before it"
    )]
    NotReplayed {
        /// The message's `message_id`, or `-`.
        message_id: String,
        /// Nack, unroutable, timeout or a broker error.
        cause: Box<MoveError>,
        /// Messages replayed (confirmed and removed) before this one.
        replayed: usize,
    },
    /// Moving a message to the tail of the dead-letter queue failed; it is
    /// still unacknowledged, so RabbitMQ puts it back when the connection closes.
    #[error(
        "could not move message {message_id} to the tail of the dead-letter queue ({cause}); \
         it was not acknowledged, so RabbitMQ keeps it"
    )]
    NotKept {
        /// The message's `message_id`, or `-`.
        message_id: String,
        /// Nack, unroutable, timeout or a broker error.
        cause: Box<MoveError>,
    },
    /// The SQS queue has no redrive policy, so no dead-letter queue.
    #[error(
        "the SQS queue {queue} has no redrive policy, so it has no dead-letter queue: set its \
         RedrivePolicy attribute to name one, e.g. \
         {{\"deadLetterTargetArn\":\"arn:aws:sqs:<region>:<account>:<dead-letter queue>\",\
         \"maxReceiveCount\":\"5\"}} (aws sqs set-queue-attributes), or check \
         CORRAL_SQS_QUEUE_URL"
    )]
    NoRedrivePolicy {
        /// `CORRAL_SQS_QUEUE_URL`.
        queue: String,
    },
    /// The redrive policy names no SQS queue.
    #[error("the redrive policy of the SQS queue {queue} names no dead-letter queue")]
    BadRedrivePolicy {
        /// `CORRAL_SQS_QUEUE_URL`.
        queue: String,
        /// What is wrong with it.
        #[source]
        source: corral_runtime::sqs::RedrivePolicyError,
    },
    /// An SQS call failed or was refused.
    #[error("{context}")]
    Sqs {
        /// What was being done.
        context: String,
        /// What SQS said, or that it did not answer.
        #[source]
        source: corral_runtime::sqs::CheckError,
    },
    /// SQS did not take a replayed copy; the dead-letter copy was kept.
    #[error(
        "SQS did not take the replayed message {message_id} ({reason}); it stays in the \
         dead-letter queue. {replayed} message(s) were replayed before it"
    )]
    SqsNotReplayed {
        /// The message's `message-id` attribute (else SQS's `MessageId`), or `-`.
        message_id: String,
        /// The failed entry's code and message, or the call's error.
        reason: String,
        /// Messages replayed (sent and removed) before this one.
        replayed: usize,
    },
    /// The command cannot do what was asked, as given.
    #[error("{0}")]
    Usage(String),
    /// A database operation failed; the transaction was rolled back.
    #[error("{context}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// PostgreSQL's or the pool's error.
        #[source]
        source: anyhow::Error,
    },
}

impl OpsError {
    fn database(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |err| Self::Database {
            context,
            source: err.into(),
        }
    }
}

/// Why a dead-lettered message could not be moved (replayed, or kept at the
/// tail of the dead-letter queue). Its text carries the whole cause, since it
/// is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The copy was not confirmed: nacked, unroutable, or the link failed.
    #[error("the copy to {target} was not confirmed: {}", error_chain(.error))]
    Publish {
        /// Where the copy went.
        target: String,
        /// What the broker or the link said.
        error: PublishOutcomeError,
    },
    /// The copy is safe, but acknowledging the original failed.
    #[error("acknowledging the original failed: {}", error_chain(.0))]
    Ack(AmqpError),
    /// The copy is safe, but the channel closed before the original's ack.
    #[error("the channel closed before the ack")]
    AckChannelClosed,
}
