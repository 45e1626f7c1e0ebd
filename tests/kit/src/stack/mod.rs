//! One builder for what a test runs against, so a test states its scenario
//! (`Stack::builder().spool().amqp_proxy(Via::Ingress).worker(short_waits)`) and
//! not the plumbing: a private AMQP prefix always; a database, fresh or
//! migrated, when asked for or when a worker needs one; optionally ingress's
//! spool role, an SQS queue as the buffer, and proxies in front of RabbitMQ or
//! PostgreSQL; and the real ingress and worker, in-process, configured for
//! all of it plus the test's own settings.
//!
//! The settings given to the builder apply to every ingress or worker the
//! stack starts, also one a test starts or restarts later
//! ([`Stack::start_worker`]), so a restart is the same service again.

use std::sync::Arc;

use corral_ingress::config::IngressConfig;
use corral_worker::config::WorkerConfig;
use tokio_postgres::Client;

use crate::{
    apps::{RunningIngress, RunningWorker, TOKEN},
    broker::TestBroker,
    config,
    database::{SpoolWriter, TestDatabase},
    proxy::TcpProxy,
};

/// Settings a test lays over an ingress's defaults.
type IngressSettings = Arc<dyn Fn(&mut IngressConfig) + Send + Sync>;

/// Settings a test lays over a worker's defaults.
type WorkerSettings = Arc<dyn Fn(&mut WorkerConfig) + Send + Sync>;

/// Which services go through a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The ingress only.
    Ingress,
    /// The worker only.
    Worker,
    /// Both.
    Both,
}

impl Via {
    #[cfg(feature = "sqs")]
    fn includes(self, service: Via) -> bool {
        self == Via::Both || self == service
    }
}

/// The AMQP prefix of services on SQS, which declare nothing under it.
const UNUSED_PREFIX: &str = "corral-unused";

/// The database URL of a worker whose stack has no database.
const UNUSED_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/unused";

mod builder;

pub use builder::StackBuilder;

/// A test's resources and services. Fields drop in order: the services stop
/// before the proxies, queue, spool role and database they use go away, and
/// the spool role before its database.
pub struct Stack {
    ingress: Option<RunningIngress>,
    worker: Option<RunningWorker>,
    amqp_proxy: Option<(TcpProxy, Via)>,
    db_proxy: Option<TcpProxy>,
    sqs_proxy: Option<(TcpProxy, Via)>,
    #[cfg(feature = "sqs")]
    queue: Option<crate::sqs::TestQueue>,
    writer: Option<SpoolWriter>,
    db: Option<TestDatabase>,
    broker: Option<TestBroker>,
    ingress_settings: Vec<IngressSettings>,
    worker_settings: Vec<WorkerSettings>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("prefix", &self.prefix())
            .field("db", &self.db)
            .field("ingress", &self.ingress)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// The test's database.
    pub fn db(&self) -> &TestDatabase {
        self.db.as_ref().expect("a stack built with a database")
    }

    /// A new client on the test's database.
    pub async fn client(&self) -> Client {
        self.db().client().await
    }

    /// The test's AMQP prefix, and reading and publishing under it.
    pub fn broker(&self) -> &TestBroker {
        self.broker.as_ref().expect("a stack not on SQS")
    }

    /// The test's AMQP prefix (a placeholder on SQS).
    pub fn prefix(&self) -> &str {
        self.broker
            .as_ref()
            .map_or(UNUSED_PREFIX, |broker| broker.prefix())
    }

    /// The proxy in front of RabbitMQ.
    pub fn amqp_proxy(&self) -> &TcpProxy {
        self.amqp_proxy
            .as_ref()
            .map(|(proxy, _)| proxy)
            .expect("a stack built with `amqp_proxy`")
    }

    /// The proxy in front of PostgreSQL.
    pub fn db_proxy(&self) -> &TcpProxy {
        self.db_proxy
            .as_ref()
            .expect("a stack built with `db_proxy`")
    }

    /// The proxy in front of SQS.
    pub fn sqs_proxy(&self) -> &TcpProxy {
        self.sqs_proxy
            .as_ref()
            .map(|(proxy, _)| proxy)
            .expect("a stack built with `sqs_proxy`")
    }

    /// Ingress's spool role.
    pub fn writer(&self) -> &SpoolWriter {
        self.writer.as_ref().expect("a stack built with `spool`")
    }

    /// The test's SQS queue.
    #[cfg(feature = "sqs")]
    pub fn queue(&self) -> &crate::sqs::TestQueue {
        self.queue.as_ref().expect("a stack built with `sqs`")
    }

