-- delivery_events becomes a table partitioned by day of `attempt_date`
-- (issue 30), so retention drops a day at a time instead of DELETEing rows.
-- `attempt_date` is the provider's time (a signed event's `event_at`), part
-- of what makes two copies the same webhook, so every copy of a webhook
-- lands in the same partition and the de-duplication key becomes
-- (fingerprint, attempt_date) without letting a second copy in.
--
-- The table as it is becomes the first partition, `delivery_events_legacy`,
-- holding every time before a bound B (midnight UTC, two days past the
-- newest event or now): attached, not copied. What could take long is done
-- before this transaction by `corral-worker migrate` (worker/src/lifecycle/
-- prepare.rs), with locks that let the writers go on: the CHECK
-- `delivery_events_legacy_bound` (attempt_date < B) is added NOT VALID and
-- validated (a scan under SHARE UPDATE EXCLUSIVE), and the unique indexes
-- the partitioned table needs are built CONCURRENTLY. This transaction then
-- only renames, creates and attaches: the CHECK proves the partition's
-- bound, so ATTACH scans nothing, and the indexes exist, so it builds none.
-- A database this runs on without that preparation (a new one, or an old
-- release's migrate) gets the same steps here, under this transaction's
-- locks: instant on an empty table.
--
-- The previous release's insert names the old key (ON CONFLICT
-- (fingerprint)) and fails until its worker is replaced; its messages wait
-- in the queue meanwhile, as V6's summary key did.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'delivery_events'::regclass
                     AND conname = 'delivery_events_legacy_bound' AND convalidated) THEN
        IF EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'delivery_events'::regclass
                     AND conname = 'delivery_events_legacy_bound') THEN
            ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_legacy_bound;
        END IF;
        EXECUTE format('ALTER TABLE delivery_events ADD CONSTRAINT delivery_events_legacy_bound
                            CHECK (attempt_date < %L)',
                       (SELECT date_trunc('day', greatest(now(), max(attempt_date)), 'UTC')
                                   + interval '48 hours'
                        FROM delivery_events));
    END IF;
END
$$;
CREATE UNIQUE INDEX IF NOT EXISTS delivery_events_legacy_fingerprint_attempt_key
    ON delivery_events (fingerprint, attempt_date);
CREATE UNIQUE INDEX IF NOT EXISTS delivery_events_legacy_id_attempt_key
    ON delivery_events (id, attempt_date);

-- Index and sequence names belong to the schema: the legacy table's give
-- theirs up to the new table's.
ALTER TABLE delivery_events RENAME TO delivery_events_legacy;
ALTER SEQUENCE delivery_events_id_seq RENAME TO delivery_events_legacy_id_seq;
ALTER TABLE delivery_events_legacy RENAME CONSTRAINT delivery_events_pkey TO delivery_events_legacy_pkey;
ALTER TABLE delivery_events_legacy
    RENAME CONSTRAINT delivery_events_fingerprint_key TO delivery_events_legacy_fingerprint_key;
ALTER INDEX delivery_events_drop_id_idx RENAME TO delivery_events_legacy_drop_id_idx;
ALTER INDEX delivery_events_foreign_id_idx RENAME TO delivery_events_legacy_foreign_id_idx;
ALTER INDEX delivery_events_message_id_idx RENAME TO delivery_events_legacy_message_id_idx;
ALTER INDEX delivery_events_stored_at_idx RENAME TO delivery_events_legacy_stored_at_idx;
ALTER INDEX delivery_events_event_id_idx RENAME TO delivery_events_legacy_event_id_idx;
ALTER TABLE delivery_events_legacy ADD CONSTRAINT delivery_events_legacy_fingerprint_attempt_key
    UNIQUE USING INDEX delivery_events_legacy_fingerprint_attempt_key;
ALTER TABLE delivery_events_legacy ADD CONSTRAINT delivery_events_legacy_id_attempt_key
    UNIQUE USING INDEX delivery_events_legacy_id_attempt_key;

