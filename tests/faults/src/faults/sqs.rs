//! The scenarios on SQS (`CORRAL_BUFFER=sqs`). Each stack has its own queue
//! (and dead-letter queue) on the local moto server, which every process
//! reaches through the stack's proxy: a scenario breaks its own path to SQS
//! and never moto itself, which other tests use.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::sqs::QueueOptions;

use super::{
    outcome::*,
    scenarios::{Landing, SPOOL_DRAINED, SPOOLED_SHARE, require_answered},
    stack::*,
};

/// How much later the slow path passes every byte, in each direction: a call
/// then takes over `CORRAL_SPOOL_AFTER_MS` (1 s) and less than the publish
/// deadline (3 s), so ingress spools while the call still succeeds.
const LATENCY: Duration = Duration::from_millis(1_000);

/// The worker's visibility timeout in `sqs-worker-killed`: what a killed
/// worker held comes back this long after its last extension.
const KILLED_VISIBILITY_SECS: u32 = 5;

/// The SQS link of every process cut (connections closed, new ones closed
/// at once) for the outage: ingress answers from the spool, the worker drains
/// the spool, and everything is stored once after the link returns.
pub(super) async fn endpoint_unreachable(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start_sqs(1, 1, QueueOptions::default()).await?;
    let (loads, rss) = stack.load_until_fault(p, p.outage).await?;
    proxy(&stack).cut();
    let landing = Landing::watch(&stack, p.outage).await?;
    let since = Instant::now();
    proxy(&stack).restore();
    let recovered = stack.wait_recovered(since).await?;
    let mut outcome = stack
        .finish(
            "sqs-endpoint-unreachable",
            loads,
            recovered,
            rss,
            true,
            vec![
                format!(
                    "every process's link to SQS cut for {:?} (connections closed, new ones closed at once)",
                    p.outage
                ),
                landing.note(),
            ],
        )
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    landing.require(&mut outcome);
    Ok(outcome)
}

/// SQS slow, then silent: for half the outage every byte to and from it
/// passes [`LATENCY`] late, for the other half nothing passes (sockets stay
/// open); then it answers again. Ingress spools what waits longer than
/// `CORRAL_SPOOL_AFTER_MS` (while the call itself goes on and usually
/// succeeds: the worker stores such a webhook once), the worker's receives
/// and deletes stall and resume.
pub(super) async fn slow_endpoint(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start_sqs(1, 1, QueueOptions::default()).await?;
    let slow = p.outage / 2;
    let silent = p.outage - slow;
    let (loads, rss) = stack.load_until_fault(p, p.outage).await?;
    let start = Snapshot::take(&stack).await;
    proxy(&stack).delay(LATENCY);
    tokio::time::sleep(slow).await;
    let slowed = Snapshot::take(&stack).await;
    proxy(&stack).blackhole();
    tokio::time::sleep(silent).await;
    let silenced = Snapshot::take(&stack).await;
    let since = Instant::now();
    proxy(&stack).restore();
    let recovered = stack.wait_recovered(since).await?;
    // Long enough for receives to have resumed, well within the load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resumed = Snapshot::take(&stack).await;
    let mut outcome = stack
        .finish(
            "sqs-slow-endpoint",
            loads,
            recovered,
            rss,
            true,
            vec![
                format!(
                    "every process's path to SQS slowed by {LATENCY:?} each way for {slow:?}, then black-holed for {silent:?}, then forwarding again (no connection dropped)"
                ),
                format!("slowed: {}", slowed.since(&start)),
                format!("black-holed: {}", silenced.since(&slowed)),
                format!(
                    "first 2 s after the restore: {}",
                    resumed.since(&silenced)
                ),
            ],
        )
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    if slowed.spooled_slow <= start.spooled_slow {
        outcome.fail("nothing was spooled as slow while SQS answered late");
    }
    if resumed.from_sqs <= silenced.from_sqs {
        outcome.fail("the worker stored nothing from SQS after it answered again");
    }
    Ok(outcome)
}

