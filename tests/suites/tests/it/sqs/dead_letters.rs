//! `corral-worker dead-letters` with `CORRAL_BUFFER=sqs`: the dead-letter
//! queue of the test queue's redrive policy, listed without losing anything
//! and replayed to the queue, whose worker stores each webhook once.

use std::{collections::BTreeSet, time::Duration};

use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker,
    sqs::{QueueOptions, TestQueue},
    stack::Stack,
    wait,
};
use corral_worker::{
    commands::{self, dead_letters::DeadLetterCommand},
    ops::{DeadLetterReport, DeadLetters as _, OpsError, ReplayOptions, SqsDeadLetters},
};
use uuid::Uuid;

use super::{WAIT, assert_each_once, bodies, packing, send_message};

/// A dead letter the kit put in the dead-letter queue.
struct Letter {
    /// Its `message-id` attribute.
    id: Uuid,
    /// SQS's `MessageId`.
    sqs_id: String,
    /// The webhooks inside.
    webhooks: Vec<Uuid>,
}

/// Sends `count` webhooks as one message straight into the dead-letter queue.
async fn dead_letter(queue: &TestQueue, first: usize, count: usize) -> Letter {
    let bodies = bodies(first, count);
    let packing = packing(&bodies, Kind::Rvm);
    let (id, sqs_id) = queue.send_dead_letter(&packing).await;
    Letter {
        id,
        sqs_id,
        webhooks: packing.iter().map(|p| p.id).collect(),
    }
}

