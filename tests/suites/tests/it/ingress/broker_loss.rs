//! Broker loss, through a proxy the test owns.

use std::{collections::HashSet, time::Duration};

use corral_testkit::{apps::RunningIngress, fixtures, proxy::TcpProxy, stack::Stack, wait};
use reqwest::StatusCode;

use super::helpers::*;

/// The broker connection is cut: posts get 503 with Retry-After (never 200)
/// and /readyz 503; once the path is back the same process serves again.
#[tokio::test]
async fn a_cut_broker_connection_gives_503_until_it_is_back_then_serves_without_restart() {
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    let ingress = RunningIngress::start(stack.ingress_config()).await;
    let mut accepted_ids = HashSet::from([post_sample(&ingress).await]);

    proxy.cut();
    // Right after the cut the ingress may not have noticed yet; still no 200.
    for _ in 0..3 {
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    }
    ingress.wait_ready(false).await;
    let before = ingress.metrics().await;
    for _ in 0..3 {
        unavailable(send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE)).await).await;
    }
    let after = ingress.metrics().await;
    assert_eq!(
        publish_failures(&after, "unavailable") - publish_failures(&before, "unavailable"),
        3.0,
        "with the link down, the cause is `unavailable`"
    );
    assert_eq!(published(&after, "sms") + published(&after, "rvm"), 1.0);
    assert_eq!(after.get("corral_broker_connected"), 0.0);

    proxy.restore();
    ingress.wait_ready(true).await;
    accepted_ids.insert(post_sample(&ingress).await);
    // Nothing passed the cut, so the queue holds exactly what was answered 200.
    assert_eq!(queued_ids(broker, 2).await, accepted_ids);
    assert_eq!(ingress.metrics().await.get("corral_broker_connected"), 1.0);
    ingress.stop().await.expect("the ingress stops cleanly");
}

/// Started while the broker cannot be reached, the ingress still serves:
/// /healthz 200, /readyz and webhooks 503; it connects by itself once the
/// broker can be reached, with no restart.
#[tokio::test]
async fn an_ingress_started_without_its_broker_answers_503_then_serves_when_it_appears() {
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    proxy.cut();
    let ingress = RunningIngress::start_unready(stack.ingress_config()).await;
    let healthz = ingress
        .http
        .get(format!("http://127.0.0.1:{}/healthz", ingress.admin_port))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(healthz.status(), StatusCode::OK);
    ingress.wait_ready(false).await;
    for _ in 0..2 {
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    }
    assert_eq!(
        publish_failures(&ingress.metrics().await, "unavailable"),
        2.0
    );
    // The first attempt may still be waiting for the cut proxy to refuse it.
    wait::until_true("a failed connect attempt counted", QUEUE_WAIT, || async {
        ingress
            .metrics()
            .await
            .get(r#"corral_broker_connect_attempts_total{outcome="failure"}"#)
            >= 1.0
    })
    .await;

    proxy.restore();
    ingress.wait_ready(true).await;
    let id = post_sample(&ingress).await;
    assert_eq!(queued_ids(broker, 1).await, HashSet::from([id]));
}

/// An idle link whose path silently stops carrying bytes is noticed by the
/// AMQP heartbeat alone (no request needed): /readyz turns 503, and once the
/// stalled sockets are dropped the ingress reconnects by itself.
#[tokio::test]
async fn an_idle_black_holed_link_is_noticed_by_the_heartbeat() {
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    let mut config = stack.ingress_config();
    config.amqp.heartbeat_secs = 1;
    let ingress = RunningIngress::start(config).await;

    proxy.blackhole();
    ingress.wait_ready(false).await;
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(
        publish_failures(&ingress.metrics().await, "timeout"),
        0.0,
        "the link was known dead before any publish had to time out"
    );

    proxy.drop_connections();
    ingress.wait_ready(true).await;
    let id = post_sample(&ingress).await;
    assert_eq!(queued_ids(broker, 1).await, HashSet::from([id]));
}

/// The path to the broker silently stops carrying bytes (sockets open, no
/// confirm ever comes): posts get 503 once the publish timeout passes, never
/// 200, and the ingress recovers by itself once bytes flow again, whether
/// the stalled sockets resume (`restore`) or are dropped (`drop_connections`).
#[tokio::test]
async fn a_black_holed_broker_gives_503_on_the_publish_timeout_then_recovers_by_itself() {
    let stack = broker_via_proxy().start().await;
    let (broker, proxy) = (stack.broker(), stack.amqp_proxy());
    let mut config = stack.ingress_config();
    // Long enough that the publish timeout, not the heartbeat, gives the verdict.
    config.amqp.heartbeat_secs = 10;
    let ingress = RunningIngress::start(config).await;
    let mut accepted_ids = HashSet::from([post_sample(&ingress).await]);
    let mut refused_count = 0;

    for recover in [
        TcpProxy::restore as fn(&TcpProxy),
        TcpProxy::drop_connections,
    ] {
        proxy.blackhole();
        let before = ingress.metrics().await;
        unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
        let after = ingress.metrics().await;
        assert_eq!(
            publish_failures(&after, "timeout") - publish_failures(&before, "timeout"),
            1.0,
            "the publish must have waited for its confirm and timed out"
        );
        // A link that confirms nothing is replaced; new ones cannot connect.
        ingress.wait_ready(false).await;
        for _ in 0..2 {
            unavailable(send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE)).await)
                .await;
        }
        refused_count += 3;

        recover(proxy);
        ingress.wait_ready(true).await;
        accepted_ids.insert(post_sample(&ingress).await);
    }

    // Every 200 is in the queue. A 503'd publish may be there too: its
    // confirm can arrive after the answer once the stalled socket resumes
    // (the worker stores a sender's retry once), but nothing else can be.
    let queued = queued_ids(broker, accepted_ids.len()).await;
    assert!(
        queued.is_superset(&accepted_ids),
        "a webhook answered 200 is missing"
    );
    assert!(queued.len() <= accepted_ids.len() + refused_count);
}

