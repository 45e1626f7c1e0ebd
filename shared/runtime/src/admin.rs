//! The admin listener both binaries run beside their work: `GET /metrics`,
//! `GET /healthz` (the process is alive) and `GET /readyz` (connected to
//! everything it needs and not draining).

use std::{
    net::TcpListener,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use actix_web::{App, HttpResponse, HttpServer, dev::Server, http::header, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::telemetry::metrics;

/// Readiness as the rest of the process reports it; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Health(Arc<HealthInner>);

#[derive(Debug)]
struct HealthInner {
    /// Whether readiness depends on the database (the worker) or not (ingress).
    needs_database: bool,
    /// Whether a PostgreSQL spool is configured (ingress only): then
    /// ingress is ready while either it or the broker works.
    has_spool: AtomicBool,
    /// Connected to RabbitMQ with the topology declared.
    broker: AtomicBool,
    /// The spool's last write or check succeeded.
    spool: AtomicBool,
    /// The first attempt to connect to the broker has ended, either way.
    broker_tried: AtomicBool,
    /// The last database operation succeeded.
    database: AtomicBool,
    /// Shutting down: stop sending traffic here, whatever else is true.
    draining: AtomicBool,
    /// How many signing secrets ingress loaded; `None` for the worker.
    signing_secrets: OnceLock<usize>,
}

/// The body of `/readyz`, so an operator sees which dependency is missing.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Overall answer.
    pub ready: bool,
    /// Broker link state.
    pub broker: bool,
    /// Database state; absent for a binary that does not use one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<bool>,
    /// The PostgreSQL spool's state; absent when none is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<bool>,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// How many signing secrets ingress verifies signed webhooks with (never
    /// which); absent for the worker. Zero does not make ingress unready:
    /// its callback routes still work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secrets: Option<usize>,
}

impl Health {
    /// Health of a binary; `needs_database` for the worker.
    pub fn new(needs_database: bool) -> Self {
        Self(Arc::new(HealthInner {
            needs_database,
            has_spool: AtomicBool::new(false),
            broker: AtomicBool::new(false),
            spool: AtomicBool::new(false),
            broker_tried: AtomicBool::new(false),
            database: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            signing_secrets: OnceLock::new(),
        }))
    }

    /// Records how many signing secrets ingress loaded, for `/readyz`.
    pub fn set_signing_secrets(&self, count: usize) {
        let _ = self.0.signing_secrets.set(count);
    }

    /// Records the broker link state.
    pub fn set_broker(&self, connected: bool) {
        if self.0.broker.swap(connected, Ordering::SeqCst) != connected {
            metrics::broker_connected(connected);
            self.publish();
        }
    }

    /// Records the database state.
    pub fn set_database(&self, connected: bool) {
        if self.0.database.swap(connected, Ordering::SeqCst) != connected {
            metrics::database_connected(connected);
            self.publish();
        }
    }

    /// Says a spool is configured: from now on ingress is ready while the
    /// broker *or* the spool works.
    pub fn enable_spool(&self) {
        self.0.has_spool.store(true, Ordering::SeqCst);
        metrics::register_spool();
        self.publish();
    }

    /// Records that an attempt to connect to the broker ended (connected or
    /// not). Until the first has, the spool alone does not make ingress
    /// ready: a starting pod would otherwise take its first traffic before
    /// its broker link is up, and spool all of it.
    pub fn broker_attempted(&self) {
        if !self.0.broker_tried.swap(true, Ordering::SeqCst) {
            self.publish();
        }
    }

    /// Records the spool's state.
    pub fn set_spool(&self, connected: bool) {
        if self.0.spool.swap(connected, Ordering::SeqCst) != connected {
            metrics::ingress_spool_connected(connected);
            self.publish();
        }
    }

    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        self.publish();
    }

    /// Whether the broker link is up.
    pub fn broker(&self) -> bool {
        self.0.broker.load(Ordering::SeqCst)
    }

    /// Whether the spool's last write or check succeeded.
    pub fn spool(&self) -> bool {
        self.0.spool.load(Ordering::SeqCst)
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// The current readiness.
    pub fn readiness(&self) -> Readiness {
        let broker = self.broker();
        let database = self
            .0
            .needs_database
            .then(|| self.0.database.load(Ordering::SeqCst));
        let spool = self
            .0
            .has_spool
            .load(Ordering::SeqCst)
            .then(|| self.0.spool.load(Ordering::SeqCst));
        let draining = self.draining();
        // A webhook is kept while either durable path takes it; the spool
        // alone only once the broker had its first chance.
        let buffered =
            broker || (spool.unwrap_or(false) && self.0.broker_tried.load(Ordering::SeqCst));
        Readiness {
            ready: buffered && database.unwrap_or(true) && !draining,
            broker,
            database,
            spool,
            draining,
            signing_secrets: self.0.signing_secrets.get().copied(),
        }
    }

    fn publish(&self) {
        metrics::ready(self.readiness().ready);
    }
}

/// Binds the admin listener (port 0 picks a free port) and returns the server
/// with the port it got. The caller awaits the server and stops it through
/// its handle; signals are the application's business, not actix's.
pub fn bind(
    listen: &str,
    health: Health,
    prometheus: PrometheusHandle,
) -> std::io::Result<(Server, u16)> {
    let listener = TcpListener::bind(listen)?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(health.clone()))
            .app_data(web::Data::new(prometheus.clone()))
            .route("/metrics", web::get().to(render_metrics))
            .route(
                "/healthz",
                web::get()
                    .to(|| async { HttpResponse::Ok().json(serde_json::json!({"alive": true})) }),
            )
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((server, port))
}

async fn render_metrics(prometheus: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(prometheus.render())
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let readiness = health.readiness();
    if readiness.ready {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_spool_ingress_is_ready_on_either_path_once_the_broker_had_its_first_chance() {
        let health = Health::new(false);
        health.enable_spool();
        health.set_spool(true);
        assert!(
            !health.readiness().ready,
            "ready on the spool before the broker's first connect attempt ended"
        );
        health.broker_attempted();
        assert!(health.readiness().ready, "the spool alone keeps webhooks");
        health.set_spool(false);
        assert!(!health.readiness().ready, "neither path works");
        health.set_broker(true);
        assert_eq!(
            health.readiness(),
            Readiness {
                ready: true,
                broker: true,
                database: None,
                spool: Some(false),
                draining: false,
                signing_secrets: None,
            }
        );
        health.set_signing_secrets(2);
        let body = serde_json::to_value(health.readiness()).expect("serializes");
        assert_eq!(body["signing_secrets"], 2);
        health.start_draining();
        assert!(!health.readiness().ready);
    }

    #[test]
    fn without_a_spool_readiness_is_the_broker_and_says_nothing_of_a_spool() {
        let health = Health::new(false);
        health.broker_attempted();
        health.set_spool(true);
        assert!(!health.readiness().ready);
        assert_eq!(health.readiness().spool, None);
        health.set_broker(true);
        assert!(health.readiness().ready);
    }
}
