-- Keeps webhooks that could not be typed, byte for byte, with the reason.
-- The same body delivered again is kept once. Returns the bodies that were new.
INSERT INTO quarantined_webhooks (body_sha256, message_id, routing_key, body, error, received_at)
SELECT *
FROM unnest($1::bytea[], $2::uuid[], $3::text[], $4::bytea[], $5::text[], $6::timestamptz[])
    AS t(body_sha256, message_id, routing_key, body, error, received_at)
ORDER BY body_sha256
ON CONFLICT (body_sha256) DO NOTHING
RETURNING body_sha256
