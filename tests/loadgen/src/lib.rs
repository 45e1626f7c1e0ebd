//! The Drop Cowboy simulator behind `corral-loadgen`, as a library: tests
//! and the fault suite call [`run`] and [`verify()`] in-process, the binary is
//! a thin CLI over them.
//!
//! # Layout
//!
//! - [`traffic`]: run ids, the mix, each webhook made deterministically from
//!   `(seed, item)`, and the [`Sent`] ledger of what ingress answered.
//! - [`http`]: the target, one hyper HTTP/1.1 keep-alive connection per
//!   virtual user, a bounded pool for the open loop.
//! - [`report`]: histograms and counters, the progress bar, the generator's
//!   own CPU, and the [`Report`] (JSON and a table).
//! - [`verify`](mod@verify): waiting for the pipeline to drain and checking
//!   the database row by row.
//! - `shared`, `closed_loop`, `open_loop`: the two loads below, and what
//!   their senders share.
//! - `main.rs`: the `corral-loadgen` command line over [`run`] and
//!   [`verify()`].
//!
//! # The two loads
//!
//! - **Closed loop** ([`Load::Closed`]): N virtual users, each with its own
//!   keep-alive connection, each sending its next request when the previous
//!   one was answered. Measures throughput at a concurrency.
//! - **Open loop** ([`Load::Open`]): requests scheduled at a constant rate
//!   whatever the answers, on as many connections as needed (up to a cap).
//!   Latency counts from the *scheduled* send time, so a server that stalls
//!   cannot hide the stall by slowing the generator down (coordinated
//!   omission); the report also gives the service time from the actual send.

mod closed_loop;
pub mod http;
mod open_loop;
pub mod report;
mod shared;
pub mod traffic;
pub mod verify;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::task::JoinSet;

use self::{
    closed_loop::closed_loop,
    http::{Connection, Failure, Pool, Target},
    open_loop::open_loop,
    report::{Live, Progress, ReportInputs, Stats},
    shared::Shared,
};
pub use self::{
    report::{Errors, Generator, Latency, Report},
    traffic::{
        Destination, Event, Item, ItemRecord, Mix, RunId, Sent, SentSummary, SentWebhook, Shape,
        Step, Traffic,
    },
    verify::{Verification, VerifyError, VerifyOptions, verify},
};

/// Why a run could not be made (not: what it measured).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The target URL cannot be used.
    #[error("invalid target {0}")]
    InvalidTarget(String),
    /// The settings do not work together.
    #[error("invalid settings: {0}")]
    InvalidConfig(String),
    /// Nothing answers at the target.
    #[error("cannot connect to {target}")]
    Unreachable {
        /// `host:port`.
        target: String,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
}

/// The shape of the load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// N virtual users, each on its own keep-alive connection, each sending
    /// the next request when the previous one was answered.
    Closed {
        /// Virtual users, and so connections.
        connections: usize,
    },
    /// Requests at a fixed rate, whatever the answers.
    Open {
        /// Requests per second.
        rate: f64,
        /// At most this many connections at once; a request that finds all
        /// busy waits, and the wait counts in its latency.
        max_connections: usize,
    },
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of ingress, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Sent as `Authorization: Bearer <token>` to the callback routes; may
    /// be empty when the mix sends signed webhooks only.
    pub token: String,
    /// Signs the deliveries to `POST /webhooks/dropcowboy` (one of ingress's
    /// `CORRAL_DROPCOWBOY_SIGNING_SECRETS`); needed when the mix sends any.
    pub signing_secret: Option<String>,
    /// Closed or open loop.
    pub load: Load,
    /// Measure for this long (after the warm-up). With `requests` too,
    /// whichever comes first.
    pub duration: Option<Duration>,
    /// Measure this many requests (after the warm-up).
    pub requests: Option<u64>,
    /// Send but do not measure for this long first.
    pub warmup: Duration,
    /// A request unanswered after this long counts as a timeout.
    pub timeout: Duration,
    /// What to send.
    pub mix: Mix,
    /// Seed of the traffic; random when `None`.
    pub seed: Option<u64>,
    /// Draw the progress bar (on a terminal only).
    pub progress: bool,
}

