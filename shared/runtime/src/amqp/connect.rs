//! Connecting to the broker (with TLS where asked) and closing a connection.

use std::{future::Future, time::Duration};

use lapin::{
    Channel, Connection, ConnectionProperties,
    tcp::OwnedTLSConfig,
    types::LongString,
    uri::{AMQPScheme, AMQPUri},
};

use tokio_util::sync::CancellationToken;

use super::{AmqpError, Topology, brokers::parse_urls, deadline};
use crate::{
    config::AmqpSettings,
    error_chain, retry,
    telemetry::{labels::ConnectOutcome, metrics},
};

/// Checks the URLs and the CA file together at start: a CA file next to a
/// plain `amqp://` URL would otherwise be silently ignored.
pub fn check_settings(settings: &AmqpSettings) -> Result<(), AmqpError> {
    let uris = parse_urls(&settings.url)?;
    if let Some(path) = &settings.ca_file {
        if uris.iter().any(|uri| uri.scheme != AMQPScheme::AMQPS) {
            return Err(AmqpError::CaFileWithoutTls {
                path: path.display().to_string(),
            });
        }
        tls_config(settings)?;
    }
    Ok(())
}

/// The client's TLS settings: the CA file's certificates (if any) on top of
/// the system's roots; the server's certificate and host name are verified.
fn tls_config(settings: &AmqpSettings) -> Result<OwnedTLSConfig, AmqpError> {
    let cert_chain = match &settings.ca_file {
        None => None,
        Some(path) => Some(
            crate::config::read_ca_bundle(path)
                .map_err(|source| AmqpError::CaFile {
                    path: path.display().to_string(),
                    source,
                })?
                .pem,
        ),
    };
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain,
    })
}

/// Connects to a broker named by `settings`, with the heartbeat and the
/// connect deadline applied: the first of its URLs that answers, in the
/// order of its [`Rotation`](super::Rotation); the error is the last one's.
/// `name` shows in the management UI.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, AmqpError> {
    let uris = parse_urls(&settings.url)?;
    let mut passed = Vec::new();
    let mut failed = None;
    for index in settings.rotation.order(uris.len()) {
        let uri = uris[index].clone();
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        match connect_to(settings, uri, name).await {
            Ok(connection) => {
                settings.rotation.reached(index);
                if !passed.is_empty() {
                    // The node this process left is down: say so once, here,
                    // rather than on every failed round of an outage.
                    tracing::warn!(
                        broker = address,
                        unreachable = passed.join(", "),
                        "connected to RabbitMQ past brokers that did not answer"
                    );
                }
                return Ok(connection);
            }
            Err(err) => {
                tracing::debug!(
                    broker = address,
                    error = error_chain(&err),
                    "cannot connect"
                );
                passed.push(address);
                failed = Some(err);
            }
        }
    }
    Err(failed.expect("CORRAL_AMQP_URL names at least one broker"))
}

/// Connects to the broker at `uri`.
async fn connect_to(
    settings: &AmqpSettings,
    mut uri: AMQPUri,
    name: &str,
) -> Result<Connection, AmqpError> {
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(settings.heartbeat_secs);
    }
    let timeout = settings.connect_timeout();
    let address = format!("{}:{}", uri.authority.host, uri.authority.port);
    // Each failed `Connection::connect` leaves memory behind in the client
    // library; a plain TCP probe first keeps a long outage from growing the
    // process while the port is closed.
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_probe)) => {}
        Ok(Err(source)) => return Err(AmqpError::Unreachable { address, source }),
        Err(_) => {
            return Err(AmqpError::Timeout {
                operation: "TCP connect",
                timeout,
            });
        }
    }
    let properties =
        ConnectionProperties::default().with_connection_name(LongString::from(name.to_owned()));
    let tls = tls_config(settings)?;
    let runtime = lapin::runtime::default_runtime().map_err(|source| AmqpError::Broker {
        operation: "connection",
        source,
    })?;
    deadline(
        "connection",
        timeout,
        Connection::connect_uri_with_config(uri, properties, tls, runtime),
    )
    .await
}

/// Connects, opens a channel and declares the topology: what both binaries do
/// on every (re)connect.
pub async fn connect_and_declare(
    settings: &AmqpSettings,
    topology: &Topology,
    name: &str,
) -> Result<(Connection, Channel), AmqpError> {
    let timeout = settings.connect_timeout();
    let connection = connect(settings, name).await?;
    match topology.declare(&connection, timeout).await {
        Ok(channel) => Ok((connection, channel)),
        Err(err) => {
            // Do not leave a half-set-up connection open on the broker.
            close(&connection, timeout, "setup failed").await;
            Err(err)
        }
    }
}

/// Opens a broker session with `open` until it works or `shutdown` is
/// cancelled (`None`), per the [`retry`] policy capped at
/// `CORRAL_AMQP_RECONNECT_MAX_MS`; every attempt is counted in
/// `corral_broker_connect_attempts_total` and every failure logged.
pub async fn reconnect<T, E, Fut>(
    shutdown: &CancellationToken,
    settings: &AmqpSettings,
    open: impl FnMut() -> Fut,
) -> Option<T>
where
    E: std::error::Error + 'static,
    Fut: Future<Output = Result<T, E>>,
{
    let opened = retry::until_cancelled(shutdown, settings.reconnect_max(), open, |err: &E| {
        metrics::broker_connect_attempt(ConnectOutcome::Failure);
        tracing::warn!(
            error = error_chain(err),
            "cannot connect to RabbitMQ; retrying"
        );
    })
    .await?;
    metrics::broker_connect_attempt(ConnectOutcome::Success);
    Some(opened)
}

/// Closes `connection` if it is still open, waiting at most `timeout`: a
/// broker that stopped answering must not hold up a reconnect or a shutdown.
pub async fn close(connection: &Connection, timeout: Duration, reason: &str) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(timeout, connection.close(200, reason.into())).await;
    }
}

#[cfg(test)]
mod tests {
    use crate::{amqp::parse_url, config::redact_url};

    #[test]
    fn passwords_are_redacted_from_urls() {
        for (url, redacted) in [
            (
                "amqp://corral:s3cret@rabbit:5672/%2f",
                "amqp://corral:***@rabbit:5672/%2f",
            ),
            ("amqps://u:p/a@ss@rabbit/vh", "amqps://u:***@rabbit/vh"),
            ("corral:s3cret@rabbit:5672", "corral:***@rabbit:5672"),
            ("amqp://rabbit:5672/%2f", "amqp://rabbit:5672/%2f"),
            ("amqp://corral@rabbit", "amqp://corral@rabbit"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn a_malformed_url_is_reported_without_its_password() {
        for url in [
            // No scheme: the parser quotes the whole input.
            "corral:hunter2-secret@rabbit:5672",
            "http://corral:hunter2-secret@rabbit:5672",
            "amqp://corral:hunter2-secret@rabbit:notaport",
            "amqp://corral:hunter2-secret@rabbit/?heartbeat=x",
        ] {
            let err = parse_url(url).expect_err(url);
            let shown = format!("{err} / {err:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("corral:***@rabbit"), "{shown}");
        }
    }
}
