//! How to run one service process: its binary, environment and ports.

use std::{collections::BTreeMap, net::TcpListener};

use super::Binary;

/// A free local TCP port (bound, then released; the OS does not hand it out
/// again at once, and restarts reuse it thanks to SO_REUSEADDR).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a free port")
        .port()
}

/// How to run one service process: the binary, its environment and ports.
/// Kept by [`Process`](super::Process) so a restart reuses it exactly.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Which binary.
    pub binary: Binary,
    /// `CORRAL_*` and `AWS_*` variables (inherited ones are removed).
    pub env: BTreeMap<String, String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Port of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_port: u16,
    /// Port of the public webhook listener (ingress only).
    pub listen_port: Option<u16>,
}

impl ProcessConfig {
    /// An ingress on free local ports, accepting `token`, under AMQP `prefix`.
    pub fn ingress(prefix: &str, token: &str) -> Self {
        let admin_port = free_port();
        let listen_port = free_port();
        Self {
            binary: Binary::Ingress,
            env: BTreeMap::new(),
            args: Vec::new(),
            admin_port,
            listen_port: Some(listen_port),
        }
        .env("CORRAL_LISTEN", format!("127.0.0.1:{listen_port}"))
        .env("CORRAL_WEBHOOK_TOKENS", token)
        .env("CORRAL_HTTP_WORKERS", "2")
        .common(prefix)
    }

    /// A worker on a free admin port, writing to `database_url`, consuming
    /// under AMQP `prefix`, with a small pool (PostgreSQL's connections are shared).
    pub fn worker(database_url: &str, prefix: &str) -> Self {
        Self {
            binary: Binary::Worker,
            env: BTreeMap::new(),
            args: Vec::new(),
            admin_port: free_port(),
            listen_port: None,
        }
        .env("CORRAL_DATABASE_URL", database_url)
        .env("CORRAL_DB_POOL_SIZE", "2")
        .common(prefix)
    }

    fn common(self, prefix: &str) -> Self {
        let admin = format!("127.0.0.1:{}", self.admin_port);
        self.env("CORRAL_ADMIN_LISTEN", admin)
            .env("CORRAL_AMQP_PREFIX", prefix)
            .env("CORRAL_LOG", "info")
            .env("CORRAL_LOG_FORMAT", "text")
    }

    /// Uses the SQS queue at `queue_url` on `endpoint` as the buffer, with
    /// the test identity from the standard chain's variables.
    #[cfg(feature = "sqs")]
    pub fn sqs(self, queue_url: &str, endpoint: &str) -> Self {
        let mut config = self
            .env("CORRAL_BUFFER", "sqs")
            .env("CORRAL_SQS_QUEUE_URL", queue_url)
            .env("CORRAL_SQS_ENDPOINT_URL", endpoint);
        for (key, value) in crate::sqs::identity_env() {
            config = config.env(key, value);
        }
        config
    }

    /// Sets (or overrides) an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }
}
