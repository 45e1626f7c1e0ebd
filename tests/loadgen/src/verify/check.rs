//! One pass over the run's rows: events, copies, latest state, quarantine.

use std::pin::pin;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use tokio_postgres::Client;

use crate::traffic::RunId;

use super::*;

/// The newest stored event of a `drop_id`, and whether `deliveries` agrees.
#[derive(Debug)]
pub(super) struct Latest {
    item: u64,
    attempt_date: DateTime<Utc>,
    received_at: DateTime<Utc>,
    fingerprint: Vec<u8>,
    seen_in_deliveries: bool,
}

/// What makes one state of a `drop_id` newer than another: the worker's own
/// order, `(attempt_date, received_at, fingerprint)`.
type Rank<'a> = (DateTime<Utc>, DateTime<Utc>, &'a [u8]);

/// One row as [`for_each_row`] reads it.
pub(super) struct Row<'a> {
    drop_id: &'a str,
    attempt_date: DateTime<Utc>,
    received_at: DateTime<Utc>,
    fingerprint: Vec<u8>,
}

impl Row<'_> {
    fn rank(&self) -> Rank<'_> {
        (self.attempt_date, self.received_at, &self.fingerprint)
    }
}

impl Latest {
    fn rank(&self) -> Rank<'_> {
        (self.attempt_date, self.received_at, &self.fingerprint)
    }
}

/// A verification being filled in, with its first few examples.
#[derive(Debug)]
pub(super) struct Pass {
    verification: Verification,
    examples: Vec<String>,
}

