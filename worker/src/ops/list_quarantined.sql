-- The oldest $1 quarantined webhooks, for an operator to look at.
SELECT id, message_id, routing_key, body, error, received_at, quarantined_at
FROM quarantined_webhooks
ORDER BY id
LIMIT $1
