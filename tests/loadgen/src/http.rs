//! The HTTP side: the target, one HTTP/1.1 keep-alive connection at a time
//! (hyper's connection-level client, no pool in the way, so a closed loop of
//! N users holds exactly N connections), and a bounded pool for the open loop.
//!
//! Headers are made once per run and cloned per request (a reference-count
//! bump), bodies are shared `Bytes`: the generator shares its cores with the
//! services it measures, so each request should cost it as little as possible.

use std::{io, sync::Mutex, time::Duration};

use bytes::Bytes;
use corral_shared::envelope::Kind;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    client::conn::http1::SendRequest,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::LoadgenError;

/// Where webhooks go and with which token.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// `Host` header.
    host: HeaderValue,
    /// `Authorization: Bearer <token>`, marked sensitive so it is never logged.
    authorization: HeaderValue,
    /// Request targets for SMS and RVM.
    paths: [Uri; 3],
}

impl Target {
    /// Parses a base URL such as `http://127.0.0.1:8080` (a path prefix is
    /// kept: `http://host/prefix` posts to `/prefix/webhooks/dropcowboy/sms`).
    pub fn parse(base: &str, token: &str) -> Result<Self, LoadgenError> {
        let invalid = |why: &str| LoadgenError::InvalidTarget(format!("{base}: {why}"));
        let uri: Uri = base.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: the generator drives local services over plain HTTP",
                ));
            }
            _ => return Err(invalid("the URL must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let prefix = uri.path().trim_end_matches('/');
        let path = |kind: Kind| -> Result<Uri, LoadgenError> {
            let route = match kind {
                Kind::Sms | Kind::Rvm => format!("/{}", kind.as_str()),
                Kind::Event => String::new(),
            };
            format!("{prefix}/webhooks/dropcowboy{route}")
                .parse()
                .map_err(|_| invalid("the path does not make a valid request target"))
        };
        let mut authorization = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            LoadgenError::InvalidConfig("the token is not a valid header value".into())
        })?;
        authorization.set_sensitive(true);
        Ok(Self {
            authority: format!("{}:{port}", authority.host()),
            host: HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("bad host"))?,
            authorization,
            paths: [path(Kind::Sms)?, path(Kind::Rvm)?, path(Kind::Event)?],
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A webhook POST.
    pub fn request(&self, kind: Kind, body: Bytes) -> Request<Full<Bytes>> {
        let path = match kind {
            Kind::Sms => &self.paths[0],
            Kind::Rvm => &self.paths[1],
            Kind::Event => &self.paths[2],
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("corral-loadgen"));
        request
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection or the HTTP handshake failed: nothing was sent.
    Connect,
    /// The connection broke while the request was on the wire: it may or may
    /// not have been received.
    Io,
    /// No answer within the request timeout: it may or may not have been
    /// received.
    Timeout,
}

/// One HTTP/1.1 keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects (TCP_NODELAY, as any latency-minded HTTP client does).
    pub async fn open(target: &Target) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(target.authority()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        // Drives the socket; ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Still open for another request (the server may have closed it).
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer (so the connection can
    /// carry the next one). On `Err` the connection must be dropped.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<StatusCode, Failure> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(_)) => Err(Failure::Io),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

/// Connections for the open loop: reused while idle, opened as needed, at
/// most `max` at once (a request past that waits for one, and the wait counts
/// in its latency).
#[derive(Debug)]
pub struct Pool {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Pool {
    /// An empty pool of at most `max` connections.
    pub fn new(target: Target, max: usize) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::with_capacity(max.min(4096))),
            permits: Semaphore::new(max),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection and the permit that holds its place. `opened` tells
    /// whether it was newly opened.
    pub async fn acquire(&self) -> (SemaphorePermit<'_>, Result<(Connection, bool), Failure>) {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool is never closed");
        loop {
            let idle = self.idle.lock().expect("pool lock").pop();
            match idle {
                Some(connection) if connection.is_open() => {
                    return (permit, Ok((connection, false)));
                }
                Some(_) => continue,
                None => {
                    let opened = Connection::open(&self.target)
                        .await
                        .map(|connection| (connection, true))
                        .map_err(|_| Failure::Connect);
                    return (permit, opened);
                }
            }
        }
    }

    /// Puts a connection back for the next request.
    pub fn release(&self, connection: Connection) {
        if connection.is_open() {
            self.idle.lock().expect("pool lock").push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_becomes_the_two_routes() {
        let target = Target::parse("http://127.0.0.1:8080", "t0k3n").unwrap();
        assert_eq!(target.authority(), "127.0.0.1:8080");
        let request = target.request(Kind::Rvm, Bytes::from_static(b"{}"));
        assert_eq!(request.uri(), "/webhooks/dropcowboy/rvm");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer t0k3n");
        assert_eq!(request.headers()[HOST], "127.0.0.1:8080");

        let target = Target::parse("http://localhost/hooks/", "t").unwrap();
        assert_eq!(target.authority(), "localhost:80");
        let request = target.request(Kind::Sms, Bytes::new());
        assert_eq!(request.uri(), "/hooks/webhooks/dropcowboy/sms");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Target::parse("https://127.0.0.1:8443", "t").is_err());
        assert!(Target::parse("127.0.0.1:8080", "t").is_err());
        assert!(Target::parse("http://127.0.0.1:8080", "bad\ntoken").is_err());
    }
}