    /// The running ingress.
    pub fn ingress(&self) -> &RunningIngress {
        self.ingress.as_ref().expect("an ingress started")
    }

    /// The running worker.
    pub fn worker(&self) -> &RunningWorker {
        self.worker.as_ref().expect("a worker started")
    }

    /// The settings of this stack's ingresses: the test defaults, reaching the
    /// broker (through the proxy if any), spooling, or on SQS as built, and
    /// the test's own settings last.
    pub fn ingress_config(&self) -> IngressConfig {
        let mut config = config::ingress(self.prefix(), TOKEN);
        if let Some((proxy, Via::Ingress | Via::Both)) = &self.amqp_proxy {
            config.amqp.url = proxy.amqp_url();
        }
        if let Some(writer) = &self.writer {
            config.spool_database_url = Some(writer.url.clone());
        }
        #[cfg(feature = "sqs")]
        if let Some(queue) = &self.queue {
            config.buffer = self.buffer(queue, Via::Ingress);
        }
        for settings in &self.ingress_settings {
            settings(&mut config);
        }
        config
    }

    /// The settings of this stack's workers, likewise (naming a database
    /// that is not there when the stack has none, for a worker that must not
    /// reach it, or a command that never connects).
    pub fn worker_config(&self) -> WorkerConfig {
        let url = match (&self.db, &self.db_proxy) {
            (Some(db), Some(proxy)) => proxy.postgres_url(&db.name),
            (Some(db), None) => db.url.clone(),
            (None, _) => UNUSED_DATABASE_URL.to_owned(),
        };
        let mut config = config::worker(&url, self.prefix());
        if let Some((proxy, Via::Worker | Via::Both)) = &self.amqp_proxy {
            config.amqp.url = proxy.amqp_url();
        }
        #[cfg(feature = "sqs")]
        if let Some(queue) = &self.queue {
            config.buffer = self.buffer(queue, Via::Worker);
        }
        for settings in &self.worker_settings {
            settings(&mut config);
        }
        config
    }

    /// The buffer settings naming the test's queue for `service`, through
    /// the proxy if it goes through one.
    #[cfg(feature = "sqs")]
    fn buffer(
        &self,
        queue: &crate::sqs::TestQueue,
        service: Via,
    ) -> corral_runtime::config::BufferSettings {
        match &self.sqs_proxy {
            Some((proxy, via)) if via.includes(service) => {
                queue.settings_via(&format!("http://{}", proxy.addr()))
            }
            _ => queue.settings(),
        }
    }

    /// Starts an ingress (in place of any before it) and waits until it is
    /// ready and linked to its broker.
    pub async fn start_ingress(&mut self) -> &RunningIngress {
        self.start_ingress_with(|_| {}).await
    }

    /// The same, with `once` laid over the stack's settings for this
    /// ingress alone.
    pub async fn start_ingress_with(
        &mut self,
        once: impl FnOnce(&mut IngressConfig),
    ) -> &RunningIngress {
        let mut config = self.ingress_config();
        once(&mut config);
        self.ingress.insert(RunningIngress::start(config).await)
    }

    /// Starts an ingress without waiting for anything (its buffer may be
    /// unreachable).
    pub async fn start_ingress_unready(&mut self) -> &RunningIngress {
        let config = self.ingress_config();
        self.ingress
            .insert(RunningIngress::start_unready(config).await)
    }

    /// Starts a worker (in place of any before it) and waits until it is ready.
    pub async fn start_worker(&mut self) -> &RunningWorker {
        self.start_worker_with(|_| {}).await
    }

    /// The same, with `once` laid over the stack's settings for this worker
    /// alone.
    pub async fn start_worker_with(
        &mut self,
        once: impl FnOnce(&mut WorkerConfig),
    ) -> &RunningWorker {
        let mut config = self.worker_config();
        once(&mut config);
        self.worker.insert(RunningWorker::start(config).await)
    }

    /// Starts a worker without waiting for readiness.
    pub async fn start_worker_unready(&mut self) -> &RunningWorker {
        let config = self.worker_config();
        self.worker
            .insert(RunningWorker::start_unready(config).await)
    }

    /// Stops the ingress gracefully; its result.
    pub async fn stop_ingress(&mut self) -> anyhow::Result<()> {
        self.ingress
            .take()
            .expect("an ingress started")
            .stop()
            .await
    }

    /// Stops the worker gracefully; its result.
    pub async fn stop_worker(&mut self) -> anyhow::Result<()> {
        self.worker.take().expect("a worker started").stop().await
    }
}
