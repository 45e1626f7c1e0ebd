//! deploy/: every corral_* metric the dashboards and the alerts name exists
//! (exported by ingress, or by a worker on RabbitMQ or on SQS).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use corral_testkit::{
    apps::{RunningIngress, RunningWorker},
    fixtures,
    metrics::catalogued,
    process::free_port,
    sqs::TestQueue,
    stack::Stack,
    wait,
};

use super::helpers::*;

/// A `corral_*` metric named in a deploy file, with the label names its
/// selectors use.
#[derive(Debug, Default)]
struct Named {
    /// Label names in `{…}` right after the name.
    labels: BTreeSet<String>,
    /// Files it appears in.
    files: BTreeSet<String>,
}

fn deploy_dir() -> PathBuf {
    corral_testkit::process::workspace_root().join("deploy")
}

/// Every string value of a JSON document (the queries of a dashboard are strings).
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Finds `corral_…` metric names and the label names of a `{…}` selector
/// that follows one.
fn scan(text: &str, file: &str, found: &mut BTreeMap<String, Named>) {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(offset) = text[i..].find("corral_") {
        let start = i + offset;
        i = start + "corral_".len();
        if start > 0 && is_name(bytes[start - 1]) {
            continue;
        }
        let mut end = i;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if end == i {
            // `corral_*` in prose, not a metric.
            continue;
        }
        let name = text[start..end].to_owned();
        let entry = found.entry(name).or_default();
        entry.files.insert(file.to_owned());
        if bytes.get(end) == Some(&b'{') {
            let close = text[end..].find('}').map_or(text.len(), |c| end + c);
            for matcher in text[end + 1..close].split(',') {
                let label: String = matcher
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !label.is_empty() {
                    entry.labels.insert(label);
                }
            }
        }
        i = end;
    }
}

