//! [`StackBuilder`]: what a test asks its stack for, and making it.

use std::sync::Arc;

use corral_ingress::config::IngressConfig;
use corral_worker::config::WorkerConfig;

use super::{IngressSettings, Stack, Via, WorkerSettings};
use crate::{
    broker::TestBroker,
    database::{Server, TestDatabase},
    proxy::TcpProxy,
};

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
    server: Server,
    broker: bool,
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

    /// The test's database (and spool role) on `server` instead of the
    /// shared one: a [`ReplicatedPostgres`](crate::replicated::ReplicatedPostgres)'s
    /// primary and standby, which the services then reach by a multi-host URL.
    pub fn on(mut self, server: Server) -> Self {
        self.server = server;
        self.database()
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

    /// An AMQP prefix of the test's own also on SQS, where the services
    /// use one only for result events.
    pub fn broker(mut self) -> Self {
        self.broker = true;
        self
    }

    /// A stack on SQS has no AMQP prefix of its own unless asked, as its
    /// services use none (with the placeholder prefix the SQS suites always
    /// gave them).
    fn needs_broker(&self) -> bool {
        #[cfg(feature = "sqs")]
        if self.sqs.is_some() {
            return self.broker;
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
            Database::Fresh => Some(TestDatabase::new_on(self.server.clone()).await),
            Database::Migrated => Some(TestDatabase::migrated_on(self.server.clone()).await),
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
            .field("server", &self.server)
            .field("spool", &self.spool)
            .field("amqp_proxy", &self.amqp_proxy)
            .field("db_proxy", &self.db_proxy)
            .field("start_ingress", &self.start_ingress)
            .field("start_worker", &self.start_worker)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// A builder for a stack with nothing but a broker prefix.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            database: Database::None,
            server: Server::shared(),
            broker: false,
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
}
