//! Selecting the run's rows by the prefix every id of the run has (its
//! `drop_id`s, its `event_id`s), on the index where the collation allows.

use tokio_postgres::{Client, types::ToSql};

use super::*;

/// How the run's rows are selected.
#[derive(Debug)]
pub(super) enum Scope {
    /// `column >= low AND column < high` on the index.
    Range { low: String, high: String },
    /// `left(column, n) = prefix`: exact under any collation, a full scan.
    Prefix(String),
}

impl Scope {
    /// The scope of ids beginning with `prefix` (hex digits, perhaps a
    /// hyphen), a range where the database's collation sorts hex digits as
    /// their bytes do.
    pub(super) async fn choose(client: &Client, prefix: String) -> Result<Self, VerifyError> {
        let sorts_as_bytes: bool = client
            .query_one(
                "SELECT '0' < '9' AND '9' < 'a' AND 'a' < 'f' AND 'f' < 'g' \
                 AND '0f' < '10' AND 'ff' < 'g' AND '9f' < 'a0'",
                &[],
            )
            .await?
            .get(0);
        Ok(if sorts_as_bytes {
            Scope::Range {
                high: format!("{prefix}g"),
                low: prefix,
            }
        } else {
            Scope::Prefix(prefix)
        })
    }

    /// The condition on `column`, its parameters numbered from `first`.
    pub(super) fn condition(&self, column: &str, first: usize) -> String {
        match self {
            Scope::Range { .. } => format!("{column} >= ${first} AND {column} < ${}", first + 1),
            Scope::Prefix(prefix) => format!("left({column}, {}) = ${first}", prefix.len()),
        }
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Scope::Range { low, high } => vec![low, high],
            Scope::Prefix(prefix) => vec![prefix],
        }
    }
}
