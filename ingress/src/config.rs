//! corral-ingress settings: every `CORRAL_*` variable is also a `--flag`.

use std::time::Duration;

use clap::Parser;
use corral_contract::envelope::batch;
use corral_runtime::{
    config::{AmqpSettings, BufferKind, BufferSettings, LogSettings, MessageLimits},
    sqs,
};

use crate::signature::{Keys, SigningSettings, secrets::SigningError};

/// Takes Drop Cowboy delivery-status webhooks and answers 200 only once
/// RabbitMQ has durably confirmed them (or, where it cannot, PostgreSQL has
/// committed them).
#[derive(Debug, Clone, Parser)]
#[command(name = "corral-ingress", version, about, long_about = None)]
pub struct IngressConfig {
    /// Address of the public webhook listener.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// Address of the admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "CORRAL_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: String,

    /// Accepted webhook tokens, comma-separated (several allow rotation). Sent
    /// as `?token=`, `Authorization: Bearer`, or the password of Basic auth.
    #[arg(
        long = "webhook-tokens",
        env = "CORRAL_WEBHOOK_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_tokens: Vec<String>,

    /// Accept webhooks on the callback routes without any token (the signed
    /// route still verifies signatures). For local development only: anyone
    /// who can reach the listener can then write into your database.
    #[arg(long, env = "CORRAL_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Deepest nesting of objects and arrays a body may have (the top-level
    /// object is level 1; the provider's payload has 2); deeper ones get 400.
    #[arg(long, env = "CORRAL_MAX_JSON_DEPTH", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=corral_contract::json::MAX_DEPTH as u64))]
    pub max_json_depth: u64,

    /// Deadline for keeping a webhook, in milliseconds: the buffer's confirm,
    /// or the spool's COMMIT; past it the webhook gets 503 with Retry-After.
    /// With signing secrets, CORRAL_IN_FLIGHT_WAIT_MS plus this is at most
    /// 4000: Drop Cowboy waits 5 s for an answer.
    #[arg(long, env = "CORRAL_PUBLISH_TIMEOUT_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_timeout_ms: u64,

    /// Most webhooks awaiting their verdict at once (queued for a publish, or
    /// in a message awaiting its confirm); bounds memory when the broker is slow.
    #[arg(long, env = "CORRAL_MAX_IN_FLIGHT", default_value_t = 2_048,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Bytes of request bodies held at once, from before a body is read until
    /// the webhook's answer is decided; bounds memory by bytes, where
    /// CORRAL_MAX_IN_FLIGHT bounds it by requests. At least CORRAL_MAX_BODY_BYTES.
    #[arg(long, env = "CORRAL_MAX_IN_FLIGHT_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(2..))]
    pub max_in_flight_bytes: u32,

    /// How long a request waits for an in-flight slot (or for room in
    /// CORRAL_MAX_IN_FLIGHT_BYTES) before it gets 503, in milliseconds.
    #[arg(long, env = "CORRAL_IN_FLIGHT_WAIT_MS", default_value_t = 250)]
    pub in_flight_wait_ms: u64,

    /// AMQP messages awaiting the broker's confirm at once. Webhooks that
    /// arrive while all of them are out wait, and leave together in the next
    /// message: fewer slots make fuller messages (less broker work per
    /// webhook), more make shorter waits.
    #[arg(long, env = "CORRAL_PUBLISH_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub publish_concurrency: u16,

    /// Webhooks per AMQP message at most; 1 publishes each webhook alone.
    #[arg(long, env = "CORRAL_PUBLISH_BATCH_MAX", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub publish_batch_max: u32,

    /// PostgreSQL URL of the spool, ingress's fallback: a webhook RabbitMQ
    /// cannot take in time is committed into `spooled_webhooks` instead and
    /// answered 200; the worker drains it. Connect as a role that may only
    /// INSERT there (a member of `corral_spool_writer`). Unset: no spool, and
    /// every webhook the broker does not take gets 503.
    #[arg(long, env = "CORRAL_SPOOL_DATABASE_URL", hide_env_values = true)]
    pub spool_database_url: Option<String>,

