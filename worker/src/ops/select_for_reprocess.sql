-- The next batch of quarantined webhooks to re-type, oldest first, after the
-- last id already examined ($1), at most $2 rows, only the ids in $3 when it
-- is not empty. Locked for the transaction; rows another operator is
-- re-processing right now are skipped rather than waited for.
SELECT id, message_id, routing_key, body, error, received_at, quarantined_at
FROM quarantined_webhooks
WHERE id > $1
  AND (cardinality($3::bigint[]) = 0 OR id = ANY ($3::bigint[]))
ORDER BY id
LIMIT $2
FOR UPDATE SKIP LOCKED
