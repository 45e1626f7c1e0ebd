//! The closed loop: N virtual users, one keep-alive connection each.

use crate::*;

/// How long a virtual user waits after a failed connect before the next
/// request, so an unreachable target does not turn it into a busy loop.
pub(crate) const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// N virtual users; returns their merged numbers and ledgers.
pub(crate) async fn closed_loop(
    shared: Arc<Shared>,
    connections: usize,
) -> (Stats, Vec<ItemRecord>) {
    let mut users = JoinSet::new();
    for _ in 0..connections {
        users.spawn(virtual_user(shared.clone()));
    }
    let mut stats = Stats::new();
    let mut records = Vec::new();
    while let Some(user) = users.join_next().await {
        let (user_stats, user_records) = user.expect("a virtual user panicked");
        stats.merge(&user_stats);
        records.extend(user_records);
    }
    (stats, records)
}

/// One closed-loop user: one connection (opened again only if it breaks),
/// one request at a time.
pub(crate) async fn virtual_user(shared: Arc<Shared>) -> (Stats, Vec<ItemRecord>) {
    let mut stats = Stats::new();
    let mut records = Vec::new();
    let mut connection: Option<Connection> = None;
    while let Some((item, steps, measured)) = shared.next(Instant::now()) {
        let mut record = ItemRecord::new(&item);
        for step in &item.steps[..steps] {
            let body = step.body;
            let began = Instant::now();
            if !connection.as_ref().is_some_and(Connection::is_open) {
                connection = Connection::open(&shared.target).await.ok();
                if connection.is_some() {
                    shared.connections_opened.fetch_add(1, Relaxed);
                }
            }
            let result = match connection.as_mut() {
                Some(open) => {
                    record.sends[body] += 1;
                    let request = shared.target.request_for(&item, step);
                    open.send(request, shared.timeout).await
                }
                None => Err(Failure::Connect),
            };
            let done = Instant::now();
            match &result {
                Ok(status) if status.is_success() => record.confirms[body] += 1,
                Ok(_) => {}
                Err(_) => connection = None,
            }
            shared.counted(&result, measured);
            if measured {
                stats.record(began, began, done, result);
            }
            if result == Err(Failure::Connect) {
                tokio::time::sleep(CONNECT_BACKOFF).await;
            }
        }
        if record.sent() {
            records.push(record);
        }
    }
    (stats, records)
}
