-- The oldest result events above outbox id $2 that no other relay holds,
-- with their stored events: a fresh round starts above the events the relay
-- holds back after a refusal, a retry round at the oldest. One bound only:
-- with two, a table not yet analyzed (the outbox after a burst) gets a
-- bitmap scan and a sort of every row instead of the index scan LIMIT stops.
-- The event is looked up by its partition key too, so only its partition
-- is probed. The row locks last until this relay's transaction ends: the rows RabbitMQ
-- confirmed are deleted with the COMMIT, the others are released.
SELECT o.id AS outbox_id, o.latest, o.suppressions, o.new_suppressions,
       e.id AS event_id, e.message_id, e.kind, e.drop_id, e.foreign_id, e.phone_number,
       e.status, NULLIF(e.reason, '') AS reason, e.dnc, e.spam,
       e.product_cost::text AS product_cost,
       e.compliance_fee::text AS compliance_fee,
       e.tts_fee::text AS tts_fee,
       e.attempt_date, e.received_at, e.stored_at,
       e.reason_code, e.event, e.event_id AS provider_event_id, e.contact_id,
       e.proof_of_delivery_url
FROM delivery_results_outbox o
JOIN delivery_events e ON e.id = o.event_id AND e.attempt_date = o.attempt_date
WHERE o.id > $2
ORDER BY o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
