//! The cookbook on a partitioned `delivery_events`: a query bounded in
//! `attempt_date` reads only the partitions of its days, and the lookups
//! without a time (a drop's history, a webhook by its id) are index scans
//! of each partition, never a sequential one. Plans are read from
//! `EXPLAIN (FORMAT JSON)` on days of data, analyzed.

use corral_testkit::database::TestDatabase;
use serde_json::Value;

use super::*;

/// Days of data: the last three weeks, today, and the week ahead the
/// maintenance keeps.
const FIRST_DAY: i64 = -21;
const ROWS_PER_DAY: i64 = 2_000;

/// Replaces the legacy partition (everything before the day after
/// tomorrow) by days, as a database a year after the migration has them.
async fn days_only(client: &Client) {
    client
        .batch_execute(
            "ALTER TABLE delivery_events DETACH PARTITION delivery_events_legacy;
             DROP TABLE delivery_events_legacy",
        )
        .await
        .unwrap();
    for d in FIRST_DAY..2 {
        let name = partition_of(day(d));
        client
            .batch_execute(&format!(
                "CREATE TABLE {name} (LIKE delivery_events INCLUDING CONSTRAINTS);
                 ALTER TABLE delivery_events ATTACH PARTITION {name}
                     FOR VALUES FROM ('{}') TO ('{}')",
                day(d).to_rfc3339(),
                day(d + 1).to_rfc3339()
            ))
            .await
            .unwrap();
    }
}

/// Rows on every day (an empty partition, a day ahead, is read by a
/// sequential scan of nothing, which is right), a few failures, then
/// statistics.
async fn fill(client: &Client) {
    client
        .execute(
            "INSERT INTO delivery_events (fingerprint, message_id, kind, drop_id, attempt_date,
                 status, reason, payload, received_at)
             SELECT decode(md5(d || '-' || i), 'hex'), gen_random_uuid(), 'sms',
                    'drop-' || d || '-' || i, $1::timestamptz + d * interval '1 day' + i * interval '40 s',
                    CASE WHEN i % 10 = 0 THEN 'failure' ELSE 'success' END,
                    CASE WHEN i % 10 = 0 THEN 'Opted out' ELSE '' END, '{}', now()
             FROM generate_series(0, $2::int - 1) AS d, generate_series(1, $3::int) AS i",
            &[
                &day(FIRST_DAY),
                &((8 - FIRST_DAY) as i32),
                &(ROWS_PER_DAY as i32),
            ],
        )
        .await
        .unwrap();
    client
        .batch_execute("ANALYZE delivery_events")
        .await
        .unwrap();
}

/// Every node of a plan: its type, the relation it reads, and how many
/// subplans an Append removed at startup.
fn nodes(plan: &Value, out: &mut Vec<(String, String, u64)>) {
    let text = |key: &str| plan[key].as_str().unwrap_or_default().to_owned();
    out.push((
        text("Node Type"),
        text("Relation Name"),
        plan["Subplans Removed"].as_u64().unwrap_or(0),
    ));
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

async fn plan(client: &Client, sql: &str) -> Vec<(String, String, u64)> {
    let explained: Value = client
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .get::<_, Value>(0);
    let mut out = Vec::new();
    nodes(&explained[0]["Plan"], &mut out);
    out
}

#[tokio::test]
async fn cookbook_queries_prune_partitions_and_lookups_use_indexes() {
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    days_only(&client).await;
    fill(&client).await;
    let total = partitions(&client).await.len();
    let queries = crate::docs::cookbook();
    let mut checked = Vec::new();
    for (name, sql) in &queries {
        if !sql.contains("delivery_events") {
            continue;
        }
        let nodes = plan(&client, sql).await;
        let scans: Vec<&(String, String, u64)> = nodes
            .iter()
            .filter(|(_, relation, _)| relation.starts_with("delivery_events_"))
            .collect();
        let removed: u64 = nodes.iter().map(|node| node.2).sum();
        match name.as_str() {
            // No time to prune by: one index probe per partition.
            "history-of-a-drop" | "by-message-id" => {
                assert_eq!(scans.len(), total, "{name}: {nodes:?}");
                for (node, relation, _) in &scans {
                    assert!(
                        ["Index Scan", "Index Only Scan", "Bitmap Heap Scan"]
                            .contains(&node.as_str()),
                        "{name} reads {relation} by {node}"
                    );
                }
            }
            // Bounded in attempt_date (the last week at most, and days
            // ahead): the days before are never read, pruned as the
            // statement starts.
            _ => {
                let week_ago = partition_of(day(-8));
                assert!(
                    removed > 0
                        && scans.len() + removed as usize == total
                        && scans.iter().all(|(_, relation, _)| *relation >= week_ago),
                    "{name} reads {} of {total} partitions ({removed} pruned): {nodes:?}",
                    scans.len()
                );
            }
        }
        checked.push(name.clone());
    }
    assert_eq!(
        checked,
        [
            "by-message-id",
            "failures-by-reason-today",
            "history-of-a-drop",
            "spend-per-day-from-events"
        ]
    );
}
