//! The SQS sink: a round is one `SendMessageBatch` of up to 10 messages
//! (with a FIFO queue, whose messages hold one group each, one call per 10
//! messages, in turn), and SQS answers per message.

use std::time::{Duration, Instant};

use aws_sdk_sqs::{
    error::ProvideErrorMetadata as _,
    operation::send_message_batch::SendMessageBatchOutput,
    types::{SendMessageBatchRequestEntry, builders::SendMessageBatchRequestEntryBuilder},
};
use corral_contract::envelope::{Charset, batch};
use corral_runtime::{
    error_chain,
    sqs::{self, CheckError},
    telemetry::metrics,
};

use super::{Endpoint, Settings, SqsError};
use crate::{
    buffer::{
        Webhook,
        engine::{Bounds, Limits, Round, Sink},
        pack,
    },
    config::SQS_MESSAGE_OVERHEAD,
};

/// One message of a call: its entry, and its webhooks' places in the round.
type Message = (SendMessageBatchRequestEntryBuilder, Vec<usize>);

impl Sink for Endpoint {
    type Error = SqsError;

    fn bounds(&self) -> Bounds {
        let settings = &self.settings;
        settings
            .publishing
            .bounds(limits(settings), settings.linger, 1)
    }

    fn size(&self, webhook: &Webhook) -> usize {
        batch::entry_len_for(Charset::Sqs, &webhook.body)
    }

    fn ready(&self) -> Result<(), SqsError> {
        if self.is_reachable() {
            Ok(())
        } else {
            Err(SqsError::Unavailable(
                "the last check or call did not get an answer".into(),
            ))
        }
    }

    /// Sends the round's calls in turn, answering each call's requests as
    /// soon as SQS answered it.
    async fn send(&self, mut round: Round<SqsError>) {
        let mut calls: Vec<Vec<Message>> = Vec::new();
        for (group, indices) in self.messages(round.webhooks()) {
            let Some(message) = self.entry(&mut round, group, indices) else {
                continue;
            };
            match calls.last_mut() {
                Some(last) if last.len() < sqs::BATCH_ENTRIES => last.push(message),
                _ => calls.push(vec![message]),
            }
        }
        for call in calls {
            let (entries, messages): (Vec<_>, Vec<_>) = call
                .into_iter()
                .enumerate()
                .map(|(i, (entry, indices))| {
                    let entry = entry.id(i.to_string()).build();
                    (entry.expect("id and body are set"), indices)
                })
                .unzip();
            self.send_call(&mut round, entries, messages).await;
        }
    }
}

/// A call's limits: up to 10 messages, their bodies and attributes within
/// the byte limit together. Room for every message's own overhead is kept
/// aside, unless the limit is so small that a call carries one message.
fn limits(settings: &Settings) -> Limits {
    let messages = if settings.max_message_bytes >= sqs::BATCH_ENTRIES * 4096 {
        sqs::BATCH_ENTRIES
    } else {
        1
    };
    Limits {
        count: settings.batch_max * messages,
        bytes: settings.max_message_bytes - (messages - 1) * SQS_MESSAGE_OVERHEAD,
        overhead: SQS_MESSAGE_OVERHEAD,
    }
}

impl Endpoint {
    /// The round's webhooks as messages of at most `CORRAL_PUBLISH_BATCH_MAX`
    /// each, by their places in the round; with a FIFO queue, one group per
    /// message, a group's webhooks in their order of arrival.
    fn messages(&self, webhooks: &[Webhook]) -> Vec<(u16, Vec<usize>)> {
        let groups = self.settings.fifo_groups;
        let mut order: Vec<(u16, usize)> = webhooks
            .iter()
            .enumerate()
            .map(|(i, webhook)| (groups.map_or(0, |g| group_of(&webhook.body, g)), i))
            .collect();
        if groups.is_some() {
            // Stable: a group's webhooks keep their order of arrival.
            order.sort_by_key(|(group, _)| *group);
        }
        let mut messages: Vec<(u16, Vec<usize>)> = Vec::new();
        for (group, i) in order {
            match messages.last_mut() {
                Some((last_group, last))
                    if last.len() < self.settings.batch_max && *last_group == group =>
                {
                    last.push(i);
                }
                _ => messages.push((group, vec![i])),
            }
        }
        messages
    }

