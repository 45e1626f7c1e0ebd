-- What the current API's bodies say (issue 27): the signed webhooks' results
-- stored like callbacks, every other signed event kept in provider_events,
-- the v2 callback's new fields typed, suppressions keyed on reason_code, and
-- a result that arrives on both channels (callback_url and a status webhook)
-- counted once. Works with the previous release still running: columns are
-- added nullable or with a constant default (no table rewrite); only the
-- summary's key changes, see there.

-- The fields the current API adds. No default, so adding them is instant
-- however big the table; events stored before keep theirs in `payload`
-- (`payload->'reason_code'`).
ALTER TABLE delivery_events
    ADD COLUMN event_id              text,
    ADD COLUMN event                 text,
    ADD COLUMN reason_code           integer,
    ADD COLUMN caller_id             text,
    ADD COLUMN contact_id            text,
    ADD COLUMN team_id               text,
    ADD COLUMN campaign_id           text,
    ADD COLUMN session_id            text,
    ADD COLUMN log_id                text,
    ADD COLUMN product_code          text,
    ADD COLUMN quantity              integer,
    ADD COLUMN proof_of_delivery_url text,
    ADD COLUMN receipt_ready_at      timestamptz;
-- Looking an event up by the provider's id. Not unique: a signed event's
-- fingerprint is derived from its event_id, so the fingerprint's constraint
-- already stores each once (and a unique index would need the partition key
-- once the table is partitioned). Partial: callbacks have none.
CREATE INDEX delivery_events_event_id_idx ON delivery_events (event_id)
    WHERE event_id IS NOT NULL;

-- One row per drop still, now holding what each channel brought: the
-- callback's foreign_id and money, the webhooks' event id, contact and
-- proof of delivery. `counted_results`: each coded result of the drop
-- counted in corral_worker_deliveries_total, the summary and `report`, by
-- its corral_result_key, and the delivery_events.id that counted it;
-- another event with a counted result (the same result on the other
-- channel, a receipt) counts nothing. '{}' while the drop has had one event,
-- which counted its own result (most drops: nothing to store); NULL for a
-- row written before this migration (or by the previous release), whose
-- state's status then stands for every coded result of that status. A
-- result without a code (a v1 body) always counts, as before.
ALTER TABLE deliveries
    ADD COLUMN reason_code           integer,
    ADD COLUMN caller_id             text,
    ADD COLUMN contact_id            text,
    ADD COLUMN team_id               text,
    ADD COLUMN campaign_id           text,
    ADD COLUMN provider_event_id     text,
    ADD COLUMN proof_of_delivery_url text,
    ADD COLUMN receipt_ready_at      timestamptz,
    ADD COLUMN counted_results       jsonb;

-- Every other verified signed event: kept whole, once per event_id (the
-- provider's idempotency key; a retry is a duplicate).
CREATE TABLE provider_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text        NOT NULL,
    event       text        NOT NULL,
    event_at    timestamptz,
    message_id  uuid        NOT NULL,
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    body        jsonb       NOT NULL,
    CONSTRAINT provider_events_event_id_key UNIQUE (event_id)
);
CREATE INDEX provider_events_event_event_at_idx ON provider_events (event, event_at);

