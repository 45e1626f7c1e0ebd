//! Several broker addresses in `CORRAL_AMQP_URL` (the nodes of a cluster):
//! both binaries get past a dead one to the next, and a bad entry stops
//! them at start, named, without its password.

use std::time::Duration;

use corral_testkit::{
    apps::TOKEN,
    config::{self, LOCAL_AMQP_URL},
    fixtures,
    process::{Process, ProcessConfig, free_port},
    stack::Stack,
    wait,
};
use tokio_util::sync::CancellationToken;

/// A list whose first address is a closed port and whose second is the
/// local broker: the ingress answers 200 and the worker stores the row.
#[tokio::test]
async fn both_processes_skip_a_dead_first_broker_address() {
    let stack = Stack::builder().database().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let list = format!("{dead},{LOCAL_AMQP_URL}");
    let ingress = ProcessConfig::ingress(broker.prefix(), TOKEN).env("CORRAL_AMQP_URL", &list);
    let worker = ProcessConfig::worker(&db.url, broker.prefix()).env("CORRAL_AMQP_URL", &list);
    let ingress = Process::start_ready(ingress).await;
    let worker = Process::start_ready(worker).await;

    let body =
        fixtures::delivery_status("brokers-list-0001", "2026-11-27T05:24:31.000Z", "", "o-1");
    let response = reqwest::Client::new()
        .post(ingress.webhook_url("sms"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the ingress answers");
    assert_eq!(response.status(), 200, "{}", ingress.log_tail());

    let client = db.client().await;
    let rows: i64 = wait::until(
        "the webhook to be a row",
        Duration::from_secs(20),
        || async {
            let rows: i64 = client
                .query_one(
                    "SELECT count(*) FROM delivery_events WHERE drop_id = 'brokers-list-0001'",
                    &[],
                )
                .await
                .expect("counting rows")
                .get(0);
            (rows > 0).then_some(rows)
        },
    )
    .await;
    assert_eq!(rows, 1, "worker log:\n{}", worker.log_tail());
}

/// A malformed entry of the list is named by its position in both binaries'
/// start-up error, with every password replaced by `***`.
#[tokio::test]
async fn a_bad_entry_of_the_list_is_named_without_its_password() {
    let list = "amqp://corral:hunter2-pw@rabbit-0:5672/%2f, amqp://corral:hunter2-pw@rabbit-1:notaport/%2f";
    let mut ingress = config::ingress("unused", TOKEN);
    ingress.amqp.url = list.into();
    let mut worker = config::worker("postgres://postgres@127.0.0.1:5432/unused", "unused");
    worker.amqp.url = list.into();
    let errors = [
        corral_ingress::Application::build(ingress, CancellationToken::new())
            .expect_err("the ingress must refuse the list"),
        corral_worker::Application::build(worker, CancellationToken::new())
            .expect_err("the worker must refuse the list"),
    ];
    for err in errors {
        let shown = format!("{err:#} / {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("entry 2 of 2"), "{shown}");
        assert!(shown.contains("corral:***@rabbit-1"), "{shown}");
    }
}