    /// One message's entry, or `None` when its webhooks were refused already
    /// (too large, or not UTF-8).
    fn entry(
        &self,
        round: &mut Round<SqsError>,
        group: u16,
        indices: Vec<usize>,
    ) -> Option<Message> {
        let settings = &self.settings;
        let webhooks = round.webhooks();
        let (id, packed) = pack(indices.iter().map(|&i| &webhooks[i]), Charset::Sqs);
        let size = packed.body.len() + sqs::ATTRIBUTES_MAX;
        let body = if size > settings.max_message_bytes {
            Err(SqsError::TooLarge(size, settings.max_message_bytes))
        } else {
            // Ingress packs only bodies it checked are UTF-8 JSON.
            String::from_utf8(packed.body).map_err(|_| SqsError::Refused {
                code: "corral".into(),
                reason: "the message is not UTF-8".into(),
            })
        };
        let body = match body {
            Ok(body) => body,
            Err(refused) => {
                for i in indices {
                    round.answer(i, &Err(refused.clone()));
                }
                return None;
            }
        };
        let mut entry = SendMessageBatchRequestEntry::builder()
            .message_body(body)
            .set_message_attributes(Some(sqs::attributes(
                id,
                packed.routing_key,
                batch::CONTENT_TYPE,
            )));
        if settings.fifo_groups.is_some() {
            // The message's own id: a call sent again after a lost answer is
            // taken once (SQS deduplicates for 5 minutes).
            entry = entry
                .message_group_id(format!("corral-{group}"))
                .message_deduplication_id(id.to_string());
        }
        metrics::ingress_publish_batch(indices.len());
        Some((entry, indices))
    }

    /// Sends one `SendMessageBatch` and answers each of its messages' requests.
    async fn send_call(
        &self,
        round: &mut Round<SqsError>,
        entries: Vec<SendMessageBatchRequestEntry>,
        messages: Vec<Vec<usize>>,
    ) {
        if entries.is_empty() {
            return;
        }
        let started = Instant::now();
        let output = match self.call(entries).await {
            Ok(output) => output,
            Err(err) => {
                tracing::debug!(error = error_chain(&err), "SendMessageBatch failed");
                for i in messages.into_iter().flatten() {
                    round.answer(i, &Err(err.clone()));
                }
                return;
            }
        };
        self.set_reachable(true, None);
        let verdicts = verdicts(&output, messages.len(), started.elapsed());
        for (indices, verdict) in messages.into_iter().zip(verdicts) {
            for i in indices {
                round.answer(i, &verdict);
            }
        }
    }

    /// One `SendMessageBatch`, its failure told apart: refused by SQS, or
    /// no answer from it.
    async fn call(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<SendMessageBatchOutput, SqsError> {
        let timeout = self.settings.publishing.publish_timeout;
        let call = self
            .queue
            .client
            .send_message_batch()
            .queue_url(&self.queue.url)
            .set_entries(Some(entries))
            .send();
        match tokio::time::timeout(timeout, call).await {
            Err(_elapsed) => Err(SqsError::Timeout(timeout)),
            Ok(Ok(output)) => Ok(output),
            // SQS answered, and refused this call (a message over the queue's
            // MaximumMessageSize, say): these webhooks are refused, and SQS is
            // still there for the next.
            Ok(Err(err)) => match err.as_service_error() {
                Some(service) if !is_transient(service.code()) => Err(SqsError::Refused {
                    code: service.code().unwrap_or("unknown").to_owned(),
                    reason: service.message().unwrap_or("no message").to_owned(),
                }),
                _ => Err(match sqs::classify(&err) {
                    CheckError::Refused { code, reason } => SqsError::Refused { code, reason },
                    CheckError::Unreachable(why) => {
                        self.set_reachable(false, Some(&why));
                        // Asked again now rather than at the next tick: a blip
                        // the SDK's own retries did not outlast need not refuse
                        // webhooks for seconds.
                        self.recheck.notify_one();
                        SqsError::Unavailable(why)
                    }
                }),
            },
        }
    }
}

/// Each message's verdict from SQS's answer to its call: taken, refused,
/// or (named in neither list) not taken.
fn verdicts(
    output: &SendMessageBatchOutput,
    messages: usize,
    elapsed: Duration,
) -> Vec<Result<Duration, SqsError>> {
    let mut verdicts: Vec<Option<Result<Duration, SqsError>>> = vec![None; messages];
    let index = |id: &str| id.parse::<usize>().ok().filter(|i| *i < messages);
    for ok in output.successful() {
        if let Some(verdict) = index(ok.id()).map(|i| &mut verdicts[i]) {
            *verdict = Some(Ok(elapsed));
        }
    }
    for failed in output.failed() {
        if let Some(verdict) = index(failed.id()).map(|i| &mut verdicts[i]) {
            tracing::warn!(
                code = failed.code(),
                sender_fault = failed.sender_fault(),
                reason = failed.message().unwrap_or(""),
                "SQS refused a message of a SendMessageBatch; its webhooks go to the spool, or \
                 get 503 without one"
            );
            *verdict = Some(Err(SqsError::Refused {
                code: failed.code().to_owned(),
                reason: failed.message().unwrap_or("no message").to_owned(),
            }));
        }
    }
    verdicts
        .into_iter()
        .map(|verdict| {
            verdict.unwrap_or_else(|| {
                Err(SqsError::Refused {
                    code: "missing".into(),
                    reason: "SQS's answer named this message neither successful nor failed".into(),
                })
            })
        })
        .collect()
}

/// Error codes by which SQS says to try later: it is there, and cannot now.
fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        None | Some(
            "ThrottlingException"
                | "RequestThrottled"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalError"
                | "KmsThrottled"
        )
    )
}

