//! `corral-worker suppressions …`: the numbers a sender must not message
//! again (`suppressions`, kept by the worker from the webhooks), and lifting
//! one — the only way a suppression ends, since no webhook says a number
//! opted in again.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{
    OpsError,
    quarantine::{client, ops_pool},
};
use crate::config::WorkerConfig;

/// One `suppressions` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// E.164, as the provider sent it.
    pub phone_number: String,
    /// `sms` or `rvm`.
    pub kind: String,
    /// `opted_out`, `litigator`, `internal_dnc`, `dnc`, `carrier` or `reassigned`.
    pub class: String,
    /// Whether it is in force (not lifted, or suppressed again since).
    pub active: bool,
    /// The provider's reason of the latest event (none for `dnc`).
    pub reason: Option<String>,
    /// `attempt_date` of the earliest event that put the number here.
    pub first_seen: DateTime<Utc>,
    /// `attempt_date` of the latest one.
    pub last_seen: DateTime<Utc>,
    /// Who lifted it and why, if it was lifted.
    pub lifted_by: Option<String>,
    /// When it was lifted.
    pub lifted_at: Option<DateTime<Utc>>,
}

impl Suppression {
    fn from_row(row: &Row) -> Self {
        Self {
            phone_number: row.get("phone_number"),
            kind: row.get("kind"),
            class: row.get("class"),
            active: row.get("active"),
            reason: row.get("reason"),
            first_seen: row.get("first_seen"),
            last_seen: row.get("last_seen"),
            lifted_by: row.get("lifted_by"),
            lifted_at: row.get("lifted_at"),
        }
    }
}

const COLUMNS: &str = "phone_number, kind, class, active, reason, first_seen, last_seen, \
                       lifted_by, lifted_at";

/// Which suppressions a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this number.
    pub phone_number: Option<String>,
    /// Only this channel.
    pub kind: Option<String>,
    /// Only this class.
    pub class: Option<String>,
}

/// Suppressions, oldest first: in force only, unless `all`.
pub async fn list_suppressions(
    config: &WorkerConfig,
    selection: &Selection,
    all: bool,
    limit: u64,
) -> Result<Vec<Suppression>, OpsError> {
    let pool = ops_pool(config)?;
    let client = client(&pool).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM suppressions
                 WHERE ($1::text IS NULL OR phone_number = $1)
                   AND ($2::text IS NULL OR kind = $2)
                   AND ($3::text IS NULL OR class = $3)
                   AND (active OR $4)
                 ORDER BY first_seen, phone_number, kind, class
                 LIMIT $5"
            ),
            &[
                &selection.phone_number,
                &selection.kind,
                &selection.class,
                &all,
                &limit,
            ],
        )
        .await
        .map_err(OpsError::database("listing suppressions"))?;
    Ok(rows.iter().map(Suppression::from_row).collect())
}

/// Which rows a lift takes: the number's suppressions in force, narrowed by
/// kind and class. One clause for the lift and its dry run, so the dry run
/// shows exactly what the lift would take.
const LIFTABLE: &str = "phone_number = $1
                        AND ($2::text IS NULL OR kind = $2)
                        AND ($3::text IS NULL OR class = $3)
                        AND active";

/// Lifts the suppressions in force for `selection.phone_number` (narrowed
/// by kind and class): each is lifted through its `last_seen`, so an older
/// event arriving late does not put it back, and a newer one does. `by` is
/// kept with it (who, and why). With `dry_run`, returns what it would lift
/// and changes nothing. Empty when none is in force.
pub async fn lift_suppressions(
    config: &WorkerConfig,
    selection: &Selection,
    by: &str,
    dry_run: bool,
) -> Result<Vec<Suppression>, OpsError> {
    let Some(phone_number) = &selection.phone_number else {
        return Err(OpsError::Usage(
            "lifting needs the phone number (--phone)".to_owned(),
        ));
    };
    if by.trim().is_empty() {
        return Err(OpsError::Usage(
            "say who lifts it and why (--by), it is kept with the row".to_owned(),
        ));
    }
    let pool = ops_pool(config)?;
    let client = client(&pool).await?;
    let statement = if dry_run {
        format!(
            "SELECT {COLUMNS} FROM suppressions WHERE {LIFTABLE} AND $4::text IS NOT NULL
             ORDER BY first_seen, kind, class"
        )
    } else {
        format!(
            "UPDATE suppressions
             SET lifted_through = last_seen, lifted_at = now(), lifted_by = $4,
                 updated_at = now()
             WHERE {LIFTABLE}
             RETURNING {COLUMNS}"
        )
    };
    let rows = client
        .query(
            &statement,
            &[phone_number, &selection.kind, &selection.class, &by],
        )
        .await
        .map_err(OpsError::database("lifting suppressions"))?;
    Ok(rows.iter().map(Suppression::from_row).collect())
}
