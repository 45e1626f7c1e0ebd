//! Making the SDK's client, and checking once at start what only asking can.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::{Credentials, provider::ProvideCredentials as _};
use aws_sdk_sqs::{
    config::{
        ConfigBag, Intercept, RuntimeComponents,
        interceptors::{
            BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
        },
    },
    error::DisplayErrorContext,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::Metadata as Operation;

use super::{CheckError, Client, Queue, SettingsError, check, check_settings};
use crate::{config::BufferSettings, telemetry::metrics};

/// Bound on each step of the start-up checks (credentials, the queue).
const START_CHECK: Duration = Duration::from_secs(10);

/// Makes the client and checks, once, what can only be checked by asking:
/// a region, credentials, and the queue. A queue SQS says is missing or
/// refuses to this identity is an error; a queue SQS does not answer for is
/// not (the binary starts unready and keeps asking).
pub fn connect(settings: &BufferSettings) -> anyhow::Result<Queue> {
    check_settings(settings)?;
    let settings = settings.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for loading the AWS configuration")?;
        runtime.block_on(load(&settings))
    })
    .join()
    .map_err(|_| anyhow!("loading the AWS configuration panicked"))?
}

async fn load(settings: &BufferSettings) -> anyhow::Result<Queue> {
    let url = settings
        .sqs_queue_url
        .clone()
        .ok_or(SettingsError::NoQueueUrl)?;
    // Asked with a client of its own: connections made on this thread's
    // runtime die with it, and the binary's client must not pool them.
    let probe = Queue {
        client: client(settings).await?,
        url,
    };
    let checked = tokio::time::timeout(START_CHECK, check(&probe)).await;
    let queue = Queue {
        client: client(settings).await?,
        url: probe.url,
    };
    match checked {
        Ok(Err(err @ CheckError::Refused { .. })) => {
            Err(anyhow!(err).context(format!("checking the SQS queue {}", queue.url)))
        }
        Ok(Err(err)) => {
            tracing::warn!(
                queue = queue.url,
                error = %err,
                "SQS does not answer yet; starting unready and asking again"
            );
            Ok(queue)
        }
        Err(_elapsed) => {
            tracing::warn!(
                queue = queue.url,
                "SQS did not answer within {START_CHECK:?}; starting unready and asking again"
            );
            Ok(queue)
        }
        Ok(Ok(())) => Ok(queue),
    }
}

/// The SDK's client: region and credentials from the standard chain (or
/// `sqs_identity`), both checked; the endpoint from `CORRAL_SQS_ENDPOINT_URL`,
/// else the SDK's own `AWS_ENDPOINT_URL_SQS`, else AWS's.
pub async fn client(settings: &BufferSettings) -> anyhow::Result<Client> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(identity) = &settings.sqs_identity {
        loader = loader
            .region(Region::new(identity.region.clone()))
            .credentials_provider(Credentials::new(
                identity.access_key_id.clone(),
                identity.secret_access_key.clone(),
                None,
                None,
                "corral-embedded",
            ));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!("no AWS region for SQS: set AWS_REGION (or a region in the AWS profile)");
    }
    let provider = sdk.credentials_provider().ok_or_else(|| {
        anyhow!("no AWS credentials provider for SQS (the standard chain is not configured)")
    })?;
    tokio::time::timeout(START_CHECK, provider.provide_credentials())
        .await
        .map_err(|_| anyhow!("no AWS credentials for SQS within {START_CHECK:?}"))?
        .map_err(|err| {
            anyhow!(
                "no AWS credentials for SQS (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 a profile, or a web identity or container role): {}",
                DisplayErrorContext(&err)
            )
        })?;
    let mut config = aws_sdk_sqs::config::Builder::from(&sdk).interceptor(CountRequests);
    metrics::register_sqs();
    if let Some(endpoint) = &settings.sqs_endpoint_url {
        config = config.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(config.build()))
}

/// Counts every request the client sends (each attempt), and what AWS bills
/// for it: SQS is paid per request, each 64 KiB of payload counting as one.
#[derive(Debug)]
struct CountRequests;

/// AWS bills each 64 KiB of a request's payload as one request.
const BILLED_CHUNK: u64 = 64 * 1024;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "corral::CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let operation = operation_of(cfg);
        metrics::sqs_request(operation);
        // A receive's payload is in its answer, counted there.
        if operation != "ReceiveMessage" {
            let bytes = context.request().body().content_length().unwrap_or(0);
            metrics::sqs_billed(operation, billed_requests(bytes));
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let operation = operation_of(cfg);
        if operation == "ReceiveMessage" {
            let response = context.response();
            let bytes = response
                .headers()
                .get("content-length")
                .and_then(|length| length.parse().ok())
                .or_else(|| response.body().content_length())
                .unwrap_or(0);
            metrics::sqs_billed(operation, billed_requests(bytes));
        }
        Ok(())
    }
}

/// The operation a request is for, as one of the bounded set of labels.
fn operation_of(cfg: &ConfigBag) -> &'static str {
    label_of(cfg.load::<Operation>().map(Operation::name))
}

/// `named` if corral knows it, else `other`.
fn label_of(named: Option<&str>) -> &'static str {
    metrics::SQS_OPERATIONS
        .iter()
        .find(|known| Some(**known) == named)
        .copied()
        .unwrap_or("other")
}

/// Requests AWS bills for a call whose larger payload is `bytes` long.
fn billed_requests(bytes: u64) -> u64 {
    bytes.div_ceil(BILLED_CHUNK).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_by_operation_and_billed_per_64_kib() {
        assert_eq!(label_of(Some("SendMessageBatch")), "SendMessageBatch");
        assert_eq!(label_of(Some("ListQueues")), "other");
        assert_eq!(label_of(None), "other");
        assert_eq!(billed_requests(0), 1);
        assert_eq!(billed_requests(65_536), 1);
        assert_eq!(billed_requests(65_537), 2);
        assert_eq!(billed_requests(262_144), 4);
    }
}
