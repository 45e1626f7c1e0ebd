-- Ingress's second durable path. When RabbitMQ cannot take a webhook in time,
-- ingress writes it here, byte for byte, and answers 200 after the COMMIT;
-- the worker drains the table through the same typed, deduplicated write as
-- queued webhooks and deletes each row in that same transaction. The table is
-- empty except during a broker outage.
CREATE TABLE spooled_webhooks (
    -- The id ingress answered: fresh for every request, so never repeated.
    message_id  uuid        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('sms', 'rvm')),
    -- bytea, as in quarantined_webhooks: the exact bytes, whatever they hold.
    body        bytea       NOT NULL,
    received_at timestamptz NOT NULL,
    spooled_at  timestamptz NOT NULL DEFAULT now()
);
-- The drain takes the oldest first; depth and oldest age read it too.
CREATE INDEX spooled_webhooks_spooled_at_idx ON spooled_webhooks (spooled_at);

-- What ingress may do here, and nothing more: INSERT into this one table. It
-- cannot read a webhook back, delete one, or touch any other table. Ingress
-- logs in with its own role, a member of this one. Roles belong to the whole
-- server, so one already there (from another database of the server, or made
-- by the operator, e.g. as a CloudNativePG managed role because the worker's
-- user may not create roles) is used as it is.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'corral_spool_writer') THEN
        BEGIN
            CREATE ROLE corral_spool_writer NOLOGIN;
        EXCEPTION
            -- Created at the same moment by a migration of another database.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'corral needs a role named corral_spool_writer and may not create it'
                    USING HINT = 'Create it once as a superuser (CREATE ROLE corral_spool_writer NOLOGIN), '
                                 'or give the migrating user CREATEROLE, then start the worker again.';
        END;
    END IF;
END
$$;
REVOKE ALL ON spooled_webhooks FROM corral_spool_writer;
GRANT INSERT ON spooled_webhooks TO corral_spool_writer;
