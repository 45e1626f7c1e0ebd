-- Folds the summary's changes into delivery_summary: every change row this
-- transaction can see (committed ones only) is deleted and added to its
-- (hour, kind, status, reason, reason_code) row, in the same transaction, so
-- each change is counted exactly once (a NULL reason_code is one value of
-- the key: the constraint is NULLS NOT DISTINCT). Rows committed after this
-- statement's snapshot stay for the next round. Sorted by the key the upsert
-- locks, so it cannot deadlock with anything updating the same rows in the
-- same order. At most $1 change rows at a time, so a backlog (after roll-ups
-- failed for a while) is folded in transactions of bounded size and time.
-- The rows are only ever inserted and deleted, so their ctid is a stable
-- name for them.
WITH moved AS (
    DELETE FROM delivery_summary_changes
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM delivery_summary_changes LIMIT $1))
    RETURNING hour, kind, status, reason, reason_code, events, product_cost, compliance_fee,
              tts_fee
),
folded AS (
    INSERT INTO delivery_summary AS s (
        hour, kind, status, reason, reason_code, events, product_cost, compliance_fee, tts_fee
    )
    SELECT hour, kind, status, reason, reason_code, sum(events)::bigint, sum(product_cost),
           sum(compliance_fee), sum(tts_fee)
    FROM moved
    GROUP BY hour, kind, status, reason, reason_code
    ORDER BY hour, kind, status, reason, reason_code
    ON CONFLICT (hour, kind, status, reason, reason_code) DO UPDATE SET
        events = s.events + EXCLUDED.events,
        product_cost = s.product_cost + EXCLUDED.product_cost,
        compliance_fee = s.compliance_fee + EXCLUDED.compliance_fee,
        tts_fee = s.tts_fee + EXCLUDED.tts_fee
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS changes, (SELECT count(*) FROM folded) AS rows
