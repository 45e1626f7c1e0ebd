//! A TCP proxy a test controls: forward, delay (every byte passes, late — a
//! slow path), black-hole (sockets stay open but nothing passes — the case
//! where a publisher confirm never arrives), or cut (every connection dropped
//! and new ones refused). It lets a test break the path to RabbitMQ,
//! PostgreSQL or SQS without touching the shared service.

use std::{net::SocketAddr, pin::pin, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    time::Instant,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass bytes both ways.
    Forward,
    /// Pass bytes both ways, each this long after it arrived (in each
    /// direction, so a request and its answer take twice as long more).
    Delay(Duration),
    /// Keep every socket open but pass nothing.
    Blackhole,
    /// Close every connection and refuse new ones.
    Cut,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<(Mode, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel((Mode::Forward, 0u64));
        let mode = Arc::new(mode);
        let accept_mode = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let current = *accept_mode.borrow();
                if current.0 == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, target, accept_mode.subscribe()));
            }
        });
        Self { addr, mode, task }
    }

    /// A proxy in front of the local RabbitMQ (127.0.0.1:5672); give
    /// [`TcpProxy::amqp_url`] to the application under test.
    pub async fn rabbitmq() -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 5672))).await
    }

    /// A proxy in front of the local PostgreSQL (127.0.0.1:5432); give
    /// [`TcpProxy::postgres_url`] to the application under test.
    pub async fn postgres() -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 5432))).await
    }

    /// A proxy in front of the local moto server (127.0.0.1:4566), SQS's
    /// stand-in.
    pub async fn sqs() -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 4566))).await
    }

    /// A PostgreSQL URL to database `name` through this proxy.
    pub fn postgres_url(&self, name: &str) -> String {
        format!("postgres://postgres@{}/{name}", self.addr)
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An AMQP URL through this proxy (guest/guest, default vhost).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Passes every byte `latency` after it arrived, in each direction.
    pub fn delay(&self, latency: Duration) {
        self.set(Mode::Delay(latency), false);
    }

    /// Stops passing bytes; sockets stay open.
    pub fn blackhole(&self) {
        self.set(Mode::Blackhole, false);
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Mode::Cut, true);
    }

    /// Drops every connection but keeps accepting new ones (forwarding).
    pub fn drop_connections(&self) {
        self.set(Mode::Forward, true);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.set(Mode::Forward, false);
    }

    fn set(&self, mode: Mode, kill: bool) {
        self.mode.send_modify(|(current, generation)| {
            *current = mode;
            if kill {
                *generation += 1;
            }
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.set(Mode::Cut, true);
        self.task.abort();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<(Mode, u64)>) {
    let generation = mode.borrow().1;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone(), generation);
    let down = pump(server_read, client_write, mode.clone(), generation);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = killed(&mut mode, generation) => {}
    }
}

async fn killed(mode: &mut watch::Receiver<(Mode, u64)>, generation: u64) {
    let _ = mode.wait_for(|(_, current)| *current != generation).await;
}

/// Passes bytes from `from` to `to` as the mode says. A delay line between
/// reading and writing keeps the stream's pace while delayed: each chunk
/// leaves its delay after it arrived, not after the chunk before it left.
async fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<(Mode, u64)>,
    generation: u64,
) {
    let (line, queued) = mpsc::channel(64);
    let reading = read_into(from, line, mode.clone(), generation);
    let mut writing = pin!(write_from(queued, to, mode, generation));
    tokio::select! {
        () = reading => {}
        () = &mut writing => return,
    }
    // What was read before the end still passes.
    writing.await;
}

/// Waits until bytes may pass; false once the connection is to be dropped.
async fn passing(mode: &mut watch::Receiver<(Mode, u64)>, generation: u64) -> bool {
    mode.wait_for(|(m, g)| matches!(m, Mode::Forward | Mode::Delay(_)) || *g != generation)
        .await
        .is_ok()
        && mode.borrow().1 == generation
}

async fn read_into(
    mut from: tokio::net::tcp::OwnedReadHalf,
    line: mpsc::Sender<(Instant, Vec<u8>)>,
    mut mode: watch::Receiver<(Mode, u64)>,
    generation: u64,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // While black-holed, do not even read: the bytes wait in the kernel,
        // exactly as on a path that silently stopped delivering.
        if !passing(&mut mode, generation).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.changed() => continue,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if line
                    .send((Instant::now(), buffer[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn write_from(
    mut queued: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<(Mode, u64)>,
    generation: u64,
) {
    while let Some((arrived, bytes)) = queued.recv().await {
        loop {
            if !passing(&mut mode, generation).await {
                return;
            }
            let due = match mode.borrow().0 {
                Mode::Delay(latency) => arrived + latency,
                _ => arrived,
            };
            if Instant::now() >= due {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = mode.changed() => {}
            }
        }
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
