//! Settings for the services under test: the binaries' own command-line
//! defaults, changed only where a test needs it (the local broker, ports
//! chosen by the OS, a test token, small pools on a shared PostgreSQL).

use clap::Parser;
#[cfg(feature = "apps")]
use corral_ingress::config::IngressConfig;
use corral_runtime::config::AmqpSettings;
#[cfg(feature = "apps")]
use corral_worker::{commands::Cli as WorkerCli, config::WorkerConfig};

/// The local RabbitMQ the tests share (`scripts/services`).
pub const LOCAL_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Only the AMQP settings, to read their defaults the way both binaries do.
#[derive(Debug, Parser)]
struct AmqpOnly {
    #[command(flatten)]
    amqp: AmqpSettings,
}

/// AMQP settings for the local broker under `prefix`: the defaults, pinned
/// so that a `CORRAL_AMQP_*` variable in the test's environment changes nothing.
pub fn amqp(prefix: impl Into<String>) -> AmqpSettings {
    let mut settings = AmqpOnly::parse_from(["corral-testkit"]).amqp;
    settings.url = LOCAL_AMQP_URL.into();
    settings.prefix = prefix.into();
    settings.delivery_limit = 20;
    settings.connect_timeout_ms = 5_000;
    settings.heartbeat_secs = 10;
    settings.reconnect_max_ms = 5_000;
    settings.ca_file = None;
    settings.queues = 1;
    settings
}

/// An ingress accepting `token`, on ports chosen by the OS, publishing under
/// AMQP `prefix` on the local broker.
#[cfg(feature = "apps")]
pub fn ingress(prefix: &str, token: &str) -> IngressConfig {
    let mut config = IngressConfig::parse_from(["corral-ingress"]);
    config.listen = "127.0.0.1:0".into();
    config.admin_listen = "127.0.0.1:0".into();
    config.webhook_tokens = vec![token.into()];
    config.http_workers = 2;
    config.amqp = amqp(prefix);
    config
}

/// A worker writing to `database_url`, consuming under AMQP `prefix` on the
/// local broker, its admin port chosen by the OS and a small pool (the
/// PostgreSQL connections are shared by every test running at once).
#[cfg(feature = "apps")]
pub fn worker(database_url: &str, prefix: &str) -> WorkerConfig {
    let mut config = WorkerCli::parse_from(["corral-worker"]).config;
    config.db.database_url = database_url.into();
    config.admin_listen = "127.0.0.1:0".into();
    config.db.db_pool_size = 2;
    config.amqp = amqp(prefix);
    config
}

/// Worker settings that keep every wait of a test short: batches close after
/// 50 ms, and a lost database or broker is noticed and retried within
/// seconds.
#[cfg(feature = "apps")]
pub fn short_waits(config: &mut WorkerConfig) {
    config.batch_linger_ms = 50;
    config.db.db_timeout_ms = 2_000;
    config.db.db_retry_max_ms = 300;
    config.shutdown_timeout_ms = 10_000;
    config.amqp.reconnect_max_ms = 300;
    config.amqp.connect_timeout_ms = 2_000;
}
