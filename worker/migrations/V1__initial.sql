-- corral's schema. Money is numeric (exact, any scale), instants are timestamptz.

-- One row per distinct webhook. `fingerprint` is the SHA-256 of the payload's
-- canonical form: a provider retry or a broker redelivery of the same webhook
-- hits the unique constraint and is counted as a duplicate, not stored twice.
CREATE TABLE delivery_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint    bytea       NOT NULL,
    message_id     uuid        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('sms', 'rvm')),
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
    CONSTRAINT delivery_events_fingerprint_key UNIQUE (fingerprint)
);
CREATE INDEX delivery_events_drop_id_idx    ON delivery_events (drop_id);
CREATE INDEX delivery_events_foreign_id_idx ON delivery_events (foreign_id) WHERE foreign_id IS NOT NULL;
-- The id ingress answered to the caller: how an operator traces one webhook.
CREATE INDEX delivery_events_message_id_idx ON delivery_events (message_id);
-- Retention and "what arrived when" scans; BRIN stays tiny on append-only data.
CREATE INDEX delivery_events_stored_at_idx  ON delivery_events USING brin (stored_at);

-- One row per drop_id: its latest known state. "Latest" is the greatest
-- (attempt_date, fingerprint), so the result does not depend on the order in
-- which competing workers commit.
CREATE TABLE deliveries (
    drop_id        text PRIMARY KEY,
    kind           text        NOT NULL,
    event_id       bigint      NOT NULL,
    fingerprint    bytea       NOT NULL,
    message_id     uuid        NOT NULL,
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
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_foreign_id_idx ON deliveries (foreign_id) WHERE foreign_id IS NOT NULL;

-- Webhooks the worker could not type: kept byte for byte (bytea, because a
-- body that is not even UTF-8 must not be lost either) with the reason.
-- Read one as text with convert_from(body, 'UTF8').
CREATE TABLE quarantined_webhooks (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body_sha256    bytea       NOT NULL,
    message_id     uuid,
    routing_key    text,
    body           bytea       NOT NULL,
    error          text        NOT NULL,
    received_at    timestamptz,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quarantined_webhooks_body_sha256_key UNIQUE (body_sha256)
);
