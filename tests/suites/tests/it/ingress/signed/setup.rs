//! Setting the signed route up: what ingress says at start with and without
//! secrets, the secrets file, the secrets kept out of every output, and the
//! start-up rules.

use std::process::{Command, Stdio};

use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    process::{Binary, Process, ProcessConfig, binary_path, prepare_binaries},
    stack::Stack,
};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use super::*;

/// Without a secret the route answers 503 and ingress says why at start, as
/// an ERROR naming the setting; `/readyz` says none is loaded, and is ready
/// all the same (the callback routes work).
#[tokio::test]
async fn without_a_secret_ingress_logs_an_error_naming_the_setting_and_readyz_says_0() {
    let logs = CapturedLogs::install();
    let stack = Stack::builder().start().await;
    let ingress = start_signed(&stack, &[" ", ""]).await;
    let errors: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|line| line.contains("ERROR") && line.contains("NO SIGNING SECRET"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("CORRAL_DROPCOWBOY_SIGNING_SECRETS"),
        "{}",
        errors[0]
    );
    let readiness = readyz(ingress.admin_port).await;
    assert_eq!(readiness["signing_secrets"], 0, "{readiness}");
    assert_eq!(readiness["ready"], true, "{readiness}");
    let response = send(Delivery::new(SECRET, fresh_event()).request(&ingress)).await;
    refused_with_code(response, 503, "not_configured").await;
}

/// A deployment that takes only signed webhooks needs no token; its
/// callback routes then refuse every request. With neither, ingress does not
/// start, and says which settings would do.
#[tokio::test]
async fn signing_secrets_alone_are_enough_to_start_and_keep_the_callback_routes_closed() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let mut config = stack.ingress_config();
    config.webhook_tokens = vec![];
    let err = corral_ingress::Application::build(config.clone(), CancellationToken::new())
        .expect_err("neither a token nor a secret");
    let text = format!("{err:#}");
    for setting in ["CORRAL_WEBHOOK_TOKENS", "CORRAL_DROPCOWBOY_SIGNING_SECRETS"] {
        assert!(text.contains(setting), "{text}");
    }

    config.signing.secrets = vec![SECRET.into()];
    let ingress = RunningIngress::start(config).await;
    for request in [
        unauthenticated(&ingress, "sms"),
        authenticated(&ingress, "rvm"),
        unauthenticated(&ingress, "sms").basic_auth("corral", Some("")),
    ] {
        let response = send(request.body(corral_testkit::fixtures::SMS_SUCCESS)).await;
        refused(response, StatusCode::UNAUTHORIZED).await;
    }
    assert_published(broker, &ingress, &Delivery::new(SECRET, fresh_event())).await;
}

/// `--allow-unauthenticated` opens the callback routes, never the signed one.
#[tokio::test]
async fn allowing_unauthenticated_webhooks_does_not_switch_the_signature_check_off() {
    let stack = Stack::builder().start().await;
    for secrets in [vec![], vec![SECRET.to_owned()]] {
        let mut config = stack.ingress_config();
        config.webhook_tokens = vec![];
        config.allow_unauthenticated = true;
        config.signing.secrets = secrets.clone();
        config.retry_after_secs = RETRY_AFTER_SECS;
        let ingress = RunningIngress::start(config).await;
        let unsigned = Delivery::new(SECRET, fresh_event())
            .without("x-signature")
            .without("x-timestamp");
        let (status, code) = if secrets.is_empty() {
            (503, "not_configured")
        } else {
            (401, "missing_signature")
        };
        let response = send(unsigned.request(&ingress)).await;
        refused_with_code(response, status, code).await;
        ingress.stop().await.expect("stops");
    }
}

/// Secrets from the file and from the setting are both accepted, the file's
/// separated by newlines or commas; a file that cannot be read stops the
/// start, naming the setting.
#[tokio::test]
async fn the_secrets_file_adds_to_the_setting_and_an_unreadable_one_stops_the_start() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let dir = std::env::temp_dir().join(corral_testkit::unique_name("secrets"));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("signing-secrets");
    std::fs::write(&file, format!("\n  {SECOND_SECRET} \n,third-secret\n")).expect("writing");
    let mut config = stack.ingress_config();
    config.signing.secrets = vec![SECRET.into()];
    config.signing.secrets_file = Some(file.clone());
    let ingress = RunningIngress::start(config.clone()).await;
    std::fs::remove_dir_all(&dir).expect("removing the directory");
    assert_eq!(readyz(ingress.admin_port).await["signing_secrets"], 3);
    for secret in [SECRET, SECOND_SECRET, "third-secret"] {
        assert_published(broker, &ingress, &Delivery::new(secret, fresh_event())).await;
    }
    ingress.stop().await.expect("stops");

    let err = corral_ingress::Application::build(config, CancellationToken::new())
        .expect_err("the file is gone");
    let text = format!("{err:#}");
    assert!(
        text.contains("CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE") && text.contains("signing-secrets"),
        "{text}"
    );
}

