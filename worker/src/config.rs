//! corral-worker settings and commands: every `CORRAL_*` variable is also a `--flag`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use corral_shared::config::{AmqpSettings, BufferKind, BufferSettings, LogSettings, MessageLimits};

/// Consumes corral's queue and lands each webhook exactly once in PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "corral-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: WorkerConfig,
}

/// corral-worker commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply migrations, then consume until SIGTERM (the default).
    Run,
    /// Create the database if missing and apply migrations, then exit.
    Migrate,
    /// Inspect and replay the dead-letter queue (`<prefix>.dead-letter`; with
    /// `CORRAL_BUFFER=sqs` the one the SQS queue's redrive policy names).
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Inspect and re-process quarantined webhooks (`quarantined_webhooks`).
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Show outcomes and spend per kind, status and reason over whole hours
    /// of attempt_date (UTC), from the hourly summary (exact sums).
    Report(ReportArgs),
    /// List and lift the numbers not to message again (`suppressions`).
    #[command(subcommand)]
    Suppressions(SuppressionCommand),
}

/// `corral-worker suppressions …`: the worker suppresses a number when a
/// webhook says it opted out, belongs to a known litigator, is on the
/// sender's or a do-not-call list, or cannot take SMS (docs/operations/data.md,
/// "Suppressions"). No webhook ever lifts one.
#[derive(Debug, Clone, Subcommand)]
pub enum SuppressionCommand {
    /// Show suppressions in force, most recently seen first.
    List {
        /// Only this number (E.164, as the provider sends it: `+15552224444`).
        #[arg(long)]
        phone: Option<String>,
        /// Only this channel.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<SuppressionClass>,
        /// Lifted ones too.
        #[arg(long)]
        all: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Lift a number's suppressions in force (all, or one channel or class),
    /// e.g. after the recipient opted in again in writing. Only an event
    /// attempted after the latest one seen suppresses it again.
    Lift {
        /// The number (E.164, as the provider sends it).
        #[arg(long)]
        phone: String,
        /// Only this channel.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only this class.
        #[arg(long, value_enum)]
        class: Option<SuppressionClass>,
        /// Who lifts it and why; kept with the row.
        #[arg(long)]
        by: String,
    },
}

/// A channel, as the tables name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// SMS.
    Sms,
    /// Ringless voicemail.
    Rvm,
}

impl KindArg {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Rvm => "rvm",
        }
    }
}

/// A suppression class, as `suppressions.class` names it (the reasons
/// and codes behind each: docs/operations/data.md, "Suppressions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuppressionClass {
    /// Code 6005, or reason `Opted out`.
    #[value(name = "opted_out")]
    OptedOut,
    /// Code 4017, or reason `Known Litigator`.
    Litigator,
    /// Code 4016, or reason `Internal DNC`.
    #[value(name = "internal_dnc")]
    InternalDnc,
    /// `"dnc": true`.
    Dnc,
    /// Reason `Prohibited by carrier or not SMS enabled`.
    Carrier,
    /// Code 4019: the number was reassigned to someone else.
    Reassigned,
}

impl SuppressionClass {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::Litigator => "litigator",
            Self::InternalDnc => "internal_dnc",
            Self::Dnc => "dnc",
            Self::Carrier => "carrier",
            Self::Reassigned => "reassigned",
        }
    }
}

/// `corral-worker report`: the hourly summary (`delivery_summary` and the
/// changes not yet rolled into it) over a window.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Start of the window: a duration before now (`24h`, `7d`, `90min`) or
    /// an RFC 3339 instant (`2026-11-27T00:00:00Z`). The hour it falls in is
    /// included whole.
    #[arg(long, default_value = "24h", value_parser = crate::summary::report::parse_moment)]
    pub since: crate::summary::report::Moment,
    /// End of the window, excluded: a duration before now or an RFC 3339
    /// instant; now when omitted. The hour it falls in is included whole.
    #[arg(long, value_parser = crate::summary::report::parse_moment)]
    pub until: Option<crate::summary::report::Moment>,
    /// Print one JSON object (the window and the rows, money as strings).
    #[arg(long)]
    pub json: bool,
    /// One line per hour, kind, status and reason (the hour first).
    #[arg(long)]
    pub by_hour: bool,
}

