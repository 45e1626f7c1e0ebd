//! Selecting the run's rows by `drop_id`, on the index where the collation
//! allows.

use tokio_postgres::{Client, types::ToSql};

use crate::traffic::RunId;

use super::*;

/// How the run's rows are selected.
#[derive(Debug)]
pub(super) enum Scope {
    /// `drop_id >= $1 AND drop_id < $2` on the index.
    Range { low: String, high: String },
    /// `left(drop_id, 10) = $1`: exact under any collation, a full scan.
    Prefix(String),
}

impl Scope {
    pub(super) async fn choose(client: &Client, run_id: RunId) -> Result<Self, VerifyError> {
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
                low: run_id.hex(),
                high: format!("{}g", run_id.hex()),
            }
        } else {
            Scope::Prefix(run_id.hex())
        })
    }

    pub(super) fn condition(&self) -> String {
        match self {
            Scope::Range { .. } => "drop_id >= $1 AND drop_id < $2".into(),
            Scope::Prefix(_) => format!("left(drop_id, {}) = $1", RunId::HEX_LEN),
        }
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Scope::Range { low, high } => vec![low, high],
            Scope::Prefix(prefix) => vec![prefix],
        }
    }
}
