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

/// Which database a stack has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Database {
    None,
    /// Empty: the worker migrates it when it starts.
    Fresh,
    /// Migrated before anything starts (for a spool role, or rows a test
    /// writes before the worker runs).
    Migrated,
}

/// What a test asks its stack for; [`StackBuilder::start`] makes it.
#[must_use = "a builder does nothing until `start`"]
pub struct StackBuilder {
    database: Database,
    spool: bool,
    #[cfg(feature = "sqs")]
    sqs: Option<crate::sqs::QueueOptions>,
    sqs_proxy: Option<Via>,
    amqp_proxy: Option<Via>,
    db_proxy: bool,
    ingress: Vec<IngressSettings>,
    worker: Vec<WorkerSettings>,
    start_ingress: bool,
    start_worker: bool,
}

impl StackBuilder {
    /// A database of the test's own, empty (the worker migrates it).
    pub fn database(mut self) -> Self {
        self.database = self.database.max(Database::Fresh);
        self
    }

    /// A database of the test's own, migrated before anything starts.
    pub fn migrated(mut self) -> Self {
        self.database = Database::Migrated;
        self
    }

    /// Ingress spools to the (migrated) database as a spool role of the
    /// test's own.
    pub fn spool(mut self) -> Self {
        self.spool = true;
        self.migrated()
    }

    /// SQS as the buffer of both services: a queue (and dead-letter queue) of
    /// the test's own on the local moto server.
    #[cfg(feature = "sqs")]
    pub fn sqs(self) -> Self {
        self.sqs_with(crate::sqs::QueueOptions::default())
    }

    /// The same, the queue made with `options`.
    #[cfg(feature = "sqs")]
    pub fn sqs_with(mut self, options: crate::sqs::QueueOptions) -> Self {
        self.sqs = Some(options);
        self
    }

    /// The services `via` reach SQS (the default queue unless asked
    /// otherwise) through a proxy the test controls.
    #[cfg(feature = "sqs")]
    pub fn sqs_proxy(mut self, via: Via) -> Self {
        self.sqs_proxy = Some(via);
        match self.sqs {
            Some(_) => self,
            None => self.sqs(),
        }
    }

    /// The services `via` reach RabbitMQ through a proxy the test controls.
    pub fn amqp_proxy(mut self, via: Via) -> Self {
        self.amqp_proxy = Some(via);
        self
    }

    /// The worker reaches PostgreSQL through a proxy the test controls.
    pub fn db_proxy(mut self) -> Self {
        self.db_proxy = true;
        self.database()
    }

    /// An ingress starts with the stack.
    pub fn with_ingress(mut self) -> Self {
        self.start_ingress = true;
        self
    }

    /// `settings` for every ingress of this stack (after those given
    /// before), and one starts with the stack.
    pub fn ingress(self, settings: impl Fn(&mut IngressConfig) + Send + Sync + 'static) -> Self {
        self.ingress_settings(settings).with_ingress()
    }

    /// `settings` for every ingress of this stack, after those given before.
    pub fn ingress_settings(
        mut self,
        settings: impl Fn(&mut IngressConfig) + Send + Sync + 'static,
    ) -> Self {
        self.ingress.push(Arc::new(settings));
        self
    }

    /// A worker starts with the stack.
    pub fn with_worker(mut self) -> Self {
        self.start_worker = true;
        self.database()
    }

    /// `settings` for every worker of this stack (after those given before),
    /// and one starts with the stack.
    pub fn worker(self, settings: impl Fn(&mut WorkerConfig) + Send + Sync + 'static) -> Self {
        self.worker_settings(settings).with_worker()
    }

    /// `settings` for every worker of this stack, after those given before.
    pub fn worker_settings(
        mut self,
        settings: impl Fn(&mut WorkerConfig) + Send + Sync + 'static,
    ) -> Self {
        self.worker.push(Arc::new(settings));
        self.database()
    }

    /// A stack on SQS has no AMQP prefix of its own, as its services use
    /// none (with the placeholder prefix the SQS suites always gave them).
    fn needs_broker(&self) -> bool {
        #[cfg(feature = "sqs")]
        if self.sqs.is_some() {
            return false;
        }
        true
    }

    /// Makes the resources, then starts the services asked for (the worker
    /// first, so an ingress's first webhooks find a consumer), each waited
    /// on until ready.
    pub async fn start(self) -> Stack {
        crate::init_test_logging();
        let db = match self.database {
            Database::None => None,
            Database::Fresh => Some(TestDatabase::new().await),
            Database::Migrated => Some(TestDatabase::migrated().await),
        };
        let writer = match (&db, self.spool) {
            (Some(db), true) => Some(db.spool_writer().await),
            _ => None,
        };
        let mut stack = Stack {
            ingress: None,
            worker: None,
            amqp_proxy: match self.amqp_proxy {
                Some(via) => Some((TcpProxy::rabbitmq().await, via)),
                None => None,
            },
            db_proxy: match self.db_proxy {
                true => Some(TcpProxy::postgres().await),
                false => None,
            },
            sqs_proxy: match self.sqs_proxy {
                Some(via) => Some((TcpProxy::sqs().await, via)),
                None => None,
            },
            #[cfg(feature = "sqs")]
            queue: match self.sqs {
                Some(options) => Some(crate::sqs::TestQueue::with(options).await),
                None => None,
            },
            writer,
            db,
            broker: match self.needs_broker() {
                true => Some(TestBroker::new().await),
                false => None,
            },
            ingress_settings: self.ingress,
            worker_settings: self.worker,
        };
        if self.start_worker {
            stack.start_worker().await;
        }
        if self.start_ingress {
            stack.start_ingress().await;
        }
        stack
    }
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("database", &self.database)
            .field("spool", &self.spool)
            .field("amqp_proxy", &self.amqp_proxy)
            .field("db_proxy", &self.db_proxy)
            .field("start_ingress", &self.start_ingress)
            .field("start_worker", &self.start_worker)
            .finish_non_exhaustive()
    }
}

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
    /// A builder for a stack with nothing but a broker prefix.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            database: Database::None,
            spool: false,
            #[cfg(feature = "sqs")]
            sqs: None,
            sqs_proxy: None,
            amqp_proxy: None,
            db_proxy: false,
            ingress: Vec::new(),
            worker: Vec::new(),
            start_ingress: false,
            start_worker: false,
        }
    }

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
    ) -> corral_shared::config::BufferSettings {
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
