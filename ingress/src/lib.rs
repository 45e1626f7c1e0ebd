//! corral-ingress: takes Drop Cowboy delivery-status webhooks off the
//! internet and answers `200 {"id": …}` only once its buffer — RabbitMQ
//! (durably confirmed) or SQS (accepted), as `CORRAL_BUFFER` says — holds
//! each one, or, where the buffer cannot, PostgreSQL committed it into the
//! spool.
//!
//! # Layout
//!
//! - [`config`]: settings (`CORRAL_*` / `--flags`) and their validation.
//! - [`connection`]: the deadline for every request head, on each accepted
//!   stream.
//! - [`auth`]: webhook tokens (query, Bearer, Basic), compared in constant time.
//! - [`signature`]: the signed route's secrets and Drop Cowboy's HMAC rule.
//! - [`webhook`]: the routes, their one pipeline (cheapest check first) and
//!   their errors.
//! - [`budget`]: the bound on request bodies held at once, in bytes.
//! - [`refusal_log`]: refusals logged at most once per cause per second,
//!   with a count of the rest; and every 503 on a line of its own.
//! - [`buffer`]: where a webhook is kept before it is answered — the seam —
//!   and its implementations, one group-commit engine over three sinks:
//!   RabbitMQ (persistent, mandatory publishes with confirms over a
//!   self-healing broker link) and SQS (`SendMessageBatch`), each with
//!   bounded memory; behind either, the PostgreSQL spool.
//! - [`Application`]: binds both listeners and runs until the shutdown token
//!   is cancelled, then drains.

pub mod auth;
pub mod budget;
pub mod buffer;
pub mod config;
pub mod connection;
pub mod refusal_log;
pub mod signature;
pub mod webhook;

use std::time::Duration;

use actix_http::{HttpService, KeepAlive, error::DispatchError};
use actix_service::{IntoServiceFactory as _, ServiceFactoryExt as _, fn_service, map_config};
use actix_web::{App, dev::AppConfig, dev::Server, web};
use anyhow::Context as _;
use corral_runtime::{
    admin,
    admin::Health,
    config::BufferKind,
    telemetry::{self, labels::Binary},
};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    auth::Tokens,
    budget::BodyBudget,
    buffer::{
        Buffer, Publishing,
        fallback::Fallback,
        primary::Primary,
        rabbitmq::{self, RabbitMq},
        spool::{self, Spool},
        sqs::{self, Sqs},
    },
    config::IngressConfig,
    refusal_log::RefusalLog,
    signature::Signing,
    webhook::WebhookState,
};

/// The running ingress: both listeners bound, the buffer connecting.
pub struct Application {
    config: IngressConfig,
    port: u16,
    admin_port: u16,
    server: Server,
    admin: Server,
    buffer: Fallback<Primary>,
    supervisor: tokio::task::JoinHandle<()>,
    /// Writes the refusal summaries until the server has drained; the guard
    /// stops it also when the application is dropped without running.
    summaries: (tokio::task::JoinHandle<()>, DropGuard),
    health: Health,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("admin_port", &self.admin_port)
            .finish()
    }
}

impl Application {
    /// Validates `config`, binds the listeners (port 0 picks a free one) and
    /// starts connecting to the broker in the background. `shutdown` stops it.
    pub fn build(config: IngressConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let keys = config.validate()?;
        if config.buffer.kind == BufferKind::Rabbitmq {
            corral_runtime::amqp::check_settings(&config.amqp)?;
        }
        let prometheus = telemetry::prometheus();
        telemetry::metrics::register_binary(Binary::Ingress);

        let tokens = Tokens::new(&config.tokens(), config.allow_unauthenticated);
        tokens.announce(&config.listen);
        let signing = Signing::new(keys, config.signing.signature_tolerance_secs);
        signing.announce();

        let health = Health::new(false);
        health.set_signing_secrets(signing.secrets());
        let (buffer, supervisor) = start_primary(&config, &health)?;
        let spool = start_spool(&config, &health)?;
        let buffer = Fallback::new(
            buffer,
            spool,
            config.spool_after(),
            config.publish_timeout(),
        );
        let state = WebhookState {
            tokens,
            signing,
            buffer: buffer.clone(),
            max_body_bytes: config.messages.max_body_bytes as usize,
            retry_after_secs: config.retry_after_secs,
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            body_budget: BodyBudget::new(config.max_in_flight_bytes),
            in_flight_wait: Duration::from_millis(config.in_flight_wait_ms),
            max_json_depth: config.max_json_depth as usize,
            refusals: RefusalLog::default(),
        };
        let stop_summaries = CancellationToken::new();
        let summaries = (
            tokio::spawn(state.refusals.clone().run_summaries(stop_summaries.clone())),
            stop_summaries.drop_guard(),
        );
        let (server, port, workers) = webhook_server(&config, state)?;
        let (admin, admin_port) = admin::bind(&config.admin_listen, health.clone(), prometheus)
            .with_context(|| format!("binding the admin listener on {}", config.admin_listen))?;
        tracing::info!(port, admin_port, workers, "corral-ingress listening");

        Ok(Self {
            config,
            port,
            admin_port,
            server,
            admin,
            buffer,
            supervisor,
            summaries,
            health,
            shutdown,
        })
    }

