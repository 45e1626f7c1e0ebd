-- The oldest spooled webhooks no other worker is draining, removed from the
-- spool in the caller's transaction: they are back if it does not commit.
DELETE FROM spooled_webhooks
WHERE message_id IN (
    SELECT message_id
    FROM spooled_webhooks
    ORDER BY spooled_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING message_id, kind, body, received_at