-- The one mapping from what the provider said to a suppression class
-- (docs/operations.md, "Suppressions", tabulates it): the numeric code
-- wherever there is one, the v1 text only for bodies without a code. NULL:
-- suppresses nothing. The `dnc` flag is a class of its own, apart from this.
-- A plain SQL CASE, so the planner inlines it into the batch's statement.
CREATE FUNCTION corral_suppression_class(reason_code integer, reason text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN reason_code IS NOT NULL THEN
            CASE reason_code
                WHEN 4016 THEN 'internal_dnc'
                WHEN 4017 THEN 'litigator'
                WHEN 4019 THEN 'reassigned'
                WHEN 6005 THEN 'opted_out'
            END
        ELSE
            CASE reason
                WHEN 'Opted out' THEN 'opted_out'
                WHEN 'Known Litigator' THEN 'litigator'
                WHEN 'Internal DNC' THEN 'internal_dnc'
                WHEN 'Prohibited by carrier or not SMS enabled' THEN 'carrier'
            END
    END
$$;

-- What a coded result says happened, as the key a drop's results are
-- counted by: [status, reason_code] as JSON text, so no status can be
-- mistaken for another; NULL without a code. STABLE, as jsonb_build_array
-- is: the planner inlines it only so.
CREATE FUNCTION corral_result_key(status text, reason_code integer)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN reason_code IS NOT NULL
                THEN jsonb_build_array(status, reason_code)::text END
$$;

-- The coded results a deliveries row has counted, as a map: its
-- counted_results, where '{}' stands for the result of its state's event
-- (the drop's first and only one).
CREATE FUNCTION corral_counted_results(counted jsonb, status text, reason_code integer,
                                       event_id bigint)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN counted = '{}' AND reason_code IS NOT NULL
                THEN jsonb_build_object(corral_result_key(status, reason_code), event_id)
                ELSE counted END
$$;

-- 4019 (RND Reassigned): the number has a new owner, who never consented.
ALTER TABLE suppressions DROP CONSTRAINT suppressions_class_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_class_check
    CHECK (class IN ('opted_out', 'litigator', 'internal_dnc', 'dnc', 'carrier', 'reassigned'));

-- The summary gains the code. NULL (no code: a v1 body) is a value of the
-- key like any other, hence NULLS NOT DISTINCT (PostgreSQL 15). The previous
-- release's roll-up names the old key in its ON CONFLICT and fails until it
-- is replaced (its change rows wait, and `report` stays exact meanwhile).
ALTER TABLE delivery_summary ADD COLUMN reason_code integer;
ALTER TABLE delivery_summary_changes ADD COLUMN reason_code integer;
ALTER TABLE delivery_summary DROP CONSTRAINT delivery_summary_pkey;
ALTER TABLE delivery_summary ADD CONSTRAINT delivery_summary_key
    UNIQUE NULLS NOT DISTINCT (hour, kind, status, reason, reason_code);

-- Suppressions the stored events' codes call for and their texts did not:
-- v2 callbacks stored before this migration, whose code is in `payload`.
-- Only added: a suppression the text made stays (only an operator lifts
-- one), and where text and code agree nothing changes. Grouped as the batch
-- statement groups them, so the rows are those it would have written.
WITH coded AS (
    SELECT id, phone_number, kind, attempt_date, reason,
           corral_suppression_class((payload->>'reason_code')::integer, reason) AS class
    FROM delivery_events
    WHERE phone_number IS NOT NULL
      AND payload->>'reason_code' ~ '^-?[0-9]{1,9}$'
),
changed AS (
    SELECT * FROM coded
    WHERE class IS NOT NULL
      AND class IS DISTINCT FROM corral_suppression_class(NULL, reason)
)
INSERT INTO suppressions AS s (phone_number, kind, class, reason, first_seen, last_seen,
                               event_id, last_event_id)
SELECT phone_number, kind, class,
       (array_agg(reason ORDER BY attempt_date DESC, id DESC))[1],
       min(attempt_date), max(attempt_date),
       (array_agg(id ORDER BY attempt_date, id))[1],
       (array_agg(id ORDER BY attempt_date DESC, id DESC))[1]
FROM changed
GROUP BY phone_number, kind, class
ON CONFLICT (phone_number, kind, class) DO UPDATE SET
    first_seen = least(s.first_seen, EXCLUDED.first_seen),
    event_id = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.event_id) < (s.first_seen, s.event_id)
                    THEN EXCLUDED.event_id ELSE s.event_id END,
    last_seen = greatest(s.last_seen, EXCLUDED.last_seen),
    last_event_id = CASE WHEN (EXCLUDED.last_seen, EXCLUDED.last_event_id) > (s.last_seen, s.last_event_id)
                         THEN EXCLUDED.last_event_id ELSE s.last_event_id END,
    reason = CASE WHEN (EXCLUDED.last_seen, EXCLUDED.last_event_id) > (s.last_seen, s.last_event_id)
                  THEN EXCLUDED.reason ELSE s.reason END,
    updated_at = now();
