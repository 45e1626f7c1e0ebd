//! corral's test kit: what the integration suites, the benchmarks and the
//! fault suite need to run corral against the real RabbitMQ and PostgreSQL.
//!
//! # Layout
//!
//! - [`config`]: the services' settings for a test (their own command-line
//!   defaults, with the local broker, OS-chosen ports and a test token).
//! - `apps` (feature `apps`): the real ingress and worker, built in-process
//!   on port 0.
//! - `stack` (feature `apps`): one builder for what a test runs against: a
//!   broker prefix, a database, spool, SQS, proxies, and the services
//!   configured for them.
//! - [`process`]: the real binaries as child processes.
//! - [`metrics`]: `/metrics` scraped and parsed.
//! - [`broker`]: a private AMQP prefix per test, with helpers to read what
//!   landed in its queue, and clean-up on drop.
//! - [`cluster`]: a throwaway three-node RabbitMQ cluster
//!   (`scripts/services --cluster`), its nodes killed, stopped and started
//!   by a test, removed on drop.
//! - [`database`]: a fresh PostgreSQL database per test, dropped afterwards.
//! - `sqs` (feature `sqs`): a queue (with its dead-letter queue) per test on
//!   the local moto server, deleted afterwards.
//! - [`proxy`]: a TCP proxy a test controls, to cut or black-hole the path to
//!   a service without touching the shared service itself.
//! - [`replicated`]: a throwaway PostgreSQL primary with a synchronous
//!   standby of a test's own, stopped and removed on drop.
//! - `tls` (feature `tls`): a TLS front for PostgreSQL or RabbitMQ with a
//!   throwaway CA.
//! - [`wait`]: waiting on a condition with a deadline, never a bare sleep, and
//!   watching a condition hold for a while.
//! - [`fixtures`]: the provider's samples and generated payloads.
//! - This module: unique resource names, test logging, and clean-up that
//!   can run from a `Drop`.

#[cfg(feature = "apps")]
pub mod apps;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod database;
pub mod fixtures;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod queued;
pub mod replicated;
#[cfg(feature = "sqs")]
pub mod sqs;
#[cfg(feature = "apps")]
pub mod stack;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wait;

/// Sends the harness's and the services' logs to the test output when
/// `TEST_LOG` is set, and nowhere otherwise.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = std::env::var("TEST_LOG").unwrap_or_default();
        let filter = if filter.is_empty() || filter == "1" {
            "info".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A unique name for this test's resources: `corral-test-<uuid>`.
pub fn unique_name(kind: &str) -> String {
    format!("corral-{kind}-{}", uuid::Uuid::now_v7().simple())
}

/// Runs `cleanup` to completion from a `Drop` (which cannot await), on a
/// short-lived runtime of its own thread, so it works inside and outside a
/// test's runtime.
pub fn block_on_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a cleanup runtime")
            .block_on(cleanup);
    });
    let _ = thread.join();
}

/// `http://127.0.0.1:<port>`, the base of an ingress's webhook routes.
pub fn base_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// `http://127.0.0.1:<port>/webhooks/dropcowboy/<kind>`.
pub fn webhook_url(port: u16, kind: &str) -> String {
    format!("{}/webhooks/dropcowboy/{kind}", base_url(port))
}
