//! The real ingress and worker, built in-process on port 0 and driven over
//! HTTP, as a user would. Their settings come from [`crate::config`].

use std::time::Duration;

use corral_ingress::config::IngressConfig;
use corral_worker::config::WorkerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::{Metrics, scrape},
    wait,
};

/// The token test ingresses accept (give it to [`crate::config::ingress`]).
pub const TOKEN: &str = "test-token-0123456789";

/// A running ingress.
#[derive(Debug)]
pub struct RunningIngress {
    /// Webhook port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// Cancelling it starts the graceful shutdown.
    pub shutdown: CancellationToken,
    /// The application's task; resolves when it has stopped.
    pub task: JoinHandle<anyhow::Result<()>>,
    /// HTTP client for the test.
    pub http: reqwest::Client,
}

impl RunningIngress {
    /// Starts an ingress with `config` and waits until `/readyz` says it is
    /// ready and connected to the broker (with a spool, it is ready on the
    /// spool alone, before its broker link is up).
    pub async fn start(config: IngressConfig) -> Self {
        let ingress = Self::start_unready(config).await;
        ingress.wait_ready(true).await;
        ingress.wait_broker(true).await;
        ingress
    }

    /// Starts an ingress without waiting for the broker (it may be unreachable).
    pub async fn start_unready(config: IngressConfig) -> Self {
        crate::init_test_logging();
        let shutdown = CancellationToken::new();
        let app = corral_ingress::Application::build(config, shutdown.clone())
            .expect("building the ingress");
        let port = app.port();
        let admin_port = app.admin_port();
        let task = tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client");
        Self {
            port,
            admin_port,
            shutdown,
            task,
            http,
        }
    }

    /// `http://127.0.0.1:<port>`: what `corral-loadgen` takes as its target.
    pub fn base_url(&self) -> String {
        crate::base_url(self.port)
    }

    /// `http://127.0.0.1:<port>/webhooks/dropcowboy/<kind>`.
    pub fn url(&self, kind: &str) -> String {
        crate::webhook_url(self.port, kind)
    }

    /// Posts `body` as JSON with the test token as a Bearer token.
    pub async fn post(&self, kind: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url(kind))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("posting a webhook")
    }

    /// Waits until `/readyz` answers 200 (`true`) or 503 (`false`).
    pub async fn wait_ready(&self, ready: bool) {
        wait_ready(&self.http, self.admin_port, ready).await;
    }

    /// Waits until `/readyz` says the broker link is up (`true`) or down.
    pub async fn wait_broker(&self, connected: bool) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        wait::until_true(
            &format!("/readyz to say \"broker\":{connected}"),
            Duration::from_secs(30),
            || {
                let request = self.http.get(&url).send();
                async move {
                    match request.await {
                        Ok(response) => response.text().await.is_ok_and(|body| {
                            serde_json::from_str::<serde_json::Value>(&body)
                                .is_ok_and(|readiness| readiness["broker"] == connected)
                        }),
                        Err(_) => false,
                    }
                }
            },
        )
        .await;
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        scrape(&self.http, self.admin_port).await
    }

    /// Cancels and waits for the graceful shutdown to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("ingress task panicked")
    }
}

/// A running worker.
#[derive(Debug)]
pub struct RunningWorker {
    /// Admin port.
    pub admin_port: u16,
    /// Cancelling it starts the graceful shutdown.
    pub shutdown: CancellationToken,
    /// The application's task.
    pub task: JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl RunningWorker {
    /// Starts a worker and waits until it is ready (migrated, consuming).
    pub async fn start(config: WorkerConfig) -> Self {
        let worker = Self::start_unready(config).await;
        worker.wait_ready(true).await;
        worker
    }

    /// Starts a worker without waiting for readiness.
    pub async fn start_unready(config: WorkerConfig) -> Self {
        crate::init_test_logging();
        let shutdown = CancellationToken::new();
        let app = corral_worker::Application::build(config, shutdown.clone())
            .expect("building the worker");
        let admin_port = app.admin_port();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            admin_port,
            shutdown,
            task,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until `/readyz` answers 200 (`true`) or 503 (`false`).
    pub async fn wait_ready(&self, ready: bool) {
        wait_ready(&self.http, self.admin_port, ready).await;
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        scrape(&self.http, self.admin_port).await
    }

    /// Cancels and waits for the graceful shutdown to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("worker task panicked")
    }
}

async fn wait_ready(http: &reqwest::Client, admin_port: u16, ready: bool) {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
    let want = if ready { 200 } else { 503 };
    wait::until_true(
        &format!("/readyz to answer {want}"),
        Duration::from_secs(30),
        || {
            let request = http.get(&url).send();
            async move { request.await.is_ok_and(|r| r.status().as_u16() == want) }
        },
    )
    .await;
}