/// The queue is deleted under a running ingress: the webhooks exchange's
/// alternate exchange keeps what the exchange can no longer route, so a
/// webhook is still answered 200 only once it is durably queued — in the
/// unroutable queue, which the worker also consumes — and nothing comes back
/// unroutable.
#[tokio::test]
async fn a_queue_deleted_under_a_running_ingress_keeps_webhooks_in_the_unroutable_queue() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let first = post_sample(ingress).await;

    broker.delete_queue(&broker.queue()).await;
    let before = ingress.metrics().await;
    let second = post_sample(ingress).await;
    let after = ingress.metrics().await;
    assert_eq!(
        publish_failures(&after, "unroutable") - publish_failures(&before, "unroutable"),
        0.0
    );
    let kept = broker
        .take_webhooks(&broker.topology.unroutable_queue(), 1, QUEUE_WAIT)
        .await;
    let kept: HashSet<_> = kept.iter().map(|webhook| webhook.id).collect();
    assert_eq!(kept, HashSet::from([second]));
    assert_ne!(first, second);
}

/// With one publish slot held by a publish the black-holed broker never
/// confirms, further requests get 503 `overloaded` after the short slot wait,
/// while the first is still waiting for its confirm.
#[tokio::test]
async fn past_max_in_flight_requests_get_503_overloaded_while_the_slot_is_held() {
    let stack = broker_via_proxy().start().await;
    let proxy = stack.amqp_proxy();
    let mut config = stack.ingress_config();
    config.max_in_flight = 1;
    config.in_flight_wait_ms = 250;
    config.publish_timeout_ms = 5_000;
    config.amqp.heartbeat_secs = 30;
    let ingress = RunningIngress::start(config).await;

    proxy.blackhole();
    let first = tokio::spawn(
        authenticated(&ingress, "sms")
            .body(fixtures::SMS_SUCCESS)
            .send(),
    );
    wait::until_true(
        "the first publish to hold the only slot",
        Duration::from_secs(10),
        || async {
            ingress
                .metrics()
                .await
                .get("corral_ingress_publishes_in_flight")
                == 1.0
        },
    )
    .await;

    let before = ingress.metrics().await;
    let others = futures_util::future::join_all(
        (0..3).map(|_| send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE))),
    )
    .await;
    assert!(
        !first.is_finished(),
        "the overloaded requests should be answered before the first times out"
    );
    for response in others {
        unavailable(response).await;
    }
    let after = ingress.metrics().await;
    assert_eq!(
        publish_failures(&after, "overloaded") - publish_failures(&before, "overloaded"),
        3.0
    );

    let first = first
        .await
        .expect("first post task")
        .expect("first post answered");
    unavailable(first).await;
    assert_eq!(
        publish_failures(&ingress.metrics().await, "timeout"),
        1.0,
        "the slot holder ends on the publish timeout"
    );
}

/// A webhooks exchange declared by corral 0.1, without the alternate
/// exchange, cannot be redeclared with it: the ingress goes on with it as it
/// is (a webhook is still accepted) and says, once per connect, how to add it.
#[tokio::test]
async fn an_exchange_declared_without_the_alternate_exchange_is_used_as_it_is_with_a_warning() {
    let logs = CapturedLogs::install();
    let settings = corral_testkit::config::amqp(corral_testkit::unique_name("legacy"));
    let topology = corral_runtime::amqp::Topology::new(&settings);
    let connection = corral_runtime::amqp::connect(&settings, "corral-tests legacy")
        .await
        .expect("connecting");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .exchange_declare(
            topology.exchange().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declaring the exchange as 0.1 did");
    /// Deletes the prefix's topology however the test ends.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let prefix = self.0.clone();
            corral_testkit::block_on_cleanup(async move {
                corral_testkit::broker::delete_prefix(&prefix).await;
            });
        }
    }
    let _cleanup = Cleanup(settings.prefix.clone());

    let ingress = RunningIngress::start(corral_testkit::config::ingress(
        &settings.prefix,
        corral_testkit::apps::TOKEN,
    ))
    .await;
    post_sample(&ingress).await;
    let warned = logs
        .lines()
        .iter()
        .any(|line| line.contains("without the alternate exchange") && line.contains("WARN"));
    assert!(warned, "the upgrade step is logged: {:#?}", logs.lines());
    corral_runtime::amqp::close(&connection, Duration::from_secs(5), "done").await;
}