/// What `corral-worker dead-letters <command>` writes, or its error with
/// its causes.
async fn run(stack: &Stack, command: DeadLetterCommand) -> Result<String, String> {
    let mut out = Vec::new();
    commands::dead_letters::run(command, &stack.worker_config(), &mut out)
        .await
        .map_err(|err| format!("{err:#}"))?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

async fn replay(queue: &TestQueue, options: ReplayOptions) -> DeadLetterReport {
    let queue = corral_runtime::sqs::connect(&queue.settings()).expect("the SQS queue");
    SqsDeadLetters::new(queue)
        .replay(&options)
        .await
        .expect("the replay")
}

fn letter_ids(report: &DeadLetterReport) -> BTreeSet<String> {
    report.letters.iter().map(|l| l.id().to_owned()).collect()
}

/// Drives a message into the dead-letter queue the way SQS does: received
/// `max_receive_count` times and never deleted.
async fn drive_to_dead_letters(queue: &TestQueue) -> Vec<Uuid> {
    let ids = send_message(queue, 100, 2).await;
    for receive in 1..=2 {
        let held = wait::until(&format!("receive {receive}"), WAIT, || async {
            let held = queue.take_and_hold(Duration::from_secs(1)).await;
            (!held.is_empty()).then_some(held)
        })
        .await;
        assert_eq!(held.len(), 1);
    }
    wait::until_true("the message in the dead-letter queue", WAIT, || async {
        // A receive past maxReceiveCount is what moves it.
        let _ = queue.take_and_hold(Duration::from_secs(1)).await;
        queue.dead_letter_counts().await == (1, 0)
    })
    .await;
    ids
}

/// Listing shows every dead letter and each webhook inside, removes none,
/// leaves each visible again at once, and honours `--limit`.
#[tokio::test]
async fn listing_shows_every_dead_letter_and_leaves_each_there() {
    let stack = Stack::builder()
        .sqs_with(QueueOptions {
            visibility_secs: 1,
            max_receive_count: 2,
            ..QueueOptions::default()
        })
        .start()
        .await;
    let queue = stack.queue();
    let driven = drive_to_dead_letters(queue).await;
    let sent = [
        dead_letter(queue, 0, 1).await,
        dead_letter(queue, 1, 3).await,
    ];

    let out = run(
        &stack,
        DeadLetterCommand::List {
            list: commands::output::ListArgs::first(10),
        },
    )
    .await
    .expect("the listing");
    assert!(
        out.starts_with(&format!(
            "# {}: 3 message(s) queued at start\n",
            queue.dead_letter_url
        )),
        "{out}"
    );
    for id in driven
        .iter()
        .chain(sent.iter().flat_map(|letter| &letter.webhooks))
    {
        let line = out
            .lines()
            .find(|line| line.starts_with(&id.to_string()))
            .unwrap_or_else(|| panic!("webhook {id} is not listed:\n{out}"));
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(columns.len(), 7, "{line}");
        let kind = if driven.contains(id) {
            Kind::Sms
        } else {
            Kind::Rvm
        };
        assert_eq!(columns[1], kind.routing_key(), "{line}");
        assert_eq!(&columns[2..4], ["-", "-"], "SQS keeps no reason or count");
    }
    for letter in &sent {
        assert!(out.contains(&format!("\t{}\n", letter.id)), "{out}");
    }
    assert!(
        out.ends_with("# listed 3 message(s); none removed; 6 webhook(s) in them; 0 passed over\n"),
        "{out}"
    );
    assert_eq!(
        queue.dead_letter_counts().await,
        (3, 0),
        "every dead letter is there, and visible again"
    );

    let limited = run(
        &stack,
        DeadLetterCommand::List {
            list: commands::output::ListArgs::first(2),
        },
    )
    .await
    .expect("the limited listing");
    assert!(
        limited.contains("# listed 2 message(s); none removed"),
        "{limited}"
    );
    let again = run(
        &stack,
        DeadLetterCommand::List {
            list: commands::output::ListArgs::first(10),
        },
    )
    .await
    .expect("the second listing");
    assert!(again.contains("# listed 3 message(s)"), "{again}");
    assert_eq!(queue.dead_letter_counts().await, (3, 0));
    assert_eq!(queue.counts().await, (0, 0), "nothing went to the queue");
}

/// Replaying by id (a webhook's inside the body, the `message-id`
/// attribute, SQS's `MessageId`) moves exactly those messages, and the
/// worker stores their webhooks once; the rest stay dead-lettered.
#[tokio::test]
async fn replay_by_id_moves_exactly_that_message_and_it_is_stored_once() {
    let stack = Stack::builder().sqs().database().start().await;
    let queue = stack.queue();
    let letters = [
        dead_letter(queue, 0, 2).await,
        dead_letter(queue, 2, 2).await,
        dead_letter(queue, 4, 2).await,
        dead_letter(queue, 6, 1).await,
    ];

    let dry = replay(
        queue,
        ReplayOptions {
            dry_run: true,
            limit: None,
            message_ids: vec![letters[1].webhooks[1].to_string()],
        },
    )
    .await;
    assert_eq!(letter_ids(&dry), [letters[1].id.to_string()].into());
    assert!(!dry.replayed);
    assert_eq!(
        queue.dead_letter_counts().await,
        (4, 0),
        "a dry run moves nothing"
    );
    assert_eq!(queue.counts().await, (0, 0));

    // A webhook's own id, inside the envelope-2 body.
    let report = replay(
        queue,
        ReplayOptions {
            message_ids: vec![letters[1].webhooks[1].to_string()],
            ..ReplayOptions::default()
        },
    )
    .await;
    assert!(report.replayed);
    assert_eq!(letter_ids(&report), [letters[1].id.to_string()].into());
    assert_eq!(report.passed_over, 3);
    assert_eq!(queue.dead_letter_counts().await, (3, 0));
    assert_eq!(queue.counts().await, (1, 0), "exactly one message replayed");

    let worker = RunningWorker::start(stack.worker_config()).await;
    let client = stack.client().await;
    assert_each_once(&client, &letters[1].webhooks).await;

    // The message's own id, and SQS's MessageId.
    let report = replay(
        queue,
        ReplayOptions {
            message_ids: vec![letters[2].id.to_string(), letters[3].sqs_id.clone()],
            ..ReplayOptions::default()
        },
    )
    .await;
    assert_eq!(
        letter_ids(&report),
        [letters[2].id.to_string(), letters[3].id.to_string()].into()
    );
    let stored: Vec<Uuid> = letters[1..]
        .iter()
        .flat_map(|letter| letter.webhooks.clone())
        .collect();
    assert_each_once(&client, &stored).await;
    assert_eq!(queue.dead_letter_counts().await, (1, 0), "the first stays");
    worker.stop().await.expect("the worker stops");
}

/// Replaying with `--limit`, then everything: each message leaves the
/// dead-letter queue once, and every webhook is one row.
#[tokio::test]
async fn replaying_everything_stores_every_webhook_once_and_empties_the_dead_letter_queue() {
    let stack = Stack::builder().sqs().database().start().await;
    let queue = stack.queue();
    let mut letters = Vec::new();
    for n in 0..12 {
        letters.push(dead_letter(queue, n * 2, 2).await);
    }

    let first = replay(
        queue,
        ReplayOptions {
            limit: Some(5),
            ..ReplayOptions::default()
        },
    )
    .await;
    assert_eq!(first.letters.len(), 5);
    assert_eq!(queue.dead_letter_counts().await, (7, 0));
    assert_eq!(queue.counts().await, (5, 0));

    let out = run(
        &stack,
        DeadLetterCommand::Replay {
            dry_run: false,
            limit: None,
            message_ids: Vec::new(),
        },
    )
    .await
    .expect("the replay");
    assert!(
        out.ends_with("# replayed 7 message(s); 14 webhook(s) in them; 0 passed over\n"),
        "{out}"
    );
    assert_eq!(queue.dead_letter_counts().await, (0, 0));
    assert_eq!(queue.counts().await, (12, 0));

    let worker = RunningWorker::start(stack.worker_config()).await;
    let client = stack.client().await;
    let all: Vec<Uuid> = letters.iter().flat_map(|l| l.webhooks.clone()).collect();
    assert_each_once(&client, &all).await;
    worker.stop().await.expect("the worker stops");
    let nothing = replay(queue, ReplayOptions::default()).await;
    assert!(nothing.letters.is_empty());
}

/// A queue without a redrive policy has no dead-letter queue: both commands
/// say what to set.
#[tokio::test]
async fn a_queue_without_a_redrive_policy_is_an_error_naming_what_to_set() {
    let stack = Stack::builder()
        .sqs_with(QueueOptions {
            redrive: false,
            ..QueueOptions::default()
        })
        .start()
        .await;
    let queue = stack.queue();
    for command in [
        DeadLetterCommand::List {
            list: commands::output::ListArgs::first(10),
        },
        DeadLetterCommand::Replay {
            dry_run: false,
            limit: None,
            message_ids: Vec::new(),
        },
    ] {
        let err = run(&stack, command)
            .await
            .expect_err("no dead-letter queue");
        assert!(err.contains("has no redrive policy"), "{err}");
        assert!(err.contains(&queue.url), "{err}");
        assert!(err.contains("RedrivePolicy"), "{err}");
        assert!(err.contains("deadLetterTargetArn"), "{err}");
    }
    let connected = corral_runtime::sqs::connect(&queue.settings()).expect("the SQS queue");
    let err = SqsDeadLetters::new(connected)
        .list(10)
        .await
        .expect_err("no dead-letter queue");
    assert!(
        matches!(&err, OpsError::NoRedrivePolicy { queue: url } if *url == queue.url),
        "{err}"
    );
    assert_eq!(queue.dead_letter_counts().await, (0, 0));
}

/// With a FIFO queue, a replay gives each message a group and a
/// deduplication id of its own: a message dead-lettered within SQS's
/// 5-minute window of its first sending still goes back, and is stored.
#[tokio::test]
async fn replaying_into_a_fifo_queue_sends_every_message_back_and_stores_it() {
    let stack = Stack::builder()
        .sqs_with(QueueOptions {
            fifo: true,
            max_receive_count: 2,
            ..QueueOptions::default()
        })
        .database()
        .start()
        .await;
    let queue = stack.queue();
    let ids = drive_to_dead_letters(queue).await;
    let letter = dead_letter(queue, 10, 2).await;

    let report = replay(queue, ReplayOptions::default()).await;
    assert_eq!(report.letters.len(), 2);
    assert_eq!(queue.dead_letter_counts().await, (0, 0));
    assert_eq!(queue.counts().await, (2, 0));

    let worker = RunningWorker::start(stack.worker_config()).await;
    let client = stack.client().await;
    let all: Vec<Uuid> = ids.into_iter().chain(letter.webhooks).collect();
    assert_each_once(&client, &all).await;
    worker.stop().await.expect("the worker stops");
}
