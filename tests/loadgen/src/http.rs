//! The HTTP side: the target, one HTTP/1.1 keep-alive connection at a time
//! (hyper's connection-level client, no pool in the way, so a closed loop of
//! N users holds exactly N connections), and a bounded pool for the open loop.
//!
//! Headers are made once per run and cloned per request (a reference-count
//! bump), bodies are shared `Bytes`: the generator shares its cores with the
//! services it measures, so each request should cost it as little as possible.
//! A signed delivery is signed as it is sent, as the provider does: its
//! `X-Timestamp` is the second it leaves (backdated for an attempt with
//! retries to come, see [`Step::signed_secs_ago`]).

use std::{io, sync::Mutex, time::Duration};

use bytes::Bytes;
use corral_contract::envelope::Kind;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    client::conn::http1::SendRequest,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{
    LoadgenError,
    traffic::{Item, Step},
};

/// `X-Signature`: `sha256=` and the hex HMAC-SHA256.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
/// `X-Timestamp`: Unix seconds the delivery was signed at.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("x-timestamp");
/// `X-Signature-Version`: `v1`.
pub const SIGNATURE_VERSION: HeaderName = HeaderName::from_static("x-signature-version");
/// `X-Event-Id`: the event's `event_id`, the same on every attempt.
pub const EVENT_ID: HeaderName = HeaderName::from_static("x-event-id");
/// `X-Attempt`: 1, 2 or 3.
pub const ATTEMPT: HeaderName = HeaderName::from_static("x-attempt");

/// Where webhooks go, with which token and which signing secret.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// `Host` header.
    host: HeaderValue,
    /// `Authorization: Bearer <token>`, marked sensitive so it is never
    /// logged; `None` without a token (signed traffic only).
    authorization: Option<HeaderValue>,
    /// The signing secret as an HMAC key; `None` without one.
    signing: Option<hmac::Key>,
    /// Request targets for SMS, RVM and the signed route.
    paths: [Uri; 3],
}

impl Target {
    /// Parses a base URL such as `http://127.0.0.1:8080` (a path prefix is
    /// kept: `http://host/prefix` posts to `/prefix/webhooks/dropcowboy/sms`).
    /// An empty `token` sends no `Authorization`; `secret` signs the
    /// deliveries to `/webhooks/dropcowboy`.
    pub fn parse(base: &str, token: &str, secret: Option<&str>) -> Result<Self, LoadgenError> {
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
        let authorization = (!token.is_empty())
            .then(|| {
                let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    LoadgenError::InvalidConfig("the token is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                Ok::<_, LoadgenError>(value)
            })
            .transpose()?;
        Ok(Self {
            authority: format!("{}:{port}", authority.host()),
            host: HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("bad host"))?,
            authorization,
            signing: secret.map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())),
            paths: [path(Kind::Sms)?, path(Kind::Rvm)?, path(Kind::Event)?],
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A webhook POST of `body` to `kind`'s route, with the token; unsigned.
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
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("corral-loadgen"));
        request
    }

    /// The request `step` of `item` makes: a callback to the token route, or
    /// a signed delivery to `/webhooks/dropcowboy`, signed now.
    pub fn request_for(&self, item: &Item, step: &Step) -> Request<Full<Bytes>> {
        let webhook = &item.bodies[step.body];
        let body = item.payload(step);
        let Some(event) = &webhook.event else {
            return self.request(webhook.kind, body);
        };
        let timestamp = unix_now().saturating_sub(step.signed_secs_ago).to_string();
        let signature = self.signature(&timestamp, &body);
        let mut request = self.request(Kind::Event, body);
        let headers = request.headers_mut();
        // The signature replaces the token on this route.
        headers.remove(AUTHORIZATION);
        let value = |text: String| HeaderValue::try_from(text).expect("ASCII header text");
        headers.insert(SIGNATURE, value(signature));
        headers.insert(TIMESTAMP, value(timestamp));
        headers.insert(SIGNATURE_VERSION, HeaderValue::from_static("v1"));
        headers.insert(EVENT_ID, value(event.id.clone()));
        headers.insert(ATTEMPT, HeaderValue::from(u16::from(step.attempt)));
        request
    }

    /// `X-Signature` for `body` signed at `timestamp`: `sha256=` and the
    /// lower-case hex HMAC-SHA256 of `timestamp`, `.` and `body`.
    ///
    /// # Panics
    ///
    /// Without a signing secret: [`crate::Config::validate`] refuses signed
    /// traffic without one.
    pub fn signature(&self, timestamp: &str, body: &[u8]) -> String {
        let key = self
            .signing
            .as_ref()
            .expect("signed traffic is sent only with a signing secret");
        let mut context = hmac::Context::with_key(key);
        context.update(timestamp.as_bytes());
        context.update(b".");
        context.update(body);
        format!("sha256={}", hex::encode(context.sign()))
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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
    fn a_base_url_becomes_the_three_routes() {
        let target = Target::parse("http://127.0.0.1:8080", "t0k3n", None).unwrap();
        assert_eq!(target.authority(), "127.0.0.1:8080");
        let request = target.request(Kind::Rvm, Bytes::from_static(b"{}"));
        assert_eq!(request.uri(), "/webhooks/dropcowboy/rvm");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer t0k3n");
        assert_eq!(request.headers()[HOST], "127.0.0.1:8080");

        let target = Target::parse("http://localhost/hooks/", "t", None).unwrap();
        assert_eq!(target.authority(), "localhost:80");
        let request = target.request(Kind::Sms, Bytes::new());
        assert_eq!(request.uri(), "/hooks/webhooks/dropcowboy/sms");
        let request = target.request(Kind::Event, Bytes::new());
        assert_eq!(request.uri(), "/hooks/webhooks/dropcowboy");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Target::parse("https://127.0.0.1:8443", "t", None).is_err());
        assert!(Target::parse("127.0.0.1:8080", "t", None).is_err());
        assert!(Target::parse("http://127.0.0.1:8080", "bad\ntoken", None).is_err());
    }

    #[test]
    fn without_a_token_no_authorization_is_sent() {
        let target = Target::parse("http://127.0.0.1:8080", "", Some("s")).unwrap();
        let request = target.request(Kind::Sms, Bytes::new());
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }

    /// The project's signature vectors (`tests/fixtures`, the same rule as
    /// the provider's): the generator signs as Drop Cowboy does.
    #[test]
    fn deliveries_are_signed_as_the_vectors_say() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../fixtures/v2-signature-vectors.json"))
                .expect("the vectors parse");
        let text = |name: &str| vectors[name].as_str().expect("a string").to_owned();
        for (secret, signature) in [
            ("secret", "signature"),
            ("other_secret", "signature_other_secret"),
        ] {
            let target = Target::parse("http://127.0.0.1:8080", "t", Some(&text(secret))).unwrap();
            assert_eq!(
                target.signature(&text("timestamp"), text("raw_body").as_bytes()),
                text(signature)
            );
        }
    }
}
