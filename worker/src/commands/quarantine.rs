//! `corral-worker quarantine …`: list and re-type the webhooks the worker
//! could not type ([`crate::ops::quarantine`] does the work).

use std::io::Write;

use clap::Subcommand;

use super::preview;
use crate::{
    config::WorkerConfig,
    ops::quarantine::{
        Quarantined, ReprocessOptions, ReprocessReport, Verdict, list_quarantined,
        reprocess_quarantined,
    },
};

/// `corral-worker quarantine …`: webhooks the worker could not type, kept in
/// `quarantined_webhooks` byte for byte.
#[derive(Debug, Clone, Subcommand)]
pub enum QuarantineCommand {
    /// Show quarantined webhooks, oldest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Re-type quarantined webhooks with this version's code: those that now
    /// type are stored exactly as the worker stores them and leave the
    /// quarantine in the same transaction; the others stay, with their error
    /// updated.
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
) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List { limit } => {
            write_list(&list_quarantined(config, limit).await?, out)
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
            write_reprocessed(&reprocess_quarantined(config, &options).await?, out)
        }
    }
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