    /// PEM file of the CA certificate(s) for the spool's `sslmode=require`
    /// (TLS, certificate and host name verified); without it the system's roots.
    #[arg(long, env = "CORRAL_SPOOL_DATABASE_CA_FILE")]
    pub spool_database_ca_file: Option<std::path::PathBuf>,

    /// How long RabbitMQ has to confirm a webhook before it is also spooled,
    /// in milliseconds (a refusal spools it at once). Below
    /// CORRAL_PUBLISH_TIMEOUT_MS, which bounds both paths together.
    #[arg(long, env = "CORRAL_SPOOL_AFTER_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub spool_after_ms: u64,

    /// Spool INSERTs in flight at once, each on its own connection; webhooks
    /// waiting meanwhile go together in the next one.
    #[arg(long, env = "CORRAL_SPOOL_CONNECTIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub spool_connections: u16,

    /// Largest SQS message, in bytes (its body and attributes, as SQS
    /// counts them), and largest `SendMessageBatch` of several: the queue's
    /// `MaximumMessageSize` or below. Webhooks per message are bounded by
    /// CORRAL_PUBLISH_BATCH_MAX as well; a round of up to 10 messages goes
    /// in one call.
    #[arg(long, env = "CORRAL_SQS_MAX_MESSAGE_BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    pub sqs_max_message_bytes: u32,

    /// How long a `SendMessageBatch` that is not full waits for more
    /// webhooks, in milliseconds (SQS bills per request, so fuller calls
    /// cost less; every webhook waits up to this much longer for its 200).
    /// 0 sends as soon as a call slot is free, as RabbitMQ does. Below
    /// CORRAL_SPOOL_AFTER_MS and CORRAL_PUBLISH_TIMEOUT_MS.
    #[arg(long, env = "CORRAL_SQS_LINGER_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub sqs_linger_ms: u64,

    /// With a FIFO queue (its URL ends in `.fifo`): message groups the
    /// webhooks are spread over by their `phone_number`, so one number's
    /// webhooks keep their order. SQS hands out one group's messages one
    /// batch at a time, so fewer groups mean less parallel work for the
    /// workers; more, less packing.
    #[arg(long, env = "CORRAL_SQS_FIFO_GROUPS", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1_000))]
    pub sqs_fifo_groups: u16,

    /// Confirm-mode channels publishes are spread over.
    #[arg(long, env = "CORRAL_AMQP_CHANNELS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub amqp_channels: u16,

    /// HTTP worker threads; 0 means one per CPU.
    #[arg(long, env = "CORRAL_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,

    /// Longest wait for a request's whole body, in milliseconds; a slower
    /// client gets 408 instead of holding a connection and a buffer.
    #[arg(long, env = "CORRAL_BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,

    /// Most open client connections, split evenly across the HTTP workers;
    /// past it new connections wait in the listen backlog until one closes.
    /// Each may hold up to a whole body in actix's buffers before it is
    /// read, so memory grows by ~(CORRAL_MAX_BODY_BYTES + 32 KiB) per
    /// connection in the worst case: 2048 fits the 256 MiB pod with the
    /// default byte budget. Idle keep-alive connections count too, so a limit
    /// below a sender's connection pool stalls its extra connections for up
    /// to CORRAL_KEEP_ALIVE_SECS. Keep it below the open-file limit (`ulimit -n`).
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest wait for a request's head (request line and headers), in
    /// milliseconds, counted from the connection's start or from the first
    /// byte after the previous answer; a slower client's connection is closed.
    #[arg(long, env = "CORRAL_HEADER_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// How long an idle keep-alive connection stays open after an answer, in
    /// seconds; 0 closes every connection after its answer. Longer than the
    /// 60 s idle timeout of common proxies and load balancers, so they close
    /// first and never reuse a connection corral is closing.
    #[arg(long, env = "CORRAL_KEEP_ALIVE_SECS", default_value_t = 75)]
    pub keep_alive_secs: u64,

