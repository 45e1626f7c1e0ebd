//! A PostgreSQL failover while the worker writes: the primary crashes, its
//! synchronous standby is promoted, and the worker, reaching both by one
//! multi-host URL with `target_session_attrs=read-write`, writes on the new
//! primary: everything acknowledged before is there, everything after too,
//! each webhook once, also the batch whose COMMIT was in flight at the crash.
//!
//! Each test runs its own primary and standby ([`ReplicatedPostgres`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::{RunningIngress, RunningWorker, TOKEN},
    config::short_waits,
    database,
    replicated::{ReplicatedPostgres, longest_gap},
    stack::Stack,
    wait,
};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::helpers::*;

/// Webhooks posted one after another to an ingress until stopped, keeping
/// the id of each one answered 200.
pub(crate) struct Posting {
    accepted: Arc<Mutex<Vec<Uuid>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

impl Posting {
    /// Starts posting valid SMS callbacks to `ingress`.
    pub(crate) fn start(ingress: &RunningIngress) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (url, ids, stopped) = (ingress.url("sms"), accepted.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut refused = 0;
            while !stopped.is_cancelled() {
                let answer = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(valid("").1)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match answer {
                    Ok(answer) if answer.status().is_success() => {
                        let body: serde_json::Value = answer.json().await.expect("a JSON answer");
                        let id = body["id"].as_str().and_then(|id| id.parse().ok());
                        ids.lock().unwrap().push(id.expect("an id in a 200"));
                    }
                    _ => refused += 1,
                }
            }
            refused
        });
        Self {
            accepted,
            stop,
            task,
        }
    }

    /// How many were answered 200 so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Waits until `more` webhooks beyond those answered so far are answered 200.
    pub(crate) async fn wait_more(&self, more: usize) {
        let target = self.accepted() + more;
        wait::until_true("webhooks answered 200", WAIT, || async move {
            self.accepted() >= target
        })
        .await;
    }

    /// Stops posting; the ids answered 200 and how many were not.
    pub(crate) async fn stop(self) -> (Vec<Uuid>, u64) {
        self.stop.cancel();
        let refused = self.task.await.expect("the posting task");
        let ids = self.accepted.lock().unwrap().clone();
        (ids, refused)
    }
}

/// Waits until each of `ids` is a `delivery_events` row, then asserts each is
/// exactly one, no webhook is stored twice, and the table holds nothing else
/// but at most the `refused` ones (a 503 whose COMMIT reached the standby
/// before the crash is stored all the same: its sender retries it, and the
/// copy is a duplicate).
pub(crate) async fn assert_all_stored_once(client: &Client, ids: &[Uuid], refused: u64) {
    wait::until_true("every webhook answered 200 stored", WAIT, || async move {
        let stored: i64 = client
            .query_one(
                "SELECT count(DISTINCT message_id) FROM delivery_events WHERE message_id = ANY($1)",
                &[&ids],
            )
            .await
            .expect("counting the stored webhooks")
            .get(0);
        stored == ids.len() as i64
    })
    .await;
    let twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT message_id FROM delivery_events
                 GROUP BY message_id HAVING count(*) > 1) AS twice",
            &[],
        )
        .await
        .expect("counting webhooks stored twice")
        .get(0);
    assert_eq!(twice, 0, "webhooks stored more than once");
    let rows = count(client, EVENTS).await;
    assert!(
        (ids.len() as i64..=(ids.len() as u64 + refused) as i64).contains(&rows),
        "{rows} rows for {} webhooks answered 200 and {refused} refused",
        ids.len()
    );
}

/// The server's clock in seconds since the epoch.
pub(crate) async fn server_clock(client: &Client) -> f64 {
    client
        .query_one("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8", &[])
        .await
        .expect("reading the server's clock")
        .get(0)
}

/// Kills the primary, waits until `worker` has met the crash (a failed
/// write, counted as a transient database error), and promotes the standby.
pub(crate) async fn fail_over(cluster: &ReplicatedPostgres, worker: &RunningWorker) {
    let before = worker.metrics().await.get(DB_TRANSIENT);
    cluster.kill_primary().await;
    wait::until_true("the worker to meet the crashed primary", WAIT, || async {
        worker.metrics().await.get(DB_TRANSIENT) > before
    })
    .await;
    cluster.promote_standby().await;
}

#[tokio::test]
async fn every_webhook_answered_around_a_promotion_is_on_the_new_primary_once() {
    let cluster = ReplicatedPostgres::start().await;
    let stack = Stack::builder()
        .on(cluster.server())
        .worker(short_waits)
        .with_ingress()
        .start()
        .await;
    let posting = Posting::start(stack.ingress());
    posting.wait_more(30).await;
    let client = stack.client().await;
    wait::until_true("rows on the primary", WAIT, || async {
        count(&client, EVENTS).await > 0
    })
    .await;
    let killed_at = server_clock(&client).await;

    fail_over(&cluster, stack.worker()).await;
    posting.wait_more(30).await;
    let (ids, refused) = posting.stop().await;

    // The URL names both servers: this is the new primary.
    let client = stack.client().await;
    assert_all_stored_once(&client, &ids, refused).await;
    assert_eq!(
        refused, 0,
        "ingress publishes to RabbitMQ: the database is not its concern"
    );
    eprintln!(
        "failover under a stream of webhooks: {} stored once each, longest gap {:.2} s",
        ids.len(),
        longest_gap(&client, killed_at - 1.0).await
    );
}