/// `corral-worker dead-letters …`: messages RabbitMQ gave up delivering
/// (`x-delivery-limit` reached), or SQS moved away after `maxReceiveCount`
/// receives, wait in the dead-letter queue for an operator.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterCommand {
    /// Show dead-lettered messages, one line per webhook inside them; removes
    /// none (on RabbitMQ each one read is moved to the tail of the
    /// dead-letter queue, so their order changes; on SQS each is made visible
    /// again).
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Publish dead-lettered messages back to the webhooks exchange with their
    /// original routing key and properties (on SQS: to the queue, with the
    /// same body and attributes), as they are (the webhooks of an envelope-2
    /// message stay together); each dead-letter copy is removed only after
    /// RabbitMQ confirmed (SQS accepted) the republished one.
    Replay {
        /// Show what would be replayed; replay nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay at most this many (all by default).
        #[arg(long)]
        limit: Option<u64>,
        /// Replay only the messages with this `message_id` (on SQS also
        /// SQS's `MessageId`), or holding a webhook with this id (the whole
        /// message is replayed; repeatable); the others stay in the
        /// dead-letter queue.
        #[arg(long = "message-id", value_name = "ID")]
        message_ids: Vec<String>,
    },
}

/// `corral-worker quarantine …`: webhooks the worker could not type, kept in
/// `quarantined_webhooks` byte for byte.
#[derive(Debug, Clone, Subcommand)]
pub enum QuarantineCommand {
    /// Show quarantined webhooks, oldest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Re-type quarantined webhooks with this version's code: those that now
    /// type are stored exactly as the worker stores them and leave the
    /// quarantine in the same transaction; the others stay, with their error
    /// updated.
    Reprocess {
        /// Report what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Re-process at most this many rows (all by default).
        #[arg(long)]
        limit: Option<u64>,
        /// Only these rows (`quarantined_webhooks.id`, repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
        /// Rows per transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
        /// Unpack the rows given with --id as whole envelope-2 messages: for
        /// messages a worker older than 0.2 quarantined as one webhook. A
        /// body's shape alone never decides it (a client may post one).
        #[arg(long, requires = "ids")]
        as_messages: bool,
    },
}

