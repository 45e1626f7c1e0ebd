//! PostgreSQL connections, as both binaries make them: the worker's pool
//! and ingress's spool pool.
//!
//! The pool verifies each connection before handing it out (so a restarted
//! PostgreSQL costs one failed check, not a failed write), and every wait on
//! it (checkout, connect, recycle check, statement) has a deadline.
//!
//! A COMMIT whose wait for synchronous standbys was cut short is failed
//! here (`drive_pooled`), and every pooled connection commits with
//! `synchronous_commit` on, whatever the server's, database's or role's
//! default: the caller never acknowledges what a failover could lose.
//!
//! After a failover the pool finds the new primary: with several hosts and
//! `target_session_attrs=read-write` a new connection goes to the one that
//! accepts writes, and a pooled one that can no longer write is dropped at
//! checkout.

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
    error::DbError,
    tls::{MakeTlsConnect, TlsConnect},
};
use tokio_postgres_rustls::MakeRustlsConnect;

pub mod text;

/// The settings a [`Target`] was read from, named as the user set them, for
/// error messages.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// The URL's variable.
    pub url: &'static str,
    /// The CA file's variable.
    pub ca_file: &'static str,
}

/// The worker's database.
pub const DATABASE: Names = Names {
    url: "CORRAL_DATABASE_URL",
    ca_file: "CORRAL_DATABASE_CA_FILE",
};

/// Ingress's spool.
pub const SPOOL: Names = Names {
    url: "CORRAL_SPOOL_DATABASE_URL",
    ca_file: "CORRAL_SPOOL_DATABASE_CA_FILE",
};

/// Where a database is and how to reach it: the parsed URL, TLS and
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
        Self::named(database_url, ca_file, timeout, DATABASE)
    }

    /// As [`Target::new`], for settings named `names` (in errors).
    pub fn named(
        database_url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
        names: Names,
    ) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = database_url
            .parse()
            .with_context(|| format!("parsing {}", names.url))?;
        check_hosts(&config, names).map_err(anyhow::Error::msg)?;
        config.connect_timeout(timeout);
        let tls = match (config.get_ssl_mode(), ca_file) {
            (SslMode::Require, ca_file) => Some(tls_connector(ca_file, names)?),
            (_, Some(_)) => anyhow::bail!(
                "{} is set but {} does not ask for TLS: \
                 add sslmode=require to the URL (or unset the CA file)",
                names.ca_file,
                names.url
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

    /// How many hosts the URL names (tried in order for each new connection).
    pub fn hosts(&self) -> usize {
        host_count(&self.config)
    }

    /// The database's name.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other
    }

    /// One connection outside the pool, driven on its own task.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => drive(self.config.connect(NoTls).await?),
            Some(tls) => drive(self.config.connect(tls.clone()).await?),
        }
    }
}

/// Refuses a URL naming several hosts without `target_session_attrs=read-write`:
/// libpq's default (`any`) takes the first host that answers, a standby as
/// well as the primary, and every write there would fail until it restarts.
pub fn check_hosts(config: &tokio_postgres::Config, names: Names) -> Result<(), String> {
    use tokio_postgres::config::TargetSessionAttrs;
    let hosts = host_count(config);
    if hosts > 1 && config.get_target_session_attrs() != TargetSessionAttrs::ReadWrite {
        return Err(format!(
            "{} names {hosts} hosts but not target_session_attrs=read-write: add it, \
             so that corral connects to the one that accepts writes (the primary)",
            names.url
        ));
    }
    Ok(())
}

fn host_count(config: &tokio_postgres::Config) -> usize {
    config.get_hosts().len().max(config.get_hostaddrs().len())
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

fn tls_connector(ca_file: Option<&Path>, names: Names) -> anyhow::Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bundle = crate::config::read_ca_bundle(path)
                .with_context(|| format!("reading {} {}", names.ca_file, path.display()))?;
            let (added, _) = roots.add_parsable_certificates(bundle.certificates);
            anyhow::ensure!(
                added > 0,
                "{} {} holds no usable PEM certificate",
                names.ca_file,
                path.display()
            );
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            anyhow::ensure!(
                added > 0,
                "sslmode=require needs CA certificates to verify the server, and the system \
                 has none ({:?}): install ca-certificates or set {}",
                native.errors,
                names.ca_file
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

/// Builds a pool of `size` connections named `application` (unless the URL
/// names them). Connections are made lazily; nothing here touches the network.
///
/// Whoever commits on one acknowledges on the strength of that COMMIT (the
/// worker a batch, ingress's spool a 200), so each connection starts with
/// `synchronous_commit=on`: a default of `off` or `local` would answer the
/// COMMIT before a synchronous standby has it, and a failover would lose
/// what was acknowledged. (`remote_apply` is lowered to `on` too, which
/// waits for the standby's disk, all corral needs.)
pub fn pool(target: &Target, size: u32, application: &str) -> anyhow::Result<Pool> {
    let config = session_config(target, application);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Custom(WRITABLE.to_owned()),
    };
    let manager = match &target.tls {
        None => Manager::from_connect(config, Connector { tls: NoTls }, manager_config),
        Some(tls) => Manager::from_connect(config, Connector { tls: tls.clone() }, manager_config),
    };
    let timeout = target.timeout;
    // Each host gets the connect deadline (they are tried in turn): a dead
    // first host that never answers leaves time for the next.
    let hosts = u32::try_from(target.hosts()).unwrap_or(1).max(1);
    Pool::builder(manager)
        .max_size(size as usize)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout * hosts))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the database pool")
}

/// The URL's settings (every host, `target_session_attrs`, the URL's own
/// options) plus what each pooled session needs.
fn session_config(target: &Target, application: &str) -> tokio_postgres::Config {
    let mut config = target.config.clone();
    // Notice a dead peer (a cut network) in under a minute, not two hours.
    config.keepalives_idle(Duration::from_secs(15));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name(application);
    }
    // The server enforces the statement deadline too, so a query we gave up
    // on does not keep running and holding locks. It never cuts a COMMIT's
    // wait for synchronous standbys short: PostgreSQL disarms the timer
    // before a statement's transaction commits (postgres.c,
    // finish_xact_command), so that wait is bounded only by the attempt's
    // deadline in `consume::write`, which gives up without acknowledging.
    let settings = format!(
        "-c statement_timeout={} -c synchronous_commit=on",
        target.timeout.as_millis()
    );
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {settings}"),
        None => settings,
    };
    config.options(&options);
    config
}

/// The check of a pooled connection at checkout (one round trip, as a bare
/// liveness query): it fails in a session that cannot write (its server is a
/// standby now, or read-only), so the pool drops that connection and opens
/// another, instead of handing out one where every write fails (25006) for
/// ever. Read-write mode asked for after the query's snapshot is refused in
/// a read-only transaction (25001), as every one on a standby is; elsewhere
/// it changes nothing, and only for this statement's implicit transaction.
const WRITABLE: &str = "SELECT set_config('transaction_read_only', 'off', true)";

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
/// its messages unacknowledged and retries.
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
                    error = crate::error_chain(&err),
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

#[cfg(test)]
mod tests;
