//! A TLS front for the local PostgreSQL or RabbitMQ, with its own throwaway CA:
//! lets a test check that corral speaks verified TLS to them without
//! reconfiguring the shared servers (whose certificates, if any, name whatever
//! host they were made on).
//!
//! It completes the handshake with a certificate for `127.0.0.1` signed by its
//! CA, then relays the decrypted stream to the server. For PostgreSQL it first
//! answers the `SSLRequest` with `S`, and refuses a client that does not ask for
//! TLS, as a `hostssl`-only server would; for AMQP TLS starts with the first byte.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

/// The `SSLRequest` message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A certificate authority made for one test, its certificate in a PEM file
/// (removed on drop).
#[derive(Debug)]
pub struct TestCa {
    key: KeyPair,
    params: CertificateParams,
    pem_file: PathBuf,
}

impl TestCa {
    /// A new CA, written to a fresh file in the temporary directory.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generating the CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("corral test CA {name}"));
        let certificate = params.self_signed(&key).expect("self-signing the CA");
        let pem_file = std::env::temp_dir().join(format!(
            "corral-test-ca-{}-{}.pem",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::write(&pem_file, certificate.pem()).expect("writing the CA file");
        Self {
            key,
            params,
            pem_file,
        }
    }

    /// The PEM file holding the CA's certificate.
    pub fn pem_file(&self) -> &Path {
        &self.pem_file
    }

    /// A server certificate (and its key) for `names`, signed by this CA.
    fn issue(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("generating the server key");
        let params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("server certificate parameters");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params
            .signed_by(&key, &issuer)
            .expect("signing the server certificate");
        (
            certificate.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_file);
    }
}

/// Counts of what the front saw.
#[derive(Debug, Default)]
struct TlsCounts {
    handshakes: AtomicUsize,
    failed_handshakes: AtomicUsize,
    plaintext_refused: AtomicUsize,
}

/// What speaks behind the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// PostgreSQL: `SSLRequest`, then TLS.
    Postgres,
    /// AMQP over TLS (`amqps://`): TLS from the first byte.
    Amqps,
}

/// A running TLS front; stops when dropped.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    counts: Arc<TlsCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Listens on a free local port, presenting a certificate for
    /// `127.0.0.1` signed by `ca`, and relays to `server`.
    async fn start(ca: &TestCa, server: SocketAddr, protocol: Protocol) -> Self {
        let (certificate, key) = ca.issue(&["127.0.0.1"]);
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("server TLS configuration");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the TLS front");
        let addr = listener.local_addr().expect("TLS front address");
        let counts = Arc::new(TlsCounts::default());
        let task_counts = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(
                    client,
                    server,
                    protocol,
                    acceptor.clone(),
                    task_counts.clone(),
                ));
            }
        });
        Self { addr, counts, task }
    }

    /// In front of the local PostgreSQL (127.0.0.1:5432).
    pub async fn postgres(ca: &TestCa) -> Self {
        let server = "127.0.0.1:5432".parse().expect("address");
        Self::start(ca, server, Protocol::Postgres).await
    }

    /// In front of the local RabbitMQ (127.0.0.1:5672), as `amqps://`.
    pub async fn amqps(ca: &TestCa) -> Self {
        let server = "127.0.0.1:5672".parse().expect("address");
        Self::start(ca, server, Protocol::Amqps).await
    }

    /// `amqps://guest:guest@127.0.0.1:port/%2f` through this front.
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.addr.port())
    }

    /// `postgres://…/dbname?sslmode=require` through this front.
    pub fn postgres_url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}?sslmode=require",
            self.addr.port()
        )
    }

    /// Completed handshakes so far.
    pub fn handshakes(&self) -> usize {
        self.counts.handshakes.load(Ordering::SeqCst)
    }

    /// Failed handshakes so far.
    pub fn failed_handshakes(&self) -> usize {
        self.counts.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Connections refused for not asking for TLS so far.
    pub fn plaintext_refused(&self) -> usize {
        self.counts.plaintext_refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    server: SocketAddr,
    protocol: Protocol,
    acceptor: TlsAcceptor,
    counts: Arc<TlsCounts>,
) {
    if protocol == Protocol::Postgres {
        let mut request = [0u8; 8];
        if client.read_exact(&mut request).await.is_err() {
            return;
        }
        if request != SSL_REQUEST {
            counts.plaintext_refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if client.write_all(b"S").await.is_err() {
            return;
        }
    }
    let mut tls = match acceptor.accept(client).await {
        Ok(tls) => {
            counts.handshakes.fetch_add(1, Ordering::SeqCst);
            tls
        }
        Err(_) => {
            counts.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    let Ok(mut upstream) = TcpStream::connect(server).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
}