/// The primary crashes while a batch's COMMIT waits for the standby: the
/// standby has received the commit (held in its socket until the crash),
/// so the rows are on the new primary, but the worker never had the answer.
/// Its retry finds them stored (duplicates) and acknowledges: once each.
#[tokio::test]
async fn a_commit_in_flight_at_the_crash_is_retried_and_stored_once() {
    let cluster = ReplicatedPostgres::start().await;
    let stack = Stack::builder()
        .on(cluster.server())
        .worker(|config| {
            short_waits(config);
            // One attempt outlives the crash and the promotion.
            config.db.db_timeout_ms = 10_000;
            // No roll-up commit waiting for the standby beside the batch's.
            config.summary.summary_rollup_ms = 600_000;
        })
        .start()
        .await;
    let worker = stack.worker();
    let before = worker.metrics().await;
    let held = cluster.hold_wal_receiver().await;
    // One message, so one batch and one COMMIT.
    let bodies: Vec<String> = (0..5).map(|_| valid("").1).collect();
    let webhooks: Vec<(Kind, &[u8])> = bodies.iter().map(|b| (Kind::Sms, b.as_bytes())).collect();
    let sent = send_batch(stack.broker(), &webhooks).await;
    let primary = database::connect(&cluster.primary_url("postgres")).await;
    wait::until_true(
        "the batch's COMMIT waiting for the standby",
        WAIT,
        || async {
            count(
                &primary,
                "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'corral-worker' AND wait_event = 'SyncRep'",
            )
            .await
                > 0
        },
    )
    .await;
    let sent_up_to = cluster.wait_wal_sent().await;
    cluster.kill_primary().await;
    held.release();
    cluster.wait_wal_received(&sent_up_to).await;
    cluster.promote_standby().await;

    let client = stack.client().await;
    wait::until_true("every message acknowledged", WAIT, || async {
        let now = worker.metrics().await;
        now.get(STORED) + now.get(DUPLICATE) - before.get(STORED) - before.get(DUPLICATE)
            >= sent.len() as f64
    })
    .await;
    assert_each_stored_once(&client, &sent).await;
    let now = worker.metrics().await;
    assert_eq!(
        now.get(DUPLICATE) - before.get(DUPLICATE),
        sent.len() as f64,
        "the retry found the batch committed by the COMMIT in flight"
    );
    assert_eq!(now.get(STORED), before.get(STORED), "nothing stored twice");
}

/// A pooled session that can no longer write (its server was made
/// read-only, or is a standby) is not handed out again: a write there fails
/// with 25006, which is not the batch's fault (never a reason to split or
/// quarantine it), and the next checkout opens a new connection. Before, the
/// pool's liveness check passed such a session, and every retry of a batch
/// landed on it again.
#[tokio::test]
async fn a_pooled_session_that_cannot_write_is_replaced_at_checkout() {
    let db = database::TestDatabase::new().await;
    let pool = refused_then_replaced(&db.url, "SET default_transaction_read_only = on").await;
    let client = pool.get().await.expect("a connection");
    client
        .batch_execute("CREATE TABLE written (x int)")
        .await
        .expect("the new session writes");

    // A standby (a URL without target_session_attrs=read-write reaches it).
    let cluster = ReplicatedPostgres::start().await;
    refused_then_replaced(&cluster.standby_url("postgres"), "SELECT 1").await;
}

/// A pool of one connection on `url`: its session, after `setup`, refuses a
/// write with 25006 (a transient error for the worker), and the next
/// checkout gives another session. Returns the pool.
async fn refused_then_replaced(url: &str, setup: &str) -> deadpool_postgres::Pool {
    use corral_runtime::postgres;
    use tokio_postgres::error::SqlState;

    let target = postgres::Target::new(url, None, Duration::from_secs(5)).expect("a target");
    let pool = postgres::pool(&target, 1, "corral-test").expect("a pool");
    let backend = async |client: &deadpool_postgres::Client| -> i32 {
        let row = client.query_one("SELECT pg_backend_pid()", &[]).await;
        row.expect("the backend's pid").get(0)
    };
    let client = pool.get().await.expect("a connection");
    let first = backend(&client).await;
    client.batch_execute(setup).await.expect(setup);
    let refused = client
        .batch_execute("CREATE TABLE written (x int)")
        .await
        .expect_err("no write in a read-only session");
    assert_eq!(refused.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    assert!(
        !corral_worker::db::is_data_error(&refused),
        "transient, not the batch's data"
    );
    drop(client);
    let client = pool.get().await.expect("a connection");
    assert_ne!(backend(&client).await, first, "a new session ({url})");
    drop(client);
    pool
}