    /// Seconds sent in `Retry-After` with a 503.
    #[arg(long, env = "CORRAL_RETRY_AFTER_SECS", default_value_t = 5)]
    pub retry_after_secs: u32,

    /// After a shutdown signal, how long /readyz answers 503 while the listener
    /// still serves, in milliseconds, so a load balancer stops sending first.
    #[arg(long, env = "CORRAL_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,

    /// Longest wait for requests in flight to finish at shutdown, in milliseconds.
    #[arg(long, env = "CORRAL_SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    pub shutdown_timeout_ms: u64,

    /// CORRAL_MAX_BODY_BYTES and CORRAL_PUBLISH_BATCH_MAX_BYTES, which the
    /// worker reads too.
    #[command(flatten)]
    pub messages: MessageLimits,

    #[command(flatten)]
    pub signing: SigningSettings,

    #[command(flatten)]
    pub buffer: BufferSettings,

    #[command(flatten)]
    pub amqp: AmqpSettings,

    #[command(flatten)]
    pub log: LogSettings,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No token, no signing secret and no explicit opt-out.
    #[error(
        "no webhook token and no signing secret configured: set CORRAL_WEBHOOK_TOKENS or \
         CORRAL_DROPCOWBOY_SIGNING_SECRETS (comma-separated), or pass --allow-unauthenticated \
         for local development"
    )]
    NoTokens,
    /// The signing settings cannot work.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// The publish deadline is shorter than the wait for a slot, or longer than
    /// the shutdown drain, so in-flight requests could outlive shutdown.
    #[error(
        "CORRAL_SHUTDOWN_TIMEOUT_MS ({shutdown} ms) must exceed CORRAL_PUBLISH_TIMEOUT_MS \
         ({publish} ms), or shutdown would cut requests still awaiting their confirm"
    )]
    ShutdownShorterThanPublish {
        /// Shutdown timeout in ms.
        shutdown: u64,
        /// Publish timeout in ms.
        publish: u64,
    },
    /// The spool would start after the request's deadline.
    #[error(
        "CORRAL_SPOOL_AFTER_MS ({spool_after} ms) must be below CORRAL_PUBLISH_TIMEOUT_MS \
         ({publish} ms), which bounds the broker and the spool together"
    )]
    SpoolAfterDeadline {
        /// `CORRAL_SPOOL_AFTER_MS`.
        spool_after: u64,
        /// `CORRAL_PUBLISH_TIMEOUT_MS`.
        publish: u64,
    },
    /// A call would wait for more webhooks past the point of spooling them.
    #[error(
        "CORRAL_SQS_LINGER_MS ({linger} ms) must be below {name} ({limit} ms), or webhooks \
         would be spooled or refused while their call still waits to be sent"
    )]
    LingerTooLong {
        /// `CORRAL_SQS_LINGER_MS`.
        linger: u64,
        /// The setting it must stay below.
        name: &'static str,
        /// Its value.
        limit: u64,
    },
    /// A body of the largest accepted size could never be held.
    #[error(
        "CORRAL_MAX_IN_FLIGHT_BYTES ({budget}) must be at least CORRAL_MAX_BODY_BYTES \
         ({body}), or a body of the largest accepted size could never be read"
    )]
    BudgetBelowBody {
        /// `CORRAL_MAX_IN_FLIGHT_BYTES`.
        budget: u32,
        /// `CORRAL_MAX_BODY_BYTES`.
        body: u64,
    },
    /// A body of the largest accepted size would not fit an SQS message.
    #[error(
        "CORRAL_SQS_MAX_MESSAGE_BYTES ({message}) must hold a body of CORRAL_MAX_BODY_BYTES \
         ({body}) with its envelope and attributes ({overhead} bytes): raise it (SQS takes up \
         to 1048576, if the queue's MaximumMessageSize allows) or lower CORRAL_MAX_BODY_BYTES"
    )]
    BodyAboveSqsMessage {
        /// `CORRAL_SQS_MAX_MESSAGE_BYTES`.
        message: u32,
        /// `CORRAL_MAX_BODY_BYTES`.
        body: u64,
        /// What a message adds to one body.
        overhead: usize,
    },
    /// An SQS setting is missing or malformed.
    #[error(transparent)]
    Sqs(#[from] sqs::SettingsError),
}

