//! The operator commands as `corral-worker` runs them: the work of
//! [`super::dead_letters`] and [`super::quarantine`], then a report of
//! tab-separated columns an operator can read or pipe to `cut`.

use std::io::Write;

use corral_shared::config::BufferKind;

use super::suppressions::{Selection, lift_suppressions, list_suppressions};
use super::{
    dead_letters::{ReplayOptions, list_dead_letters, replay_dead_letters},
    quarantine::{ReprocessOptions, Verdict, list_quarantined, reprocess_quarantined},
    sqs_dead_letters::{list_sqs_dead_letters, replay_sqs_dead_letters},
};
use crate::config::{DeadLetterCommand, QuarantineCommand, SuppressionCommand, WorkerConfig};

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
/// --message-id` takes; the webhook's own is taken too, and on SQS the
/// message's `MessageId`). For an envelope-1 message both ids are the same.
/// With `CORRAL_BUFFER=sqs` the queue is the dead-letter queue of the SQS
/// queue's redrive policy, and `reason` and `deaths` are `-`.
pub async fn dead_letters_command(
    command: DeadLetterCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let sqs = match config.buffer.kind {
        BufferKind::Rabbitmq => None,
        BufferKind::Sqs => Some(corral_shared::sqs::connect(&config.buffer)?),
    };
    let (report, verb) = match command {
        DeadLetterCommand::List { limit } => {
            let report = match &sqs {
                None => list_dead_letters(&config.amqp, limit).await?,
                Some(queue) => list_sqs_dead_letters(queue, limit).await?,
            };
            (report, "listed")
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
            let report = match &sqs {
                None => replay_dead_letters(&config.amqp, &options).await?,
                Some(queue) => replay_sqs_dead_letters(queue, &options).await?,
            };
            (report, verb)
        }
    };
    writeln!(
        out,
        "# {}: {} message(s) queued at start",
        report.queue, report.queued_at_start
    )?;
    writeln!(
        out,
        "# message_id\trouting_key\treason\tdeaths\treceived_at\tbody\tletter"
    )?;
    for letter in &report.letters {
        // SQS keeps neither a reason nor a count of dead-letterings.
        let deaths = if sqs.is_some() {
            "-".to_owned()
        } else {
            letter.deaths.to_string()
        };
        for webhook in &letter.webhooks {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                webhook.message_id.as_deref().unwrap_or("-"),
                webhook.routing_key,
                letter.reason.as_deref().unwrap_or("-"),
                deaths,
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
            as_messages,
        } => {
            let options = ReprocessOptions {
                dry_run,
                limit,
                ids,
                batch,
                as_messages,
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

/// Runs `corral-worker suppressions …` and writes its report to `out`.
pub async fn suppressions_command(
    command: SuppressionCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (rows, verb) = match command {
        SuppressionCommand::List {
            phone,
            kind,
            class,
            all,
            limit,
        } => {
            let selection = Selection {
                phone_number: phone,
                kind: kind.map(|kind| kind.as_str().to_owned()),
                class: class.map(|class| class.as_str().to_owned()),
            };
            (
                list_suppressions(config, &selection, all, limit).await?,
                "listed",
            )
        }
        SuppressionCommand::Lift {
            phone,
            kind,
            class,
            by,
        } => {
            let selection = Selection {
                phone_number: Some(phone),
                kind: kind.map(|kind| kind.as_str().to_owned()),
                class: class.map(|class| class.as_str().to_owned()),
            };
            (lift_suppressions(config, &selection, &by).await?, "lifted")
        }
    };
    writeln!(
        out,
        "# phone_number\tkind\tclass\tactive\tfirst_seen\tlast_seen\treason\tlifted"
    )?;
    for row in &rows {
        let lifted = match (&row.lifted_at, &row.lifted_by) {
            (Some(at), Some(by)) => {
                format!("{} by {}", at.to_rfc3339(), preview(by.as_bytes(), 80))
            }
            _ => "-".to_owned(),
        };
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.phone_number,
            row.kind,
            row.class,
            if row.active { "yes" } else { "no" },
            row.first_seen.to_rfc3339(),
            row.last_seen.to_rfc3339(),
            row.reason.as_deref().unwrap_or("-"),
            lifted,
        )?;
    }
    writeln!(out, "# {verb} {} suppression(s)", rows.len())?;
    Ok(())
}
