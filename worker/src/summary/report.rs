//! Reading the hourly summary over a window (what `corral-worker report`
//! prints: [`crate::commands::report`]). The summary is kept per hour of
//! `attempt_date` (UTC), so the window is widened to the whole hours that
//! overlap `[since, until)`, and the output says which. It reads `delivery_summary` and
//! `delivery_summary_changes` together, so it is exact whether or not the
//! latest changes were rolled up. Money is PostgreSQL's own text of the
//! numeric sums: no floating point anywhere.

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::{config::WorkerConfig, db};

const REPORT: &str = include_str!("report.sql");

/// The window a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `--since`, resolved.
    pub since: DateTime<Utc>,
    /// `--until`, resolved (now when not given).
    pub until: DateTime<Utc>,
    /// First hour included: the UTC hour `since` falls in.
    pub from: DateTime<Utc>,
    /// End of the last hour included (excluded): `until` rounded up to the hour.
    pub to: DateTime<Utc>,
}

impl Window {
    /// The whole UTC hours that overlap `[since, until)`.
    pub fn new(since: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            since < until,
            "--since ({}) must be before --until ({})",
            rfc3339(since),
            rfc3339(until)
        );
        let from = hour_of(since);
        let to = if hour_of(until) == until {
            until
        } else {
            hour_of(until) + TimeDelta::hours(1)
        };
        Ok(Self {
            since,
            until,
            from,
            to,
        })
    }
}

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(seconds, 0).unwrap_or(at)
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Events and the exact sums of one group (or of the whole window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    /// Events.
    pub events: i64,
    /// Sum of `product_cost`, as PostgreSQL prints it.
    pub product_cost: String,
    /// Sum of `compliance_fee`.
    pub compliance_fee: String,
    /// Sum of `tts_fee`.
    pub tts_fee: String,
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The hour, with `--by-hour`.
    pub hour: Option<DateTime<Utc>>,
    /// `sms` or `rvm`.
    pub kind: String,
    /// The provider's status.
    pub status: String,
    /// The provider's reason; empty when none.
    pub reason: String,
    /// The provider's `reason_code`; `None` for results without one (v1).
    pub reason_code: Option<i32>,
    /// Its events and sums.
    pub sums: Sums,
}

/// A report: its window, a line per group, the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The window.
    pub window: Window,
    /// Whether lines are per hour too.
    pub by_hour: bool,
    /// By hour (with `by_hour`), kind, status, events (most first), reason.
    pub lines: Vec<Line>,
    /// The whole window.
    pub total: Sums,
}

/// Reads the summary over `window`.
pub async fn read(config: &WorkerConfig, window: Window, by_hour: bool) -> anyhow::Result<Report> {
    let pool = config
        .db
        .target()
        .and_then(|target| db::pool(&target, 1))
        .context("building the database pool")?;
    let client = pool
        .get()
        .await
        .context("connecting to PostgreSQL (CORRAL_DATABASE_URL)")?;
    let rows = client
        .query(REPORT, &[&window.from, &window.to, &by_hour])
        .await
        .context(
            "reading delivery_summary and delivery_summary_changes (is the database migrated?)",
        )?;
    let sums = |row: &tokio_postgres::Row| Sums {
        // NULL only for the total of an empty window.
        events: row.get::<_, Option<i64>>("events").unwrap_or(0),
        product_cost: row.get("product_cost"),
        compliance_fee: row.get("compliance_fee"),
        tts_fee: row.get("tts_fee"),
    };
    let mut lines = Vec::with_capacity(rows.len());
    let mut total = None;
    for row in &rows {
        if row.get("total") {
            total = Some(sums(row));
        } else {
            lines.push(Line {
                hour: row.get("hour"),
                kind: row.get("kind"),
                status: row.get("status"),
                reason: row.get("reason"),
                reason_code: row.get("reason_code"),
                sums: sums(row),
            });
        }
    }
    Ok(Report {
        window,
        by_hour,
        lines,
        total: total.context("the report query returned no total")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn the_window_is_the_whole_hours_overlapping() {
        let window = Window::new(at("2026-11-27T05:30:00Z"), at("2026-11-27T07:00:00Z")).unwrap();
        assert_eq!(
            (window.from, window.to),
            (at("2026-11-27T05:00:00Z"), at("2026-11-27T07:00:00Z"))
        );
        let window = Window::new(at("2026-11-27T05:00:00Z"), at("2026-11-27T07:00:00.5Z")).unwrap();
        assert_eq!(
            (window.from, window.to),
            (at("2026-11-27T05:00:00Z"), at("2026-11-27T08:00:00Z"))
        );
        let backwards =
            Window::new(at("2026-11-27T07:00:00Z"), at("2026-11-27T05:00:00Z")).unwrap_err();
        assert_eq!(
            backwards.to_string(),
            "--since (2026-11-27T07:00:00Z) must be before --until (2026-11-27T05:00:00Z)"
        );
    }
}
