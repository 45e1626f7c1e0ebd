//! PostgreSQL: the pool, database creation and migrations.
//!
//! The pool verifies each connection before handing it out (so a restarted
//! PostgreSQL costs one failed check, not a failed batch), and every wait on
//! it (checkout, connect, recycle check, statement) has a deadline.

use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, error::SqlState};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant naming the advisory lock migrations run under, so
/// several workers starting at once apply them one after another.
const MIGRATION_LOCK: i64 = 0x636f_7272_616c; // "corral"

/// Builds the pool. Connections are made lazily; nothing here touches the network.
pub fn pool(database_url: &str, size: u32, timeout: Duration) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = database_url
        .parse()
        .context("parsing CORRAL_DATABASE_URL")?;
    config.connect_timeout(timeout);
    // Notice a dead peer (a cut network) in under a minute, not two hours.
    config.keepalives_idle(Duration::from_secs(15));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("corral-worker");
    }
    // The server enforces the statement deadline too, so a query we gave up
    // on does not keep running and holding locks.
    let statement_timeout = format!("-c statement_timeout={}", timeout.as_millis());
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {statement_timeout}"),
        None => statement_timeout,
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(size as usize)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the database pool")
}

/// Creates the database named in `database_url` if it does not exist, by
/// connecting to the `postgres` maintenance database of the same server.
pub async fn create_database_if_missing(
    database_url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .context("parsing CORRAL_DATABASE_URL")?;
    let name = config.get_dbname().unwrap_or("postgres").to_owned();
    match connect(&config, timeout).await {
        Ok(_) => return Ok(()),
        Err(err) if err.code() != Some(&SqlState::INVALID_CATALOG_NAME) => {
            return Err(err).with_context(|| format!("connecting to database {name:?}"));
        }
        Err(_) => {}
    }
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance, timeout)
        .await
        .context("connecting to the `postgres` database to create ours")?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = name, "created the database");
            Ok(())
        }
        // Another worker created it first.
        Err(err) if err.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating database {name:?}")),
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = config.clone();
    config.connect_timeout(timeout);
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "maintenance connection ended");
        }
    });
    Ok(client)
}

/// Applies pending migrations under an advisory lock; returns how many ran.
pub async fn migrate(database_url: &str, timeout: Duration) -> anyhow::Result<usize> {
    create_database_if_missing(database_url, timeout).await?;
    let config: tokio_postgres::Config = database_url
        .parse()
        .context("parsing CORRAL_DATABASE_URL")?;
    let mut client = connect(&config, timeout)
        .await
        .context("connecting to run migrations")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("taking the migration lock")?;
    let report = embedded::migrations::runner()
        .set_grouped(true)
        .run_async(&mut client)
        .await
        .context("applying migrations");
    // The lock also goes with the session; unlock explicitly so a pooled
    // session could never keep it.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = report?.applied_migrations().len();
    if applied > 0 {
        tracing::info!(applied, "applied migrations");
    }
    Ok(applied)
}

/// Whether a database error is caused by the data of the batch (so splitting
/// the batch isolates the culprit) rather than by the server, the network,
/// permissions or the schema (so the batch is retried unchanged, never
/// quarantined: healthy webhooks must not be set aside for an outage).
pub fn is_data_error(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        matches!(
            &code.code()[..2],
            "22" // data exception: a value out of range, bad encoding, bad JSON
            | "23" // integrity constraint violation
            | "54" // program limit exceeded: a value too large
        )
    })
}
