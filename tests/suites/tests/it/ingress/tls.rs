//! TLS to RabbitMQ.

use std::collections::HashSet;

use corral_testkit::{
    apps::RunningIngress,
    fixtures,
    stack::Stack,
    tls::{TestCa, TlsFront},
    wait,
};
use tokio_util::sync::CancellationToken;

use super::helpers::*;

/// Over `amqps://` with the CA file, the ingress publishes and confirms as
/// over plain AMQP; the link really is TLS (a front with a throwaway CA).
#[tokio::test]
async fn publishes_over_amqps_verified_with_the_ca_file() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ca = TestCa::new("trusted");
    let front = TlsFront::amqps(&ca).await;
    let mut config = stack.ingress_config();
    config.amqp.url = front.amqps_url();
    config.amqp.ca_file = Some(ca.pem_file().to_owned());
    let ingress = RunningIngress::start(config).await;

    let id = post_sample(&ingress).await;
    assert_eq!(queued_ids(broker, 1).await, HashSet::from([id]));
    assert!(front.handshakes() >= 1, "no TLS handshake was made");
}

/// A broker whose certificate does not verify is never talked to: the ingress
/// stays unready and webhooks get 503, never 200.
#[tokio::test]
async fn refuses_a_broker_whose_certificate_does_not_verify() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let trusted = TestCa::new("trusted");
    let impostor = TestCa::new("impostor");
    let front = TlsFront::amqps(&impostor).await;
    let mut config = stack.ingress_config();
    config.amqp.url = front.amqps_url();
    config.amqp.ca_file = Some(trusted.pem_file().to_owned());
    config.amqp.reconnect_max_ms = 200;
    config.retry_after_secs = RETRY_AFTER_SECS;
    let ingress = RunningIngress::start_unready(config).await;

    wait::until_true("the ingress to try the impostor", QUEUE_WAIT, || async {
        front.failed_handshakes() >= 2
    })
    .await;
    ingress.wait_ready(false).await;
    unavailable(send(authenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(
        front.handshakes(),
        0,
        "a handshake with the impostor completed"
    );
    assert_eq!(broker.ready_count(&broker.queue()).await, 0);
}

/// A CA file next to a plain `amqp://` URL, or one that cannot be read, stops
/// the ingress at start with the reason.
#[tokio::test]
async fn amqp_tls_settings_are_checked_at_start() {
    let stack = Stack::builder().start().await;
    let trusted = TestCa::new("trusted");
    let cases = [
        (
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            trusted.pem_file().to_owned(),
            "use amqps://",
        ),
        (
            "amqps://guest:guest@127.0.0.1:5671/%2f",
            std::env::temp_dir().join("corral-no-such-ca.pem"),
            "CORRAL_AMQP_CA_FILE",
        ),
    ];
    for (url, ca_file, reason) in cases {
        let mut config = stack.ingress_config();
        config.amqp.url = url.to_owned();
        config.amqp.ca_file = Some(ca_file);
        let err = corral_ingress::Application::build(config, CancellationToken::new())
            .expect_err("the ingress must refuse this configuration");
        assert!(format!("{err:#}").contains(reason), "{url}: {err:#}");
    }
}
