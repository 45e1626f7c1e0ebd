-- Two webhooks for one drop_id with the same attempt_date: the one received
-- later is the provider's correction. "Latest" becomes the greatest
-- (attempt_date, received_at, fingerprint); the fingerprint now only settles
-- webhooks received in the same microsecond, so the result still does not
-- depend on the order in which competing workers commit.

-- The previous version's upsert does not name this column: while it still
-- runs beside this one (a rolling upgrade), the rows it writes get
-- '-infinity', "received before anything", so a webhook with the same
-- attempt_date received later still replaces them. A constant default also
-- adds the column without rewriting the table.
ALTER TABLE deliveries ADD COLUMN received_at timestamptz NOT NULL DEFAULT '-infinity';

-- The chosen event's arrival; a row whose event was pruned keeps '-infinity'.
UPDATE deliveries d
SET received_at = e.received_at
FROM delivery_events e
WHERE e.id = d.event_id;

-- States chosen among ties by the old rule, chosen again by the new one.
WITH best AS (
    SELECT DISTINCT ON (e.drop_id) e.*
    FROM delivery_events e
    JOIN deliveries d ON d.drop_id = e.drop_id AND d.attempt_date = e.attempt_date
    ORDER BY e.drop_id, e.received_at DESC, e.fingerprint DESC
)
UPDATE deliveries d SET
    kind = b.kind,
    event_id = b.id,
    fingerprint = b.fingerprint,
    message_id = b.message_id,
    phone_number = b.phone_number,
    status = b.status,
    reason = b.reason,
    dnc = b.dnc,
    spam = b.spam,
    product_cost = b.product_cost,
    compliance_fee = b.compliance_fee,
    tts_fee = b.tts_fee,
    network_name = b.network_name,
    network_type = b.network_type,
    foreign_id = b.foreign_id,
    received_at = b.received_at,
    updated_at = now()
FROM best b
WHERE b.drop_id = d.drop_id
  AND (d.received_at, d.fingerprint) < (b.received_at, b.fingerprint);
