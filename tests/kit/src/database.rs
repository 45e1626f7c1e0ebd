//! A fresh PostgreSQL database for one test, migrated, dropped afterwards.

use tokio_postgres::{Client, NoTls};

/// The maintenance URL the harness creates and drops databases through.
pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of one test's own. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    /// Database name.
    pub name: String,
    /// URL to give the worker.
    pub url: String,
}

impl TestDatabase {
    /// Creates an empty database (the worker migrates it when it starts).
    pub async fn new() -> Self {
        let name = crate::unique_name("test").replace('-', "_");
        let admin = connect(SERVER_URL).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("creating the test database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        Self { name, url }
    }

    /// Creates the database and applies corral's migrations to it.
    #[cfg(feature = "apps")]
    pub async fn migrated() -> Self {
        let db = Self::new().await;
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
        connect(SERVER_URL)
            .await
            .batch_execute(&format!(
                "CREATE ROLE \"{role}\" LOGIN IN ROLE corral_spool_writer"
            ))
            .await
            .expect("creating the test's spool role (is the database migrated?)");
        let url = format!("postgres://{role}@127.0.0.1:5432/{}", self.name);
        SpoolWriter { role, url }
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
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let role = self.role.clone();
        crate::block_on_cleanup(async move {
            let admin = connect(SERVER_URL).await;
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
        crate::block_on_cleanup(async move {
            let admin = connect(SERVER_URL).await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        });
    }
}
