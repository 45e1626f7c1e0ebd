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
    /// The extra column asked for: a signed event's `event_id` in
    /// `delivery_events`, the `foreign_id` in `deliveries`.
    extra: Option<String>,
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
    pub(super) verification: Verification,
    examples: Vec<String>,
}

impl Pass {
    pub(super) fn note(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// The run's scopes: its `drop_id`s, its `event_id`s.
pub(super) type Scopes<'a> = (&'a Scope, &'a Scope);

/// One pass over the run's rows.
pub(super) async fn check(
    client: &Client,
    (drops, events): Scopes<'_>,
    run_id: RunId,
    plan: &mut Plan,
) -> Result<Verification, VerifyError> {
    for entry in &mut plan.expected {
        entry.copies = 0;
    }
    let expected = &mut plan.expected;
    let mut pass = Pass {
        verification: Verification {
            webhooks: expected.len() as u64,
            confirmed: expected.iter().filter(|e| e.confirmed).count() as u64,
            signed_events: expected.iter().filter(|e| e.event.is_some()).count() as u64,
            both_channels: plan.both.len() as u64,
            ..Verification::default()
        },
        examples: Vec::new(),
    };
    if !plan.signed {
        signed::note_not_kept(expected, &mut pass);
    }
    let extra = if plan.signed {
        "event_id::text"
    } else {
        "NULL::text"
    };
    let mut latest = match_events(client, drops, extra, run_id, expected, &mut pass).await?;
    if plan.signed {
        signed::match_provider_events(client, events, run_id, expected, &mut pass).await?;
    }
    tally(run_id, expected, &mut pass);
    check_deliveries(client, drops, run_id, &mut latest, &plan.both, &mut pass).await?;
    count_quarantined(client, run_id, &mut pass).await?;
    pass.verification.examples = pass.examples;
    Ok(pass.verification)
}

/// Calls `each` with every row of the run in `table` (`delivery_events` or
/// `deliveries`), with `extra` (a text column or expression), in `order`.
pub(super) async fn for_each_row(
    client: &Client,
    scope: &Scope,
    (table, extra): (&str, &str),
    order: &str,
    mut each: impl FnMut(Row<'_>),
) -> Result<(), VerifyError> {
    let sql = format!(
        "SELECT drop_id, attempt_date, received_at, fingerprint, {extra} FROM {table} WHERE {}{order}",
        scope.condition("drop_id", 1)
    );
    let mut rows = pin!(client.query_raw(&sql, scope.params()).await?);
    while let Some(row) = rows.try_next().await? {
        each(Row {
            drop_id: row.get(0),
            attempt_date: row.get(1),
            received_at: row.get(2),
            fingerprint: row.get(3),
            extra: row.get(4),
        });
    }
    Ok(())
}

/// `delivery_events`: matches every row of the run to a sent body, counting
/// copies (a callback by its fingerprint, a signed result by its
/// `event_id`, read as `extra`); returns the newest event of each
/// `drop_id`, sorted by item.
pub(super) async fn match_events(
    client: &Client,
    scope: &Scope,
    extra: &str,
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
        match &row.extra {
            Some(event_id) => signed::match_event(
                run_id,
                event_id,
                (Destination::DeliveryEvents, Some(item)),
                expected,
                pass,
            ),
            None => match_callback(item, &row, expected, pass),
        }
    };
    let columns = ("delivery_events", extra);
    for_each_row(client, scope, columns, " ORDER BY drop_id", each).await?;
    latest.sort_unstable_by_key(|l| l.item);
    Ok(latest)
}

/// A callback's row: a copy of the body of `item` sent with its
/// `attempt_date` and fingerprint.
fn match_callback(item: u64, row: &Row<'_>, expected: &mut [Expected], pass: &mut Pass) {
    let (drop_id, attempt_date) = (row.drop_id, row.attempt_date);
    let first = expected.partition_point(|e| e.item < item);
    let candidate = expected[first..]
        .iter_mut()
        .take_while(|e| e.item == item)
        .find(|e| e.fingerprint.is_some() && e.attempt_date == attempt_date);
    match candidate {
        Some(entry)
            if entry
                .fingerprint
                .is_some_and(|f| f[..] == row.fingerprint[..]) =>
        {
            entry.copies += 1;
        }
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
}

/// Lost, stored once, duplicated, and the unconfirmed, from the copies counted.
pub(super) fn tally(run_id: RunId, expected: &[Expected], pass: &mut Pass) {
    for entry in expected {
        let what = || match &entry.event {
            Some(event) => format!(
                "event_id {} ({} of drop_id {})",
                event.id,
                event.name,
                run_id.drop_id(entry.item)
            ),
            None => format!(
                "drop_id {} attempt_date {}",
                run_id.drop_id(entry.item),
                entry.attempt_date
            ),
        };
        match (entry.confirmed, entry.copies) {
            (true, 0) => {
                pass.verification.lost += 1;
                pass.note(format!(
                    "lost: {} was answered 2xx and is not stored",
                    what()
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
                "duplicated: {} is stored {} times",
                what(),
                entry.copies
            ));
        }
    }
}

/// `deliveries`: one row per `drop_id`, showing its newest stored event,
/// and for a drop reported on both channels the callback's `foreign_id`
/// (in `both`, sorted by item).
pub(super) async fn check_deliveries(
    client: &Client,
    scope: &Scope,
    run_id: RunId,
    latest: &mut [Latest],
    both: &[BothChannels],
    pass: &mut Pass,
) -> Result<(), VerifyError> {
    let each = |row: Row<'_>| {
        let (drop_id, attempt_date) = (row.drop_id, row.attempt_date);
        let item = run_id.item_of(drop_id);
        if let Some(item) = item {
            signed::check_merged(run_id, item, row.extra.as_deref(), both, pass);
        }
        let found = item.and_then(|item| latest.binary_search_by_key(&item, |l| l.item).ok());
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
    for_each_row(client, scope, ("deliveries", "foreign_id"), "", each).await?;
    for missing in latest.iter().filter(|l| !l.seen_in_deliveries) {
        pass.verification.stale_latest += 1;
        pass.note(format!(
            "stale latest: drop_id {} has events but no deliveries row",
            run_id.drop_id(missing.item)
        ));
    }
    Ok(())
}

/// Bodies of the run the worker quarantined (it should have typed them
/// all): those holding the run's id, or its `event_id`s' prefix.
pub(super) async fn count_quarantined(
    client: &Client,
    run_id: RunId,
    pass: &mut Pass,
) -> Result<(), VerifyError> {
    let quarantined: i64 = client
        .query_one(
            "SELECT count(*) FROM quarantined_webhooks \
             WHERE position($1::bytea IN body) > 0 OR position($2::bytea IN body) > 0",
            &[
                &run_id.hex().into_bytes(),
                &run_id.event_prefix().into_bytes(),
            ],
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