impl Config {
    /// Defaults: closed loop of 16, 10 s, no warm-up, 10 s request timeout,
    /// the default mix (callbacks only), no signing secret, no progress bar.
    pub fn new(target: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            token: token.into(),
            signing_secret: None,
            load: Load::Closed { connections: 16 },
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(10),
            mix: Mix::default(),
            seed: None,
            progress: false,
        }
    }

    /// Says what is wrong, if anything.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let invalid = |why: &str| Err(LoadgenError::InvalidConfig(why.into()));
        match self.load {
            Load::Closed { connections: 0 } => return invalid("at least one connection"),
            Load::Open { rate, .. } if !(rate.is_finite() && rate > 0.0) => {
                return invalid("the rate must be a positive number");
            }
            Load::Open {
                max_connections: 0, ..
            } => return invalid("at least one connection"),
            _ => {}
        }
        if self.duration.is_none() && self.requests.is_none() {
            return invalid("give a duration, a request count, or both");
        }
        if self.duration == Some(Duration::ZERO) || self.requests == Some(0) {
            return invalid("the duration and the request count must be more than zero");
        }
        if self.timeout.is_zero() {
            return invalid("the request timeout must be more than zero");
        }
        self.mix.validate().map_err(LoadgenError::InvalidConfig)?;
        if self.mix.sends_signed() && self.signing_secret.as_deref().is_none_or(str::is_empty) {
            return invalid("signed webhooks need a signing secret");
        }
        if self.mix.sends_callbacks() && self.token.is_empty() {
            return invalid("callbacks to the token routes need a token");
        }
        Ok(())
    }
}

/// A finished run: its report and the ledger [`verify()`] needs.
#[derive(Debug)]
pub struct Run {
    /// What was measured.
    pub report: Report,
    /// What was sent and how ingress answered each body.
    pub sent: Sent,
}

/// Sends the configured load at `config.target` and measures it. Runs on the
/// caller's tokio runtime.
pub async fn run(config: Config) -> Result<Run, LoadgenError> {
    config.validate()?;
    let target = Target::parse(
        &config.target,
        &config.token,
        config.signing_secret.as_deref(),
    )?;
    // Fail fast with a clear error rather than a run made of connect errors.
    Connection::open(&target)
        .await
        .map_err(|source| LoadgenError::Unreachable {
            target: target.authority().to_owned(),
            source,
        })?;

    let seed = config.seed.unwrap_or_else(rand::random);
    let traffic = Traffic::new(RunId::random(), seed, config.mix.clone());
    let cpu_before = report::process_cpu();
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let shared = Arc::new(Shared {
        target,
        traffic: traffic.clone(),
        timeout: config.timeout,
        measure_from,
        stop_at: config.duration.map(|duration| measure_from + duration),
        max_requests: config.requests,
        next_item: AtomicU64::new(0),
        reserved: AtomicU64::new(0),
        warmup_requests: AtomicU64::new(0),
        connections_opened: AtomicU64::new(0),
        live: Live::default(),
    });

    let mut progress = Progress::new(
        config.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        config.warmup,
        config.duration,
        config.requests,
    );
    let load = match config.load {
        Load::Closed { connections } => tokio::spawn(closed_loop(shared.clone(), connections)),
        Load::Open {
            rate,
            max_connections,
        } => tokio::spawn(open_loop(shared.clone(), rate, max_connections, start)),
    };
    let mut load = std::pin::pin!(load);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let (stats, records) = loop {
        tokio::select! {
            finished = &mut load => break finished.expect("the load task panicked"),
            _ = ticker.tick() => progress.tick(&shared.live),
        }
    };
    progress.finish();
    let wall = start.elapsed();
    let cpu = (report::process_cpu() - cpu_before).as_secs_f64();

    let sent = Sent::new(traffic, records);
    let report = Report::build(ReportInputs {
        run_id: sent.run_id().to_string(),
        seed,
        target: config.target,
        load: config.load,
        mix: config.mix,
        warmup: config.warmup,
        measure_from,
        stats,
        warmup_requests: shared.warmup_requests.load(Relaxed),
        sent: sent.summary(),
        generator: Generator {
            cpu_secs: cpu,
            cpu_percent: 100.0 * cpu / wall.as_secs_f64().max(1e-9),
            wall_secs: wall.as_secs_f64(),
            peak_rss_mib: report::peak_rss_mib(),
            threads: None,
            connections_opened: shared.connections_opened.load(Relaxed),
        },
    });
    Ok(Run { report, sent })
}