    /// Port of the webhook listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Port of the admin listener.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves until the shutdown token is cancelled, then drains: `/readyz`
    /// turns 503, the listener stops accepting after `CORRAL_DRAIN_DELAY_MS`,
    /// requests in flight finish (their confirms awaited, bounded by
    /// `CORRAL_SHUTDOWN_TIMEOUT_MS`), and the broker connection closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            config,
            server,
            admin,
            buffer,
            supervisor,
            summaries,
            health,
            shutdown,
            ..
        } = self;
        let server_handle = server.handle();
        let admin_handle = admin.handle();
        let serving = tokio::spawn(server);
        let admin_serving = tokio::spawn(admin);

        shutdown.cancelled().await;
        health.start_draining();
        tracing::info!("draining: /readyz answers 503");
        if config.drain_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(config.drain_delay_ms)).await;
        }
        // Graceful stop: no new connections, in-flight requests run to their answer.
        server_handle.stop(true).await;
        serving.await.context("webhook server task")??;
        let (summaries, stop_summaries) = summaries;
        drop(stop_summaries);
        let _ = summaries.await;
        buffer.primary().close(config.publish_timeout()).await;
        if let Some(spool) = buffer.spool() {
            spool.close(config.publish_timeout()).await;
        }
        let _ = supervisor.await;
        admin_handle.stop(true).await;
        admin_serving.await.context("admin server task")??;
        tracing::info!("corral-ingress stopped");
        Ok(())
    }
}

/// The buffer `CORRAL_BUFFER` names, starting in the background (it is not
/// ready until it reaches its service), and the task that keeps it there.
fn start_primary(
    config: &IngressConfig,
    health: &Health,
) -> anyhow::Result<(Primary, tokio::task::JoinHandle<()>)> {
    // Each has its own token, cancelled by its `close` once the HTTP server
    // has drained: during the drain it must still serve (a RabbitMQ link be
    // repaired), or every late webhook would get 503.
    let shutdown = CancellationToken::new();
    let publishing = Publishing {
        max_in_flight: config.max_in_flight,
        concurrency: usize::from(config.publish_concurrency),
        in_flight_wait: Duration::from_millis(config.in_flight_wait_ms),
        publish_timeout: config.publish_timeout(),
    };
    match config.buffer.kind {
        BufferKind::Rabbitmq => {
            let (buffer, supervisor) = RabbitMq::start(
                rabbitmq::Settings {
                    amqp: config.amqp.clone(),
                    channels: config.amqp_channels,
                    publishing,
                    batch_max: config.publish_batch_max as usize,
                    batch_max_bytes: config.messages.publish_batch_max_bytes as usize,
                },
                health.clone(),
                shutdown,
            );
            Ok((Primary::RabbitMq(buffer), supervisor))
        }
        BufferKind::Sqs => {
            let queue = corral_runtime::sqs::connect(&config.buffer)?;
            let fifo = corral_runtime::sqs::is_fifo(&queue.url);
            tracing::info!(
                queue = queue.url,
                max_message_bytes = config.sqs_max_message_bytes,
                linger_ms = config.sqs_linger_ms,
                fifo,
                "buffer: SQS"
            );
            let (buffer, watcher) = Sqs::start(
                queue,
                sqs::Settings {
                    publishing,
                    batch_max: config.publish_batch_max as usize,
                    max_message_bytes: config.sqs_max_message_bytes as usize,
                    linger: Duration::from_millis(config.sqs_linger_ms),
                    fifo_groups: fifo.then_some(config.sqs_fifo_groups),
                },
                health.clone(),
                shutdown,
            );
            Ok((Primary::Sqs(buffer), watcher))
        }
    }
}

