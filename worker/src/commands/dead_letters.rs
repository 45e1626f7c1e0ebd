//! `corral-worker dead-letters …`: list and replay the dead-letter queue,
//! written once over [`DeadLetters`] (RabbitMQ's `<prefix>.dead-letter`, or
//! with `CORRAL_BUFFER=sqs` the queue the SQS queue's redrive policy names).

use std::io::Write;

use clap::Subcommand;
use corral_runtime::config::BufferKind;
use serde_json::Value;

use super::{
    Outcome,
    output::{ListArgs, finish_list},
    preview,
};
use crate::{
    config::WorkerConfig,
    ops::dead_letters::{
        DeadLetter, DeadLetterReport, DeadLetters, RabbitmqDeadLetters, ReplayOptions,
        SqsDeadLetters,
    },
};

/// `corral-worker dead-letters …`: messages RabbitMQ gave up delivering
/// (`x-delivery-limit` reached), or SQS moved away after `maxReceiveCount`
/// receives, wait in the dead-letter queue for an operator.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterCommand {
    /// Show dead-lettered messages, one line per webhook inside them; removes
    /// none (on RabbitMQ each one read is moved to the tail of the
    /// dead-letter queue, so their order changes; on SQS each is made visible
    /// again). Oldest first (queue order), like every listing.
    List {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Publish dead-lettered messages back to the webhooks exchange with their
    /// original routing key and properties (on SQS: to the queue, with the
    /// same body and attributes), as they are (the webhooks of an envelope-2
    /// message stay together); each dead-letter copy is removed only after
    /// RabbitMQ confirmed (SQS accepted) the republished one. Exits 3 when
    /// --message-id matched nothing.
    Replay {
        /// Show what would be replayed; replay nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay at most this many (all by default).
        #[arg(long)]
        limit: Option<u64>,
        /// Replay only the messages with this `message_id` (on SQS also
        /// SQS's `MessageId`), or holding a webhook with this id (the whole
        /// message is replayed; repeatable); the others stay in the
        /// dead-letter queue.
        #[arg(long = "message-id", value_name = "ID")]
        message_ids: Vec<String>,
    },
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
pub async fn run(
    command: DeadLetterCommand,
    config: &WorkerConfig,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match config.buffer.kind {
        BufferKind::Rabbitmq => on(&RabbitmqDeadLetters::new(&config.amqp), command, out).await,
        BufferKind::Sqs => on(&SqsDeadLetters::connect(&config.buffer)?, command, out).await,
    }
}

async fn on<Queue: DeadLetters>(
    queue: &Queue,
    command: DeadLetterCommand,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match command {
        DeadLetterCommand::List { list } => {
            let report = queue.list(list.limit).await?;
            let truncated = report.letters.len() < report.queued_at_start as usize;
            if !list.json {
                write_report(&report, "listed", Queue::KEEPS_HISTORY, out)?;
            }
            let items = report
                .letters
                .iter()
                .map(|letter| json(letter, Queue::KEEPS_HISTORY))
                .collect();
            finish_list(&list, items, truncated, "dead-lettered messages", out)?;
            Ok(Outcome::Done)
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
            let report = queue.replay(&options).await?;
            if report.letters.is_empty() && !options.message_ids.is_empty() {
                return Ok(Outcome::NothingMatched(format!(
                    "no dead-lettered message matches {:?} ({} passed over; \
                     `corral-worker dead-letters list` shows them)",
                    options.message_ids, report.passed_over
                )));
            }
            let verb = if dry_run { "would replay" } else { "replayed" };
            write_report(&report, verb, Queue::KEEPS_HISTORY, out)?;
            Ok(Outcome::Done)
        }
    }
}

/// A message in `--json`, with the webhooks inside it; `reason` and `deaths`
/// are null where the queue keeps no history (SQS).
fn json(letter: &DeadLetter, keeps_history: bool) -> Value {
    let webhooks: Vec<Value> = letter
        .webhooks
        .iter()
        .map(|webhook| {
            serde_json::json!({
                "message_id": webhook.message_id,
                "routing_key": webhook.routing_key,
                "received_at": webhook.received_at.map(|at| at.to_rfc3339()),
                "body": String::from_utf8_lossy(&webhook.body),
            })
        })
        .collect();
    serde_json::json!({
        "letter": letter.id(),
        "routing_key": letter.routing_key,
        "reason": letter.reason,
        "deaths": keeps_history.then_some(letter.deaths),
        "received_at": letter.received_at.map(|at| at.to_rfc3339()),
        "webhooks": webhooks,
    })
}

fn write_report(
    report: &DeadLetterReport,
    verb: &str,
    keeps_history: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
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
        let deaths = if keeps_history {
            letter.deaths.to_string()
        } else {
            "-".to_owned()
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
