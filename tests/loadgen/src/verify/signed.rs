//! Signed events: whether the database keeps them at all, matching a row to
//! the event by its `event_id`, the run's `provider_events`, and the drops
//! reported on both channels.

use std::pin::pin;

use futures_util::TryStreamExt;
use tokio_postgres::Client;

use crate::traffic::RunId;

use super::{check::Pass, *};

/// A drop answered 2xx on both channels: its `deliveries` row must hold
/// what only the callback brings.
#[derive(Debug)]
pub(super) struct BothChannels {
    pub(super) item: u64,
    /// The callback's `foreign_id`.
    pub(super) foreign_id: String,
}

/// Whether the database's worker keeps signed events: `delivery_events`
/// has `event_id`, and `provider_events` exists with one.
pub(super) async fn keeps_signed_events(client: &Client) -> Result<bool, VerifyError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute \
                            WHERE attrelid = to_regclass('delivery_events') \
                              AND attname = 'event_id' AND NOT attisdropped) \
                AND EXISTS (SELECT 1 FROM pg_attribute \
                            WHERE attrelid = to_regclass('provider_events') \
                              AND attname = 'event_id' AND NOT attisdropped)",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The drops of `sent` whose callback (with a `foreign_id`) and status
/// event were both answered 2xx, sorted by item.
pub(super) fn both_channels(sent: &Sent) -> Vec<BothChannels> {
    let mut both: Vec<BothChannels> = Vec::new();
    let mut status_confirmed = Vec::new();
    for webhook in sent.webhooks() {
        if webhook.shape != Shape::BothChannels || webhook.confirms == 0 {
            continue;
        }
        match (webhook.body_index, webhook.webhook.foreign_id) {
            (0, Some(foreign_id)) => both.push(BothChannels {
                item: webhook.item,
                foreign_id,
            }),
            (1, _) => status_confirmed.push(webhook.item),
            _ => {}
        }
    }
    both.retain(|drop| status_confirmed.binary_search(&drop.item).is_ok());
    both
}

/// Says why no signed event can be found, before the losses it makes.
pub(super) fn note_not_kept(expected: &[Expected], pass: &mut Pass) {
    let answered = expected
        .iter()
        .filter(|e| e.event.is_some() && e.confirmed)
        .count();
    if answered > 0 {
        pass.note(format!(
            "this database keeps no signed events (no delivery_events.event_id or \
             provider_events.event_id: its worker predates them): the {answered} answered 2xx \
             are lost"
        ));
    }
}

/// A row in `destination` (under the `drop_id` of item `drop_item`, for a
/// result) holding `event_id`: a copy of that event, or unexpected, or
/// mismatched when the event belongs elsewhere.
pub(super) fn match_event(
    run_id: RunId,
    event_id: &str,
    (destination, drop_item): (Destination, Option<u64>),
    expected: &mut [Expected],
    pass: &mut Pass,
) {
    let found = run_id.event_of(event_id).and_then(|(item, body)| {
        expected
            .binary_search_by_key(&(item, body), |e| (e.item, e.body))
            .ok()
    });
    let Some(entry) = found
        .map(|at| &mut expected[at])
        .filter(|entry| entry.event.is_some())
    else {
        pass.verification.unexpected += 1;
        pass.note(format!(
            "unexpected row: event_id {event_id} in {} was never sent",
            destination.table()
        ));
        return;
    };
    let event = entry.event.as_ref().expect("filtered on an event");
    let elsewhere =
        event.destination != destination || drop_item.is_some_and(|item| item != entry.item);
    if elsewhere {
        pass.verification.mismatched += 1;
        pass.note(format!(
            "mismatched row: event_id {event_id} ({}) is in {}{}",
            event.name,
            destination.table(),
            drop_item.map_or_else(String::new, |item| format!(
                " under drop_id {}",
                run_id.drop_id(item)
            ))
        ));
    } else {
        entry.copies += 1;
    }
}

/// `provider_events`: matches every row of the run to an event sent, its
/// type as sent.
pub(super) async fn match_provider_events(
    client: &Client,
    scope: &Scope,
    run_id: RunId,
    expected: &mut [Expected],
    pass: &mut Pass,
) -> Result<(), VerifyError> {
    let sql = format!(
        "SELECT event_id::text, event FROM provider_events WHERE {}",
        scope.condition("event_id", 1)
    );
    let mut rows = pin!(client.query_raw(&sql, scope.params()).await?);
    while let Some(row) = rows.try_next().await? {
        let (event_id, name): (String, Option<String>) = (row.get(0), row.get(1));
        let sent_as = run_id.event_of(&event_id).and_then(|(item, body)| {
            let at = expected
                .binary_search_by_key(&(item, body), |e| (e.item, e.body))
                .ok()?;
            expected[at].event.as_ref().map(|event| event.name)
        });
        if sent_as.is_some_and(|sent_as| name.as_deref() != Some(sent_as)) {
            pass.verification.mismatched += 1;
            pass.note(format!(
                "mismatched row: provider_events has event_id {event_id} as {name:?}, sent as {}",
                sent_as.unwrap_or_default()
            ));
            continue;
        }
        let placed = (Destination::ProviderEvents, None);
        match_event(run_id, &event_id, placed, expected, pass);
    }
    Ok(())
}

/// Item `item`'s `deliveries` row holds `foreign_id`: if the drop was
/// reported on both channels, it must be the callback's.
pub(super) fn check_merged(
    run_id: RunId,
    item: u64,
    foreign_id: Option<&str>,
    both: &[BothChannels],
    pass: &mut Pass,
) {
    let Ok(at) = both.binary_search_by_key(&item, |drop| drop.item) else {
        return;
    };
    if foreign_id != Some(both[at].foreign_id.as_str()) {
        pass.verification.unmerged += 1;
        pass.note(format!(
            "unmerged: drop_id {} was reported on both channels and its deliveries row has \
             foreign_id {foreign_id:?}, not the callback's {:?}",
            run_id.drop_id(item),
            both[at].foreign_id
        ));
    }
}
