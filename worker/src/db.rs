//! PostgreSQL: the pool, database creation and migrations.
//!
//! The pool verifies each connection before handing it out (so a restarted
//! PostgreSQL costs one failed check, not a failed batch), and every wait on
//! it (checkout, connect, recycle check, statement) has a deadline.
//!
//! A COMMIT is acknowledged only once PostgreSQL confirmed it as durable as
//! the server is configured to make it, synchronous standbys included: its
//! wait for them has no deadline on the server, a cancelled wait fails the
//! COMMIT here (`drive_pooled`), and a transaction that wrote nothing still
//! waits (`commit`).

use std::{future::Future, path::Path, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context as _;
use deadpool_postgres::{Connect, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinHandle,
};
use tokio_postgres::{
    AsyncMessage, Client, Connection, NoTls, Socket,
    config::SslMode,
    error::{DbError, SqlState},
    tls::{MakeTlsConnect, TlsConnect},
};
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
    // on does not keep running and holding locks. It never cuts a COMMIT's
    // wait for synchronous standbys short: PostgreSQL disarms the timer
    // before a statement's transaction commits (postgres.c,
    // finish_xact_command), so that wait is bounded only by the attempt's
    // deadline in `consume::write`, which gives up without acknowledging.
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
        None => Manager::from_connect(config, Connector { tls: NoTls }, manager_config),
        Some(tls) => Manager::from_connect(config, Connector { tls: tls.clone() }, manager_config),
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

/// A connection being opened for the pool: its client and the task driving it.
type Connecting<'a> = Pin<
    Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send + 'a>,
>;

/// Opens the pool's connections, each driven by [`drive_pooled`] on its own
/// task (tokio-postgres's own driver only logs the server's notices, through
/// `log` at `info`).
struct Connector<T> {
    tls: T,
}

impl<T> Connect for Connector<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(&self, config: &tokio_postgres::Config) -> Connecting<'_> {
        let tls = self.tls.clone();
        let config = config.clone();
        Box::pin(async move {
            let (client, connection) = config.connect(tls).await?;
            Ok((client, tokio::spawn(drive_pooled(connection))))
        })
    }
}

/// Drives a pooled connection and reads the server's notices.
///
/// PostgreSQL answers a COMMIT whose wait for synchronous standbys was
/// cancelled (`pg_cancel_backend`) with success and a WARNING: the
/// transaction is committed on the primary only, and a failover would lose
/// it. The WARNING arrives before the COMMIT's answer, so closing the
/// connection right here fails that COMMIT for the writer, which then keeps
/// its messages unacknowledged and retries; the retry finds the rows stored
/// and waits for the standbys before acknowledging (see [`commit`]).
async fn drive_pooled<S, T>(mut connection: Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notice(notice))) if replication_in_doubt(&notice) => {
                tracing::error!(
                    notice = notice.message(),
                    detail = notice.detail(),
                    "PostgreSQL cut a COMMIT's wait for the synchronous standbys short: \
                     closing the connection so the batch is not acknowledged (it is \
                     retried and acknowledged once the standbys have it)"
                );
                return;
            }
            Some(Ok(AsyncMessage::Notice(notice))) => log_notice(&notice),
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::warn!(
                    error = corral_shared::error_chain(&err),
                    "database connection failed"
                );
                return;
            }
            None => return,
        }
    }
}

/// Whether a notice says a commit is durable on the primary only. PostgreSQL
/// words it in the server's `lc_messages`; these are its English words
/// (syncrep.c), which the default C locale gives.
fn replication_in_doubt(notice: &DbError) -> bool {
    notice
        .message()
        .contains("wait for synchronous replication")
}

fn log_notice(notice: &DbError) {
    use tokio_postgres::error::Severity;
    match notice.parsed_severity() {
        Some(Severity::Warning) => tracing::warn!(
            notice = notice.message(),
            detail = notice.detail(),
            code = notice.code().code(),
            "PostgreSQL warning"
        ),
        _ => tracing::debug!(
            notice = notice.message(),
            severity = notice.severity(),
            "PostgreSQL notice"
        ),
    }
}

/// Commits a batch's transaction. A transaction that wrote nothing (every
/// message a duplicate) would commit without waiting for the synchronous
/// standbys, so its acknowledgement could come before the rows it found
/// (committed by an earlier attempt whose wait was cut short) reached them.
/// It first writes a small transactional WAL record (a logical decoding
/// message, prefix `corral`), so its COMMIT waits like any other, and WAL
/// replicated up to it holds those rows too. `wrote`: whether the
/// transaction inserted, updated or deleted any row.
pub async fn commit(
    tx: deadpool_postgres::Transaction<'_>,
    wrote: bool,
) -> Result<(), tokio_postgres::Error> {
    if !wrote {
        tx.batch_execute("SELECT pg_logical_emit_message(true, 'corral', '')")
            .await?;
    }
    tx.commit().await
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
