-- Stores a batch of typed webhooks in one round trip and returns the
-- fingerprints that were new. Duplicates (same fingerprint, already stored or
-- twice in this batch) are skipped by the unique constraint. Rows are sorted
-- by the keys they lock, so concurrent workers cannot deadlock on them.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::bytea[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::text[], $8::text[], $9::boolean[], $10::boolean[], $11::numeric[], $12::numeric[],
        $13::numeric[], $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[]
    ) AS t(fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
           status, reason, dnc, spam, product_cost, compliance_fee,
           tts_fee, network_name, network_type, foreign_id, payload, received_at)
),
inserted AS (
    INSERT INTO delivery_events (
        fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
        status, reason, dnc, spam, product_cost, compliance_fee,
        tts_fee, network_name, network_type, foreign_id, payload, received_at
    )
    SELECT fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
           status, reason, dnc, spam, product_cost, compliance_fee,
           tts_fee, network_name, network_type, foreign_id, payload::jsonb, received_at
    FROM input
    ORDER BY fingerprint
    ON CONFLICT (fingerprint) DO NOTHING
    RETURNING id, fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
              status, reason, dnc, spam, product_cost, compliance_fee,
              tts_fee, network_name, network_type, foreign_id, received_at
),
latest AS (
    -- One candidate per drop_id (an upsert may touch a row only once per statement).
    SELECT DISTINCT ON (drop_id) *
    FROM inserted
    ORDER BY drop_id, attempt_date DESC, received_at DESC, fingerprint DESC
),
upserted AS (
    INSERT INTO deliveries AS d (
        drop_id, kind, event_id, fingerprint, message_id, phone_number, attempt_date,
        status, reason, dnc, spam, product_cost, compliance_fee,
        tts_fee, network_name, network_type, foreign_id, received_at
    )
    SELECT drop_id, kind, id, fingerprint, message_id, phone_number, attempt_date,
           status, reason, dnc, spam, product_cost, compliance_fee,
           tts_fee, network_name, network_type, foreign_id, received_at
    FROM latest
    ORDER BY drop_id
    ON CONFLICT (drop_id) DO UPDATE SET
        kind = EXCLUDED.kind,
        event_id = EXCLUDED.event_id,
        fingerprint = EXCLUDED.fingerprint,
        message_id = EXCLUDED.message_id,
        phone_number = EXCLUDED.phone_number,
        attempt_date = EXCLUDED.attempt_date,
        status = EXCLUDED.status,
        reason = EXCLUDED.reason,
        dnc = EXCLUDED.dnc,
        spam = EXCLUDED.spam,
        product_cost = EXCLUDED.product_cost,
        compliance_fee = EXCLUDED.compliance_fee,
        tts_fee = EXCLUDED.tts_fee,
        network_name = EXCLUDED.network_name,
        network_type = EXCLUDED.network_type,
        foreign_id = EXCLUDED.foreign_id,
        received_at = EXCLUDED.received_at,
        updated_at = now()
    -- An older event arriving late never overwrites a newer state; of two
    -- with the same attempt_date, the one received later is the correction.
    WHERE (d.attempt_date, d.received_at, d.fingerprint)
        < (EXCLUDED.attempt_date, EXCLUDED.received_at, EXCLUDED.fingerprint)
)
SELECT fingerprint FROM inserted
