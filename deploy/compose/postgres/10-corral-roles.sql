-- The roles of corral-ingress's PostgreSQL spool (docs/operations/spool-and-dead-letters.md, "The
-- PostgreSQL spool"), created once when the postgres container initialises
-- an empty data volume: corral_spool_writer, to which the worker's migration
-- grants INSERT on spooled_webhooks and nothing else, and corral_ingress,
-- the login ingress uses (CORRAL_SPOOL_DATABASE_URL in compose.yaml), a
-- member of it. The migration would create the group role itself (the
-- compose user `corral` is a superuser); the login role is the operator's.
--
-- A volume initialised before this file existed skips it; run it by hand
-- (it may run again):
--   docker compose -f deploy/compose/compose.yaml exec postgres \
--     psql -U corral -d corral -f /docker-entrypoint-initdb.d/10-corral-roles.sql
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'corral_spool_writer') THEN
        CREATE ROLE corral_spool_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'corral_ingress') THEN
        -- A fixed development password, like every credential of this stack.
        CREATE ROLE corral_ingress LOGIN PASSWORD 'corral-ingress' IN ROLE corral_spool_writer;
    END IF;
END
$$;
GRANT corral_spool_writer TO corral_ingress;