/// The worker SIGKILLed while it holds received messages (extended, not yet
/// deleted). What it held comes back once its visibility timeout
/// ([`KILLED_VISIBILITY_SECS`]) runs out; a replacement then starts and
/// stores it once: what the killed worker had already committed counts as
/// duplicates.
pub(super) async fn worker_killed(p: Profile) -> anyhow::Result<Outcome> {
    let options = QueueOptions {
        visibility_secs: KILLED_VISIBILITY_SECS,
        ..QueueOptions::default()
    };
    let mut stack = Stack::start_sqs(1, 1, options).await?;
    // The only scenario whose worker is away while the queue fills: the
    // backlog must drain through moto, which hands out far fewer messages a
    // second than SQS.
    let p = Profile {
        rate: p.rate.min(MOTO_RATE),
        ..p
    };
    let visibility = Duration::from_secs(u64::from(KILLED_VISIBILITY_SECS));
    let (loads, rss) = stack
        .load_until_fault(p, visibility + Duration::from_secs(3))
        .await?;
    // Killed while it holds messages: mid-batch.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (in_hand, duplicates_before) = loop {
        let metrics = stack.workers[0].metrics().await;
        let in_hand = metrics.get("corral_worker_messages_in_hand");
        if in_hand > 0.0 {
            break (in_hand, metrics.get(DUPLICATES));
        }
        ensure!(
            Instant::now() < deadline,
            "the worker held no message within 5 s of load"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stack.workers[0].sigkill();
    stack.workers[0].wait_exit(Duration::from_secs(5)).await;
    let killed = Instant::now();
    // With no worker, every message in flight is one the killed worker
    // held: the replacement starts once SQS has made them all visible again.
    let queue = stack.sqs.as_ref().expect("an SQS stack");
    let (_, held) = queue.counts().await;
    let back_deadline = killed + visibility + Duration::from_secs(10);
    while queue.counts().await.1 > 0 {
        ensure!(
            Instant::now() < back_deadline,
            "what the killed worker held was not visible again within {visibility:?} + 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back_after = killed.elapsed().as_secs_f64();
    let since = Instant::now();
    stack.workers[0].restart();
    let recovered = stack.wait_recovered(since).await?;
    // The loads' end, and the queue empty: what the killed worker held has
    // come back and been stored.
    let mut runs = Vec::new();
    for load in loads {
        runs.push(load.await.context("the load task panicked")?);
    }
    let load_ended = Instant::now();
    let queue = stack.sqs.as_ref().expect("an SQS stack");
    let backlog = queue.counts().await;
    // As long as the verification waits for the rows.
    let drain_deadline = load_ended + Duration::from_secs(120);
    while queue.counts().await != (0, 0) {
        ensure!(
            Instant::now() < drain_deadline,
            "the queue was not empty 120 s after the load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_after = load_ended.elapsed().as_secs_f64();
    let duplicates_after = stack.worker_metric(DUPLICATES).await;
    let loads = runs
        .into_iter()
        .map(|run| tokio::spawn(async move { run }))
        .collect();
    let mut outcome = stack
        .finish(
            "sqs-worker-killed",
            loads,
            recovered,
            rss,
            false,
            vec![
                format!(
                    "{} webhooks/s; worker SIGKILLed holding {in_hand} messages (CORRAL_SQS_VISIBILITY_SECS={KILLED_VISIBILITY_SECS}); SQS counted {held} in flight, all visible again {back_after:.1} s after the kill, when the replacement started",
                    p.rate
                ),
                format!(
                    "at the load's end {} messages waited and {} were in flight; the queue was empty {drained_after:.1} s later",
                    backlog.0, backlog.1
                ),
            ],
        )
        .await?;
    // Of the duplicates the workers counted, the provider's resends are the
    // load's; the rest came back from SQS after the kill, already stored.
    // The killed worker's count is read just before the kill: what it
    // committed in between is missing, hence "about".
    let redelivered =
        ((duplicates_before + duplicates_after) as i64 - outcome.resent_twice as i64).max(0);
    outcome.notes.push(format!(
        "duplicates absorbed by the fingerprint: {} counted by the workers, {} of them the load's own resends, so about {redelivered} webhooks came back from SQS already stored",
        duplicates_before + duplicates_after,
        outcome.resent_twice,
    ));
    Ok(outcome)
}

/// Webhooks a second `sqs-worker-killed` offers at most: what one worker
/// stores through the local moto server (a Python emulator, a few hundred
/// milliseconds a call on the 2-core machine) with a backlog that drains
/// within the verification's wait.
const MOTO_RATE: f64 = 300.0;

const DUPLICATES: &str = r#"corral_worker_messages_total{outcome="duplicate"}"#;

fn proxy(stack: &Stack) -> &corral_testkit::proxy::TcpProxy {
    stack.proxy.as_ref().expect("an SQS stack has its proxy")
}

/// Counters read at one moment of a scenario.
struct Snapshot {
    at: Instant,
    spooled_slow: u64,
    spooled_unavailable: u64,
    /// Webhooks the workers committed from SQS (not from the spool).
    from_sqs: u64,
    ack_failures: u64,
}

impl Snapshot {
    async fn take(stack: &Stack) -> Self {
        let (spooled, _) = stack.spool_counts().await;
        let mut committed = 0.0;
        for outcome in ["stored", "duplicate", "quarantined"] {
            committed += stack
                .worker_metric(&format!(
                    r#"corral_worker_messages_total{{outcome="{outcome}"}}"#
                ))
                .await;
        }
        let drained = stack.worker_metric(SPOOL_DRAINED).await;
        Self {
            at: Instant::now(),
            spooled_slow: spooled_for(&spooled, SpoolCause::Slow),
            spooled_unavailable: spooled_for(&spooled, SpoolCause::Unavailable),
            from_sqs: (committed - drained).max(0.0) as u64,
            ack_failures: stack
                .worker_metric("corral_worker_ack_failures_total")
                .await as u64,
        }
    }

    fn since(&self, earlier: &Self) -> String {
        format!(
            "over {:.1} s, spooled +{} slow, +{} unavailable; the worker stored {} webhooks from SQS; {} deletes failed",
            self.at.duration_since(earlier.at).as_secs_f64(),
            self.spooled_slow - earlier.spooled_slow,
            self.spooled_unavailable - earlier.spooled_unavailable,
            self.from_sqs.saturating_sub(earlier.from_sqs),
            self.ack_failures - earlier.ack_failures,
        )
    }
}
