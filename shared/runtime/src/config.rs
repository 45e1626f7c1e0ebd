//! Settings both binaries share.
//!
//! Each setting is a clap argument with an `env = "CORRAL_*"` twin, so the
//! same value can come from a flag (local runs) or the environment
//! (containers), and `--help` documents every one with its default.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// How to reach RabbitMQ and which names to use there.
#[derive(Clone, Args)]
pub struct AmqpSettings {
    /// AMQP URI of the broker (`amqps://` for TLS), or several separated by
    /// commas (the nodes of a cluster): each connect tries them in turn,
    /// starting after the one used last. Credentials in it are never logged.
    #[arg(
        global = true,
        long = "amqp-url",
        env = "CORRAL_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub url: String,

    /// Prefix of every exchange and queue name, so tests and tenants can share one broker.
    #[arg(
        global = true,
        long = "amqp-prefix",
        env = "CORRAL_AMQP_PREFIX",
        default_value = "corral"
    )]
    pub prefix: String,

    /// `x-delivery-limit` of the quorum queue: after this many failed deliveries
    /// a message goes to the dead-letter queue. Both binaries must agree.
    #[arg(
        global = true,
        long = "amqp-delivery-limit",
        env = "CORRAL_AMQP_DELIVERY_LIMIT",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub delivery_limit: u32,

    /// Deadline for connecting (TCP, TLS and the AMQP handshake) and for each
    /// topology declaration, in milliseconds.
    #[arg(
        global = true,
        long = "amqp-connect-timeout-ms",
        env = "CORRAL_AMQP_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub connect_timeout_ms: u64,

    /// AMQP heartbeat in seconds, used unless the URI sets `heartbeat`. A short
    /// heartbeat is what notices a network path that silently stopped carrying packets.
    #[arg(
        global = true,
        long = "amqp-heartbeat-secs",
        env = "CORRAL_AMQP_HEARTBEAT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub heartbeat_secs: u16,

    /// Longest pause between two reconnect attempts, in milliseconds
    /// (the backoff starts at 100 ms, doubles, and is jittered).
    #[arg(
        global = true,
        long = "amqp-reconnect-max-ms",
        env = "CORRAL_AMQP_RECONNECT_MAX_MS",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub reconnect_max_ms: u64,

    /// PEM file of the CA certificate(s) that signed RabbitMQ's certificate, for an
    /// `amqps://` URL; trusted in addition to the system's roots. Read at every
    /// connect, so a rotated file is picked up without a restart.
    #[arg(global = true, long = "amqp-ca-file", env = "CORRAL_AMQP_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// How many quorum queues share the webhooks, each with its own leader
    /// (RabbitMQ spreads new ones over the cluster's nodes). 1 is the
    /// single `<prefix>.delivery-status` queue; more route through the
    /// `<prefix>.shards` exchange. Both binaries must agree; with the SQS
    /// buffer only 1 is accepted.
    #[arg(
        global = true,
        long = "amqp-queues",
        env = "CORRAL_AMQP_QUEUES",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=crate::amqp::MAX_QUEUES as i64)
    )]
    pub queues: u16,

    /// Which of the URLs the next connect tries first; shared by the clones
    /// of these settings, so every reconnect of a process moves on from the
    /// broker it last reached instead of starting again at a dead first one.
    #[arg(skip)]
    pub rotation: crate::amqp::Rotation,
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL's password must not reach a log through a printed config.
        f.debug_struct("AmqpSettings")
            .field("url", &redact_url(&self.url))
            .field("rotation", &self.rotation)
            .field("prefix", &self.prefix)
            .field("delivery_limit", &self.delivery_limit)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("ca_file", &self.ca_file)
            .field("queues", &self.queues)
            .finish()
    }
}

/// The entries of a `CORRAL_AMQP_URL` list, each trimmed: the text is cut
/// before every comma that a scheme (`amqp://`, `amqps://`, or any
/// `letters://`) follows, so a comma inside a password stays in its URL.
pub fn url_entries(list: &str) -> Vec<&str> {
    let mut cuts = vec![0];
    for (comma, _) in list.match_indices(',') {
        let rest = list[comma + 1..].trim_start();
        let scheme = rest.find("://").map(|end| &rest[..end]);
        let starts_url = scheme.is_some_and(|scheme| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if starts_url {
            cuts.push(comma + 1);
        }
    }
    cuts.push(list.len() + 1);
    cuts.windows(2)
        .map(|cut| list[cut[0]..cut[1] - 1].trim())
        .collect()
}

/// `url` (or each URL of a list) with the password of its user info
/// replaced by `***`, for errors and logs. Works on the text, so it also
/// hides the password of a URL that does not parse (`guest:secret@rabbit`
/// without a scheme) or whose password holds an unescaped `/`, `@` or `,`:
/// everything between the first `:` after the scheme and the last `@` goes.
pub fn redact_url(url: &str) -> String {
    url_entries(url)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = rest[..at].find(':') else {
        return url.to_owned();
    };
    format!("{}{}***{}", &url[..start], &rest[..=colon], &rest[at..])
}

impl AmqpSettings {
    /// The connect and declare deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The longest pause between reconnect attempts.
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms)
    }
}

/// Which durable buffer holds webhooks between ingress and worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BufferKind {
    /// RabbitMQ: persistent publishes into a quorum queue, confirmed.
    Rabbitmq,
    /// Amazon SQS (or a service speaking its API), through the AWS SDK.
    Sqs,
}

