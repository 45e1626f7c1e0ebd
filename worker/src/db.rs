//! PostgreSQL: the pool, database creation and migrations.
//!
//! The pool verifies each connection before handing it out (so a restarted
//! PostgreSQL costs one failed check, not a failed batch), and every wait on
//! it (checkout, connect, recycle check, statement) has a deadline.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Connection, NoTls, config::SslMode, error::SqlState};
use tokio_postgres_rustls::MakeRustlsConnect;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant naming the advisory lock migrations run under, so
/// several workers starting at once apply them one after another.
const MIGRATION_LOCK: i64 = 0x636f_7272_616c; // "corral"

/// Where the worker's database is and how to reach it: the parsed URL, TLS and
/// the per-wait deadline. Built once; building it touches no network.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    timeout: Duration,
}

impl std::fmt::Debug for Target {
    // The URL's password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// TLS is used when the URL says `sslmode=require`, and then the server's
    /// certificate and host name are always verified (like libpq's
    /// `verify-full`; libpq's `require` would accept any certificate), against
    /// `ca_file` if given, else the system's roots. `sslmode=prefer`, the
    /// default, connects without TLS: a preference we cannot verify is no
    /// protection, and it keeps a local server's self-signed certificate
    /// working.
    pub fn new(
        database_url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = database_url
            .parse()
            .context("parsing CORRAL_DATABASE_URL")?;
        config.connect_timeout(timeout);
        let tls = match (config.get_ssl_mode(), ca_file) {
            (SslMode::Require, ca_file) => Some(tls_connector(ca_file)?),
            (_, Some(_)) => anyhow::bail!(
                "CORRAL_DATABASE_CA_FILE is set but CORRAL_DATABASE_URL does not ask for TLS: \
                 add sslmode=require to the URL (or unset the CA file)"
            ),
            (_, None) => None,
        };
        Ok(Self {
            config,
            tls,
            timeout,
        })
    }

    /// The deadline of each wait on the database.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether connections use (verified) TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The same server, another database.
    fn with_dbname(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other
    }

    /// One connection outside the pool, driven on its own task.
    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => drive(self.config.connect(NoTls).await?),
            Some(tls) => drive(self.config.connect(tls.clone()).await?),
        }
    }
}

fn drive<S, T>(
    (client, connection): (Client, Connection<S, T>),
) -> Result<Client, tokio_postgres::Error>
where
    Connection<S, T>:
        std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "maintenance connection ended");
        }
    });
    Ok(client)
}

fn tls_connector(ca_file: Option<&Path>) -> anyhow::Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bundle = corral_shared::config::read_ca_bundle(path)
                .with_context(|| format!("reading CORRAL_DATABASE_CA_FILE {}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(bundle.certificates);
            anyhow::ensure!(
                added > 0,
                "CORRAL_DATABASE_CA_FILE {} holds no usable PEM certificate",
                path.display()
            );
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            anyhow::ensure!(
                added > 0,
                "sslmode=require needs CA certificates to verify the server, and the system \
                 has none ({:?}): install ca-certificates or set CORRAL_DATABASE_CA_FILE",
                native.errors
            );
        }
    }
    // Explicit provider: lapin brings rustls with ring; never depend on which
    // process-wide default another crate might install.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Builds the pool. Connections are made lazily; nothing here touches the network.
pub fn pool(target: &Target, size: u32) -> anyhow::Result<Pool> {
    let mut config = target.config.clone();
    // Notice a dead peer (a cut network) in under a minute, not two hours.
    config.keepalives_idle(Duration::from_secs(15));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("corral-worker");
    }
    // The server enforces the statement deadline too, so a query we gave up
    // on does not keep running and holding locks.
    let statement_timeout = format!("-c statement_timeout={}", target.timeout.as_millis());
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {statement_timeout}"),
        None => statement_timeout,
    };
    config.options(&options);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Verified,
    };
    let manager = match &target.tls {
        None => Manager::from_config(config, NoTls, manager_config),
        Some(tls) => Manager::from_config(config, tls.clone(), manager_config),
    };
    let timeout = target.timeout;
    Pool::builder(manager)
        .max_size(size as usize)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the database pool")
}

/// Creates the database named in the target if it does not exist, by
/// connecting to the `postgres` maintenance database of the same server.
pub async fn create_database_if_missing(target: &Target) -> anyhow::Result<()> {
    let name = target.config.get_dbname().unwrap_or("postgres").to_owned();
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

/// Applies pending migrations under an advisory lock; returns how many ran.
pub async fn migrate(target: &Target) -> anyhow::Result<usize> {
    create_database_if_missing(target).await?;
    let mut client = target
        .connect()
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
