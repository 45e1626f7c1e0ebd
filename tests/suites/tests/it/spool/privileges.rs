//! The ingress role may INSERT into the spool and nothing else: a leaked
//! ingress credential can add webhooks, never read or remove one.

use chrono::Utc;
use corral_testkit::{database::connect, stack::Stack};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::helpers::*;

#[tokio::test]
async fn the_spool_role_may_insert_into_the_spool_and_nothing_else() {
    let stack = Stack::builder().spool().start().await;
    let ingress = connect(&stack.writer().url).await;

    let id = Uuid::now_v7();
    ingress
        .execute(
            "INSERT INTO spooled_webhooks (message_id, kind, body, received_at)
             VALUES ($1, 'sms', $2, $3)",
            &[&id, &b"{}".as_slice(), &Utc::now()],
        )
        .await
        .expect("the spool role may INSERT into spooled_webhooks");
    let rows = spool_rows(&stack.client().await).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message_id, id);

    for statement in [
        "SELECT * FROM spooled_webhooks",
        "SELECT count(*) FROM spooled_webhooks",
        "UPDATE spooled_webhooks SET kind = 'rvm'",
        "DELETE FROM spooled_webhooks",
        "TRUNCATE spooled_webhooks",
        "SELECT * FROM delivery_events",
        "SELECT * FROM deliveries",
        "SELECT * FROM quarantined_webhooks",
        "INSERT INTO delivery_events (message_id) VALUES (gen_random_uuid())",
    ] {
        let err = ingress
            .batch_execute(statement)
            .await
            .expect_err(&format!("the spool role must not run `{statement}`"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "`{statement}` failed, but not for want of privilege: {err}"
        );
    }
    let rows = spool_rows(&stack.client().await).await;
    assert_eq!(rows.len(), 1, "the spooled row is still there, untouched");
    assert_eq!(rows[0].kind, "sms");
}
