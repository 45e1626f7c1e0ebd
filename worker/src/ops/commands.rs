//! The operator commands as `corral-worker` runs them: the work of
//! [`super::dead_letters`] and [`super::quarantine`], then a report of
//! tab-separated columns an operator can read or pipe to `cut`.

use std::io::Write;

use corral_shared::amqp::Topology;

use super::{
    dead_letters::{ReplayOptions, list_dead_letters, replay_dead_letters},
    quarantine::{ReprocessOptions, Verdict, list_quarantined, reprocess_quarantined},
};
use crate::config::{DeadLetterCommand, QuarantineCommand, WorkerConfig};

/// The first `max` characters of a body, lossily decoded, on one line: what
/// an operator needs to recognise a webhook in a listing.
pub fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        line.push('…');
    }
    line
}

/// Runs `corral-worker dead-letters …` and writes its report to `out`
/// (tab-separated columns, one webhook per line, then a summary line). A
/// line's `message_id`, routing key, `received_at` and body are the
/// webhook's own; `reason` and `deaths` are those of the AMQP message it
/// travels in, whose `message_id` is the last column (the id `replay
/// --message-id` takes; the webhook's own is taken too). For an envelope-1
/// message both ids are the same.
pub async fn dead_letters_command(
    command: DeadLetterCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let queue = Topology::new(&config.amqp).dead_letter_queue();
    let (report, verb) = match command {
        DeadLetterCommand::List { limit } => {
            (list_dead_letters(&config.amqp, limit).await?, "listed")
        }
        DeadLetterCommand::Replay {
            dry_run,
            limit,
            message_ids,
        } => {
            let options = ReplayOptions {
                dry_run,
                limit,
                message_ids,
            };
            let verb = if dry_run { "would replay" } else { "replayed" };
            (replay_dead_letters(&config.amqp, &options).await?, verb)
        }
    };
    writeln!(
        out,
        "# {queue}: {} message(s) queued at start",
        report.queued_at_start
    )?;
    writeln!(
        out,
        "# message_id\trouting_key\treason\tdeaths\treceived_at\tbody\tletter"
    )?;
    for letter in &report.letters {
        for webhook in &letter.webhooks {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                webhook.message_id.as_deref().unwrap_or("-"),
                webhook.routing_key,
                letter.reason.as_deref().unwrap_or("-"),
                letter.deaths,
                webhook
                    .received_at
                    .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
                preview(&webhook.body, 120),
                letter.id(),
            )?;
        }
    }
    let kept = if report.replayed {
        String::new()
    } else {
        "; none removed".to_owned()
    };
    let webhooks: usize = report.letters.iter().map(|l| l.webhooks.len()).sum();
    writeln!(
        out,
        "# {verb} {} message(s){kept}; {webhooks} webhook(s) in them; {} passed over",
        report.letters.len(),
        report.passed_over
    )?;
    Ok(())
}

/// Runs `corral-worker quarantine …` and writes its report to `out`.
pub async fn quarantine_command(
    command: QuarantineCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List { limit } => {
            let rows = list_quarantined(config, limit).await?;
            writeln!(
                out,
                "# id\tmessage_id\trouting_key\treceived_at\tquarantined_at\terror\tbody"
            )?;
            for row in &rows {
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
        }
        QuarantineCommand::Reprocess {
            dry_run,
            limit,
            ids,
            batch,
        } => {
            let options = ReprocessOptions {
                dry_run,
                limit,
                ids,
                batch,
            };
            let report = reprocess_quarantined(config, &options).await?;
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
        }
    }
    Ok(())
}
