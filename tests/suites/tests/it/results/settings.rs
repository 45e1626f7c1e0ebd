//! Result events need RabbitMQ, also with `CORRAL_BUFFER=sqs`: a worker
//! whose result-event broker URL cannot work refuses to start and says why.

use corral_runtime::config::BufferKind;
use corral_testkit::config;
use tokio_util::sync::CancellationToken;

fn worker_error(config: corral_worker::config::WorkerConfig) -> String {
    let err = corral_worker::Application::build(config, CancellationToken::new())
        .expect_err("the worker must refuse this configuration");
    format!("{err:#}")
}

#[test]
fn result_events_without_a_usable_broker_url_stop_the_worker() {
    let db = "postgres://postgres@127.0.0.1:5432/unused";
    let mut results = config::worker(db, "corral-unused");
    results.results.result_events = true;
    results.results.results_amqp_url = Some("rabbit:5672".into());
    let err = worker_error(results.clone());
    assert!(
        err.contains("CORRAL_RESULT_EVENTS=true publishes to RabbitMQ (CORRAL_RESULTS_AMQP_URL)"),
        "{err}"
    );

    // On SQS the main AMQP URL is not otherwise used, yet result events need it.
    let mut sqs = results;
    sqs.buffer.kind = BufferKind::Sqs;
    sqs.buffer.sqs_queue_url = Some("http://127.0.0.1:1/000000000000/q".into());
    sqs.results.results_amqp_url = None;
    sqs.amqp.url = "not a url".into();
    let err = worker_error(sqs);
    assert!(
        err.contains("CORRAL_RESULT_EVENTS=true publishes to RabbitMQ (CORRAL_AMQP_URL), also with CORRAL_BUFFER=sqs"),
        "{err}"
    );
}
