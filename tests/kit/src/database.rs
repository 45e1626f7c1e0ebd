//! A fresh PostgreSQL database for one test, migrated, dropped afterwards:
//! on the shared server, or on a test's own ([`Server`]).

use tokio_postgres::{Client, NoTls};

/// The maintenance URL the harness creates and drops databases through.
pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Where a test's databases are: the shared server (trust, user
/// `postgres`), or servers of the test's own, named as libpq names several
/// hosts (`127.0.0.1:5433,127.0.0.1:5434`) with the URL parameters to reach
/// them (`?target_session_attrs=read-write`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    hosts: String,
    query: String,
}

impl Server {
    /// The shared server on 5432.
    pub fn shared() -> Self {
        Self::new("127.0.0.1:5432", "")
    }

    /// `hosts` (`host:port`, comma-separated), reached with URL parameters
    /// `query` (empty, or starting with `?`).
    pub fn new(hosts: &str, query: &str) -> Self {
        Self {
            hosts: hosts.to_owned(),
            query: query.to_owned(),
        }
    }

    /// The URL of database `dbname` for login role `user`.
    pub fn url(&self, user: &str, dbname: &str) -> String {
        format!("postgres://{user}@{}/{dbname}{}", self.hosts, self.query)
    }

    fn admin_url(&self) -> String {
        self.url("postgres", "postgres")
    }
}

/// A database of one test's own. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    /// Database name.
    pub name: String,
    /// URL to give the worker.
    pub url: String,
    server: Server,
}

impl TestDatabase {
    /// Creates an empty database (the worker migrates it when it starts).
    pub async fn new() -> Self {
        Self::new_on(Server::shared()).await
    }

    /// The same, on `server`.
    pub async fn new_on(server: Server) -> Self {
        let name = crate::unique_name("test").replace('-', "_");
        let admin = connect(&server.admin_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("creating the test database");
        let url = server.url("postgres", &name);
        Self { name, url, server }
    }

    /// Creates the database and applies corral's migrations to it.
    #[cfg(feature = "apps")]
    pub async fn migrated() -> Self {
        Self::migrated_on(Server::shared()).await
    }

    /// The same, on `server`.
    #[cfg(feature = "apps")]
    pub async fn migrated_on(server: Server) -> Self {
        let db = Self::new_on(server).await;
        let target =
            corral_worker::db::Target::new(&db.url, None, std::time::Duration::from_secs(10))
                .expect("the test database URL");
        corral_worker::db::migrate(&target)
            .await
            .expect("migrating the test database");
        db
    }

    /// A login role of this test's own that may do what ingress's spool role
    /// may (a member of `corral_spool_writer`, created by the migrations, so
    /// the database must be migrated first), and the URL ingress spools to
    /// with it. Dropping it drops the role.
    pub async fn spool_writer(&self) -> SpoolWriter {
        let role = format!("{}_spool", self.name);
        connect(&self.server.admin_url())
            .await
            .batch_execute(&format!(
                "CREATE ROLE \"{role}\" LOGIN IN ROLE corral_spool_writer"
            ))
            .await
            .expect("creating the test's spool role (is the database migrated?)");
        let url = self.server.url(&role, &self.name);
        SpoolWriter {
            role,
            url,
            server: self.server.clone(),
        }
    }

    /// A client on this database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

/// Connects (panicking with a hint if PostgreSQL is not there).
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!("the test suite needs PostgreSQL at {url} (scripts/services): {err}")
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A login role for ingress's spool, of one test's own.
#[derive(Debug)]
pub struct SpoolWriter {
    /// The role's name.
    pub role: String,
    /// `CORRAL_SPOOL_DATABASE_URL` for it.
    pub url: String,
    server: Server,
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let role = self.role.clone();
        let admin_url = self.server.admin_url();
        crate::block_on_cleanup(async move {
            let admin = connect(&admin_url).await;
            // Its sessions first: a role still logged in cannot be dropped
            // cleanly by a later test run.
            let _ = admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    &[&role],
                )
                .await;
            let _ = admin
                .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
                .await;
        });
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.server.admin_url();
        crate::block_on_cleanup(async move {
            let admin = connect(&admin_url).await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        });
    }
}