/// Where webhooks wait between ingress and worker; both binaries must agree.
#[derive(Clone, Args)]
pub struct BufferSettings {
    /// The buffer: `rabbitmq` (the `CORRAL_AMQP_*` settings) or `sqs` (the
    /// `CORRAL_SQS_*` settings, with region and credentials from the
    /// standard AWS chain: `AWS_REGION`, `AWS_ACCESS_KEY_ID`, a profile, web
    /// identity, the container or instance role).
    #[arg(
        global = true,
        long = "buffer",
        env = "CORRAL_BUFFER",
        value_enum,
        default_value_t = BufferKind::Rabbitmq
    )]
    pub kind: BufferKind,

    /// URL of the SQS queue (`https://sqs.<region>.amazonaws.com/<account>/<name>`);
    /// required with `CORRAL_BUFFER=sqs`.
    #[arg(global = true, long = "sqs-queue-url", env = "CORRAL_SQS_QUEUE_URL")]
    pub sqs_queue_url: Option<String>,

    /// Endpoint of the SQS API instead of AWS's (a VPC endpoint, or a local
    /// stand-in such as moto); the SDK's own `AWS_ENDPOINT_URL_SQS` is read
    /// too, and this wins over it.
    #[arg(
        global = true,
        long = "sqs-endpoint-url",
        env = "CORRAL_SQS_ENDPOINT_URL"
    )]
    pub sqs_endpoint_url: Option<String>,

    /// Region and credentials given by a program that embeds a binary (the
    /// test kit), in place of the standard chain's; never from the command
    /// line or the environment.
    #[arg(skip)]
    pub sqs_identity: Option<SqsIdentity>,
}

impl std::fmt::Debug for BufferSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferSettings")
            .field("kind", &self.kind)
            .field("sqs_queue_url", &self.sqs_queue_url)
            .field("sqs_endpoint_url", &self.sqs_endpoint_url)
            .field("sqs_identity", &self.sqs_identity)
            .finish()
    }
}

/// A fixed region and key pair for SQS, for a program embedding a binary.
#[derive(Clone)]
pub struct SqsIdentity {
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`'s counterpart.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`'s counterpart; never printed.
    pub secret_access_key: String,
}

impl std::fmt::Debug for SqsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsIdentity")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

/// A CA bundle named by `CORRAL_AMQP_CA_FILE` or `CORRAL_DATABASE_CA_FILE`:
/// the PEM text and the certificates in it.
#[derive(Debug, Clone)]
pub struct CaBundle {
    /// The file's text, as read.
    pub pem: String,
    /// Its certificates (at least one).
    pub certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// What is wrong with a CA bundle file (the caller names the setting).
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    /// The file cannot be read.
    #[error("cannot be read")]
    Read(#[source] std::io::Error),
    /// The file is not PEM.
    #[error("not a PEM certificate bundle")]
    NotPem(#[source] rustls::pki_types::pem::Error),
    /// The file is PEM but holds no certificate.
    #[error("holds no PEM certificate")]
    Empty,
}

/// Reads a PEM CA bundle.
pub fn read_ca_bundle(path: &std::path::Path) -> Result<CaBundle, CaBundleError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let pem = std::fs::read_to_string(path).map_err(CaBundleError::Read)?;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(CaBundleError::NotPem)?;
    if certificates.is_empty() {
        return Err(CaBundleError::Empty);
    }
    Ok(CaBundle { pem, certificates })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log format.
    #[arg(global = true, long = "log-format", env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `info,corral_ingress=debug`.
    #[arg(
        global = true,
        long = "log",
        env = "CORRAL_LOG",
        default_value = "info"
    )]
    pub filter: String,
}

/// How large one AMQP message of webhooks may be; both binaries must agree:
/// ingress packs its messages within these, and the worker sizes what it
/// lets the broker send it by the largest message they allow.
#[derive(Debug, Clone, Args)]
pub struct MessageLimits {
    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(global = true, long, env = "CORRAL_MAX_BODY_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(2..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Bytes per AMQP message at most (bodies plus about 100 bytes each);
    /// a single webhook larger than this is still published, alone. The
    /// worker's prefetch is its byte budget ÷ this: 256 KiB holds 128
    /// webhooks of the provider's ~500 bytes many times over, and keeps the
    /// prefetch of a 64 MiB budget at 256 messages.
    #[arg(global = true, long, env = "CORRAL_PUBLISH_BATCH_MAX_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u32).range(4096..=16 * 1024 * 1024))]
    pub publish_batch_max_bytes: u32,
}

impl MessageLimits {
    /// The largest AMQP message body ingress publishes: a full message, or
    /// one webhook of the largest body alone. Alone, a body with blanks
    /// around its object travels as the string `body_text`, and escaping a
    /// valid JSON text at most doubles it (only `"`, `\` and the blanks
    /// `\t`, `\n`, `\r` are escaped, each to two bytes).
    pub fn largest_message(&self) -> u64 {
        use corral_contract::envelope::batch::{ENTRY_OVERHEAD, FRAME_OVERHEAD};
        let alone = 2 * self.max_body_bytes + 2 + (ENTRY_OVERHEAD + FRAME_OVERHEAD) as u64;
        alone.max(u64::from(self.publish_batch_max_bytes))
    }
}
