//! Client connections: a deadline for *every* request head, not only the first.
//!
//! actix-http bounds only a connection's first request head
//! (`client_request_timeout`): its HTTP/1 dispatcher arms that timer once, on
//! the connection's first poll, and clears it when the first head is decoded;
//! the keep-alive timer that runs after an answer is cleared by the first byte
//! of the next request. From then on nothing bounds the next head, so a client
//! that got one answer could trickle its second request's headers for ever and
//! hold the connection. [`Guarded`] wraps each accepted stream and fails its
//! reads once a head or an idle spell is late; [`track`], the outermost
//! middleware, tells it when a head has become a request and when that request
//! has been answered.
//!
//! A request being served has no deadline here: its body and its publish have
//! their own (`CORRAL_BODY_TIMEOUT_MS`, `CORRAL_PUBLISH_TIMEOUT_MS`).
//!
//! [`listen`] binds the listener the connections come in on, with a backlog
//! for bursts.

use std::{
    cell::Cell,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The deadlines a connection's reads are held to.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// `CORRAL_HEADER_TIMEOUT_MS`: from a head's first byte (or the
    /// connection's start) to the request reaching the app.
    pub header: Duration,
    /// `CORRAL_KEEP_ALIVE_SECS`: from an answer to the next request's first
    /// byte; `None` when keep-alive is off (actix then closes after the answer).
    pub keep_alive: Option<Duration>,
}

/// Where a connection is, as far as its deadlines are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A head is due: the connection is new, or bytes came after an answer.
    Head { since: Instant },
    /// A request is in the app, which bounds it itself.
    Serving,
    /// Answered; the next request may come.
    Idle { since: Instant },
}

/// One connection's phase, shared by its stream and the requests on it (all
/// on the same worker thread, hence `Rc` and `Cell`).
#[derive(Debug)]
pub struct Clock {
    phase: Cell<Phase>,
    deadlines: Deadlines,
}

impl Clock {
    fn new(deadlines: Deadlines, now: Instant) -> Self {
        Self {
            phase: Cell::new(Phase::Head { since: now }),
            deadlines,
        }
    }

    /// A request reached the app: its head is complete.
    pub fn request_started(&self) {
        self.phase.set(Phase::Serving);
    }

    /// The app answered.
    pub fn request_answered(&self, now: Instant) {
        self.phase.set(Phase::Idle { since: now });
    }

    /// Bytes arrived. After an answer they start the next head, even when
    /// they may be the rest of a body the app did not read (actix drains it):
    /// either must arrive in time.
    fn bytes_arrived(&self, now: Instant) {
        if let Phase::Idle { .. } = self.phase.get() {
            self.phase.set(Phase::Head { since: now });
        }
    }

    /// When the connection's reads must have made the phase move on.
    fn deadline(&self) -> Option<Instant> {
        match self.phase.get() {
            Phase::Head { since } => Some(since + self.deadlines.header),
            Phase::Serving => None,
            Phase::Idle { since } => self.deadlines.keep_alive.map(|idle| since + idle),
        }
    }
}

/// An accepted stream whose reads fail once its [`Clock`]'s deadline passes,
/// which makes actix drop the connection.
#[derive(Debug)]
pub struct Guarded<T> {
    io: T,
    clock: Rc<Clock>,
    /// Wakes the connection's task at the deadline, so an idle or trickling
    /// client is cut even when it sends nothing more.
    timer: Pin<Box<Sleep>>,
    /// The deadline `timer` is set to.
    armed: Option<Instant>,
}

impl<T> Guarded<T> {
    /// Wraps a freshly accepted stream: its first head is due from now.
    pub fn new(io: T, deadlines: Deadlines) -> Self {
        let now = Instant::now();
        let clock = Rc::new(Clock::new(deadlines, now));
        Self {
            io,
            timer: Box::pin(tokio::time::sleep_until(now + deadlines.header)),
            armed: None,
            clock,
        }
    }

    /// The clock, for the requests on this connection (`on_connect_ext`).
    pub fn clock(&self) -> Rc<Clock> {
        self.clock.clone()
    }

    /// Whether the deadline has passed; arms the timer for it otherwise.
    fn late(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.clock.deadline() else {
            return false;
        };
        if self.armed != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_arrived(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.late(cx) => {
                tracing::debug!(
                    "closing a client connection: its request head or next request is late"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head deadline passed",
                )))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Middleware (`App::wrap_fn`): marks the connection's clock while the app
/// holds a request.
pub fn track<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let clock = request.conn_data::<Rc<Clock>>().cloned();
    if let Some(clock) = &clock {
        clock.request_started();
    }
    let response = service.call(request);
    async move {
        let response = response.await;
        if let Some(clock) = clock {
            clock.request_answered(Instant::now());
        }
        response
    }
}

/// Binds `address` (its first resolution) with a backlog of 4096: bursts open
/// many connections at once, and connections past `CORRAL_MAX_CONNECTIONS`
/// wait there; a std listener would keep the kernel's default of 128 and drop
/// SYNs past it.
pub fn listen(address: &str) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restart can bind at once while the previous process's connections
    // sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: Deadlines = Deadlines {
        header: Duration::from_secs(5),
        keep_alive: Some(Duration::from_secs(75)),
    };

    #[test]
    fn each_phase_has_its_deadline() {
        let start = Instant::now();
        let clock = Clock::new(DEADLINES, start);
        assert_eq!(clock.deadline(), Some(start + Duration::from_secs(5)));
        clock.request_started();
        assert_eq!(clock.deadline(), None, "a request in the app is its own");
        let answered = start + Duration::from_secs(30);
        clock.request_answered(answered);
        assert_eq!(clock.deadline(), Some(answered + Duration::from_secs(75)));
        let next = answered + Duration::from_secs(10);
        clock.bytes_arrived(next);
        assert_eq!(
            clock.deadline(),
            Some(next + Duration::from_secs(5)),
            "the second head is held to the header deadline too"
        );
        clock.bytes_arrived(next + Duration::from_secs(4));
        assert_eq!(
            clock.deadline(),
            Some(next + Duration::from_secs(5)),
            "more bytes of the same head do not extend it"
        );
    }

    #[test]
    fn bytes_while_serving_do_not_start_a_head() {
        let start = Instant::now();
        let clock = Clock::new(
            Deadlines {
                keep_alive: None,
                ..DEADLINES
            },
            start,
        );
        clock.request_started();
        clock.bytes_arrived(start);
        assert_eq!(clock.deadline(), None);
        clock.request_answered(start);
        assert_eq!(clock.deadline(), None, "without keep-alive actix closes");
    }
}
