//! The spool's row: the one contract between ingress and worker that does
//! not travel through the queue.
//!
//! When the buffer cannot take a webhook in time, ingress writes it to
//! [`TABLE`] (created by `worker/migrations/V3__spooled_webhooks.sql`), one
//! row per webhook, and answers 200 after the COMMIT; the worker claims the
//! oldest rows, stores them as it stores queued webhooks, and deletes them in
//! the same transaction. A row holds [`COLUMNS`]:
//!
//! - `message_id` (`uuid`, the primary key): the id ingress answered;
//! - `kind` (`text`): the webhook's [`Kind`](crate::envelope::Kind), as
//!   `Kind::as_str` spells it;
//! - `body` (`bytea`): the request body, byte for byte;
//! - `received_at` (`timestamptz`): when ingress received it.
//!
//! The table also has `spooled_at` (the server's `now()`), which orders the
//! drain. Ingress logs in as a member of [`WRITER_ROLE`], which may INSERT
//! into this table and do nothing else.

/// The table webhooks are spooled in.
pub const TABLE: &str = "spooled_webhooks";

/// The role ingress's spool login is a member of: INSERT into [`TABLE`] only.
pub const WRITER_ROLE: &str = "corral_spool_writer";

/// The columns ingress writes and the worker reads back, in this order.
pub const COLUMNS: [&str; 4] = ["message_id", "kind", "body", "received_at"];

/// One INSERT for every row of a round: arrays in ([`COLUMNS`]' order), rows
/// out, no statement text growing with the round. Only INSERT is needed: no
/// table is read.
pub const INSERT: &str = "INSERT INTO spooled_webhooks (message_id, kind, body, received_at) \
                      SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::timestamptz[])";

/// What a spool write needs, without writing: the table, and the right to
/// INSERT into it. Reaching the server is not enough: a role never made a
/// member of [`WRITER_ROLE`], or a database not yet migrated, fails every
/// write.
pub const MAY_INSERT: &str = "SELECT has_table_privilege('spooled_webhooks', 'INSERT')";

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sides of the contract, read from where they live: the table's
    /// migration and the worker's claim.
    const MIGRATION: &str = include_str!("../../../worker/migrations/V3__spooled_webhooks.sql");
    const CLAIM: &str = include_str!("../../../worker/src/spool/claim.sql");

    #[test]
    fn the_statements_name_the_table_and_its_columns() {
        let columns = COLUMNS.join(", ");
        assert!(INSERT.starts_with(&format!("INSERT INTO {TABLE} ({columns})")));
        assert!(MAY_INSERT.contains(&format!("'{TABLE}'")));
        assert!(MIGRATION.contains(&format!("CREATE TABLE {TABLE} (")));
        assert!(MIGRATION.contains(&format!("GRANT INSERT ON {TABLE} TO {WRITER_ROLE};")));
        for column in COLUMNS {
            assert!(
                MIGRATION
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{column} "))),
                "{column} is not a column of the migration"
            );
        }
        assert!(CLAIM.contains(&format!("RETURNING {columns}")));
    }
}
