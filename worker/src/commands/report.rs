//! `corral-worker report`: outcomes and spend over a window, from the hourly
//! summary ([`crate::summary::report`] reads it), as a table or JSON.

use std::{fmt, io::Write, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;

use crate::{
    config::WorkerConfig,
    summary::report::{Report, Sums, Window, read, rfc3339},
};

/// `corral-worker report`: the hourly summary (`delivery_summary` and the
/// changes not yet rolled into it) over a window.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Start of the window: a duration before now (`24h`, `7d`, `90min`) or
    /// an RFC 3339 instant (`2026-11-27T00:00:00Z`). The hour it falls in is
    /// included whole.
    #[arg(long, default_value = "24h", value_parser = parse_moment)]
    pub since: Moment,
    /// End of the window, excluded: a duration before now or an RFC 3339
    /// instant; now when omitted. The hour it falls in is included whole.
    #[arg(long, value_parser = parse_moment)]
    pub until: Option<Moment>,
    /// Print one JSON object (the window and the rows, money as strings).
    #[arg(long)]
    pub json: bool,
    /// One line per hour, kind, status and reason (the hour first).
    #[arg(long)]
    pub by_hour: bool,
}

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

/// Runs `corral-worker report` and writes it to `out`: tab-separated
/// columns under a `#` header naming the window, a total line last; or,
/// with `--json`, one object.
pub async fn run(
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
}
