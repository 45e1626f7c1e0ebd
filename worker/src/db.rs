//! PostgreSQL: the pool, database creation and migrations.
//!
//! The pool verifies each connection before handing it out (so a restarted
//! PostgreSQL costs one failed check, not a failed batch), and every wait on
//! it (checkout, connect, recycle check, statement) has a deadline.
//!
//! A COMMIT is acknowledged only once PostgreSQL confirmed it as durable as
//! the server is configured to make it, synchronous standbys included: the
//! pool's sessions run with `synchronous_commit` on whatever the role's or
//! database's default, the wait has no deadline on the server, a cancelled
//! wait fails the COMMIT here (`drive_pooled`), and a transaction that wrote
//! nothing still waits (`commit`).

use std::time::Duration;

use anyhow::Context as _;
pub use corral_runtime::postgres::Target;
use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

/// The database's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DbSettings {
    /// PostgreSQL connection URL. The database is created at start if it does not exist.
    #[arg(
        long,
        env = "CORRAL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/corral",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// PEM file of the CA certificate(s) that signed PostgreSQL's certificate, for
    /// `sslmode=require` in the URL (TLS, with certificate and host name verified);
    /// without it the system's roots are used.
    #[arg(long, env = "CORRAL_DATABASE_CA_FILE", global = true)]
    pub database_ca_file: Option<std::path::PathBuf>,

    /// Database connections in the pool.
    #[arg(long, env = "CORRAL_DB_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub db_pool_size: u32,

    /// Deadline for each database wait (pool checkout, connect, each statement), in milliseconds.
    #[arg(long, env = "CORRAL_DB_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub db_timeout_ms: u64,

    /// Longest pause between retries of a batch the database refused for a
    /// transient reason, in milliseconds (starts at 100 ms, doubles, jittered).
    #[arg(long, env = "CORRAL_DB_RETRY_MAX_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub db_retry_max_ms: u64,
}

impl DbSettings {
    /// The database to connect to: URL, TLS and deadline (reads the CA file).
    pub fn target(&self) -> anyhow::Result<Target> {
        Target::new(
            &self.database_url,
            self.database_ca_file.as_deref(),
            self.timeout(),
        )
    }

    /// Per-wait database deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// Cap of the backoff after a transient failure.
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.db_retry_max_ms)
    }

    /// Checks the URL parses (and names one host, or several with
    /// `target_session_attrs=read-write`); why not, for the operator.
    pub fn check(&self) -> Result<(), String> {
        use corral_runtime::postgres::{DATABASE, check_hosts};
        self.database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|err| {
                let mut reason = err.to_string();
                if let Some(source) = std::error::Error::source(&err) {
                    reason = format!("{reason}: {source}");
                }
                // libpq's verifying modes: what `require` already does here.
                if self.database_url.contains("sslmode=verify-") {
                    reason.push_str(
                        " (use sslmode=require: corral always verifies the server's \
                         certificate and host name)",
                    );
                }
                reason
            })
            .and_then(|config| check_hosts(&config, DATABASE))
    }
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant naming the advisory lock migrations run under, so
/// several workers starting at once apply them one after another.
const MIGRATION_LOCK: i64 = 0x636f_7272_616c; // "corral"

/// Builds the worker's pool (connections made lazily).
pub fn pool(target: &Target, size: u32) -> anyhow::Result<Pool> {
    corral_runtime::postgres::pool(target, size, "corral-worker")
}

/// Commits a batch's transaction. A transaction that wrote nothing (every
/// message a duplicate) would commit without waiting for the synchronous
/// standbys, so its acknowledgement could come before the rows it found
/// (committed by an earlier attempt whose wait was cut short) reached them.
/// It first writes a small transactional WAL record (a logical decoding
/// message, prefix `corral`), so its COMMIT waits like any other, and WAL
/// replicated up to it holds those rows too. `wrote`: whether the
/// transaction inserted, updated or deleted any row.
///
/// Before committing it checks that the schema is not newer than this
/// worker's migrations ([`is_newer_schema`]): a worker left running while a
/// newer release migrated the database would store rows the new schema's
/// backfills never see.
pub async fn commit(
    tx: deadpool_postgres::Transaction<'_>,
    wrote: bool,
) -> Result<(), tokio_postgres::Error> {
    let statements = &*COMMIT_CHECKS;
    tx.batch_execute(if wrote {
        &statements.check
    } else {
        &statements.check_and_mark
    })
    .await?;
    tx.commit().await
}

/// The database holds migrations newer than this worker's: a newer release
/// migrated it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database schema is at V{found}, newer than this corral-worker knows (V{known}): \
     a newer release migrated it; stop this worker and run the new version"
)]
pub struct NewerSchema {
    /// The newest migration applied.
    pub found: i64,
    /// The newest this worker carries.
    pub known: i64,
}

