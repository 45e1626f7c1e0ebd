//! Both binaries as real processes, configured through `CORRAL_*` variables
//! only, driven over HTTP as Drop Cowboy would: what is answered 2xx is a row,
//! exactly once, also across a SIGTERM of both mid-stream.

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use corral_testkit::{
    apps::TOKEN,
    broker::TestBroker,
    fixtures,
    process::{Process, ProcessConfig},
    stack::Stack,
    wait,
};
use futures_util::StreamExt;
use tokio_postgres::Client;
use uuid::Uuid;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(25);

/// Posts one webhook; the id when answered 200, else what happened.
async fn post(http: &reqwest::Client, ingress_url: &str, body: String) -> Result<Uuid, String> {
    let response = http
        .post(ingress_url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| format!("no answer: {err}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|err| err.to_string())?;
    if status != 200 {
        return Err(format!("{status} {text}"));
    }
    let answer: serde_json::Value = serde_json::from_str(&text).map_err(|err| err.to_string())?;
    answer["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("200 without an id: {text}"))
}

/// A webhook with a drop id of its own, for `kind`.
fn webhook(i: usize) -> String {
    let drop_id = format!("e2e{i:021}");
    let reason = if i.is_multiple_of(3) {
        ""
    } else {
        fixtures::FAILURE_REASONS[i % fixtures::FAILURE_REASONS.len()]
    };
    fixtures::delivery_status(
        &drop_id,
        "2026-11-27T05:24:31.000Z",
        reason,
        &format!("o-{i}"),
    )
}

fn kind(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "sms" } else { "rvm" }
}

/// Rows per message id among `ids`, and the table's row count.
async fn rows_by_id(client: &Client, ids: &[Uuid]) -> (HashMap<Uuid, (i64, String)>, i64) {
    let rows = client
        .query(
            "SELECT message_id, count(*), min(kind) FROM delivery_events
             WHERE message_id = ANY($1) GROUP BY message_id",
            &[&ids],
        )
        .await
        .expect("reading rows by message id");
    let total: i64 = client
        .query_one("SELECT count(*) FROM delivery_events", &[])
        .await
        .expect("counting rows")
        .get(0);
    (
        rows.iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect(),
        total,
    )
}

/// Waits until every id in `ids` is a row; on timeout, panics with what is
/// missing, where the messages are, and the processes' last log lines.
async fn wait_rows_for(client: &Client, ids: &[Uuid], broker: &TestBroker, logs: &[&Process]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (rows, total) = rows_by_id(client, ids).await;
        if rows.len() == ids.len() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<&Uuid> = ids.iter().filter(|id| !rows.contains_key(id)).collect();
            let ready = broker.ready_count(&broker.topology.queue()).await;
            let dead = broker
                .ready_count(&broker.topology.dead_letter_queue())
                .await;
            let logs: Vec<String> = logs.iter().map(|p| p.log_tail()).collect();
            panic!(
                "{} of {} webhooks answered 200 are not rows after {WAIT:?} ({total} rows; \
                 {ready} messages ready in the queue, {dead} dead-lettered); first missing: \
                 {:?}\nlogs:\n{}",
                missing.len(),
                ids.len(),
                &missing[..missing.len().min(5)],
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_posted_to_the_ingress_process_become_rows_in_the_worker_process() {
    const N: usize = 200;
    let stack = Stack::builder().database().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let ingress = Process::start(ProcessConfig::ingress(broker.prefix(), TOKEN)).await;
    let worker = Process::start(ProcessConfig::worker(&db.url, broker.prefix())).await;
    ingress.wait_ready(true).await;
    worker.wait_ready(true).await;

    let http = reqwest::Client::new();
    let posts = (0..N).map(|i| {
        let http = http.clone();
        let url = ingress.webhook_url(kind(i));
        tokio::spawn(async move { (i, post(&http, &url, webhook(i)).await) })
    });
    let mut ids = Vec::with_capacity(N);
    let mut kinds = HashMap::new();
    for task in futures_util::future::join_all(posts).await {
        let (i, id) = task.expect("posting task");
        let id = id.unwrap_or_else(|err| panic!("webhook {i} was not answered 200: {err}"));
        kinds.insert(id, kind(i));
        ids.push(id);
    }

    let client = db.client().await;
    wait_rows_for(&client, &ids, broker, &[&ingress, &worker]).await;
    let (rows, total) = rows_by_id(&client, &ids).await;
    assert_eq!(total, N as i64, "rows that no webhook asked for");
    for (id, (count, kind)) in &rows {
        assert_eq!(*count, 1, "message {id} stored {count} times");
        assert_eq!(kind, kinds[id], "kind of message {id}");
    }
    let stored = r#"corral_worker_messages_total{outcome="stored"}"#;
    wait::until_true("the worker to count every row", WAIT, || async {
        worker.metrics().await.get(stored) >= N as f64
    })
    .await;
    assert_eq!(worker.metrics().await.get(stored), N as f64);
    let published = ingress.metrics().await;
    assert_eq!(
        published.get(r#"corral_ingress_published_total{kind="sms"}"#)
            + published.get(r#"corral_ingress_published_total{kind="rvm"}"#),
        N as f64
    );
}

/// SIGTERM to both processes while webhooks stream in: both exit 0, and every
/// webhook answered 200 is a row exactly once (those still queued are stored
/// by the worker restarted with the same configuration).
#[tokio::test]
async fn sigterm_to_both_mid_stream_exits_zero_and_every_2xx_is_one_row() {
    let stack = Stack::builder().database().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let mut ingress = Process::start(ProcessConfig::ingress(broker.prefix(), TOKEN)).await;
    let mut worker = Process::start(ProcessConfig::worker(&db.url, broker.prefix())).await;
    ingress.wait_ready(true).await;
    worker.wait_ready(true).await;

    // Eight clients post until the ingress has been told to stop and no
    // longer answers (or the test says stop).
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let terminated = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::new();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (http, accepted, refused, attempts, terminated, stop) = (
                http.clone(),
                accepted.clone(),
                refused.clone(),
                attempts.clone(),
                terminated.clone(),
                stop.clone(),
            );
            let urls = [ingress.webhook_url("sms"), ingress.webhook_url("rvm")];
            tokio::spawn(async move {
                let mut failures_since_sigterm = 0;
                while !stop.load(Ordering::SeqCst) && failures_since_sigterm < 20 {
                    let i = attempts.fetch_add(1, Ordering::SeqCst);
                    match post(&http, &urls[i % 2], webhook(i)).await {
                        Ok(id) => accepted.lock().expect("lock").push(id),
                        Err(error) => {
                            if terminated.load(Ordering::SeqCst) {
                                failures_since_sigterm += 1;
                            } else {
                                refused.lock().expect("lock").push(error);
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        })
        .collect();

    // Mid-stream: webhooks are being accepted and rows are being written.
    let client = db.client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM delivery_events", &[])
            .await
            .expect("counting rows")
            .get(0);
        let accepted = accepted.lock().expect("lock").len();
        if rows >= 20 && accepted >= 50 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let refused = refused.lock().expect("lock");
            panic!(
                "the stream did not flow: {accepted} accepted, {rows} rows, {} refused \
                 (first: {:?}); logs:\n{}\n{}",
                refused.len(),
                refused.first(),
                ingress.log_tail(),
                worker.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminated.store(true, Ordering::SeqCst);
    ingress.sigterm();
    worker.sigterm();
    let ingress_exit = ingress.wait_exit(WAIT).await;
    let worker_exit = worker.wait_exit(WAIT).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("posting client");
    }
    assert_eq!(
        ingress_exit.code(),
        Some(0),
        "ingress exit; its log:\n{}",
        ingress.log_tail()
    );
    assert_eq!(
        worker_exit.code(),
        Some(0),
        "worker exit; its log:\n{}",
        worker.log_tail()
    );

    // What the stopped worker left in the queue, the restarted one stores.
    worker.restart();
    worker.wait_ready(true).await;
    let accepted = accepted.lock().expect("lock").clone();
    assert!(accepted.len() >= 50);
    wait_rows_for(&client, &accepted, broker, &[&ingress, &worker]).await;
    wait::until_true("the queue to be drained", WAIT, || async {
        broker.ready_count(&broker.topology.queue()).await == 0
    })
    .await;
    let (rows, total) = rows_by_id(&client, &accepted).await;
    for (id, (count, _)) in &rows {
        assert_eq!(*count, 1, "message {id} stored {count} times");
    }
    // Rows beyond the 200s can only be webhooks published whose answer never
    // reached the client (not 2xx, so the provider would send them again).
    let attempts = attempts.load(Ordering::SeqCst) as i64;
    assert!(
        total >= accepted.len() as i64 && total <= attempts,
        "{total} rows for {} accepted of {attempts} attempts",
        accepted.len()
    );
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) - count(DISTINCT drop_id) FROM delivery_events",
            &[],
        )
        .await
        .expect("counting duplicates")
        .get(0);
    assert_eq!(duplicates, 0, "a webhook stored twice");
    assert_eq!(worker.terminate(WAIT).await.code(), Some(0));
}

/// The worker killed with SIGKILL mid-stream (no drain at all) and restarted
/// with the same configuration: every webhook answered 200 is a row exactly
/// once; what the killed worker had committed but not acknowledged comes back
/// from RabbitMQ and is recognised as duplicates.
#[tokio::test]
async fn a_worker_killed_mid_stream_and_restarted_loses_and_doubles_nothing() {
    const N: usize = 300;
    let stack = Stack::builder().database().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let ingress = Process::start(ProcessConfig::ingress(broker.prefix(), TOKEN)).await;
    let mut worker = Process::start(ProcessConfig::worker(&db.url, broker.prefix())).await;
    ingress.wait_ready(true).await;
    worker.wait_ready(true).await;
    assert!(worker.rss_bytes().is_some_and(|rss| rss > 0));

    let http = reqwest::Client::new();
    let urls = [ingress.webhook_url("sms"), ingress.webhook_url("rvm")];
    let posting = tokio::spawn(async move {
        let mut accepted = Vec::with_capacity(N);
        let mut posts = futures_util::stream::iter((0..N).map(|i| {
            let (http, url) = (http.clone(), urls[i % 2].clone());
            async move { post(&http, &url, webhook(i)).await }
        }))
        .buffer_unordered(16);
        while let Some(answer) = posts.next().await {
            accepted.push(answer.expect("the ingress answers 200 throughout"));
        }
        accepted
    });

    let client = db.client().await;
    wait::until_true("rows to be flowing", WAIT, || {
        let client = &client;
        async move {
            client
                .query_one("SELECT count(*) FROM delivery_events", &[])
                .await
                .expect("counting rows")
                .get::<_, i64>(0)
                >= 50
        }
    })
    .await;
    worker.sigkill();
    let status = worker.wait_exit(WAIT).await;
    assert_eq!(status.signal(), Some(9), "killed, not exited: {status}");
    assert_eq!(worker.rss_bytes(), None);

    let accepted = posting.await.expect("posting task");
    worker.restart();
    worker.wait_ready(true).await;
    wait_rows_for(&client, &accepted, broker, &[&ingress, &worker]).await;
    wait::until_true("the queue to be drained", WAIT, || async {
        broker.ready_count(&broker.topology.queue()).await == 0
    })
    .await;
    let (rows, total) = rows_by_id(&client, &accepted).await;
    assert_eq!(total, N as i64);
    for (id, (count, _)) in &rows {
        assert_eq!(*count, 1, "message {id} stored {count} times");
    }
}
