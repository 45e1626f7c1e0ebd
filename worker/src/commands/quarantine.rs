//! `corral-worker quarantine …`: list and re-type the webhooks the worker
//! could not type ([`crate::ops::quarantine`] does the work).

use std::io::Write;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::Value;

use super::{
    Outcome,
    output::{ListArgs, finish_list, progress, progress_done},
    preview,
};
use crate::{
    config::WorkerConfig,
    ops::quarantine::{
        Quarantined, ReprocessOptions, ReprocessReport, Verdict, list_quarantined,
        reprocess_quarantined_with,
    },
};

/// `corral-worker quarantine …`: webhooks the worker could not type, kept in
/// `quarantined_webhooks` byte for byte.
#[derive(Debug, Clone, Subcommand)]
pub enum QuarantineCommand {
    /// Show quarantined webhooks, oldest first (by id), like every listing.
    List {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Re-type quarantined webhooks with this version's code: those that now
    /// type are stored exactly as the worker stores them and leave the
    /// quarantine in the same transaction; the others stay, with their error
    /// updated. Result events are written to the outbox only when
    /// CORRAL_RESULT_EVENTS=true is in this command's environment. Exits 3
    /// when the rows named with --id are not quarantined.
    Reprocess {
        /// Report what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Re-process at most this many rows (all by default).
        #[arg(long)]
        limit: Option<u64>,
        /// Only these rows (`quarantined_webhooks.id`, repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
        /// Rows per transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
        /// Unpack the rows given with --id as whole envelope-2 messages: for
        /// messages a worker older than 0.2 quarantined as one webhook. A
        /// body's shape alone never decides it (a client may post one).
        #[arg(long, requires = "ids")]
        as_messages: bool,
    },
}

/// Runs `corral-worker quarantine …` and writes its report to `out`.
pub async fn run(
    command: QuarantineCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match command {
        QuarantineCommand::List { list } => {
            let mut rows = list_quarantined(config, list.fetch()).await?;
            let truncated = list.cut(&mut rows);
            if !list.json {
                write_list(&rows, out)?;
            }
            let items = rows.iter().map(json).collect();
            finish_list(&list, items, truncated, "quarantined webhooks", out)?;
            Ok(Outcome::Done)
        }
        QuarantineCommand::Reprocess {
            dry_run,
            limit,
            ids,
            batch,
            as_messages,
        } => {
            let options = ReprocessOptions {
                dry_run,
                limit,
                ids,
                batch,
                as_messages,
            };
            let report = reprocess(config, &options).await?;
            if report.rows.is_empty() && !options.ids.is_empty() {
                return Ok(Outcome::NothingMatched(format!(
                    "no quarantined row has the id(s) {:?} (`corral-worker quarantine list` \
                     shows them)",
                    options.ids
                )));
            }
            write_reprocessed(&report, out)?;
            Ok(Outcome::Done)
        }
    }
}

/// Re-processes with a running count on a terminal; a failure says how many
/// rows earlier batches had already settled.
async fn reprocess(
    config: &WorkerConfig,
    options: &ReprocessOptions,
) -> anyhow::Result<ReprocessReport> {
    let mut settled = 0;
    let result = reprocess_quarantined_with(config, options, &mut |report| {
        settled = report.rows.len();
        progress("re-processed", settled);
    })
    .await;
    progress_done();
    result.with_context(|| {
        let done = if options.dry_run {
            "examined"
        } else {
            "committed"
        };
        format!("{settled} row(s) were already {done} by earlier batches")
    })
}

fn write_list(rows: &[Quarantined], out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "# id\tmessage_id\trouting_key\treceived_at\tquarantined_at\terror\tbody"
    )?;
    for row in rows {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.id,
            row.message_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            row.routing_key.as_deref().unwrap_or("-"),
            row.received_at
                .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
            row.quarantined_at.to_rfc3339(),
            preview(row.error.as_bytes(), 200),
            preview(&row.body, 120),
        )?;
    }
    writeln!(out, "# listed {} row(s)", rows.len())?;
    Ok(())
}

/// A row in `--json`: the table's column names; the body whole, decoded as
/// UTF-8 (invalid bytes replaced).
fn json(row: &Quarantined) -> Value {
    serde_json::json!({
        "id": row.id,
        "message_id": row.message_id.map(|id| id.to_string()),
        "routing_key": row.routing_key,
        "received_at": row.received_at.map(|at| at.to_rfc3339()),
        "quarantined_at": row.quarantined_at.to_rfc3339(),
        "error": row.error,
        "body": String::from_utf8_lossy(&row.body),
    })
}

fn write_reprocessed(report: &ReprocessReport, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "# id\tverdict")?;
    for (id, verdict) in &report.rows {
        match verdict {
            Verdict::Resolved => writeln!(out, "{id}\tstored")?,
            Verdict::StillFailing(error) => {
                writeln!(
                    out,
                    "{id}\tstill failing: {}",
                    preview(error.as_bytes(), 200)
                )?;
            }
        }
    }
    let mode = if report.dry_run {
        " (dry run: nothing was changed)"
    } else {
        ""
    };
    writeln!(
        out,
        "# {} row(s): {} stored, {} already stored (duplicates), {} still quarantined{mode}",
        report.rows.len(),
        report.stored,
        report.duplicate,
        report.still_failing(),
    )?;
    Ok(())
}
