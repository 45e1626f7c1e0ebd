//! Tokens, routes, and the refusal to run open by accident.

use std::collections::HashSet;

use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    fixtures,
    stack::Stack,
};
use reqwest::{StatusCode, header};
use tokio_util::sync::CancellationToken;

use super::helpers::*;

#[tokio::test]
async fn the_token_is_accepted_as_query_parameter_bearer_and_basic_password() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let query = ingress
        .http
        .post(format!("{}?token={TOKEN}", ingress.url("sms")))
        .header(header::CONTENT_TYPE, "application/json");
    let bearer = unauthenticated(ingress, "sms").bearer_auth(TOKEN);
    // What a callback URL `https://corral:<token>@host/...` sends.
    let basic = unauthenticated(ingress, "sms").basic_auth("corral", Some(TOKEN));
    let mut ids = HashSet::new();
    for request in [query, bearer, basic] {
        ids.insert(accepted(send(request.body(fixtures::SMS_SUCCESS)).await).await);
    }
    assert_eq!(queued_ids(broker, 3).await, ids);
    assert_eq!(rejected(&ingress.metrics().await, "unauthorized"), 0.0);
}

/// Two configured tokens (a rotation in progress) are both accepted.
#[tokio::test]
async fn both_tokens_of_a_rotation_are_accepted() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let mut config = stack.ingress_config();
    let (old, new) = ("rotation-old-0123456789", "rotation-new-9876543210");
    config.webhook_tokens = vec![old.into(), new.into()];
    let ingress = RunningIngress::start(config).await;
    let mut ids = HashSet::new();
    for token in [old, new] {
        let request = unauthenticated(&ingress, "rvm")
            .bearer_auth(token)
            .body(fixtures::SMS_SUCCESS);
        ids.insert(accepted(send(request).await).await);
        let query = ingress
            .http
            .post(format!("{}?token={token}", ingress.url("rvm")))
            .body(fixtures::SMS_FAILURE);
        ids.insert(accepted(send(query).await).await);
    }
    assert_eq!(queued_ids(broker, 4).await, ids);
    // The built-in test token is not among the configured ones.
    let request = authenticated(&ingress, "rvm").body(fixtures::SMS_SUCCESS);
    refused(send(request).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(rejected(&ingress.metrics().await, "unauthorized"), 1.0);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_on_a_webhook_route_405() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    let base = ingress.base_url();
    for path in [
        "/webhooks/dropcowboy/fax",
        "/",
        "/webhooks/dropcowboy/sms/extra",
    ] {
        let request = ingress
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(fixtures::SMS_SUCCESS);
        refused(send(request).await, StatusCode::NOT_FOUND).await;
    }
    for (method, kind) in [(reqwest::Method::GET, "sms"), (reqwest::Method::PUT, "rvm")] {
        let request = ingress
            .http
            .request(method.clone(), ingress.url(kind))
            .bearer_auth(TOKEN)
            .body(fixtures::SMS_SUCCESS);
        let (_, headers) = refused(send(request).await, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(
            headers.get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"POST"[..]),
            "{method} {kind}"
        );
    }
    assert_nothing_else_published(broker, ingress).await;
}

/// Without a token the ingress does not build, unless
/// `allow_unauthenticated` is set, and then it says so loudly and accepts
/// webhooks without one.
#[tokio::test]
async fn the_ingress_refuses_to_build_without_a_token_unless_unauthenticated_is_allowed() {
    let logs = CapturedLogs::install();
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    for tokens in [vec![], vec![String::new(), "  ".to_owned()]] {
        let mut config = stack.ingress_config();
        config.webhook_tokens = tokens.clone();
        let err = corral_ingress::Application::build(config, CancellationToken::new())
            .expect_err("an ingress without tokens must not build");
        assert!(
            format!("{err:#}").contains("CORRAL_WEBHOOK_TOKENS"),
            "{tokens:?}: the error should name the setting: {err:#}"
        );
    }

    let mut config = stack.ingress_config();
    config.webhook_tokens = vec![];
    config.allow_unauthenticated = true;
    let ingress = RunningIngress::start(config).await;
    let id =
        accepted(send(unauthenticated(&ingress, "sms").body(fixtures::SMS_SUCCESS)).await).await;
    assert_eq!(queued_ids(broker, 1).await, HashSet::from([id]));
    let warned = logs
        .lines()
        .into_iter()
        .any(|line| line.contains("WARN") && line.contains("AUTHENTICATION IS OFF"));
    assert!(warned, "no loud warning that authentication is off");
}