/// The message group of a webhook: its `phone_number`'s, so one number's
/// webhooks share one; a body without one goes to group 0.
fn group_of(body: &[u8], groups: u16) -> u16 {
    #[derive(serde::Deserialize)]
    struct Recipient<'a> {
        #[serde(borrow, default)]
        phone_number: Option<std::borrow::Cow<'a, str>>,
    }
    let number = serde_json::from_slice::<Recipient<'_>>(body)
        .ok()
        .and_then(|recipient| recipient.phone_number);
    number.map_or(0, |number| {
        u16::try_from(crc32fast::hash(number.as_bytes()) % u32::from(groups)).unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Publishing;

    fn settings(max_message_bytes: usize) -> Settings {
        Settings {
            publishing: Publishing {
                max_in_flight: 10,
                concurrency: 1,
                in_flight_wait: Duration::from_millis(1),
                publish_timeout: Duration::from_secs(1),
            },
            batch_max: 128,
            max_message_bytes,
            linger: Duration::ZERO,
            fifo_groups: None,
        }
    }

    #[test]
    fn one_number_always_has_one_group_and_numbers_spread_over_all() {
        let body = |number: &str| format!(r#"{{"drop_id":"d","phone_number":"{number}"}}"#);
        let first = group_of(body("+15552224444").as_bytes(), 16);
        assert_eq!(group_of(body("+15552224444").as_bytes(), 16), first);
        // An escaped spelling of the same number is the same number.
        let escaped = r#"{"phone_number":"\u002b15552224444"}"#;
        assert_eq!(group_of(escaped.as_bytes(), 16), first);
        let groups: std::collections::BTreeSet<u16> = (0..1000)
            .map(|n| group_of(body(&format!("+1555{n:07}")).as_bytes(), 16))
            .collect();
        assert_eq!(groups.len(), 16);
        assert!(groups.iter().all(|group| *group < 16));
        assert_eq!(group_of(br#"{"drop_id":"d"}"#, 16), 0);
        assert_eq!(group_of(br#"{"phone_number":5}"#, 16), 0);
    }

    #[test]
    fn a_call_of_ten_messages_stays_within_the_byte_limit_with_every_overhead() {
        let limits = limits(&settings(262_144));
        assert_eq!(limits.count, 1280);
        // The round's size counts one message's overhead; the nine others
        // were kept aside.
        assert!(limits.bytes + 9 * SQS_MESSAGE_OVERHEAD <= 262_144);
    }

    #[test]
    fn a_small_limit_sends_one_message_per_call() {
        let limits = limits(&settings(2048));
        assert_eq!(limits.count, 128);
        assert_eq!(limits.bytes, 2048);
    }
}
