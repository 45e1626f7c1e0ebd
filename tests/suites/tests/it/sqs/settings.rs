//! What stops either binary at start with `CORRAL_BUFFER=sqs`, and the
//! reason it gives.

use std::time::Duration;

use clap::Parser as _;
use corral_ingress::config::IngressConfig;
use corral_runtime::config::BufferKind;
use corral_testkit::{
    process::{Process, ProcessConfig},
    sqs::ENDPOINT,
    stack::Stack,
};
use corral_worker::commands::Cli;
use tokio_util::sync::CancellationToken;

fn ingress_error(config: IngressConfig) -> String {
    let err = corral_ingress::Application::build(config, CancellationToken::new())
        .expect_err("the ingress must refuse this configuration");
    format!("{err:#}")
}

fn worker_error(config: corral_worker::config::WorkerConfig) -> String {
    let err = corral_worker::Application::build(config, CancellationToken::new())
        .expect_err("the worker must refuse this configuration");
    format!("{err:#}")
}

#[test]
fn out_of_range_values_are_refused_when_parsed() {
    for args in [
        vec!["--buffer", "kafka"],
        vec!["--sqs-max-message-bytes", "1023"],
        vec!["--sqs-max-message-bytes", "1048577"],
    ] {
        let err =
            IngressConfig::try_parse_from(std::iter::once("corral-ingress").chain(args.clone()))
                .expect_err("an invalid value");
        assert!(err.to_string().contains(args[0]), "{args:?}: {err}");
    }
    for args in [
        vec!["--buffer", "kafka"],
        vec!["--sqs-wait-secs", "21"],
        vec!["--sqs-visibility-secs", "0"],
    ] {
        let err = Cli::try_parse_from(std::iter::once("corral-worker").chain(args.clone()))
            .expect_err("an invalid value");
        assert!(err.to_string().contains(args[0]), "{args:?}: {err}");
    }
    let defaults = IngressConfig::parse_from(["corral-ingress"]);
    assert_eq!(defaults.buffer.kind, BufferKind::Rabbitmq);
    assert_eq!(defaults.sqs_max_message_bytes, 262_144);
    assert_eq!(defaults.sqs_linger_ms, 50);
    assert_eq!(defaults.sqs_fifo_groups, 16);
}

#[tokio::test]
async fn a_missing_or_malformed_queue_url_stops_both_binaries() {
    let stack = Stack::builder().sqs().database().start().await;
    for url in [
        None,
        Some("sqs.us-east-1.amazonaws.com/1/q"),
        Some("https://host"),
    ] {
        let mut ingress = stack.ingress_config();
        ingress.buffer.sqs_queue_url = url.map(str::to_owned);
        let err = ingress_error(ingress);
        assert!(err.contains("CORRAL_SQS_QUEUE_URL"), "{url:?}: {err}");
        let mut worker = stack.worker_config();
        worker.buffer.sqs_queue_url = url.map(str::to_owned);
        let err = worker_error(worker);
        assert!(err.contains("CORRAL_SQS_QUEUE_URL"), "{url:?}: {err}");
    }
    let mut ingress = stack.ingress_config();
    ingress.buffer.sqs_endpoint_url = Some("127.0.0.1:4566".into());
    let err = ingress_error(ingress);
    assert!(err.contains("CORRAL_SQS_ENDPOINT_URL"), "{err}");
}

#[tokio::test]
async fn a_body_that_cannot_fit_a_message_stops_the_ingress() {
    let stack = Stack::builder().sqs().start().await;
    let mut ingress = stack.ingress_config();
    ingress.sqs_max_message_bytes = 4096;
    let err = ingress_error(ingress);
    assert!(
        err.contains("CORRAL_SQS_MAX_MESSAGE_BYTES") && err.contains("CORRAL_MAX_BODY_BYTES"),
        "{err}"
    );
}

#[tokio::test]
async fn a_linger_past_the_spool_or_the_deadline_stops_the_ingress() {
    let stack = Stack::builder().sqs().start().await;
    let mut ingress = stack.ingress_config();
    ingress.sqs_linger_ms = ingress.publish_timeout_ms;
    let err = ingress_error(ingress);
    assert!(
        err.contains("CORRAL_SQS_LINGER_MS") && err.contains("CORRAL_PUBLISH_TIMEOUT_MS"),
        "{err}"
    );
    let mut ingress = stack.ingress_config();
    ingress.spool_database_url = Some("postgres://nowhere/spool".into());
    ingress.spool_after_ms = 40;
    let err = ingress_error(ingress);
    assert!(
        err.contains("CORRAL_SQS_LINGER_MS (50 ms)") && err.contains("CORRAL_SPOOL_AFTER_MS"),
        "{err}"
    );
}

#[tokio::test]
async fn a_queue_sqs_does_not_know_stops_both_binaries() {
    let stack = Stack::builder().sqs().database().start().await;
    let missing = format!("{}-missing", stack.queue().url);
    let mut ingress = stack.ingress_config();
    ingress.buffer.sqs_queue_url = Some(missing.clone());
    let err = ingress_error(ingress);
    assert!(
        err.contains("SQS refused") && err.contains(&missing),
        "{err}"
    );
    let mut worker = stack.worker_config();
    worker.buffer.sqs_queue_url = Some(missing.clone());
    let err = worker_error(worker);
    assert!(err.contains("SQS refused"), "{err}");
}

/// Without a region anywhere in the standard chain, the process exits at
/// once and says what to set.
#[tokio::test]
async fn without_a_region_the_worker_process_stops_and_says_why() {
    let stack = Stack::builder().sqs().database().start().await;
    let (db, queue) = (stack.db(), stack.queue());
    let mut config = ProcessConfig::worker(&db.url, "corral-unused").sqs(&queue.url, ENDPOINT);
    config.env.remove("AWS_REGION");
    let config = config
        .env("AWS_CONFIG_FILE", "/nonexistent/corral-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/corral-test")
        // The reason, not a backtrace, at the end of the log.
        .env("RUST_LIB_BACKTRACE", "0");
    let mut worker = Process::start(config).await;
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "the worker ran without a region");
    let log = worker.log_tail();
    assert!(
        log.contains("no AWS region") && log.contains("AWS_REGION"),
        "{log}"
    );
}
