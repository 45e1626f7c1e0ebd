-- Quarantine rows whose webhook is now stored in delivery_events (in the same
-- transaction as the insert, so a row is never both lost and unstored).
DELETE FROM quarantined_webhooks
WHERE id = ANY ($1::bigint[])
