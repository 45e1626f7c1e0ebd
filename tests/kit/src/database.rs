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
