//! The hourly outcome and spend summary: `corral-worker report` on known
//! events, the roll-up of `delivery_summary_changes` into
//! `delivery_summary`, and roll-ups racing each other and late commits. (The
//! summary against a whole loadgen run is in `loadgen`.)
//!
//! # Layout
//!
//! - `report`: `corral-worker report`: exact sums, windows, text and JSON,
//!   its errors.
//! - `roll_up`: the worker's roll-up; every change moved into
//!   `delivery_summary` exactly once.

mod report;
mod roll_up;

use std::collections::BTreeMap;

use tokio_postgres::Client;

/// Per (hour, kind, status, reason): events and the three sums, as text.
pub(crate) type Totals = BTreeMap<(String, String, String, String), (i64, String, String, String)>;

async fn totals(client: &Client, sql: &str) -> Totals {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .iter()
        .map(|row| {
            (
                (row.get(0), row.get(1), row.get(2), row.get(3)),
                (row.get(4), row.get(5), row.get(6), row.get(7)),
            )
        })
        .collect()
}

/// The summary's totals: `delivery_summary` and the changes not yet in it.
pub(crate) async fn summary_totals(client: &Client) -> Totals {
    totals(
        client,
        "SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\"Z\"'), kind, status, reason,
                sum(events)::bigint, sum(product_cost)::text, sum(compliance_fee)::text,
                sum(tts_fee)::text
         FROM (SELECT * FROM delivery_summary
               UNION ALL SELECT * FROM delivery_summary_changes) s
         GROUP BY 1, 2, 3, 4",
    )
    .await
}

/// The same, counted and summed from the stored events themselves.
pub(crate) async fn event_totals(client: &Client) -> Totals {
    totals(
        client,
        "SELECT to_char(date_trunc('hour', attempt_date, 'UTC') AT TIME ZONE 'UTC',
                        'YYYY-MM-DD\"T\"HH24\"Z\"'),
                kind, status, coalesce(reason, ''), count(*),
                coalesce(sum(product_cost), 0)::text, coalesce(sum(compliance_fee), 0)::text,
                coalesce(sum(tts_fee), 0)::text
         FROM delivery_events
         GROUP BY 1, 2, 3, 4",
    )
    .await
}

/// Rows in `table`.
pub(crate) async fn rows(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}
