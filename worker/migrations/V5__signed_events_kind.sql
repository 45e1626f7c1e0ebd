-- Signed webhooks (POST /webhooks/dropcowboy) are kept as kind 'event', and
-- ingress spools them like the others. Widening the CHECK works with the
-- previous release still running: its ingress writes only 'sms' and 'rvm',
-- which stay allowed. The table is empty but during a broker outage, so
-- checking its rows again costs nothing.
ALTER TABLE spooled_webhooks DROP CONSTRAINT spooled_webhooks_kind_check;
ALTER TABLE spooled_webhooks
    ADD CONSTRAINT spooled_webhooks_kind_check CHECK (kind IN ('sms', 'rvm', 'event'));
