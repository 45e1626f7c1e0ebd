-- Stores a batch of typed results (callbacks and signed status events) in
-- one round trip and returns the fingerprints that were new, each with
-- whether its result counted. Duplicates (same fingerprint, already stored
-- or twice in this batch) are skipped by the unique constraint, which holds
-- the partition key too (migration V7): every copy of a webhook has the
-- same attempt_date, so it meets the first in the same partition. Rows are
-- sorted by the keys they lock, so concurrent workers cannot deadlock on
-- them. Only the new events feed `deliveries`, `suppressions`, the
-- summary's changes and (when $32 is true) the result-event outbox, all in
-- this one statement, so each is exactly once with the events themselves.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::bytea[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::text[], $8::text[], $9::boolean[], $10::boolean[], $11::numeric[], $12::numeric[],
        $13::numeric[], $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[],
        $19::integer[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
        $25::text[], $26::text[], $27::integer[], $28::text[], $29::timestamptz[], $30::text[],
        $31::text[]
    ) AS t(fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
           status, reason, dnc, spam, product_cost, compliance_fee,
           tts_fee, network_name, network_type, foreign_id, payload, received_at,
           reason_code, caller_id, contact_id, team_id, campaign_id, session_id,
           log_id, product_code, quantity, proof_of_delivery_url, receipt_ready_at, event_id,
           event)
),
inserted AS (
    INSERT INTO delivery_events (
        fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
        status, reason, dnc, spam, product_cost, compliance_fee,
        tts_fee, network_name, network_type, foreign_id, payload, received_at,
        reason_code, caller_id, contact_id, team_id, campaign_id, session_id,
        log_id, product_code, quantity, proof_of_delivery_url, receipt_ready_at, event_id,
        event
    )
    SELECT fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
           status, reason, dnc, spam, product_cost, compliance_fee,
           tts_fee, network_name, network_type, foreign_id, payload::jsonb, received_at,
           reason_code, caller_id, contact_id, team_id, campaign_id, session_id,
           log_id, product_code, quantity, proof_of_delivery_url, receipt_ready_at, event_id,
           event
    FROM input
    ORDER BY fingerprint
    ON CONFLICT (fingerprint, attempt_date) DO NOTHING
    RETURNING id, fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
              status, reason, dnc, spam, product_cost, compliance_fee,
              tts_fee, network_name, network_type, foreign_id, received_at,
              reason_code, caller_id, contact_id, team_id, campaign_id,
              proof_of_delivery_url, receipt_ready_at, event_id
),
-- One candidate per drop_id (an upsert may touch a row only once per
-- statement): the newest new event, and how many new events the drop has.
latest AS (
    SELECT DISTINCT ON (drop_id) *, count(*) OVER (PARTITION BY drop_id) AS events
    FROM inserted
    ORDER BY drop_id, attempt_date DESC, received_at DESC, fingerprint DESC
),
-- A drop with several new events (both channels, or a receipt, in one
-- batch): each column from the newest of them that has it, and the result
-- of each key from the earliest (the last duplicate key of jsonb wins).
several AS (
    SELECT drop_id,
           (array_agg(phone_number ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE phone_number IS NOT NULL))[1] AS phone_number,
           (array_agg(dnc ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE dnc IS NOT NULL))[1] AS dnc,
           (array_agg(spam ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE spam IS NOT NULL))[1] AS spam,
           (array_agg(product_cost ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE product_cost IS NOT NULL))[1] AS product_cost,
           (array_agg(compliance_fee ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE compliance_fee IS NOT NULL))[1] AS compliance_fee,
           (array_agg(tts_fee ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE tts_fee IS NOT NULL))[1] AS tts_fee,
           (array_agg(network_name ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE network_name IS NOT NULL))[1] AS network_name,
           (array_agg(network_type ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE network_type IS NOT NULL))[1] AS network_type,
           (array_agg(foreign_id ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE foreign_id IS NOT NULL))[1] AS foreign_id,
           (array_agg(caller_id ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE caller_id IS NOT NULL))[1] AS caller_id,
           (array_agg(contact_id ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE contact_id IS NOT NULL))[1] AS contact_id,
           (array_agg(team_id ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE team_id IS NOT NULL))[1] AS team_id,
           (array_agg(campaign_id ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE campaign_id IS NOT NULL))[1] AS campaign_id,
           (array_agg(event_id ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE event_id IS NOT NULL))[1] AS event_id,
           (array_agg(proof_of_delivery_url ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE proof_of_delivery_url IS NOT NULL))[1] AS proof_of_delivery_url,
           (array_agg(receipt_ready_at ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC) FILTER (WHERE receipt_ready_at IS NOT NULL))[1] AS receipt_ready_at,
           coalesce(jsonb_object_agg(corral_result_key(status, reason_code), id
                                     ORDER BY attempt_date DESC, received_at DESC, fingerprint DESC)
                        FILTER (WHERE reason_code IS NOT NULL), '{}') AS counted_results
    FROM inserted
    WHERE drop_id IN (SELECT drop_id FROM latest WHERE events > 1)
    GROUP BY drop_id
),
-- The latest state (status, reason, reason_code, attempt_date, …) follows
-- the greatest (attempt_date, received_at, fingerprint): an older event
-- arriving late never overwrites a newer state, and of two with the same
-- attempt_date the one received later is the correction. Every other
-- column keeps what any event brought, the newer event's value first, so
-- the callback's foreign_id and money and the webhooks' ids and receipt
-- all stay, whatever order they arrive in.
upserted AS (
    INSERT INTO deliveries AS d (
        drop_id, kind, event_id, fingerprint, message_id, attempt_date, status, reason,
        reason_code, received_at, phone_number, dnc, spam, product_cost, compliance_fee,
        tts_fee, network_name, network_type, foreign_id, caller_id, contact_id, team_id,
        campaign_id, provider_event_id, proof_of_delivery_url, receipt_ready_at, counted_results
    )
    SELECT l.drop_id, l.kind, l.id, l.fingerprint, l.message_id, l.attempt_date, l.status,
           l.reason, l.reason_code, l.received_at,
           coalesce(s.phone_number, l.phone_number), coalesce(s.dnc, l.dnc),
           coalesce(s.spam, l.spam), coalesce(s.product_cost, l.product_cost),
           coalesce(s.compliance_fee, l.compliance_fee), coalesce(s.tts_fee, l.tts_fee),
           coalesce(s.network_name, l.network_name), coalesce(s.network_type, l.network_type),
           coalesce(s.foreign_id, l.foreign_id), coalesce(s.caller_id, l.caller_id),
           coalesce(s.contact_id, l.contact_id), coalesce(s.team_id, l.team_id),
           coalesce(s.campaign_id, l.campaign_id), coalesce(s.event_id, l.event_id),
           coalesce(s.proof_of_delivery_url, l.proof_of_delivery_url),
           coalesce(s.receipt_ready_at, l.receipt_ready_at),
           -- '{}', for a drop's first event: its own result, counted.
           coalesce(s.counted_results, '{}')
    FROM latest l
    LEFT JOIN several s USING (drop_id)
    ORDER BY l.drop_id
    ON CONFLICT (drop_id) DO UPDATE SET (
        kind, event_id, fingerprint, message_id, attempt_date, status, reason, reason_code,
        received_at, phone_number, dnc, spam, product_cost, compliance_fee, tts_fee,
        network_name, network_type, foreign_id, caller_id, contact_id, team_id, campaign_id,
        provider_event_id, proof_of_delivery_url, receipt_ready_at, counted_results, updated_at
    ) = (
        SELECT
            CASE WHEN n THEN EXCLUDED.kind ELSE d.kind END,
            CASE WHEN n THEN EXCLUDED.event_id ELSE d.event_id END,
            CASE WHEN n THEN EXCLUDED.fingerprint ELSE d.fingerprint END,
            CASE WHEN n THEN EXCLUDED.message_id ELSE d.message_id END,
            CASE WHEN n THEN EXCLUDED.attempt_date ELSE d.attempt_date END,
            CASE WHEN n THEN EXCLUDED.status ELSE d.status END,
            CASE WHEN n THEN EXCLUDED.reason ELSE d.reason END,
            CASE WHEN n THEN EXCLUDED.reason_code ELSE d.reason_code END,
            CASE WHEN n THEN EXCLUDED.received_at ELSE d.received_at END,
            coalesce(CASE WHEN n THEN EXCLUDED.phone_number END, d.phone_number, EXCLUDED.phone_number),
            coalesce(CASE WHEN n THEN EXCLUDED.dnc END, d.dnc, EXCLUDED.dnc),
            coalesce(CASE WHEN n THEN EXCLUDED.spam END, d.spam, EXCLUDED.spam),
            coalesce(CASE WHEN n THEN EXCLUDED.product_cost END, d.product_cost, EXCLUDED.product_cost),
            coalesce(CASE WHEN n THEN EXCLUDED.compliance_fee END, d.compliance_fee, EXCLUDED.compliance_fee),
            coalesce(CASE WHEN n THEN EXCLUDED.tts_fee END, d.tts_fee, EXCLUDED.tts_fee),
            coalesce(CASE WHEN n THEN EXCLUDED.network_name END, d.network_name, EXCLUDED.network_name),
            coalesce(CASE WHEN n THEN EXCLUDED.network_type END, d.network_type, EXCLUDED.network_type),
            coalesce(CASE WHEN n THEN EXCLUDED.foreign_id END, d.foreign_id, EXCLUDED.foreign_id),
            coalesce(CASE WHEN n THEN EXCLUDED.caller_id END, d.caller_id, EXCLUDED.caller_id),
            coalesce(CASE WHEN n THEN EXCLUDED.contact_id END, d.contact_id, EXCLUDED.contact_id),
            coalesce(CASE WHEN n THEN EXCLUDED.team_id END, d.team_id, EXCLUDED.team_id),
            coalesce(CASE WHEN n THEN EXCLUDED.campaign_id END, d.campaign_id, EXCLUDED.campaign_id),
            coalesce(CASE WHEN n THEN EXCLUDED.provider_event_id END, d.provider_event_id, EXCLUDED.provider_event_id),
            coalesce(CASE WHEN n THEN EXCLUDED.proof_of_delivery_url END, d.proof_of_delivery_url, EXCLUDED.proof_of_delivery_url),
            coalesce(CASE WHEN n THEN EXCLUDED.receipt_ready_at END, d.receipt_ready_at, EXCLUDED.receipt_ready_at),
            -- Under the row's lock, so two workers storing the two channels
            -- at once still count the result once: a key counted before
            -- keeps its event (the right operand of || wins). A row from
            -- before V6 (NULL) has counted nothing by key: its state's
            -- status stands for every coded result of that status.
            corral_counted_results(EXCLUDED.counted_results, EXCLUDED.status,
                                   EXCLUDED.reason_code, EXCLUDED.event_id)
                || CASE WHEN d.counted_results IS NULL THEN (
                       SELECT coalesce(jsonb_object_agg(k, d.event_id), '{}')
                       FROM jsonb_object_keys(corral_counted_results(
                                EXCLUDED.counted_results, EXCLUDED.status,
                                EXCLUDED.reason_code, EXCLUDED.event_id)) AS k
                       WHERE k::jsonb->>0 = d.status)
                   ELSE '{}' END
                || coalesce(corral_counted_results(d.counted_results, d.status, d.reason_code,
                                                   d.event_id), '{}'),
            CASE WHEN changed THEN now() ELSE d.updated_at END
        FROM (SELECT (d.attempt_date, d.received_at, d.fingerprint)
                         < (EXCLUDED.attempt_date, EXCLUDED.received_at, EXCLUDED.fingerprint) AS n
             ) AS newer,
             -- Whether the delivery as a sender reads it changes: a newer
             -- state, or a column the row lacked (updated_at says when).
             LATERAL (SELECT n
                 OR (d.phone_number IS NULL AND EXCLUDED.phone_number IS NOT NULL)
                 OR (d.dnc IS NULL AND EXCLUDED.dnc IS NOT NULL)
                 OR (d.spam IS NULL AND EXCLUDED.spam IS NOT NULL)
                 OR (d.product_cost IS NULL AND EXCLUDED.product_cost IS NOT NULL)
                 OR (d.compliance_fee IS NULL AND EXCLUDED.compliance_fee IS NOT NULL)
                 OR (d.tts_fee IS NULL AND EXCLUDED.tts_fee IS NOT NULL)
                 OR (d.network_name IS NULL AND EXCLUDED.network_name IS NOT NULL)
                 OR (d.network_type IS NULL AND EXCLUDED.network_type IS NOT NULL)
                 OR (d.foreign_id IS NULL AND EXCLUDED.foreign_id IS NOT NULL)
                 OR (d.caller_id IS NULL AND EXCLUDED.caller_id IS NOT NULL)
                 OR (d.contact_id IS NULL AND EXCLUDED.contact_id IS NOT NULL)
                 OR (d.team_id IS NULL AND EXCLUDED.team_id IS NOT NULL)
                 OR (d.campaign_id IS NULL AND EXCLUDED.campaign_id IS NOT NULL)
                 OR (d.provider_event_id IS NULL AND EXCLUDED.provider_event_id IS NOT NULL)
                 OR (d.proof_of_delivery_url IS NULL AND EXCLUDED.proof_of_delivery_url IS NOT NULL)
                 OR (d.receipt_ready_at IS NULL AND EXCLUDED.receipt_ready_at IS NOT NULL)
                 AS changed
             ) AS changes
    )
    RETURNING drop_id, event_id, counted_results
),
-- Each new event, whether its result is counted and whether it became the
-- drop's state. A result without a code (a v1 body) always counts, as it
-- always has; a coded one when it holds its key in its drop's
-- counted_results, or is the first and only event of a new row ('{}').
counted AS (
    SELECT i.*,
           CASE WHEN i.reason_code IS NULL THEN true
                WHEN u.counted_results = '{}' THEN u.event_id = i.id
                ELSE coalesce((u.counted_results->>corral_result_key(i.status, i.reason_code))
                                  ::bigint = i.id, false)
           END AS counts,
           coalesce(u.event_id = i.id, false) AS latest
    FROM inserted i
    LEFT JOIN upserted u USING (drop_id)
),
-- Each new event, once per suppression class it is evidence for
-- (corral_suppression_class, migration V6, and the dnc flag).
suppressing AS (
    SELECT i.id, i.phone_number, i.kind, i.attempt_date, c.class,
           CASE WHEN c.class = 'dnc' THEN NULL ELSE i.reason END AS reason
    FROM inserted i
    CROSS JOIN LATERAL (VALUES
        (corral_suppression_class(i.reason_code, i.reason)),
        (CASE WHEN i.dnc THEN 'dnc' END)
    ) AS c(class)
    -- Most events suppress nothing: leave them out before the join.
    WHERE i.phone_number IS NOT NULL
      AND (i.dnc OR corral_suppression_class(i.reason_code, i.reason) IS NOT NULL)
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
-- into delivery_summary. A result counts once; an event whose result was
-- counted already still adds its own money (only callbacks carry any), so
-- the spend stays exact. The hour is date_bin's, which equals
-- date_trunc('hour', attempt_date, 'UTC') (the migration's backfill) for
-- every instant, without a time-zone conversion per row.
summarised AS (
    INSERT INTO delivery_summary_changes (
        hour, kind, status, reason, reason_code, events, product_cost, compliance_fee, tts_fee
    )
    SELECT date_bin('1 hour', attempt_date, timestamptz '2000-01-01 00:00:00+00'), kind, status,
           coalesce(reason, ''), reason_code,
           count(*) FILTER (WHERE counts), coalesce(sum(product_cost), 0),
           coalesce(sum(compliance_fee), 0), coalesce(sum(tts_fee), 0)
    FROM counted
    WHERE counts OR product_cost IS NOT NULL OR compliance_fee IS NOT NULL OR tts_fee IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
),
outboxed AS (
    INSERT INTO delivery_results_outbox (event_id, attempt_date, latest, suppressions,
                                         new_suppressions)
    SELECT c.id,
           c.attempt_date,
           c.latest,
           coalesce(array_agg(s.class ORDER BY s.class) FILTER (WHERE s.class IS NOT NULL), '{}'),
           coalesce(array_agg(s.class ORDER BY s.class) FILTER (
               WHERE s.class IS NOT NULL
                 AND b.active IS NOT TRUE
                 AND c.attempt_date > coalesce(b.lifted_through, '-infinity')
           ), '{}')
    FROM counted c
    LEFT JOIN suppressing s ON s.id = c.id
    LEFT JOIN suppressions_before b
        ON (b.phone_number, b.kind, b.class) = (s.phone_number, s.kind, s.class)
    WHERE $32::boolean
    GROUP BY c.id, c.attempt_date, c.latest
    ORDER BY c.id
)
SELECT fingerprint, counts FROM counted
