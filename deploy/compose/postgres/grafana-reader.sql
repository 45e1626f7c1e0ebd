-- corral_grafana, the login of Grafana's PostgreSQL data source
-- (deploy/grafana/provisioning/datasources/postgres.yaml): it may read the
-- tables the `corral deliveries` dashboard reads and nothing else, and its
-- sessions are read-only. Grafana runs whatever SQL a dashboard editor
-- types, so the role, not the dashboard, is the limit. Run by the compose
-- service grafana-reader once the migrations have created the tables; it
-- may run again.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'corral_grafana') THEN
        -- A fixed development password, like every credential of this stack.
        CREATE ROLE corral_grafana LOGIN PASSWORD 'corral-grafana';
    END IF;
END
$$;
ALTER ROLE corral_grafana SET default_transaction_read_only = on;
-- A dashboard over a wide time range must not hold a connection for long.
ALTER ROLE corral_grafana SET statement_timeout = '30s';
GRANT USAGE ON SCHEMA public TO corral_grafana;
GRANT SELECT ON delivery_summary, delivery_summary_changes, suppressions TO corral_grafana;
