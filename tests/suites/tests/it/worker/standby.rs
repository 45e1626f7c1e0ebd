//! A synchronous standby away: nothing is acknowledged until the standby has
//! the batch, whatever ends a COMMIT's wait for it early.
//!
//! The test runs its own primary and standby ([`ReplicatedPostgres`]): a
//! stopped standby makes every commit on the primary wait, which the shared
//! server cannot show without changing its settings for everyone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker, broker::TestBroker, database, metrics::Metrics,
    replicated::ReplicatedPostgres, wait,
};
use tokio_postgres::Client;

use super::helpers::*;

/// The worker's `CORRAL_DB_TIMEOUT_MS` here: its `statement_timeout`, and a
/// third of the deadline of one write attempt.
const DB_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the test watches for an acknowledgement that must not come:
/// longer than the statement timeout and than one attempt's deadline
/// (3 × [`DB_TIMEOUT`]), so whatever those timers do has happened by its end.
const WATCH: Duration = Duration::from_secs(4);

const PREFETCH: u16 = 5;

/// The worker's sessions waiting in a COMMIT for the standby, whose COMMIT
/// started after `since`.
const WAITING: &str = "SELECT count(*) FROM pg_stat_activity
     WHERE application_name = 'corral-worker' AND wait_event = 'SyncRep'
       AND query_start > $1";

/// The worker on the cluster's primary, created and migrated while the
/// standby is there to confirm it.
async fn start_worker(cluster: &ReplicatedPostgres, broker: &TestBroker) -> RunningWorker {
    let mut config = config(&cluster.primary_url("corral"), broker.prefix());
    config.prefetch = PREFETCH;
    config.batch_max = u32::from(PREFETCH);
    config.db.db_timeout_ms = DB_TIMEOUT.as_millis() as u64;
    RunningWorker::start(config).await
}

