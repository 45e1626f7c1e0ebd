//! The documentation cannot drift from the code: every setting either binary
//! accepts is in the README's configuration table with its default; every
//! query of the SQL cookbook (docs/queries.md) runs and returns what it says
//! on known webhooks; and every setting, metric and relative link the docs
//! name exists. [`one_home`]: each measured number and each contract table
//! has one home the other pages link to.

mod one_home;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use chrono::{DateTime, TimeDelta, Utc};
use clap::CommandFactory;
use corral_contract::{envelope, envelope::Kind, provider::FAILURE_REASONS};
use corral_runtime::telemetry::metrics;
use corral_testkit::{
    apps::{RunningIngress, RunningWorker},
    config::short_waits,
    database::TestDatabase,
    fixtures, metrics as kit_metrics,
    stack::Stack,
};
use corral_worker::{
    commands::{
        self,
        suppressions::{SuppressionClass, SuppressionCommand},
    },
    summary,
};
use pulldown_cmark::{CodeBlockKind, Event, LinkType, Parser, Tag, TagEnd};
use tokio_postgres::{Client, SimpleQueryMessage};
use uuid::Uuid;

use crate::worker::helpers::{DUPLICATE, EVENTS, QUARANTINE, count, send, settled, wait_count};

fn settings(command: clap::Command) -> Vec<(String, Option<String>)> {
    let mut found: Vec<(String, Option<String>)> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let default = arg
                .get_default_values()
                .first()
                .map(|value| value.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect();
    for sub in command.get_subcommands() {
        found.extend(settings(sub.clone()));
    }
    found
}

/// Every setting of both binaries, with its default.
fn all_settings() -> Vec<(String, Option<String>)> {
    let mut all = settings(corral_ingress::config::IngressConfig::command());
    all.extend(settings(corral_worker::commands::Cli::command()));
    all
}

fn root() -> PathBuf {
    corral_testkit::process::workspace_root()
}

#[test]
fn every_setting_is_in_the_readme_with_its_default() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("reading README.md");
    let all = all_settings();
    assert!(all.len() > 20, "found only {} settings", all.len());
    for (env, default) in all {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{env}` |")))
            .unwrap_or_else(|| panic!("{env} is not in the README's configuration table"));
        if let Some(default) = default {
            // Admin listeners have per-binary defaults written as one row.
            assert!(
                row.contains(&format!("`{default}`")),
                "the README row for {env} does not show its default `{default}`: {row}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Reading the docs
// ---------------------------------------------------------------------------

/// The docs: README.md, CONTRIBUTING.md, CHANGELOG.md and the bench's
/// README where present, and every `.md` under docs/ (docs/operations/
/// too). Paths relative to the workspace root.
fn doc_files() -> Vec<PathBuf> {
    let root = root();
    let mut files: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "tests/bench/README.md",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|file| root.join(file).is_file())
    .collect();
    let mut docs = Vec::new();
    markdown_under(Path::new("docs"), &mut docs);
    docs.sort();
    files.extend(docs);
    files
}

/// The `.md` files under `dir` (relative to the workspace root), recursively.
fn markdown_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()));
    for entry in entries {
        let name = entry.expect("a docs/ entry").file_name();
        let path = dir.join(name);
        if root().join(&path).is_dir() {
            markdown_under(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "md") {
            out.push(path);
        }
    }
}

fn read(relative: &Path) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|err| panic!("reading {}: {err}", relative.display()))
}

/// A name found in a text: 1-based line, the name, and whether a `*`
/// follows it (a wildcard standing for every name it starts).
#[derive(Debug)]
struct Token {
    line: usize,
    name: String,
    wildcard: bool,
}

/// Every word starting with `prefix` (not preceded by a word character) and
/// going on in `part` characters.
fn tokens(text: &str, prefix: &str, part: fn(char) -> bool) -> Vec<Token> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            let word_before = line[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if word_before {
                continue;
            }
            let rest = &line[start..];
            let end = rest.find(|c: char| !part(c)).unwrap_or(rest.len());
            from = start + end;
            let wildcard = rest[end..].starts_with('*');
            // The bare prefix ("every `CORRAL_` variable") names nothing.
            if end == prefix.len() && !wildcard {
                continue;
            }
            found.push(Token {
                line: number + 1,
                name: rest[..end].to_owned(),
                wildcard,
            });
        }
    }
    found
}

/// The 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

// ---------------------------------------------------------------------------
// Settings and metrics the docs name
// ---------------------------------------------------------------------------

/// Text files under `dir`, recursively, build output and Markdown left out.
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "target") {
                source_files(&path, out);
            }
        } else if path.extension().is_none_or(|ext| ext != "md") {
            out.push(path);
        }
    }
}

#[test]
fn every_setting_the_docs_name_exists() {
    let root = root();
    let settings: BTreeSet<String> = all_settings().into_iter().map(|(env, _)| env).collect();
    // Variables read by the scripts, CI and the tests themselves (this file
    // left out: what it names would vouch for itself).
    let mut sources = Vec::new();
    for dir in ["scripts", ".ci", "tests"] {
        source_files(&root.join(dir), &mut sources);
    }
    let mut read_by_code = BTreeSet::new();
    for path in sources {
        if path.ends_with("tests/suites/tests/it/docs.rs") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        for token in tokens(&text, "CORRAL_", is_env_char) {
            read_by_code.insert(token.name);
        }
    }
    assert!(
        settings.contains("CORRAL_DATABASE_URL") && read_by_code.contains("CORRAL_TEST_BIN_DIR"),
        "the settings or the code's variables were not found"
    );

    let offenders = unknown_in_docs("CORRAL_", is_env_char, |token| {
        if token.wildcard {
            settings.iter().any(|env| env.starts_with(&token.name))
        } else {
            settings.contains(&token.name) || read_by_code.contains(&token.name)
        }
    });
    assert!(
        offenders.is_empty(),
        "the docs name settings that neither binary has and no script or test reads \
         (a wildcard must match a setting):\n{}",
        offenders.join("\n")
    );
}

/// Every word of the docs starting with `prefix` that `known` does not vouch
/// for, as `file:line: name` (a wildcard with its `*`).
fn unknown_in_docs(
    prefix: &str,
    part: fn(char) -> bool,
    known: impl Fn(&Token) -> bool,
) -> Vec<String> {
    let mut offenders = Vec::new();
    for file in doc_files() {
        for token in tokens(&read(&file), prefix, part) {
            if !known(&token) {
                let star = if token.wildcard { "*" } else { "" };
                offenders.push(format!(
                    "{}:{}: {}{star}",
                    file.display(),
                    token.line,
                    token.name
                ));
            }
        }
    }
    offenders
}

fn is_env_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
}

/// Words starting `corral_` in the docs that are not metrics: SQL
/// functions, PostgreSQL roles, crates (as in `CORRAL_LOG=corral_worker=debug` or Rust paths) and
/// the test databases' prefix.
const NOT_METRICS: &[&str] = &[
    "corral_suppression_class",
    "corral_result_key",
    "corral_counted_results",
    "corral_spool_writer",
    "corral_ingress",
    "corral_grafana",
    "corral_worker",
    "corral_contract",
    "corral_runtime",
    "corral_payload",
    "corral_testkit",
    "corral_loadgen",
    "corral_test_",
];

#[test]
fn every_metric_the_docs_name_exists() {
    let catalogue = metrics::CATALOGUE;
    let offenders = unknown_in_docs("corral_", is_metric_char, |token| {
        NOT_METRICS.contains(&token.name.as_str())
            || if token.wildcard {
                catalogue
                    .iter()
                    .any(|def| def.name.starts_with(&token.name))
            } else {
                kit_metrics::catalogued(&token.name).is_some()
            }
    });
    assert!(
        offenders.is_empty(),
        "the docs name metrics the binaries do not export (a wildcard must match one; \
         a name that is not a metric belongs in NOT_METRICS):\n{}",
        offenders.join("\n")
    );
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

// ---------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------

/// GitHub's anchor for a heading's text (its formatting and links already
/// reduced to their text): lowercased, punctuation other than `-` and `_`
/// removed, each space a `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown file has: its headings' slugs (a repeated one
/// gets `-1`, `-2`, …) and explicit HTML `id`/`name` attributes.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(part) | Event::Code(part) => {
                if let Some(heading) = &mut heading {
                    heading.push_str(&part);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_default();
                anchors.insert(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                for attribute in ["id=\"", "name=\""] {
                    let mut rest = &*html;
                    while let Some(at) = rest.find(attribute) {
                        rest = &rest[at + attribute.len()..];
                        if let Some(end) = rest.find('"') {
                            anchors.insert(rest[..end].to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    anchors
}

/// The targets of a file's links (inline, and images) and of its reference
/// definitions (`[label]: target`, used or not), by line.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let parser = Parser::new(text);
    let mut targets: Vec<(usize, String)> = parser
        .reference_definitions()
        .iter()
        .map(|(_, definition)| {
            (
                line_of(text, definition.span.start),
                definition.dest.to_string(),
            )
        })
        .collect();
    for (event, range) in parser.into_offset_iter() {
        // A reference link's target is its definition's, read above.
        if let Event::Start(
            Tag::Link {
                link_type: LinkType::Inline,
                dest_url,
                ..
            }
            | Tag::Image {
                link_type: LinkType::Inline,
                dest_url,
                ..
            },
        ) = event
        {
            targets.push((line_of(text, range.start), dest_url.to_string()));
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = root();
    let mut anchors_of: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut offenders = Vec::new();
    for file in doc_files() {
        let text = read(&file);
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        for (line, target) in link_targets(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            let at = format!("{}:{line}: ({target})", file.display());
            if !root.join(&linked).exists() {
                offenders.push(format!("{at}: no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_none_or(|ext| ext != "md") {
                continue;
            }
            // `docs/../README.md` and `README.md` are one file.
            let key = std::fs::canonicalize(root.join(&linked)).expect("an existing file");
            let anchors = anchors_of
                .entry(key.clone())
                .or_insert_with(|| anchors(&std::fs::read_to_string(&key).expect("readable")));
            if !anchors.contains(anchor) {
                offenders.push(format!("{at}: no heading with anchor #{anchor}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "relative links in the docs lead nowhere:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn anchors_follow_github_rules() {
    let text = "# corral — design\n## HTTP — corral-ingress\n### `CORRAL_SQS_*` and [SQS](x.md)\n\
                ## Runbooks\n## Runbooks\n```\n# not a heading\n```\n## Runbooks\n";
    let found = anchors(text);
    let expected: BTreeSet<String> = [
        "corral--design",
        "http--corral-ingress",
        "corral_sqs_-and-sqs",
        "runbooks",
        "runbooks-1",
        "runbooks-2",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(found, expected);
}

// ---------------------------------------------------------------------------
// The SQL cookbook
// ---------------------------------------------------------------------------

const COOKBOOK: &str = "docs/queries.md";

/// The cookbook's queries by name (for the plans test of `lifecycle`).
pub(crate) fn cookbook() -> BTreeMap<String, String> {
    cookbook_queries(&read(Path::new(COOKBOOK)))
}

/// The cookbook's SQL blocks by the name in the `<!-- query: name -->`
/// marker before each. Every SQL block must have one, each name once, and a
/// marker must be followed by its SQL block.
fn cookbook_queries(text: &str) -> BTreeMap<String, String> {
    let mut queries = BTreeMap::new();
    let mut marker: Option<(usize, String)> = None;
    // The SQL block being read: its name and text.
    let mut reading: Option<(String, String)> = None;
    for (event, range) in Parser::new(text).into_offset_iter() {
        let line = line_of(text, range.start);
        match event {
            Event::Html(ref html)
                if let Some(name) = html
                    .trim()
                    .strip_prefix("<!-- query:")
                    .and_then(|rest| rest.strip_suffix("-->")) =>
            {
                if let Some((at, name)) = &marker {
                    panic!("{COOKBOOK}:{at}: the marker of {name} is not followed by a SQL block");
                }
                marker = Some((line, name.trim().to_owned()));
            }
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) if &*info == "sql" => {
                let (_, name) = marker.take().unwrap_or_else(|| {
                    panic!("{COOKBOOK}:{line}: a SQL block without a `<!-- query: name -->` marker")
                });
                reading = Some((name, String::new()));
            }
            Event::Text(sql) => {
                if let Some((_, body)) = &mut reading {
                    body.push_str(&sql);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((name, body)) = reading.take() {
                    let previous = queries.insert(name.clone(), body.trim_end().to_owned());
                    assert!(previous.is_none(), "{COOKBOOK}: the query {name} twice");
                }
            }
            Event::Start(_) => {
                if let Some((at, name)) = &marker {
                    panic!("{COOKBOOK}:{at}: the marker of {name} is not followed by a SQL block");
                }
            }
            _ => {}
        }
    }
    if let Some((at, name)) = marker {
        panic!("{COOKBOOK}:{at}: the marker of {name} is not followed by a SQL block");
    }
    queries
}

/// Runs `sql` as `psql` would (the simple protocol: every value as
/// PostgreSQL's own text), under a savepoint so a failing query leaves the
/// test's transaction usable. Each row is its values joined by ` | `, NULL
/// written `NULL` (no value in this test is that text).
async fn run(client: &Client, sql: &str) -> Result<Vec<String>, String> {
    client
        .batch_execute("SAVEPOINT query")
        .await
        .map_err(|err| err.to_string())?;
    match client.simple_query(sql).await {
        Ok(messages) => {
            client
                .batch_execute("RELEASE SAVEPOINT query")
                .await
                .map_err(|err| err.to_string())?;
            Ok(messages
                .iter()
                .filter_map(|message| match message {
                    SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("NULL"))
                            .collect::<Vec<_>>()
                            .join(" | "),
                    ),
                    _ => None,
                })
                .collect())
        }
        Err(err) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT query")
                .await
                .map_err(|err| err.to_string())?;
            Err(err
                .as_db_error()
                .map_or_else(|| err.to_string(), |db| db.to_string()))
        }
    }
}

/// What a webhook of this test costs: `product_cost` and `tts_fee`
/// (`compliance_fee` is always 0.0029), as JSON number text so every sum is
/// exact.
type Money = (&'static str, &'static str);
const UNPAID: Money = ("0", "0");
const SMS_PAID: Money = ("0.099", "0");
const RVM_PAID: Money = ("0.045", "0.0125");

/// A webhook in the provider's shape (the samples' network) for drop
/// `65f0…<id>`, foreign id `order-<id>` and number `+155501000<number>`;
/// an empty `reason` is a success.
fn webhook(
    id: &str,
    number: &str,
    at: DateTime<Utc>,
    reason: &str,
    money: Money,
    dnc: bool,
) -> String {
    fixtures::DeliveryStatus {
        drop_id: &format!("65f0000000000000000000{id}"),
        phone_number: &format!("+155501000{number}"),
        attempt_date: &at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        reason: Some(reason),
        dnc,
        product_cost: money.0,
        tts_fee: money.1,
        foreign_id: &format!("order-{id}"),
    }
    .body()
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("{text}: {err}"))
        .with_timezone(&Utc)
}

/// How the session prints `at` (its `TimeZone`).
async fn shown(client: &Client, at: DateTime<Utc>) -> String {
    client
        .query_one("SELECT $1::timestamptz::text", &[&at])
        .await
        .expect("printing an instant")
        .get(0)
}

/// The id corral answered for the provider's failure sample, in the cookbook.
const SAMPLE_FAILURE_ID: &str = "0193a4b2-6c1e-7d4f-8a2b-5e9c3f1d7a60";
/// The id of a later correction of that webhook (same drop, same attempt).
const CORRECTION_ID: &str = "0193a4b2-9d07-7e21-b3c5-8f0a6d2e4b19";

/// The contact of the v2 samples' send reported on both channels.
const CONTACT: &str = "3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b";
/// The `event_id` of that send's status webhook.
const BOTH_CHANNELS_EVENT: &str = "6a1f0c3e-2b4d-4e6f-8a0b-1c2d3e4f5a6b";

/// The current API's samples moved to 2026-11-20: the v2 callback and a
/// status webhook of the same send (`VoiceMail Full`, 4002), another
/// voicemail's receipt, and an opt-out of the first contact.
fn current_api_bodies() -> [(&'static str, String); 4] {
    use crate::worker::signed::edited;
    use serde_json::json;
    let callback = edited(
        fixtures::V2_CALLBACK_RVM_FAILURE,
        &[("attempt_date", json!("2026-11-20T15:04:05.000Z"))],
    );
    let status = edited(
        fixtures::V2_WEBHOOK_RVM_STATUS,
        &[
            ("event_id", json!(BOTH_CHANNELS_EVENT)),
            ("event_at", json!(1_795_187_049_000_i64)),
            (
                "data.drop_id",
                json!("f2a4c6e8-0b1d-4f3a-9c5e-7b9d1f3a5c80"),
            ),
            ("data.contact_id", json!(CONTACT)),
            ("data.to", json!("+13125550187")),
            ("data.status", json!("failure")),
            ("data.reason", json!("VoiceMail Full")),
            ("data.reason_code", json!(4002)),
        ],
    );
    let receipt = edited(
        fixtures::V2_WEBHOOK_RVM_RECEIPT,
        &[
            ("event_at", json!(1_795_187_370_000_i64)),
            ("data.receipt_ready_at", json!("2026-11-20T15:09:30.000Z")),
        ],
    );
    let opt_out = json!({
        "event_id": "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f",
        "event": "contact.msg.opt_out",
        "event_at": 1_795_187_160_000_i64,
        "data": {"contact_id": CONTACT, "phone": "+13125550187"},
    });
    let event = Kind::Event.routing_key();
    [
        (Kind::Rvm.routing_key(), callback),
        (event, status),
        (event, receipt),
        (event, opt_out.to_string()),
    ]
}

#[tokio::test]
async fn every_cookbook_query_returns_the_documented_rows() {
    let queries = cookbook_queries(&read(Path::new(COOKBOOK)));
    let stack = Stack::builder()
        .database()
        .worker_settings(short_waits)
        .start()
        .await;
    let (broker, db) = (stack.broker(), stack.db());
    let mut worker_config = stack.worker_config();
    // The test folds the summary itself, half-way, so the summary queries
    // meet rows in both of its tables.
    worker_config.summary.summary_rollup_ms = 3_600_000;
    let worker = RunningWorker::start(worker_config.clone()).await;
    let ingress = RunningIngress::start(stack.ingress_config()).await;

    // The cookbook's queries run in a session whose zone is neither UTC
    // nor a whole hour from it, so a query that leans on the session's zone
    // to cut days gives itself away.
    let client = db.client().await;
    client
        .batch_execute("SET TimeZone = 'Asia/Kathmandu'")
        .await
        .expect("setting the session's zone");
    // now() is the transaction's start: every "today" below, and in the
    // queries, is this one instant's, however long the test takes and
    // whether or not a midnight passes meanwhile. Read committed, so the
    // queries still see what the worker commits after it.
    client.batch_execute("BEGIN").await.expect("BEGIN");
    // New York's day boundaries, made from its calendar date with
    // make_timestamptz: not the way the cookbook computes them.
    let days = client
        .query_one(
            "WITH d AS (SELECT (now() AT TIME ZONE 'America/New_York')::date AS today),
                  b AS (SELECT today, name,
                               make_timestamptz(extract(year FROM dt)::int,
                                                extract(month FROM dt)::int,
                                                extract(day FROM dt)::int,
                                                0, 0, 0, 'America/New_York') AS starts
                        FROM d, LATERAL (VALUES ('d0', today), ('d1', today + 1),
                                                ('w0', today - 6)) AS v(name, dt))
             SELECT now(),
                    max(starts) FILTER (WHERE name = 'd0'),
                    max(starts) FILTER (WHERE name = 'd1'),
                    max(starts) FILTER (WHERE name = 'w0'),
                    (max(today) - 6)::text, (max(today) - 1)::text, max(today)::text,
                    (max(today) + 1)::text
             FROM b",
            &[],
        )
        .await
        .expect("New York's days");
    let now: DateTime<Utc> = days.get(0);
    let (d0, d1, w0): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) =
        (days.get(1), days.get(2), days.get(3));
    let [first_day, yesterday, today, tomorrow]: [String; 4] =
        std::array::from_fn(|i| days.get(4 + i));
    assert!(
        d0 <= now && now < d1 && [23, 24, 25].contains(&(d1 - d0).num_hours()),
        "New York's day [{d0}, {d1}) around {now}"
    );
    let ms = TimeDelta::milliseconds(1);
    let hours = TimeDelta::hours;

    let (sms, rvm) = (Kind::Sms.routing_key(), Kind::Rvm.routing_key());
    let publish = async |routing_key: &str, id: &str, received_at: &str, body: &str| {
        let id = Uuid::parse_str(id).expect("a UUID");
        broker
            .publish(
                routing_key,
                body.as_bytes(),
                corral_runtime::amqp::properties(&envelope::Metadata::single(
                    id,
                    instant(received_at),
                )),
            )
            .await;
    };

    // First the provider's two samples as they are, and a correction of the
    // failure (same drop and attempt, another reason, received later), with
    // the ids and arrival times the cookbook shows; then the events before
    // today. Then the summary is folded, so what follows stays in its
    // changes.
    send(broker, sms, fixtures::SMS_SUCCESS).await;
    publish(
        sms,
        SAMPLE_FAILURE_ID,
        "2019-03-18T00:20:27.512Z",
        fixtures::SMS_FAILURE,
    )
    .await;
    let correction = fixtures::DeliveryStatus {
        reason: Some("Spam detected"),
        ..fixtures::DeliveryStatus::default()
    };
    publish(
        sms,
        CORRECTION_ID,
        "2019-03-18T00:31:02.004Z",
        &correction.body(),
    )
    .await;
    let before_today = [
        // The first instant of the last 7 days, and the one before it.
        (sms, webhook("b1", "10", w0, "", SMS_PAID, false)),
        (sms, webhook("b2", "11", w0 - ms, "", SMS_PAID, false)),
        // The last instant of New York's yesterday.
        (
            sms,
            webhook("b3", "02", d0 - ms, "Opted out", UNPAID, false),
        ),
    ];
    for (routing_key, body) in &before_today {
        send(broker, routing_key, body).await;
    }
    let mut stored = 6;
    wait_count(&client, EVENTS, stored).await;
    let mut folding = db.client().await;
    summary::roll_up(&mut folding, summary::ROLL_UP_CHUNK)
        .await
        .expect("folding the summary");

    let today_events = [
        // New York's midnight, the first instant of today.
        (sms, webhook("c1", "01", d0, "Opted out", UNPAID, false)),
        (
            sms,
            webhook("c2", "03", d0 + hours(2), "Opted out", UNPAID, false),
        ),
        (
            rvm,
            webhook("c3", "04", d0 + hours(3), "Known Litigator", UNPAID, false),
        ),
        // A reason the provider does not document: kept, and counted.
        (
            rvm,
            webhook("c4", "05", d0 + hours(4), "Carrier said no", UNPAID, false),
        ),
        // Delivered, to a number on a do-not-call list.
        (sms, webhook("c5", "06", d0 + hours(5), "", SMS_PAID, true)),
        (rvm, webhook("c6", "07", d0 + hours(6), "", RVM_PAID, false)),
        // The last instant of today, and the first of tomorrow.
        (
            sms,
            webhook("c7", "08", d1 - ms, "Spam detected", UNPAID, false),
        ),
        (sms, webhook("d1", "09", d1, "No Funds", UNPAID, false)),
    ];
    for (routing_key, body) in &today_events {
        send(broker, routing_key, body).await;
    }
    send(broker, sms, br#"{"drop_id": 42}"#).await;
    stored += today_events.len() as i64;
    wait_count(&client, EVENTS, stored).await;
    wait_count(&client, QUARANTINE, 1).await;

    // Two opt-ins on record: both lifted; then a newer opt-out suppresses
    // the second number again.
    let lifts = [
        ("+15550100002", "support: written opt-in, ticket 4711"),
        ("+15550100003", "support: opt-in by phone, ticket 4712"),
    ];
    for (phone, by) in lifts {
        commands::suppressions::run(
            SuppressionCommand::Lift {
                phone: phone.to_owned(),
                kind: None,
                class: Some(SuppressionClass::OptedOut),
                all_classes: false,
                by: by.to_owned(),
                dry_run: false,
                yes: true,
            },
            &worker_config,
            &mut Vec::new(),
        )
        .await
        .expect("lifting a suppression");
    }
    let again = webhook("c8", "03", d0 + hours(7), "Opted out", UNPAID, false);
    send(broker, sms, again).await;
    stored += 1;
    wait_count(&client, EVENTS, stored).await;

    // The current API's bodies, on a day no other query looks at: a send
    // reported on both channels, a voicemail's receipt, an opt-out.
    for (routing_key, body) in current_api_bodies() {
        send(broker, routing_key, body).await;
    }
    stored += 3;
    wait_count(&client, EVENTS, stored).await;
    wait_count(&client, "SELECT count(*) FROM provider_events", 1).await;

    // The provider resends the failure sample through ingress: answered 200
    // with a new id, stored as nothing new.
    let resend = ingress.post("sms", fixtures::SMS_FAILURE).await;
    assert_eq!(resend.status(), 200);
    let answer: serde_json::Value = resend.json().await.expect("a JSON answer");
    let resend_id = answer["id"].as_str().expect("an id").to_owned();
    settled(&worker, DUPLICATE, 1.0).await;
    assert_eq!(count(&client, EVENTS).await, stored);
    for table in ["delivery_summary", "delivery_summary_changes"] {
        assert!(
            count(&client, &format!("SELECT count(*) FROM {table}")).await > 0,
            "{table} is empty: the summary queries would not read both tables"
        );
    }

    let display = async |at: DateTime<Utc>| shown(&client, at).await;
    let (attempt_1842, attempt_1843) = (
        display(instant("2019-03-17T21:10:26Z")).await,
        display(instant("2019-03-18T00:20:26Z")).await,
    );
    let (received_sample, received_correction) = (
        display(instant("2019-03-18T00:20:27.512Z")).await,
        display(instant("2019-03-18T00:31:02.004Z")).await,
    );
    let midnight = display(d0).await;
    let (receipt_ready, opted_out_at) = (
        display(instant("2026-11-20T15:09:30Z")).await,
        display(instant("2026-11-20T15:06:00Z")).await,
    );
    let lifted: BTreeMap<String, String> = client
        .query(
            "SELECT phone_number, lifted_at::text FROM suppressions WHERE lifted_at IS NOT NULL",
            &[],
        )
        .await
        .expect("reading the lifts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let lifted_03 = &lifted["+15550100003"];
    let lifted_02 = &lifted["+15550100002"];
    let (by_02, by_03) = (lifts[0].1, lifts[1].1);
    let spend = [
        format!("{first_day} | sms | 1 | 0.099 | 0.0029 | 0 | 0.1019"),
        format!("{yesterday} | sms | 1 | 0 | 0.0029 | 0 | 0.0029"),
        format!("{today} | rvm | 3 | 0.045 | 0.0087 | 0.0125 | 0.0662"),
        format!("{today} | sms | 5 | 0.099 | 0.0145 | 0 | 0.1135"),
        format!("{tomorrow} | sms | 1 | 0 | 0.0029 | 0 | 0.0029"),
    ];
    let failure = "5c8ee427a8d9ef4758bfaca5";
    let success = "5c8eb7940a057a4ab0823e1a";
    let expected: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        (
            "latest-by-foreign-id",
            vec![format!(
                "{failure} | sms | failure | Spam detected | {attempt_1843} | 0 | 0.0029 | 0"
            )],
        ),
        (
            "latest-for-a-batch",
            vec![
                format!("order-1842-attempt-1 | {success} | success |  | {attempt_1842}"),
                format!(
                    "order-1843-attempt-1 | {failure} | failure | Spam detected | {attempt_1843}"
                ),
                "order-1844-attempt-1 | NULL | NULL | NULL | NULL".to_owned(),
            ],
        ),
        (
            "history-of-a-drop",
            vec![
                format!(
                    "{attempt_1843} | failure | Invalid message | {received_sample} | {SAMPLE_FAILURE_ID}"
                ),
                format!(
                    "{attempt_1843} | failure | Spam detected | {received_correction} | {CORRECTION_ID}"
                ),
            ],
        ),
        (
            "by-message-id",
            vec![format!(
                "{failure} | sms | failure | Invalid message | {attempt_1843} | order-1843-attempt-1 | {received_sample}"
            )],
        ),
        (
            "failures-by-reason-today",
            vec![
                "sms | Opted out | 3".to_owned(),
                "rvm | Carrier said no | 1".to_owned(),
                "rvm | Known Litigator | 1".to_owned(),
                "sms | Spam detected | 1".to_owned(),
            ],
        ),
        ("spend-per-day-from-events", spend.to_vec()),
        ("spend-per-day-from-summary", spend.to_vec()),
        (
            "is-number-suppressed",
            vec![format!("opted_out | sms | Opted out | {midnight}")],
        ),
        (
            "active-suppressions-by-class",
            vec![
                "dnc | sms | 1".to_owned(),
                "litigator | rvm | 1".to_owned(),
                "opted_out | sms | 2".to_owned(),
            ],
        ),
        (
            "lifted-suppressions",
            vec![
                format!("+15550100003 | sms | opted_out | {lifted_03} | {by_03} | t"),
                format!("+15550100002 | sms | opted_out | {lifted_02} | {by_02} | f"),
            ],
        ),
        (
            "failures-by-code",
            vec!["rvm | 4002 | VoiceMail Full | 1".to_owned()],
        ),
        (
            "both-channels-of-a-send",
            vec![format!(
                "order-2207-attempt-1 | failure | 4002 | 0 | 0.0029 | {BOTH_CHANNELS_EVENT} | {CONTACT}"
            )],
        ),
        (
            "proof-of-delivery",
            vec![format!(
                "a1c3e5f7-9b2d-4f6a-8c0e-3b5d7f9a1c4e | https://receipts.example.invalid/r/Zk3qP0wLx9 | {receipt_ready}"
            )],
        ),
        (
            "opt-outs-of-a-contact",
            vec![format!(
                r#"contact.msg.opt_out | {opted_out_at} | {{"phone": "+13125550187", "contact_id": "{CONTACT}"}}"#
            )],
        ),
        ("spool-waiting", vec!["0 | NULL".to_owned()]),
        ("quarantined-last-day", vec!["1".to_owned()]),
    ]);

    let mut failures = Vec::new();
    for (name, sql) in &queries {
        let Some(want) = expected.get(name.as_str()) else {
            failures.push(format!("{name}: no expectation in this test for\n{sql}"));
            continue;
        };
        match run(&client, sql).await {
            Ok(got) if &got == want => {}
            Ok(got) => failures.push(format!(
                "{name}:\n{sql}\nreturned\n  {}\nexpected\n  {}",
                got.join("\n  "),
                want.join("\n  ")
            )),
            Err(err) => failures.push(format!("{name}:\n{sql}\nfailed: {err}")),
        }
    }
    for name in expected.keys() {
        if !queries.contains_key(*name) {
            failures.push(format!(
                "{name}: expected here, but {COOKBOOK} has no such query"
            ));
        }
    }
    // What the cookbook warns of: the resend's id finds nothing.
    if let Some(sql) = queries.get("by-message-id") {
        assert!(sql.contains(SAMPLE_FAILURE_ID), "{sql}");
        let by_resend = sql.replace(SAMPLE_FAILURE_ID, &resend_id);
        match run(&client, &by_resend).await {
            Ok(rows) if rows.is_empty() => {}
            other => failures.push(format!("by-message-id with the resend's id: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");

    ingress.stop().await.expect("ingress stops cleanly");
    worker.stop().await.expect("worker stops cleanly");
}

#[test]
fn the_cookbook_lists_the_providers_reasons_exactly() {
    let text = read(Path::new(COOKBOOK));
    let section = text
        .split("\n## ")
        .find(|section| section.starts_with("Status and reason values"))
        .expect("the cookbook's section on status and reason values");
    let listed: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split_once("` |").map(|(reason, _)| reason))
        .collect();
    assert_eq!(listed, FAILURE_REASONS);
}

/// The page of docs/operations/ that holds the suppression tables.
const SUPPRESSIONS_PAGE: &str = "docs/operations/data.md";

/// The cells of each row of the first table in `section` of
/// [`SUPPRESSIONS_PAGE`] whose header starts with `header`.
fn operations_table(section: &str, header: &str) -> Vec<Vec<String>> {
    let text = read(Path::new(SUPPRESSIONS_PAGE));
    let section = text
        .split("\n## ")
        .find(|part| part.starts_with(section))
        .unwrap_or_else(|| panic!("{SUPPRESSIONS_PAGE} has no section {section:?}"));
    let table = section
        .split(&format!("\n{header}"))
        .nth(1)
        .unwrap_or_else(|| panic!("no table headed {header:?} in {section:?}"));
    table
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

/// The operations docs' suppression tables say what the one mapping in
/// PostgreSQL (`corral_suppression_class`, migration V6) does, code by code
/// and for each v1 reason, and what the metric's `reason` label says.
#[tokio::test]
async fn the_reason_code_table_is_the_mapping_the_database_applies() {
    use corral_contract::provider::REASON_CODES;
    use corral_runtime::telemetry::labels::DeliveryLabels;
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    let class = async |code: Option<i32>, reason: &str| -> String {
        client
            .query_one("SELECT corral_suppression_class($1, $2)", &[&code, &reason])
            .await
            .expect("calling corral_suppression_class")
            .get::<_, Option<String>>(0)
            .unwrap_or_else(|| "-".to_owned())
    };
    let rows = operations_table("Suppressions", "| code |");
    let listed: Vec<(i32, &str)> = rows
        .iter()
        .map(|row| (row[0].parse().expect("a numeric code"), row[1].as_str()))
        .collect();
    let known: Vec<(i32, &str)> = REASON_CODES.iter().map(|c| (c.code, c.name)).collect();
    assert_eq!(listed, known, "the table lists the codes provider.rs knows");
    for row in &rows {
        let code: i32 = row[0].parse().expect("a numeric code");
        // Whatever text comes with it, the code decides.
        assert_eq!(
            class(Some(code), "Something new").await,
            row[2],
            "class of {code}"
        );
        assert_eq!(class(Some(code), "Opted out").await, row[2], "{code}");
        let status = if code == 0 { "success" } else { "failure" };
        let labels = DeliveryLabels::of(Kind::Sms, status, Some("Something new"), Some(code));
        assert_eq!(labels.reason, row[4], "reason label of {code}");
    }
    // The classes: each code and each v1 reason named in the "from" cell.
    let mut named = 0;
    for row in operations_table("Suppressions", "| class |") {
        let from = &row[1];
        for (at, _) in from.match_indices("code `") {
            let code = from[at + 6..].split('`').next().expect("a code");
            assert_eq!(class(code.parse().ok(), "x").await, row[0], "{from}");
            named += 1;
        }
        for (at, _) in from.match_indices("reason `") {
            let reason = from[at + 8..].split('`').next().expect("a reason");
            assert_eq!(class(None, reason).await, row[0], "{from}");
            named += 1;
        }
    }
    assert_eq!(named, 8, "the class table names 4 codes and 4 v1 reasons");
    // Every other v1 reason suppresses nothing.
    for reason in FAILURE_REASONS {
        let expected = match *reason {
            "Opted out" => "opted_out",
            "Known Litigator" => "litigator",
            "Internal DNC" => "internal_dnc",
            "Prohibited by carrier or not SMS enabled" => "carrier",
            _ => "-",
        };
        assert_eq!(class(None, reason).await, expected, "{reason}");
    }
}
