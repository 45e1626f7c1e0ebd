-- Rows that still cannot be stored keep their place, with the error this
-- version of the code gives for them.
UPDATE quarantined_webhooks AS q
SET error = u.error
FROM unnest($1::bigint[], $2::text[]) AS u (id, error)
WHERE q.id = u.id