/// The spool, when `CORRAL_SPOOL_DATABASE_URL` is set; connects lazily.
fn start_spool(config: &IngressConfig, health: &Health) -> anyhow::Result<Option<Spool>> {
    use corral_runtime::postgres;
    let Some(url) = &config.spool_database_url else {
        tracing::warn!(
            "NO SPOOL (CORRAL_SPOOL_DATABASE_URL is unset): every webhook RabbitMQ does not \
             confirm gets 503, and Drop Cowboy documents no retry, so during a broker outage \
             delivery statuses are lost. Set it to keep them in PostgreSQL instead."
        );
        return Ok(None);
    };
    let timeout = config.publish_timeout();
    let target = postgres::Target::named(
        url,
        config.spool_database_ca_file.as_deref(),
        timeout,
        postgres::SPOOL,
    )?;
    // A 200 from the spool means committed: the pool commits with
    // `synchronous_commit` on, whatever the server's or the role's default.
    let connections = config.spool_connections;
    let pool = postgres::pool(&target, u32::from(connections), "corral-ingress")?;
    tracing::info!(
        connections,
        spool_after_ms = config.spool_after_ms,
        tls = target.uses_tls(),
        "spool enabled: webhooks RabbitMQ does not take go to PostgreSQL"
    );
    Ok(Some(Spool::start(
        pool,
        spool::Settings {
            connections: usize::from(connections),
            timeout,
        },
        health.clone(),
    )))
}

/// `CORRAL_HTTP_WORKERS`, where 0 means one per CPU.
fn http_workers(config: &IngressConfig) -> usize {
    match config.http_workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

/// Binds the public listener with the webhook routes; returns the server, the
/// port it got and its worker count.
///
/// Built from actix-server and actix-http rather than `HttpServer`, whose
/// listener hands actix-http the bare `TcpStream`: each stream is wrapped in a
/// [`connection::Guarded`] first, which holds every request head (not only the
/// first) to `CORRAL_HEADER_TIMEOUT_MS`.
fn webhook_server<B: Buffer + std::fmt::Debug>(
    config: &IngressConfig,
    state: WebhookState<B>,
) -> anyhow::Result<(Server, u16, usize)> {
    let state = web::Data::new(state);
    let workers = http_workers(config);
    let deadlines = connection::Deadlines {
        header: config.header_timeout(),
        keep_alive: config.keep_alive(),
    };
    let keep_alive = config
        .keep_alive()
        .map_or(KeepAlive::Disabled, KeepAlive::Timeout);
    // actix counts connections per worker.
    let per_worker = (config.max_connections as usize).div_ceil(workers);
    let builder = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout_ms.div_ceil(1000).max(1));
    let draining = builder.graceful_shutdown_signal();
    let listener = connection::listen(&config.listen)
        .with_context(|| format!("binding the webhook listener on {}", config.listen))?;
    let port = listener.local_addr()?.port();
    let server = builder
        .listen("corral-webhooks", listener, move || {
            let state = state.clone();
            let draining = draining.clone();
            let app = App::new()
                .app_data(state)
                .configure(webhook::routes::<B>)
                .default_service(web::to(webhook::not_found))
                .wrap_fn(connection::track);
            let http = HttpService::build()
                .keep_alive(keep_alive)
                // Every head, the first included, is bounded by `Guarded`.
                .client_request_timeout(Duration::ZERO)
                .client_disconnect_timeout(Duration::from_secs(1))
                // Tells idle keep-alive connections to close at a graceful stop.
                .graceful_shutdown_signal(move || {
                    let draining = draining.clone();
                    async move { draining.notified().await }
                })
                .on_connect_ext(|io: &connection::Guarded<TcpStream>, ext| {
                    ext.insert(io.clock());
                })
                .h1(map_config(
                    app.into_factory().map_err(|err| err.error_response()),
                    // Only `HttpRequest::connection_info` and `url_for` read
                    // it, and the webhook routes use neither.
                    |_| AppConfig::default(),
                ));
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok::<_, DispatchError>((
                    connection::Guarded::new(io, deadlines),
                    peer,
                )))
            })
            .and_then(http)
        })
        .context("starting the webhook listener")?
        .run();
    Ok((server, port, workers))
}
