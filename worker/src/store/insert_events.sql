-- Stores a batch of typed webhooks in one round trip and returns the
-- fingerprints that were new. Duplicates (same fingerprint, already stored or
-- twice in this batch) are skipped by the unique constraint. Rows are sorted
-- by the keys they lock, so concurrent workers cannot deadlock on them.
-- Only the new events feed `deliveries`, `suppressions`, the summary's
-- changes and (when $19 is true) the result-event outbox, all in this one
-- statement, so each is exactly once with the events themselves.
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
    RETURNING event_id
),
-- Each new event, once per suppression class it is evidence for (the V4
-- migration lists the classes and why).
suppressing AS (
    SELECT i.id, i.phone_number, i.kind, i.attempt_date, c.class,
           CASE WHEN c.class = 'dnc' THEN NULL ELSE i.reason END AS reason
    FROM inserted i
    CROSS JOIN LATERAL (VALUES
        (CASE i.reason
             WHEN 'Opted out' THEN 'opted_out'
             WHEN 'Known Litigator' THEN 'litigator'
             WHEN 'Internal DNC' THEN 'internal_dnc'
             WHEN 'Prohibited by carrier or not SMS enabled' THEN 'carrier'
         END),
        (CASE WHEN i.dnc THEN 'dnc' END)
    ) AS c(class)
    -- Most events suppress nothing: leave them out before the join.
    WHERE i.phone_number IS NOT NULL
      AND (i.dnc OR i.reason IN ('Opted out', 'Known Litigator', 'Internal DNC',
                                 'Prohibited by carrier or not SMS enabled'))
      AND c.class IS NOT NULL
),
suppression_groups AS (
    SELECT phone_number, kind, class,
           (array_agg(reason ORDER BY attempt_date DESC, id DESC))[1] AS reason,
           min(attempt_date) AS first_seen, max(attempt_date) AS last_seen,
           (array_agg(id ORDER BY attempt_date, id))[1] AS event_id,
           (array_agg(id ORDER BY attempt_date DESC, id DESC))[1] AS last_event_id
    FROM suppressing
    GROUP BY phone_number, kind, class
),
-- The suppressions as they were before this statement (all CTEs share its
-- snapshot), for the result events' "new" flag.
suppressions_before AS (
    SELECT s.phone_number, s.kind, s.class, s.active, s.lifted_through
    FROM suppressions s
    JOIN suppression_groups g USING (phone_number, kind, class)
),
suppressed AS (
    INSERT INTO suppressions AS s (
        phone_number, kind, class, reason, first_seen, last_seen, event_id, last_event_id
    )
    SELECT phone_number, kind, class, reason, first_seen, last_seen, event_id, last_event_id
    FROM suppression_groups
    ORDER BY phone_number, kind, class
    -- least/greatest: the same row whatever order the events arrive in.
    ON CONFLICT (phone_number, kind, class) DO UPDATE SET
        first_seen = least(s.first_seen, EXCLUDED.first_seen),
        event_id = CASE WHEN (EXCLUDED.first_seen, EXCLUDED.event_id) < (s.first_seen, s.event_id)
                        THEN EXCLUDED.event_id ELSE s.event_id END,
        last_seen = greatest(s.last_seen, EXCLUDED.last_seen),
        last_event_id = CASE WHEN (EXCLUDED.last_seen, EXCLUDED.last_event_id) > (s.last_seen, s.last_event_id)
                             THEN EXCLUDED.last_event_id ELSE s.last_event_id END,
        reason = CASE WHEN (EXCLUDED.last_seen, EXCLUDED.last_event_id) > (s.last_seen, s.last_event_id)
                      THEN EXCLUDED.reason ELSE s.reason END,
        updated_at = now()
),
-- This batch's share of the hourly summary: appended, never updated here, so
-- concurrent batches never wait on each other; the worker folds these rows
-- into delivery_summary. The hour is date_bin's, which equals
-- date_trunc('hour', attempt_date, 'UTC') (the migration's backfill) for
-- every instant, without a time-zone conversion per row.
summarised AS (
    INSERT INTO delivery_summary_changes (
        hour, kind, status, reason, events, product_cost, compliance_fee, tts_fee
    )
    SELECT date_bin('1 hour', attempt_date, timestamptz '2000-01-01 00:00:00+00'), kind, status,
           coalesce(reason, ''),
           count(*), coalesce(sum(product_cost), 0), coalesce(sum(compliance_fee), 0),
           coalesce(sum(tts_fee), 0)
    FROM inserted
    GROUP BY 1, 2, 3, 4
),
outboxed AS (
    INSERT INTO delivery_results_outbox (event_id, latest, suppressions, new_suppressions)
    SELECT i.id,
           u.event_id IS NOT NULL,
           coalesce(array_agg(s.class ORDER BY s.class) FILTER (WHERE s.class IS NOT NULL), '{}'),
           coalesce(array_agg(s.class ORDER BY s.class) FILTER (
               WHERE s.class IS NOT NULL
                 AND b.active IS NOT TRUE
                 AND i.attempt_date > coalesce(b.lifted_through, '-infinity')
           ), '{}')
    FROM inserted i
    LEFT JOIN upserted u ON u.event_id = i.id
    LEFT JOIN suppressing s ON s.id = i.id
    LEFT JOIN suppressions_before b
        ON (b.phone_number, b.kind, b.class) = (s.phone_number, s.kind, s.class)
    WHERE $19::boolean
    GROUP BY i.id, i.attempt_date, u.event_id
    ORDER BY i.id
)
SELECT fingerprint FROM inserted