async fn refuse_newer(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let history: Option<String> = client
        .query_one("SELECT to_regclass('refinery_schema_history')::text", &[])
        .await?
        .get(0);
    if history.is_none() {
        return Ok(());
    }
    let found: Option<i64> = client
        .query_one(
            "SELECT max(version)::bigint FROM refinery_schema_history",
            &[],
        )
        .await?
        .get(0);
    let known = known_schema();
    match found {
        Some(found) if found > known => Err(NewerSchema { found, known }.into()),
        _ => Ok(()),
    }
}

/// Ends the process when the schema is newer than this worker ([`commit`]'s
/// check, or [`migrate`] at start): nothing is committed or acknowledged, so
/// what the worker holds is redelivered to the others when its connections
/// close, and retrying could only hold those messages back.
pub fn stop_on_newer_schema(error: &str) -> ! {
    tracing::error!(
        error,
        "stopping: the database schema is newer than this worker"
    );
    std::process::exit(1)
}

/// SQLSTATE of [`commit`]'s schema check (a class of corral's own, so it is
/// never taken for a data error and the batch never for poison).
const NEWER_SCHEMA: &str = "CRL01";

/// Whether `err` is [`commit`] finding the schema newer than this worker
/// knows: nothing was committed, and retrying cannot help.
pub fn is_newer_schema(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| code.code() == NEWER_SCHEMA)
}

/// The newest migration this worker carries.
pub fn known_schema() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| i64::from(migration.version()))
        .max()
        .unwrap_or(0)
}

struct CommitChecks {
    check: String,
    check_and_mark: String,
}

/// One round trip before each COMMIT: the version check (a `DO` block, as a
/// check needs no function in the schema it checks), with the WAL record of
/// a transaction that wrote nothing.
static COMMIT_CHECKS: std::sync::LazyLock<CommitChecks> = std::sync::LazyLock::new(|| {
    let known = known_schema();
    let check = format!(
        "DO $$ DECLARE newest bigint; BEGIN \
         SELECT max(version) INTO newest FROM refinery_schema_history; \
         IF newest > {known} THEN RAISE EXCEPTION \
         'the database schema is at V%, newer than this corral-worker knows (V{known})', newest \
         USING ERRCODE = '{NEWER_SCHEMA}', HINT = 'a newer release migrated the database: \
         stop this worker and run the new version'; END IF; END $$"
    );
    CommitChecks {
        check_and_mark: format!("{check}; SELECT pg_logical_emit_message(true, 'corral', '')"),
        check,
    }
});

/// Creates the database named in the target if it does not exist, by
/// connecting to the `postgres` maintenance database of the same server.
pub async fn create_database_if_missing(target: &Target) -> anyhow::Result<()> {
    let name = target.dbname().unwrap_or("postgres").to_owned();
    match target.connect().await {
        Ok(_) => return Ok(()),
        Err(err) if err.code() != Some(&SqlState::INVALID_CATALOG_NAME) => {
            return Err(err).with_context(|| format!("connecting to database {name:?}"));
        }
        Err(_) => {}
    }
    let client = target
        .with_dbname("postgres")
        .connect()
        .await
        .context("connecting to the `postgres` database to create ours")?;
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
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

/// `name` as an SQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies pending migrations under an advisory lock; returns how many ran.
pub async fn migrate(target: &Target) -> anyhow::Result<usize> {
    migrate_to(target, None).await
}

/// Applies the migrations up to `version` (all with `None`) as [`migrate`]
/// does: tests make the schema a previous release left, to migrate from it.
pub async fn migrate_to(target: &Target, version: Option<i32>) -> anyhow::Result<usize> {
    let with_v7 = version.is_none_or(|version| version >= 7);
    let version = version.map_or(refinery::Target::Latest, refinery::Target::Version);
    create_database_if_missing(target).await?;
    let mut client = target
        .connect()
        .await
        .context("connecting to run migrations")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("taking the migration lock")?;
    let report = async {
        refuse_newer(&client).await?;
        if with_v7 {
            crate::lifecycle::prepare::before_v7(&client)
                .await
                .context("preparing migration V7")?;
        }
        embedded::migrations::runner()
            .set_grouped(true)
            .set_target(version)
            .run_async(&mut client)
            .await
            .context("applying migrations")
    }
    .await;
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

/// A backlog table's depth and its oldest row's age in seconds, as `query`
/// (given `exact_up_to`, the row count past which it may estimate) reads
/// them, bounded by `timeout`.
pub async fn backlog(
    pool: &Pool,
    query: &str,
    exact_up_to: f32,
    timeout: Duration,
) -> Result<(u64, f64), String> {
    let read = async {
        let client = pool.get().await?;
        anyhow::Ok(client.query_one(query, &[&exact_up_to]).await?)
    };
    let row = crate::periodic::within(timeout, read).await?;
    let depth: i64 = row.get(0);
    let oldest: f64 = row.get(1);
    Ok((u64::try_from(depth).unwrap_or(0), oldest.max(0.0)))
}