-- The same columns in the same order (so routing a row converts nothing).
-- `id` stays unique through its sequence; the constraint is (id,
-- attempt_date) because a unique key must hold the partition key, and it
-- also serves lookups by id alone.
CREATE TABLE delivery_events (
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    fingerprint    bytea       NOT NULL,
    message_id     uuid        NOT NULL,
    kind           text        NOT NULL CONSTRAINT delivery_events_kind_check CHECK (kind IN ('sms', 'rvm')),
    drop_id        text        NOT NULL,
    phone_number   text,
    attempt_date   timestamptz NOT NULL,
    status         text        NOT NULL,
    reason         text,
    dnc            boolean,
    spam           boolean,
    product_cost   numeric,
    compliance_fee numeric,
    tts_fee        numeric,
    network_name   text,
    network_type   text,
    foreign_id     text,
    payload        jsonb       NOT NULL,
    received_at    timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    event_id              text,
    event                 text,
    reason_code           integer,
    caller_id             text,
    contact_id            text,
    team_id               text,
    campaign_id           text,
    session_id            text,
    log_id                text,
    product_code          text,
    quantity              integer,
    proof_of_delivery_url text,
    receipt_ready_at      timestamptz,
    CONSTRAINT delivery_events_id_key UNIQUE (id, attempt_date),
    CONSTRAINT delivery_events_fingerprint_key UNIQUE (fingerprint, attempt_date)
) PARTITION BY RANGE (attempt_date);
CREATE INDEX delivery_events_drop_id_idx    ON delivery_events (drop_id);
CREATE INDEX delivery_events_foreign_id_idx ON delivery_events (foreign_id) WHERE foreign_id IS NOT NULL;
CREATE INDEX delivery_events_message_id_idx ON delivery_events (message_id);
CREATE INDEX delivery_events_stored_at_idx  ON delivery_events USING brin (stored_at);
CREATE INDEX delivery_events_event_id_idx   ON delivery_events (event_id) WHERE event_id IS NOT NULL;

-- Ids go on from the legacy table's.
SELECT setval(pg_get_serial_sequence('delivery_events', 'id'), last_value, is_called)
FROM delivery_events_legacy_id_seq;

-- The partitions and the upper bound of each (`FOR VALUES … TO ('…')`):
-- what the maintenance creates after and drops behind. `detaching`: a
-- DETACH … CONCURRENTLY that was interrupted, to be finalized.
CREATE VIEW delivery_event_partitions AS
SELECT c.relname::text AS name,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper,
       i.inhdetachpending AS detaching
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'delivery_events'::regclass;

-- Creates the missing day partitions (UTC days, named
-- delivery_events_YYYYMMDD) after the newest one up to `until`, none
-- ending before `horizon` (past the retention). CREATE TABLE … PARTITION
-- OF would lock the whole table; ATTACH of an empty table takes SHARE
-- UPDATE EXCLUSIVE, which writers do not wait for. Returns how many.
CREATE FUNCTION delivery_events_add_days(horizon timestamptz, until timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day timestamptz;
    made integer := 0;
    name text;
BEGIN
    SELECT greatest(max(upper), date_trunc('day', horizon, 'UTC')) INTO day
    FROM delivery_event_partitions;
    day := coalesce(day, date_trunc('day', until, 'UTC'));
    WHILE day < until LOOP
        name := 'delivery_events_' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I (LIKE delivery_events INCLUDING CONSTRAINTS)', name);
        EXECUTE format('ALTER TABLE delivery_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, day, day + interval '24 hours');
        day := day + interval '24 hours';
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

DO $$
DECLARE
    bound timestamptz;
BEGIN
    SELECT substring(pg_get_constraintdef(oid) FROM '''([^'']+)''')::timestamptz INTO bound
    FROM pg_constraint
    WHERE conrelid = 'delivery_events_legacy'::regclass AND conname = 'delivery_events_legacy_bound';
    EXECUTE format('ALTER TABLE delivery_events ATTACH PARTITION delivery_events_legacy
                        FOR VALUES FROM (MINVALUE) TO (%L)', bound);
END
$$;
-- A week ahead, as the maintenance keeps it (lifecycle::AHEAD).
SELECT delivery_events_add_days('-infinity', now() + interval '7 days');

-- The outbox row knows its event's partition key: the relay's join prunes
-- to one partition, and the maintenance deletes the rows of the events it
-- drops. Rows whose event is already gone (pruned by hand before) could
-- never be published: they go. The outbox holds pending rows only, so this
-- is small.
ALTER TABLE delivery_results_outbox ADD COLUMN attempt_date timestamptz;
UPDATE delivery_results_outbox o SET attempt_date = e.attempt_date
FROM delivery_events e WHERE e.id = o.event_id;
DELETE FROM delivery_results_outbox WHERE attempt_date IS NULL;
ALTER TABLE delivery_results_outbox ALTER COLUMN attempt_date SET NOT NULL;

-- What the maintenance prunes by, in small batches (built CONCURRENTLY
-- beforehand by `migrate` on an existing database).
CREATE INDEX IF NOT EXISTS deliveries_attempt_date_idx ON deliveries (attempt_date);
CREATE INDEX IF NOT EXISTS provider_events_stored_at_idx ON provider_events (stored_at);
CREATE INDEX IF NOT EXISTS quarantined_webhooks_quarantined_at_idx
    ON quarantined_webhooks (quarantined_at);