#[tokio::test]
async fn nothing_is_acknowledged_until_the_synchronous_standby_has_the_batch() {
    let cluster = ReplicatedPostgres::start().await;
    let broker = TestBroker::new().await;
    let url = cluster.primary_url("corral");
    let worker = start_worker(&cluster, &broker).await;
    let primary = database::connect(&url).await;
    let before = worker.metrics().await;
    let watch = Watch {
        worker: &worker,
        broker: &broker,
        before: &before,
    };

    cluster.stop_standby().await;
    let since = server_now(&primary).await;
    let mut sent = Vec::new();
    for _ in 0..2 * PREFETCH {
        sent.push(send(&broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    // The first batch reaches its COMMIT, which waits for the standby, past
    // the statement timeout and past the attempt's deadline: the attempt is
    // given up and retried, and nothing is acknowledged.
    watch.until_commit_waits(&primary, since).await;
    watch.nothing_acknowledged(WATCH).await;

    // An operator cancels the waiting COMMIT (the worker gave that attempt
    // up): PostgreSQL ends it as committed with a WARNING, and the rows are
    // on the primary alone. The retry finds them stored; its COMMIT must
    // wait for the standby too, not acknowledge them as duplicates at once.
    let since = server_now(&primary).await;
    assert!(cancel_commit_waits(&primary).await >= 1);
    wait_count(&primary, EVENTS, i64::from(PREFETCH)).await;
    watch.until_commit_waits(&primary, since).await;

    // Cancelled again at once, while the worker itself waits on that COMMIT:
    // PostgreSQL answers it with success and the WARNING.
    assert!(cancel_commit_waits(&primary).await >= 1);
    watch.nothing_acknowledged(WATCH).await;

    cluster.start_standby().await;
    wait::until_true("every message acknowledged", WAIT, || async {
        watch.acknowledged().await == sent.len() as f64
            && broker.ready_count(&broker.queue()).await == 0
    })
    .await;
    assert_each_stored_once(&primary, &sent).await;
    let standby = database::connect(&cluster.standby_url("corral")).await;
    wait_count(&standby, EVENTS, sent.len() as i64).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// A role whose default is `synchronous_commit = off` (a DBA's tuning, a
/// managed database's preset) would have PostgreSQL answer a COMMIT before
/// the standby has it: the worker's sessions commit with `on` whatever the
/// default, so nothing is acknowledged while the standby is away.
#[tokio::test]
async fn a_role_defaulting_to_asynchronous_commit_still_waits_for_the_standby() {
    let cluster = ReplicatedPostgres::start().await;
    let broker = TestBroker::new().await;
    // The worker's role is the throwaway cluster's `postgres`.
    let admin = database::connect(&cluster.primary_url("postgres")).await;
    admin
        .batch_execute("ALTER ROLE postgres SET synchronous_commit = off")
        .await
        .expect("the role's default");
    let direct: String = database::connect(&cluster.primary_url("postgres"))
        .await
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("the role's default")
        .get(0);
    assert_eq!(direct, "off", "the role's default is in effect");
    let worker = start_worker(&cluster, &broker).await;
    let primary = database::connect(&cluster.primary_url("corral")).await;
    let before = worker.metrics().await;
    let watch = Watch {
        worker: &worker,
        broker: &broker,
        before: &before,
    };

    cluster.stop_standby().await;
    let since = server_now(&primary).await;
    let mut sent = Vec::new();
    for _ in 0..2 * PREFETCH {
        sent.push(send(&broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    watch.until_commit_waits(&primary, since).await;
    watch.nothing_acknowledged(WATCH).await;

    cluster.start_standby().await;
    wait::until_true("every message acknowledged", WAIT, || async {
        watch.acknowledged().await == sent.len() as f64
            && broker.ready_count(&broker.queue()).await == 0
    })
    .await;
    assert_each_stored_once(&primary, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// What the test watches of the worker and its queue.
struct Watch<'a> {
    worker: &'a RunningWorker,
    broker: &'a TestBroker,
    before: &'a Metrics,
}

impl Watch<'_> {
    /// Messages acknowledged since the start (the outcome counters move on
    /// acknowledgement).
    async fn acknowledged(&self) -> f64 {
        let now = self.worker.metrics().await;
        [STORED, DUPLICATE, QUARANTINED]
            .iter()
            .map(|series| now.get(series) - self.before.get(series))
            .sum()
    }

    /// Nothing acknowledged: no outcome counted, and RabbitMQ still holds
    /// back everything past the prefetch (an ack would bring the worker more).
    async fn check(&self) -> Result<(), String> {
        let acknowledged = self.acknowledged().await;
        let ready = self.broker.ready_count(&self.broker.queue()).await;
        if acknowledged == 0.0 && ready == u32::from(PREFETCH) {
            Ok(())
        } else {
            Err(format!(
                "{acknowledged} messages acknowledged, {ready} ready in the queue \
                 (the standby is stopped: nothing may be)"
            ))
        }
    }

    async fn nothing_acknowledged(&self, window: Duration) {
        wait::holds(
            "nothing acknowledged while the standby is away",
            window,
            || self.check(),
        )
        .await;
    }

    /// Waits until a COMMIT of the worker that started after `since` waits
    /// for the standby, failing at once if anything is acknowledged meanwhile.
    async fn until_commit_waits(&self, primary: &Client, since: DateTime<Utc>) {
        wait::until(
            "a COMMIT of the worker waiting for the standby",
            WAIT,
            || async move {
                if let Err(account) = self.check().await {
                    panic!("while waiting for the next COMMIT: {account}");
                }
                let waiting: i64 = primary
                    .query_one(WAITING, &[&since])
                    .await
                    .expect("reading pg_stat_activity")
                    .get(0);
                (waiting > 0).then_some(())
            },
        )
        .await;
    }
}

/// The primary's clock, to compare with `pg_stat_activity.query_start`.
async fn server_now(primary: &Client) -> DateTime<Utc> {
    primary
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .expect("reading the primary's clock")
        .get(0)
}

/// `pg_cancel_backend` on every session of the worker waiting for the
/// standby; returns how many there were.
async fn cancel_commit_waits(primary: &Client) -> i64 {
    primary
        .query_one(
            "SELECT count(*) FROM (
                 SELECT pg_cancel_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'corral-worker' AND wait_event = 'SyncRep') AS c",
            &[],
        )
        .await
        .expect("cancelling the waiting COMMITs")
        .get(0)
}
