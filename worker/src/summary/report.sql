-- The summary over whole hours [$1, $2): delivery_summary and the changes not
-- yet rolled into it, read in one statement (one snapshot), so a roll-up
-- committing meanwhile is seen either wholly or not at all. $3: one line per
-- hour too. The grand total is the row with grouping(kind) = 1. Money as
-- PostgreSQL prints the exact sum.
WITH window_rows AS (
    SELECT hour, kind, status, reason, reason_code, events, product_cost, compliance_fee,
           tts_fee
    FROM delivery_summary
    WHERE hour >= $1 AND hour < $2
    UNION ALL
    SELECT hour, kind, status, reason, reason_code, events, product_cost, compliance_fee,
           tts_fee
    FROM delivery_summary_changes
    WHERE hour >= $1 AND hour < $2
),
keyed AS (
    SELECT CASE WHEN $3::boolean THEN hour END AS hour, kind, status, reason, reason_code,
           events, product_cost, compliance_fee, tts_fee
    FROM window_rows
)
SELECT hour, kind, status, reason, reason_code, grouping(kind) = 1 AS total,
       sum(events)::bigint AS events,
       coalesce(sum(product_cost), 0)::text AS product_cost,
       coalesce(sum(compliance_fee), 0)::text AS compliance_fee,
       coalesce(sum(tts_fee), 0)::text AS tts_fee
FROM keyed
GROUP BY GROUPING SETS ((hour, kind, status, reason, reason_code), ())
ORDER BY grouping(kind), hour, kind, status, sum(events) DESC, reason, reason_code
