-- Keeps a batch of signed events of types corral does not type, whole, in
-- one round trip, and returns the event_ids that were new. An event_id kept
-- before (a retry: new timestamp, signature, attempt) or twice in this batch
-- is skipped by the unique constraint. Sorted by the key it locks, so
-- concurrent workers cannot deadlock on it.
INSERT INTO provider_events (event_id, event, event_at, message_id, received_at, body)
SELECT event_id, event, event_at, message_id, received_at, body::jsonb
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::timestamptz[], $6::text[])
    AS t(event_id, event, event_at, message_id, received_at, body)
ORDER BY event_id
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