/// What an SQS message adds to the bodies it carries: the envelope's frame
/// and the attributes.
pub const SQS_MESSAGE_OVERHEAD: usize = batch::FRAME_OVERHEAD + sqs::ATTRIBUTES_MAX;

impl IngressConfig {
    /// Tokens with surrounding blanks and empty entries removed.
    pub fn tokens(&self) -> Vec<String> {
        self.webhook_tokens
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Checks the settings can work together, and returns the signing
    /// secrets' keys (reading the secrets file, once).
    pub fn validate(&self) -> Result<Keys, ConfigError> {
        let keys = self
            .signing
            .load(self.in_flight_wait_ms, self.publish_timeout_ms)?;
        if self.tokens().is_empty() && keys.is_empty() && !self.allow_unauthenticated {
            return Err(ConfigError::NoTokens);
        }
        if self.shutdown_timeout_ms <= self.publish_timeout_ms {
            return Err(ConfigError::ShutdownShorterThanPublish {
                shutdown: self.shutdown_timeout_ms,
                publish: self.publish_timeout_ms,
            });
        }
        if self.spool_database_url.is_some() && self.spool_after_ms >= self.publish_timeout_ms {
            return Err(ConfigError::SpoolAfterDeadline {
                spool_after: self.spool_after_ms,
                publish: self.publish_timeout_ms,
            });
        }
        if u64::from(self.max_in_flight_bytes) < self.messages.max_body_bytes {
            return Err(ConfigError::BudgetBelowBody {
                budget: self.max_in_flight_bytes,
                body: self.messages.max_body_bytes,
            });
        }
        if self.buffer.kind == BufferKind::Sqs {
            sqs::check_settings(&self.buffer)?;
            sqs::check_queues(&self.buffer, self.amqp.queues)?;
            let mut limits = vec![("CORRAL_PUBLISH_TIMEOUT_MS", self.publish_timeout_ms)];
            if self.spool_database_url.is_some() {
                limits.push(("CORRAL_SPOOL_AFTER_MS", self.spool_after_ms));
            }
            if let Some((name, limit)) = limits
                .into_iter()
                .find(|(_, limit)| self.sqs_linger_ms >= *limit)
            {
                return Err(ConfigError::LingerTooLong {
                    linger: self.sqs_linger_ms,
                    name,
                    limit,
                });
            }
            // A bare body (`{…}`, as the provider sends) of the largest size:
            // one with blanks around it, or with a character SQS refuses,
            // travels escaped and may still not fit, which is then reported
            // for that webhook alone.
            let overhead = batch::ENTRY_OVERHEAD + SQS_MESSAGE_OVERHEAD;
            if self.messages.max_body_bytes + overhead as u64
                > u64::from(self.sqs_max_message_bytes)
            {
                return Err(ConfigError::BodyAboveSqsMessage {
                    message: self.sqs_max_message_bytes,
                    body: self.messages.max_body_bytes,
                    overhead,
                });
            }
        }
        Ok(keys)
    }

    /// The publish deadline.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// How long the broker has alone.
    pub fn spool_after(&self) -> Duration {
        Duration::from_millis(self.spool_after_ms)
    }

    /// The deadline for every request head.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// The idle keep-alive time, `None` when keep-alive is off.
    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_secs > 0).then(|| Duration::from_secs(self.keep_alive_secs))
    }

    /// The shutdown drain bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}
