-- What the customer acts on, kept by the worker in the same statement (and so
-- the same transaction) that stores the events: which numbers must not be
-- messaged again, what was spent, and the result events for the customer's
-- own services. Each is fed only by newly stored events, so a redelivered or
-- resent webhook (same fingerprint) changes none of them.

-- Numbers a sender must not message again, one row per number, channel and
-- class of reason. Classes (docs/operations.md, "Suppressions", says why):
--   opted_out    reason 'Opted out'
--   litigator    reason 'Known Litigator'
--   internal_dnc reason 'Internal DNC'
--   dnc          the webhook's "dnc": true, whatever its reason
--   carrier      reason 'Prohibited by carrier or not SMS enabled' (a number
--                can become SMS-enabled, so a sender may treat it apart)
-- Webhooks only ever add to a suppression: no webhook says a number opted in
-- again. first_seen / last_seen are the least / greatest attempt_date of the
-- events that put it here, so the row does not depend on arrival order. An
-- operator lifts one with `corral-worker suppressions lift`, which sets
-- lifted_through to last_seen: only an event attempted after that suppresses
-- the number again, an older one arriving late does not.
CREATE TABLE suppressions (
    phone_number   text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('sms', 'rvm')),
    class          text        NOT NULL
        CHECK (class IN ('opted_out', 'litigator', 'internal_dnc', 'dnc', 'carrier')),
    -- The provider's reason of the latest such event (NULL for a dnc-only one).
    reason         text,
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    -- delivery_events.id of the event that put the number here (the earliest)
    -- and of the latest one.
    event_id       bigint      NOT NULL,
    last_event_id  bigint      NOT NULL,
    lifted_through timestamptz,
    lifted_at      timestamptz,
    lifted_by      text,
    active         boolean     GENERATED ALWAYS AS
        (lifted_through IS NULL OR last_seen > lifted_through) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- The primary key's leading column serves the lookup a sender makes
    -- before every send: WHERE phone_number = $1 AND active.
    PRIMARY KEY (phone_number, kind, class)
);

-- Outcomes and spend per hour of attempt_date (UTC), kind, status and reason
-- ('' when none): counts and exact sums. Each batch adds its own rows to
-- delivery_summary_changes (appends only, so concurrent writers never wait
-- on each other); the worker folds them into delivery_summary every few
-- seconds. The exact totals at any moment are the two tables added together,
-- which is what `corral-worker report` reads.
CREATE TABLE delivery_summary (
    hour           timestamptz NOT NULL,
    kind           text        NOT NULL,
    status         text        NOT NULL,
    reason         text        NOT NULL,
    events         bigint      NOT NULL,
    product_cost   numeric     NOT NULL,
    compliance_fee numeric     NOT NULL,
    tts_fee        numeric     NOT NULL,
    PRIMARY KEY (hour, kind, status, reason)
);

CREATE TABLE delivery_summary_changes (
    hour           timestamptz NOT NULL,
    kind           text        NOT NULL,
    status         text        NOT NULL,
    reason         text        NOT NULL,
    events         bigint      NOT NULL,
    product_cost   numeric     NOT NULL,
    compliance_fee numeric     NOT NULL,
    tts_fee        numeric     NOT NULL
);

-- Result events not yet confirmed by RabbitMQ (CORRAL_RESULT_EVENTS=true):
-- written in the batch's transaction, published by the worker's relay to the
-- fan-out exchange <prefix>.delivery-results, deleted once confirmed. A crash
-- in between publishes the event again, with the same id.
CREATE TABLE delivery_results_outbox (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         bigint      NOT NULL,
    -- Whether the event became its drop_id's state in `deliveries` when stored.
    latest           boolean     NOT NULL,
    -- Suppression classes the event is evidence for, and those of them the
    -- number was not actively suppressed in before this event.
    suppressions     text[]      NOT NULL,
    new_suppressions text[]      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Existing events, as the worker would have recorded them.
INSERT INTO delivery_summary
SELECT date_trunc('hour', attempt_date, 'UTC'), kind, status, coalesce(reason, ''),
       count(*), coalesce(sum(product_cost), 0), coalesce(sum(compliance_fee), 0),
       coalesce(sum(tts_fee), 0)
FROM delivery_events
GROUP BY 1, 2, 3, 4;

INSERT INTO suppressions (phone_number, kind, class, reason, first_seen, last_seen,
                          event_id, last_event_id)
SELECT phone_number, kind, class,
       (array_agg(reason ORDER BY attempt_date DESC, id DESC))[1],
       min(attempt_date), max(attempt_date),
       (array_agg(id ORDER BY attempt_date, id))[1],
       (array_agg(id ORDER BY attempt_date DESC, id DESC))[1]
FROM (
    SELECT e.id, e.phone_number, e.kind, e.attempt_date, c.class,
           CASE WHEN c.class = 'dnc' THEN NULL ELSE e.reason END AS reason
    FROM delivery_events e
    CROSS JOIN LATERAL (VALUES
        (CASE e.reason
             WHEN 'Opted out' THEN 'opted_out'
             WHEN 'Known Litigator' THEN 'litigator'
             WHEN 'Internal DNC' THEN 'internal_dnc'
             WHEN 'Prohibited by carrier or not SMS enabled' THEN 'carrier'
         END),
        (CASE WHEN e.dnc THEN 'dnc' END)
    ) AS c(class)
    WHERE c.class IS NOT NULL AND e.phone_number IS NOT NULL
) s
GROUP BY phone_number, kind, class;
