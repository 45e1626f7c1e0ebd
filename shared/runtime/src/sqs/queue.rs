//! Asking SQS about a queue: whether it answers, how deep it is, and which
//! dead-letter queue its redrive policy names.

use aws_sdk_sqs::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::QueueAttributeName,
};

use super::{Client, Queue};

/// Why the queue could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// SQS answered, and refused: no such queue, a denied identity, a bad
    /// signature. Waiting does not mend these.
    #[error("SQS refused ({code}): {reason}")]
    Refused {
        /// The error code SQS sent.
        code: String,
        /// Its message.
        reason: String,
    },
    /// No answer, or one saying to try later (throttled, unavailable).
    #[error("SQS did not answer: {0}")]
    Unreachable(String),
}

/// Error codes that mean a setting is wrong, not that SQS is away.
const REFUSALS: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAddress",
    "InvalidSecurity",
    "KMS.AccessDeniedException",
];

/// Asks SQS about the queue (`GetQueueAttributes`): what readiness reports.
pub async fn check(queue: &Queue) -> Result<(), CheckError> {
    let asked = queue
        .client
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await;
    match asked {
        Ok(_) => Ok(()),
        Err(err) => Err(classify(&err)),
    }
}

/// A failed call as [`CheckError`]: refused when SQS answered with one of
/// the codes that mean a wrong setting.
pub fn classify<E, R>(err: &SdkError<E, R>) -> CheckError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = err.as_service_error()
        && let Some(code) = service.code()
        && REFUSALS.contains(&code)
    {
        return CheckError::Refused {
            code: code.to_owned(),
            reason: service.message().unwrap_or("no message").to_owned(),
        };
    }
    CheckError::Unreachable(DisplayErrorContext(err).to_string())
}

/// A queue's message counts, as `GetQueueAttributes` reports them
/// (approximate on AWS), and its redrive policy, from one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not yet deleted.
    pub in_flight: u64,
    /// `ApproximateNumberOfMessagesDelayed`: sent with a delay not yet over.
    pub delayed: u64,
    /// `RedrivePolicy`, the JSON SQS keeps, when the queue has one.
    pub redrive_policy: Option<String>,
}

/// Asks SQS for the message counts and the redrive policy of the queue at `url`.
pub async fn depth(client: &Client, url: &str) -> Result<Depth, CheckError> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|err| classify(&err))?;
    let attributes = output.attributes();
    let get = |name: QueueAttributeName| attributes.and_then(|all| all.get(&name));
    let count = |name| get(name).and_then(|value| value.parse().ok()).unwrap_or(0);
    Ok(Depth {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        redrive_policy: get(QueueAttributeName::RedrivePolicy)
            .filter(|policy| !policy.trim().is_empty())
            .cloned(),
    })
}

/// The dead-letter queue a redrive policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    /// `deadLetterTargetArn`.
    pub arn: String,
    /// The account that owns it (the ARN's fifth field).
    pub account: String,
    /// Its name (the ARN's last field).
    pub name: String,
}

/// A redrive policy that does not name a queue.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the redrive policy {policy:?} names no dead-letter queue: {reason}")]
pub struct RedrivePolicyError {
    /// The policy as SQS returned it.
    pub policy: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads `deadLetterTargetArn` (`arn:<partition>:sqs:<region>:<account>:<name>`)
/// out of a redrive policy.
pub fn dead_letter_target(policy: &str) -> Result<DeadLetterTarget, RedrivePolicyError> {
    let wrong = |reason: &str| RedrivePolicyError {
        policy: policy.to_owned(),
        reason: reason.to_owned(),
    };
    let json: serde_json::Value =
        serde_json::from_str(policy).map_err(|err| wrong(&format!("not JSON ({err})")))?;
    let arn = json
        .get("deadLetterTargetArn")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| wrong("no deadLetterTargetArn"))?;
    match arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => {
            Ok(DeadLetterTarget {
                arn: arn.to_owned(),
                account: account.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(wrong("deadLetterTargetArn is not an SQS queue's ARN")),
    }
}

/// The URL of `target` (`GetQueueUrl` with its name and owner account).
pub async fn dead_letter_url(
    client: &Client,
    target: &DeadLetterTarget,
) -> Result<String, CheckError> {
    let output = client
        .get_queue_url()
        .queue_name(&target.name)
        .queue_owner_aws_account_id(&target.account)
        .send()
        .await
        .map_err(|err| classify(&err))?;
    output
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| CheckError::Unreachable("GetQueueUrl answered without a URL".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redrive_policy_names_its_dead_letter_queue() {
        let target = dead_letter_target(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:corral-dead","maxReceiveCount":"5"}"#,
        )
        .unwrap();
        assert_eq!(target.account, "123456789012");
        assert_eq!(target.name, "corral-dead");
        for bad in [
            "",
            "{}",
            r#"{"deadLetterTargetArn":"arn:aws:sns:eu-west-1:1:topic"}"#,
            r#"{"deadLetterTargetArn":"corral-dead"}"#,
        ] {
            assert!(dead_letter_target(bad).is_err(), "{bad}");
        }
    }
}