/// With secrets, the waits of a request must leave the provider's 5 s:
/// CORRAL_IN_FLIGHT_WAIT_MS + CORRAL_PUBLISH_TIMEOUT_MS at most 4000 ms.
/// Without, any deadline goes.
#[tokio::test]
async fn with_secrets_a_deadline_past_4_seconds_stops_the_start_and_without_it_does_not() {
    let stack = Stack::builder().start().await;
    let mut config = stack.ingress_config();
    assert_eq!(config.publish_timeout_ms, 3_000, "the default");
    config.publish_timeout_ms = 3_751;
    config.in_flight_wait_ms = 250;
    let build = |config| corral_ingress::Application::build(config, CancellationToken::new());
    drop(build(config.clone()).expect("no secret: nothing signed"));
    config.signing.secrets = vec![SECRET.into()];
    let text = format!("{:#}", build(config.clone()).expect_err("4001 ms"));
    for named in [
        "CORRAL_IN_FLIGHT_WAIT_MS (250 ms)",
        "CORRAL_PUBLISH_TIMEOUT_MS (3751 ms)",
    ] {
        assert!(text.contains(named), "{text}");
    }
    config.publish_timeout_ms = 3_750;
    drop(build(config).expect("exactly 4000 ms"));
}

/// The secrets, right and wrong, never reach a log line (at TRACE), a
/// metric, the configuration's `Debug`, `/readyz`, `--help` or the real
/// binary's output.
#[tokio::test]
async fn a_secret_never_appears_in_a_log_line_help_readyz_or_the_binary_s_output() {
    let logs = CapturedLogs::install();
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let wrong = "corral-test-wrong-secret-5d7e";
    let ingress = start_signed(&stack, &[SECRET, SECOND_SECRET]).await;
    assert_published(broker, &ingress, &Delivery::new(SECRET, fresh_event())).await;
    let delivery = Delivery::new(wrong, fresh_event());
    let reason = Some(RejectReason::InvalidSignature);
    assert_refused(
        broker,
        &ingress,
        &delivery,
        401,
        Some("invalid_signature"),
        reason,
    )
    .await;
    let readiness = readyz(ingress.admin_port).await.to_string();
    assert!(readiness.contains(r#""signing_secrets":2"#), "{readiness}");
    let metrics = ingress.metrics().await;
    let mut config = stack.ingress_config();
    config.signing.secrets = vec![SECRET.into(), SECOND_SECRET.into()];
    let debug = format!("{config:?}");
    ingress.stop().await.expect("stops");

    let lines = logs.lines();
    assert!(
        lines.iter().any(|line| line.contains("signing_secrets=2")),
        "the start-up line says how many"
    );
    let outputs = [lines.join("\n"), readiness, debug, child_outputs().await];
    for secret in [SECRET, SECOND_SECRET, wrong] {
        for output in &outputs {
            assert!(!output.contains(secret), "{secret} in {output}");
        }
        assert!(metrics.0.keys().all(|series| !series.contains(secret)));
    }
}

/// The real binary's `--help` and its start-up output, run with the secrets
/// in its environment, then what it logs taking a signed delivery.
async fn child_outputs() -> String {
    let secrets = format!("{SECRET},{SECOND_SECRET}");
    prepare_binaries().await;
    let help = Command::new(binary_path(Binary::Ingress))
        .arg("--help")
        .env("CORRAL_DROPCOWBOY_SIGNING_SECRETS", &secrets)
        .stdin(Stdio::null())
        .output()
        .expect("running corral-ingress --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("CORRAL_DROPCOWBOY_SIGNING_SECRETS"), "{help}");
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = Process::start_ready(
        ProcessConfig::ingress(broker.prefix(), TOKEN)
            .env("CORRAL_DROPCOWBOY_SIGNING_SECRETS", &secrets)
            .env("CORRAL_LOG", "debug"),
    )
    .await;
    let client = reqwest::Client::new();
    for (secret, status) in [
        (SECOND_SECRET, StatusCode::OK),
        ("wrong", StatusCode::UNAUTHORIZED),
    ] {
        let delivery = Delivery::new(secret, fresh_event());
        let response = send(delivery.request_to(&client, &ingress.base_url())).await;
        assert_eq!(response.status(), status);
    }
    let readiness = readyz(ingress.admin_port()).await.to_string();
    assert!(readiness.contains(r#""signing_secrets":2"#), "{readiness}");
    format!("{help}\n{}\n{readiness}", ingress.log_tail())
}
