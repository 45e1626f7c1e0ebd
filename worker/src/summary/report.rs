//! `corral-worker report`: outcomes and spend over a window, from the hourly
//! summary. The summary is kept per hour of `attempt_date` (UTC), so the
//! window is widened to the whole hours that overlap `[since, until)`, and
//! the output says which. It reads `delivery_summary` and
//! `delivery_summary_changes` together, so it is exact whether or not the
//! latest changes were rolled up. Money is PostgreSQL's own text of the
//! numeric sums: no floating point anywhere.

use std::{fmt, io::Write, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::{config::ReportArgs, config::WorkerConfig, db};

const REPORT: &str = include_str!("report.sql");

/// A point in time as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// This long before now (`24h`, `7d`, `90min`).
    Ago(Duration),
    /// An RFC 3339 instant.
    At(DateTime<Utc>),
}

impl Moment {
    /// The instant, with `now` as the reference of a duration.
    pub fn at(self, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        match self {
            Self::At(at) => Ok(at),
            Self::Ago(ago) => TimeDelta::from_std(ago)
                .ok()
                .and_then(|ago| now.checked_sub_signed(ago))
                .with_context(|| format!("{self} reaches before the earliest date there is")),
        }
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ago(ago) => write!(f, "{} ago", humantime::format_duration(*ago)),
            Self::At(at) => f.write_str(&rfc3339(*at)),
        }
    }
}

/// Parses `--since` / `--until`: a duration before now or an RFC 3339 instant.
pub fn parse_moment(text: &str) -> Result<Moment, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(Moment::Ago(ago));
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Moment::At(at.with_timezone(&Utc)));
    }
    Err(format!(
        "{text:?} is neither a duration before now (24h, 7d, 90min, 1h 30m) nor an RFC 3339 \
         instant (2026-11-27T00:00:00Z)"
    ))
}

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

fn rfc3339(at: DateTime<Utc>) -> String {
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
        .database()
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

/// Runs `corral-worker report` and writes it to `out`: tab-separated
/// columns under a `#` header naming the window, a total line last; or,
/// with `--json`, one object.
pub async fn report_command(
    args: ReportArgs,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // To the second: the header shows it, and no report needs finer.
    let now = Utc::now();
    let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let since = args.since.at(now)?;
    let until = args.until.map_or(Ok(now), |until| until.at(now))?;
    let window = Window::new(since, until)?;
    let report = read(config, window, args.by_hour).await?;
    if args.json {
        write_json(&report, out)
    } else {
        write_text(&report, out)
    }
}

/// A reason on one line of the table (the provider's text is free).
fn cell(text: &str) -> String {
    if text.is_empty() {
        return "-".to_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The table: tab-separated, to read or to pipe to `cut`. `reason_code`
/// is the last column, so the columns before it stay where they were.
pub fn write_text(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    let window = &report.window;
    writeln!(
        out,
        "# attempt_date in whole UTC hours [{}, {}), the hours overlapping --since {} --until {}",
        rfc3339(window.from),
        rfc3339(window.to),
        rfc3339(window.since),
        rfc3339(window.until),
    )?;
    let hour = if report.by_hour { "hour\t" } else { "" };
    writeln!(
        out,
        "# {hour}kind\tstatus\treason\tevents\tproduct_cost\tcompliance_fee\ttts_fee\treason_code"
    )?;
    let sums = |sums: &Sums| {
        format!(
            "{}\t{}\t{}\t{}",
            sums.events, sums.product_cost, sums.compliance_fee, sums.tts_fee
        )
    };
    for line in &report.lines {
        let hour = line
            .hour
            .map_or_else(String::new, |hour| format!("{}\t", rfc3339(hour)));
        let code = line
            .reason_code
            .map_or_else(|| "-".to_owned(), |code| code.to_string());
        writeln!(
            out,
            "{hour}{}\t{}\t{}\t{}\t{code}",
            cell(&line.kind),
            cell(&line.status),
            cell(&line.reason),
            sums(&line.sums)
        )?;
    }
    let blank = if report.by_hour { "\t-" } else { "" };
    writeln!(out, "total{blank}\t-\t-\t{}\t-", sums(&report.total))?;
    Ok(())
}

/// The report as one JSON object; money as strings, exact.
pub fn write_json(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    let sums = |sums: &Sums| {
        serde_json::json!({
            "events": sums.events,
            "product_cost": sums.product_cost,
            "compliance_fee": sums.compliance_fee,
            "tts_fee": sums.tts_fee,
        })
    };
    let lines: Vec<serde_json::Value> = report
        .lines
        .iter()
        .map(|line| {
            let mut value = sums(&line.sums);
            let object = value.as_object_mut().expect("an object");
            if let Some(hour) = line.hour {
                object.insert("hour".into(), rfc3339(hour).into());
            }
            object.insert("kind".into(), line.kind.clone().into());
            object.insert("status".into(), line.status.clone().into());
            object.insert("reason".into(), line.reason.clone().into());
            object.insert("reason_code".into(), line.reason_code.into());
            value
        })
        .collect();
    let window = &report.window;
    let document = serde_json::json!({
        "window": {
            "from": rfc3339(window.from),
            "to": rfc3339(window.to),
            "since": rfc3339(window.since),
            "until": rfc3339(window.until),
        },
        "by_hour": report.by_hour,
        "rows": lines,
        "total": sums(&report.total),
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn moments_are_durations_or_instants() {
        assert_eq!(
            parse_moment("24h"),
            Ok(Moment::Ago(Duration::from_secs(86_400)))
        );
        assert_eq!(
            parse_moment("1h 30m"),
            Ok(Moment::Ago(Duration::from_secs(5_400)))
        );
        assert_eq!(
            parse_moment("2026-11-27T07:30:00+02:00"),
            Ok(Moment::At(at("2026-11-27T05:30:00Z")))
        );
        let refused = parse_moment("yesterday").unwrap_err();
        assert!(refused.contains("\"yesterday\" is neither"), "{refused}");
        assert_eq!(
            Moment::Ago(Duration::from_secs(7_200))
                .at(at("2026-11-27T05:30:00Z"))
                .unwrap(),
            at("2026-11-27T03:30:00Z")
        );
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
