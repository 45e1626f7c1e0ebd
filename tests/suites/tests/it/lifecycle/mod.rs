//! The data lifecycle (issue 30): `delivery_events` partitioned by UTC day
//! of the provider's time, partitions made ahead and dropped past
//! `CORRAL_RETENTION` by the worker's maintenance, which these tests run
//! with a clock of their own (`lifecycle::maintain(…, now, …)`), so many
//! days pass in a moment.

mod migration;
mod partitions;
mod plans;
mod retention;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use corral_contract::envelope::{Envelope, Incoming, Kind};
use corral_testkit::{database::TestDatabase, fixtures};
use corral_worker::{
    db::Target,
    lifecycle::{self, LifecycleSettings, Maintained},
    store::{self, BatchOutcome},
};
use tokio_postgres::Client;
use uuid::Uuid;

/// Midnight UTC `days` from today.
fn day(days: i64) -> DateTime<Utc> {
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight");
    today.and_utc() + TimeDelta::days(days)
}

/// The partition holding `at`'s day.
fn partition_of(at: DateTime<Utc>) -> String {
    format!("delivery_events_{}", at.format("%Y%m%d"))
}

/// A retention of `days` days.
fn keep(days: u64) -> LifecycleSettings {
    LifecycleSettings {
        retention: Some(Duration::from_secs(days * 24 * 3600)),
        summary_retention: None,
    }
}

/// A callback body for `drop_id` attempted at `at`.
fn body(drop_id: &str, at: DateTime<Utc>) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    fixtures::delivery_status(drop_id, &at, "", &format!("order-{drop_id}"))
}

/// `body` as the worker takes it off the queue: a fresh id, received now.
fn incoming(body: &str) -> Incoming {
    Incoming {
        body: body.as_bytes().to_vec(),
        routing_key: Kind::Sms.routing_key().to_owned(),
        envelope: Envelope {
            message_id: Some(Uuid::now_v7()),
            received_at: Some(Utc::now()),
        },
    }
}

/// The worker's own pool on `db`.
fn pool(db: &TestDatabase) -> deadpool_postgres::Pool {
    let target = Target::new(&db.url, None, Duration::from_secs(30)).expect("the test's URL");
    corral_worker::db::pool(&target, 2).expect("a pool")
}

/// Writes `bodies` as one batch, as the consumer does (result events on).
async fn write(pool: &deadpool_postgres::Pool, bodies: &[String]) -> BatchOutcome {
    let messages: Vec<Incoming> = bodies.iter().map(|b| incoming(b)).collect();
    let batch = store::prepare_all(&messages).with_result_events(true);
    let mut client = pool.get().await.expect("a pooled connection");
    store::write_batch(&mut client, &batch)
        .await
        .expect("the batch commits")
}

/// One maintenance round as of `now` (no worker runs here: nobody else
/// holds the lock).
async fn maintain(
    client: &mut Client,
    now: DateTime<Utc>,
    settings: &LifecycleSettings,
) -> Maintained {
    lifecycle::maintain(client, now, settings)
        .await
        .expect("the maintenance round")
        .expect("nobody else holds the maintenance lock")
}

/// The answer of `sql`, a single bigint.
async fn number(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .get(0)
}

/// The partitions of `delivery_events`, oldest first.
async fn partitions(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT name FROM delivery_event_partitions ORDER BY upper",
            &[],
        )
        .await
        .expect("the partitions")
        .iter()
        .map(|row| row.get(0))
        .collect()
}