/// Settings of the worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// PostgreSQL connection URL. The database is created at start if it does not exist.
    #[arg(
        long,
        env = "CORRAL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/corral",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// PEM file of the CA certificate(s) that signed PostgreSQL's certificate, for
    /// `sslmode=require` in the URL (TLS, with certificate and host name verified);
    /// without it the system's roots are used.
    #[arg(long, env = "CORRAL_DATABASE_CA_FILE", global = true)]
    pub database_ca_file: Option<std::path::PathBuf>,

    /// Database connections in the pool.
    #[arg(long, env = "CORRAL_DB_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub db_pool_size: u32,

    /// Batches written at once, each on its own pooled connection (at most
    /// CORRAL_DB_POOL_SIZE); acknowledged in delivery order whatever order they commit in.
    #[arg(long, env = "CORRAL_DB_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub db_writers: u32,

    /// Deadline for each database wait (pool checkout, connect, each statement), in milliseconds.
    #[arg(long, env = "CORRAL_DB_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub db_timeout_ms: u64,

    /// Address of the admin listener (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "CORRAL_ADMIN_LISTEN",
        default_value = "0.0.0.0:9091",
        global = true
    )]
    pub admin_listen: String,

    /// Messages in hand at most (RabbitMQ: sent and not yet acknowledged;
    /// SQS: received and not yet deleted): a cap on the count that
    /// CORRAL_MAX_IN_HAND_BYTES allows, which is what bounds memory.
    #[arg(long, env = "CORRAL_PREFETCH", default_value_t = 2_000,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub prefetch: u16,

    /// Bytes of messages held at most (received and not yet acknowledged):
    /// RabbitMQ's prefetch is this ÷ the largest message ingress may publish
    /// (CORRAL_PUBLISH_BATCH_MAX_BYTES, or a body of CORRAL_MAX_BODY_BYTES
    /// alone), capped by CORRAL_PREFETCH; SQS receives while the messages in
    /// hand fit. Default: a quarter of the container's memory limit, or
    /// 64 MiB without one.
    #[arg(long, env = "CORRAL_MAX_IN_HAND_BYTES",
          value_parser = clap::value_parser!(u64).range(1024 * 1024..), global = true)]
    pub max_in_hand_bytes: Option<u64>,

    /// CORRAL_MAX_BODY_BYTES and CORRAL_PUBLISH_BATCH_MAX_BYTES, as ingress
    /// reads them: they bound the largest message.
    #[command(flatten)]
    pub messages: MessageLimits,

    /// A batch is written when it holds this many webhooks (whole AMQP
    /// messages only, so one message may take it past this alone)...
    #[arg(long, env = "CORRAL_BATCH_MAX", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub batch_max: u32,

    /// ...or when its first message has waited this long, in milliseconds.
    #[arg(
        long,
        env = "CORRAL_BATCH_LINGER_MS",
        default_value_t = 50,
        global = true
    )]
    pub batch_linger_ms: u64,

    /// How often an empty PostgreSQL spool (`spooled_webhooks`, where ingress
    /// keeps webhooks RabbitMQ could not take) is looked at again, in
    /// milliseconds; a non-empty one is drained without pause. Also how often
    /// its depth and oldest age are measured (at least once a second).
    #[arg(long, env = "CORRAL_SPOOL_POLL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..), global = true)]
    pub spool_poll_ms: u64,

    /// Longest pause between retries of a batch the database refused for a
    /// transient reason, in milliseconds (starts at 100 ms, doubles, jittered).
    #[arg(long, env = "CORRAL_DB_RETRY_MAX_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub db_retry_max_ms: u64,

    /// Longest wait at shutdown to commit and acknowledge the messages in hand, in milliseconds.
    #[arg(
        long,
        env = "CORRAL_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub shutdown_timeout_ms: u64,

    /// Longest wait of one SQS `ReceiveMessage` for a message, in seconds
    /// (long polling: fewer empty receives, each a billed request).
    #[arg(long, env = "CORRAL_SQS_WAIT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=20), global = true)]
    pub sqs_wait_secs: u64,

    /// SQS visibility timeout of a received message, in seconds: pushed back
    /// to this again and again while the worker holds the message, so only
    /// a worker that died (or lost SQS) lets it run out, and the message
    /// then comes back this long after.
    #[arg(long, env = "CORRAL_SQS_VISIBILITY_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=43_200), global = true)]
    pub sqs_visibility_secs: u64,

    /// Publish a typed result event for every newly stored webhook to the
    /// fan-out exchange `<CORRAL_AMQP_PREFIX>.delivery-results` (with
    /// confirms, through an outbox written in the batch's transaction, so a
    /// crash never drops one; at least once, deduplicated by its `id`). Off
    /// by default; every worker of a deployment must agree. Needs RabbitMQ
    /// (CORRAL_RESULTS_AMQP_URL, else CORRAL_AMQP_URL) also with
    /// CORRAL_BUFFER=sqs: a deployment without RabbitMQ leaves it off.
    #[arg(long, env = "CORRAL_RESULT_EVENTS", default_value_t = false,
          action = clap::ArgAction::Set, global = true)]
    pub result_events: bool,

    /// How often the worker folds the summary's changes
    /// (`delivery_summary_changes`) into `delivery_summary`, in milliseconds;
    /// one worker at a time does it.
    #[arg(long, env = "CORRAL_SUMMARY_ROLLUP_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000), global = true)]
    pub summary_rollup_ms: u64,
    /// AMQP URI of the broker result events go to, when not the one of
    /// CORRAL_AMQP_URL (which is the default); CORRAL_AMQP_CA_FILE, the
    /// prefix, heartbeat and timeouts of CORRAL_AMQP_* apply to it too.
    #[arg(
        long,
        env = "CORRAL_RESULTS_AMQP_URL",
        hide_env_values = true,
        global = true
    )]
    pub results_amqp_url: Option<String>,

    #[command(flatten)]
    pub buffer: BufferSettings,

    #[command(flatten)]
    pub amqp: AmqpSettings,

    #[command(flatten)]
    pub log: LogSettings,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The byte budget does not hold one of the largest messages for each
    /// of the two consumers (the main and the unroutable queue).
    #[error(
        "CORRAL_MAX_IN_HAND_BYTES ({budget}) must hold two of the largest messages ingress may \
         publish ({largest} bytes each: CORRAL_PUBLISH_BATCH_MAX_BYTES, or a body of \
         CORRAL_MAX_BODY_BYTES alone)"
    )]
    InHandBelowMessages {
        /// The budget.
        budget: u64,
        /// The largest message.
        largest: u64,
    },
    /// More writers than connections would leave writers waiting for one.
    #[error("CORRAL_DB_WRITERS ({writers}) must not exceed CORRAL_DB_POOL_SIZE ({pool})")]
    WritersAbovePool {
        /// Writers.
        writers: u32,
        /// Pool size.
        pool: u32,
    },
    /// The database URL does not parse.
    #[error("CORRAL_DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    DatabaseUrl(String),
    /// An SQS setting is missing or malformed.
    #[error(transparent)]
    Sqs(#[from] corral_shared::sqs::SettingsError),
    /// Result events are on, but their broker's settings do not work.
    #[error(
        "CORRAL_RESULT_EVENTS=true publishes to RabbitMQ ({setting}), also with \
         CORRAL_BUFFER=sqs; without RabbitMQ, leave it off"
    )]
    ResultsBroker {
        /// The URL setting in use.
        setting: &'static str,
        /// What is wrong.
        #[source]
        source: corral_shared::amqp::AmqpError,
    },
}