/// The metric names (with their selectors' labels) that the dashboards in
/// `deploy/grafana/` and the rules in `deploy/prometheus/alerts.yaml` use.
fn named_in_deploy() -> BTreeMap<String, Named> {
    let mut found = BTreeMap::new();
    let grafana = deploy_dir().join("grafana");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&grafana).expect("deploy/grafana exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            dashboards += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()));
            let mut strings = Vec::new();
            json_strings(&json, &mut strings);
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            for s in strings {
                scan(&s, &file, &mut found);
            }
        }
    }
    assert!(dashboards > 0, "no dashboard in {}", grafana.display());
    let alerts = deploy_dir().join("prometheus/alerts.yaml");
    let text = std::fs::read_to_string(&alerts).expect("deploy/prometheus/alerts.yaml exists");
    // Comments are prose; the rules are the rest.
    let rules: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    scan(&rules, "alerts.yaml", &mut found);
    found
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_metrics_the_binaries_export() {
    let named = named_in_deploy();
    for expected in [
        "corral_ingress_requests_total",
        "corral_ingress_publish_failures_total",
        "corral_worker_messages_total",
        "corral_worker_end_to_end_seconds_bucket",
        "corral_ready",
        "corral_worker_deliveries_total",
    ] {
        assert!(
            named.contains_key(expected),
            "{expected} should be on the dashboard or in the alerts; found {:?}",
            named.keys()
        );
    }

    // Both binaries, one webhook all the way through the queue and one
    // through the spool, so that every histogram has a sample and is exported.
    let stack = Stack::builder().migrated().start().await;
    let db = stack.db();
    let spool = db.spool_writer().await;
    let ingress = RunningIngress::start(stack.ingress_config()).await;
    // No broker where this one looks: its webhook takes the spool.
    let mut spooling = stack.ingress_config();
    spooling.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    spooling.spool_database_url = Some(spool.url.clone());
    let spooling = RunningIngress::start_unready(spooling).await;
    spooling.wait_ready(true).await;
    // With result events, whose relay series (corral_worker_result_events_*)
    // exist only when CORRAL_RESULT_EVENTS=true.
    let mut worker_config = stack.worker_config();
    worker_config.results.result_events = true;
    let worker = RunningWorker::start(worker_config).await;
    assert_eq!(
        ingress.post("sms", fixtures::SMS_SUCCESS).await.status(),
        200
    );
    assert_eq!(
        spooling.post("sms", fixtures::SMS_FAILURE).await.status(),
        200
    );
    wait::until_true("both webhooks to be stored", WAIT, || async {
        let metrics = worker.metrics().await;
        metrics.get(r#"corral_worker_messages_total{outcome="stored"}"#) >= 2.0
            && metrics.get("corral_worker_spool_drained_total") >= 1.0
    })
    .await;
    // A worker on SQS too: its corral_worker_sqs_* series exist only with
    // CORRAL_BUFFER=sqs (the dead-letter queue's once it has been measured).
    let queue = TestQueue::new().await;
    let mut sqs_config = stack.worker_config();
    sqs_config.buffer = queue.settings();
    let sqs_worker = RunningWorker::start(sqs_config).await;
    let dead_letters = r#"corral_worker_sqs_queue_messages{queue="dead_letter",state="visible"}"#;
    wait::until_true("the SQS worker to measure its queues", WAIT, || async {
        sqs_worker.metrics().await.0.contains_key(dead_letters)
    })
    .await;
    let mut exported = ingress.metrics().await.names();
    exported.extend(spooling.metrics().await.names());
    exported.extend(worker.metrics().await.names());
    exported.extend(sqs_worker.metrics().await.names());
    sqs_worker.stop().await.unwrap();
    worker.stop().await.unwrap();
    spooling.stop().await.unwrap();
    ingress.stop().await.unwrap();

    // And both over SQS (CORRAL_BUFFER=sqs), whose metrics the SQS alerts and
    // panels read: the queues' depth, the age of what the worker received,
    // the requests per call. Its own database, so that the same fixture is
    // stored, not a duplicate; the counters carry on from the pair above (one
    // registry per test process), hence `stored_before`.
    let mut sqs = Stack::builder()
        .sqs()
        .migrated()
        .with_ingress()
        .with_worker()
        .start()
        .await;
    let (sqs_ingress, sqs_worker) = (sqs.ingress(), sqs.worker());
    let stored = r#"corral_worker_messages_total{outcome="stored"}"#;
    let stored_before = sqs_worker.metrics().await.get(stored);
    assert_eq!(
        sqs_ingress
            .post("sms", fixtures::SMS_SUCCESS)
            .await
            .status(),
        200
    );
    // The queue gauges are measured every 15 s.
    let sqs_wait = std::time::Duration::from_secs(40);
    wait::until_true(
        "the webhook over SQS to be stored and measured",
        sqs_wait,
        || async {
            let metrics = sqs_worker.metrics().await;
            let names = metrics.names();
            metrics.get(stored) > stored_before
                && names.contains("corral_worker_sqs_queue_messages")
                && names.contains("corral_worker_sqs_oldest_received_seconds")
        },
    )
    .await;
    exported.extend(sqs_ingress.metrics().await.names());
    exported.extend(sqs_worker.metrics().await.names());
    sqs.stop_worker().await.unwrap();
    sqs.stop_ingress().await.unwrap();

    let target_labels = [
        "job",
        "instance",
        "namespace",
        "pod",
        "service",
        "container",
        "endpoint",
    ];
    let mut problems = Vec::new();
    for (name, use_) in &named {
        let Some((def, bucket)) = catalogued(name) else {
            problems.push(format!(
                "{name} (in {:?}) is not in the catalogue",
                use_.files
            ));
            continue;
        };
        if !exported.contains(def.name) {
            problems.push(format!(
                "{name} (in {:?}) is not exported by either binary",
                use_.files
            ));
        }
        for label in &use_.labels {
            let known = def.labels.contains(&label.as_str())
                || (bucket && label == "le")
                || target_labels.contains(&label.as_str());
            if !known {
                problems.push(format!(
                    "{name} (in {:?}) has no label {label:?}; it has {:?}",
                    use_.files, def.labels
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/ names metrics that do not exist:\n{}",
        problems.join("\n")
    );
}