impl Pass {
    fn note(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// One pass over the run's rows.
pub(super) async fn check(
    client: &Client,
    scope: &Scope,
    run_id: RunId,
    expected: &mut [Expected],
) -> Result<Verification, VerifyError> {
    for entry in expected.iter_mut() {
        entry.copies = 0;
    }
    let mut pass = Pass {
        verification: Verification {
            webhooks: expected.len() as u64,
            confirmed: expected.iter().filter(|e| e.confirmed).count() as u64,
            ..Verification::default()
        },
        examples: Vec::new(),
    };
    let mut latest = match_events(client, scope, run_id, expected, &mut pass).await?;
    tally(run_id, expected, &mut pass);
    check_deliveries(client, scope, run_id, &mut latest, &mut pass).await?;
    count_quarantined(client, run_id, &mut pass).await?;
    pass.verification.examples = pass.examples;
    Ok(pass.verification)
}

/// Calls `each` with every row of the run in `table` (`delivery_events` or
/// `deliveries`), in `order`.
pub(super) async fn for_each_row(
    client: &Client,
    scope: &Scope,
    table: &str,
    order: &str,
    mut each: impl FnMut(Row<'_>),
) -> Result<(), VerifyError> {
    let sql = format!(
        "SELECT drop_id, attempt_date, received_at, fingerprint FROM {table} WHERE {}{order}",
        scope.condition()
    );
    let mut rows = pin!(client.query_raw(&sql, scope.params()).await?);
    while let Some(row) = rows.try_next().await? {
        each(Row {
            drop_id: row.get(0),
            attempt_date: row.get(1),
            received_at: row.get(2),
            fingerprint: row.get(3),
        });
    }
    Ok(())
}

/// `delivery_events`: matches every row of the run to a sent body, counting
/// copies; returns the newest event of each `drop_id`, sorted by item.
pub(super) async fn match_events(
    client: &Client,
    scope: &Scope,
    run_id: RunId,
    expected: &mut [Expected],
    pass: &mut Pass,
) -> Result<Vec<Latest>, VerifyError> {
    let mut latest: Vec<Latest> = Vec::new();
    let each = |row: Row<'_>| {
        let drop_id = row.drop_id;
        let Some(item) = run_id.item_of(drop_id) else {
            pass.verification.unexpected += 1;
            pass.note(format!(
                "unexpected row: drop_id {drop_id} is not one this run makes"
            ));
            return;
        };
        match latest.last_mut() {
            Some(last) if last.item == item => {
                if row.rank() > last.rank() {
                    last.attempt_date = row.attempt_date;
                    last.received_at = row.received_at;
                    last.fingerprint.clone_from(&row.fingerprint);
                }
            }
            _ => latest.push(Latest {
                item,
                attempt_date: row.attempt_date,
                received_at: row.received_at,
                fingerprint: row.fingerprint.clone(),
                seen_in_deliveries: false,
            }),
        }
        let (attempt_date, fingerprint) = (row.attempt_date, row.fingerprint);
        let first = expected.partition_point(|e| e.item < item);
        let candidates = expected[first..]
            .iter_mut()
            .take_while(|e| e.item == item)
            .find(|e| e.attempt_date == attempt_date);
        match candidates {
            Some(entry) if entry.fingerprint[..] == fingerprint[..] => entry.copies += 1,
            Some(_) => {
                pass.verification.mismatched += 1;
                pass.note(format!(
                    "mismatched row: drop_id {drop_id} attempt_date {attempt_date} has another fingerprint than the body sent"
                ));
            }
            None => {
                pass.verification.unexpected += 1;
                pass.note(format!(
                    "unexpected row: drop_id {drop_id} attempt_date {attempt_date} was never sent"
                ));
            }
        }
    };
    for_each_row(client, scope, "delivery_events", " ORDER BY drop_id", each).await?;
    latest.sort_unstable_by_key(|l| l.item);
    Ok(latest)
}

/// Lost, stored once, duplicated, and the unconfirmed, from the copies counted.
pub(super) fn tally(run_id: RunId, expected: &[Expected], pass: &mut Pass) {
    for entry in expected {
        let drop_id = run_id.drop_id(entry.item);
        match (entry.confirmed, entry.copies) {
            (true, 0) => {
                pass.verification.lost += 1;
                pass.note(format!(
                    "lost: drop_id {drop_id} attempt_date {} was answered 2xx and is not stored",
                    entry.attempt_date
                ));
            }
            (true, 1) => pass.verification.stored_once += 1,
            (false, 0) => pass.verification.unconfirmed_missing += 1,
            (false, _) => pass.verification.unconfirmed_stored += 1,
            (true, _) => {}
        }
        if entry.copies > 1 {
            pass.verification.duplicated += 1;
            pass.verification.extra_rows += u64::from(entry.copies - 1);
            pass.note(format!(
                "duplicated: drop_id {drop_id} attempt_date {} is stored {} times",
                entry.attempt_date, entry.copies
            ));
        }
    }
}

/// `deliveries`: one row per `drop_id`, showing its newest stored event.
pub(super) async fn check_deliveries(
    client: &Client,
    scope: &Scope,
    run_id: RunId,
    latest: &mut [Latest],
    pass: &mut Pass,
) -> Result<(), VerifyError> {
    let each = |row: Row<'_>| {
        let (drop_id, attempt_date) = (row.drop_id, row.attempt_date);
        let found = run_id
            .item_of(drop_id)
            .and_then(|item| latest.binary_search_by_key(&item, |l| l.item).ok());
        match found {
            Some(index) => {
                let newest = &mut latest[index];
                newest.seen_in_deliveries = true;
                if newest.rank() != row.rank() {
                    pass.verification.stale_latest += 1;
                    pass.note(format!(
                        "stale latest: deliveries shows drop_id {drop_id} at {attempt_date}, its newest stored event is at {}",
                        newest.attempt_date
                    ));
                }
            }
            None => {
                pass.verification.stale_latest += 1;
                pass.note(format!(
                    "stale latest: deliveries has drop_id {drop_id} with no stored event"
                ));
            }
        }
    };
    for_each_row(client, scope, "deliveries", "", each).await?;
    for missing in latest.iter().filter(|l| !l.seen_in_deliveries) {
        pass.verification.stale_latest += 1;
        pass.note(format!(
            "stale latest: drop_id {} has events but no deliveries row",
            run_id.drop_id(missing.item)
        ));
    }
    Ok(())
}

/// Bodies of the run the worker quarantined (it should have typed them all).
pub(super) async fn count_quarantined(
    client: &Client,
    run_id: RunId,
    pass: &mut Pass,
) -> Result<(), VerifyError> {
    let quarantined: i64 = client
        .query_one(
            "SELECT count(*) FROM quarantined_webhooks WHERE position($1::bytea IN body) > 0",
            &[&run_id.hex().into_bytes()],
        )
        .await?
        .get(0);
    pass.verification.quarantined = u64::try_from(quarantined).unwrap_or(0);
    if quarantined > 0 {
        pass.note(format!(
            "quarantined: {quarantined} bodies of this run are in quarantined_webhooks"
        ));
    }
    Ok(())
}