impl WorkerConfig {
    /// Checks the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let budget = self.budget();
        if budget.prefetch(self.prefetch).is_none() {
            return Err(ConfigError::InHandBelowMessages {
                budget: budget.bytes,
                largest: budget.largest,
            });
        }
        if self.buffer.kind == BufferKind::Sqs {
            corral_shared::sqs::check_settings(&self.buffer)?;
        }
        if self.result_events {
            let setting = if self.results_amqp_url.is_some() {
                "CORRAL_RESULTS_AMQP_URL"
            } else {
                "CORRAL_AMQP_URL"
            };
            corral_shared::amqp::check_settings(&self.results_amqp())
                .map_err(|source| ConfigError::ResultsBroker { setting, source })?;
        }
        if self.db_writers > self.db_pool_size {
            return Err(ConfigError::WritersAbovePool {
                writers: self.db_writers,
                pool: self.db_pool_size,
            });
        }
        self.database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|err| {
                let mut reason = err.to_string();
                if let Some(source) = std::error::Error::source(&err) {
                    reason = format!("{reason}: {source}");
                }
                // libpq's verifying modes: what `require` already does here.
                if self.database_url.contains("sslmode=verify-") {
                    reason.push_str(
                        " (use sslmode=require: corral always verifies the server's \
                         certificate and host name)",
                    );
                }
                ConfigError::DatabaseUrl(reason)
            })?;
        Ok(())
    }

    /// The database to connect to: URL, TLS and deadline (reads the CA file).
    pub fn database(&self) -> anyhow::Result<crate::db::Target> {
        crate::db::Target::new(
            &self.database_url,
            self.database_ca_file.as_deref(),
            self.db_timeout(),
        )
    }

    /// The broker result events go to: CORRAL_AMQP_* with
    /// CORRAL_RESULTS_AMQP_URL, when set, as the URL.
    pub fn results_amqp(&self) -> AmqpSettings {
        let mut settings = self.amqp.clone();
        if let Some(url) = &self.results_amqp_url {
            settings.url.clone_from(url);
        }
        settings
    }

    /// The bytes in hand and the largest message (reads the container's
    /// memory limit when CORRAL_MAX_IN_HAND_BYTES is not set).
    pub fn budget(&self) -> crate::source::budget::Budget {
        crate::source::budget::Budget::new(self.max_in_hand_bytes, &self.messages)
    }

    /// Per-wait database deadline.
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// Batch linger.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Summary roll-up interval.
    pub fn summary_rollup(&self) -> Duration {
        Duration::from_millis(self.summary_rollup_ms)
    }

    /// Shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}
