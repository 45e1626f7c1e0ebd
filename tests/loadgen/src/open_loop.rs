//! The open loop: requests at their scheduled times, on a bounded pool.

use crate::*;

/// Numbers and ledger the open loop's item tasks share.
#[derive(Debug)]
pub(crate) struct OpenSink {
    pub(crate) stats: Stats,
    pub(crate) records: Vec<ItemRecord>,
}

/// Schedules request `k` at `start + k / rate`, each item in a task of its
/// own (its second request waits for the first's answer and for its slot).
pub(crate) async fn open_loop(
    shared: Arc<Shared>,
    rate: f64,
    max_connections: usize,
    start: Instant,
) -> (Stats, Vec<ItemRecord>) {
    let pool = Arc::new(Pool::new(shared.target.clone(), max_connections));
    let sink = Arc::new(Mutex::new(OpenSink {
        stats: Stats::new(),
        records: Vec::new(),
    }));
    let at = |slot: u64| start + Duration::from_secs_f64(slot as f64 / rate);
    let mut tasks = JoinSet::new();
    let mut slot = 0u64;
    while let Some((item, steps, measured)) = shared.next(at(slot)) {
        let times: Vec<Instant> = (0..steps as u64).map(|k| at(slot + k)).collect();
        slot += steps as u64;
        tokio::time::sleep_until(times[0].into()).await;
        tasks.spawn(open_item(
            shared.clone(),
            pool.clone(),
            sink.clone(),
            item,
            steps,
            times,
            measured,
        ));
        while let Some(finished) = tasks.try_join_next() {
            finished.expect("an item task panicked");
        }
    }
    while let Some(finished) = tasks.join_next().await {
        finished.expect("an item task panicked");
    }
    let sink = Arc::try_unwrap(sink)
        .expect("every item task has finished")
        .into_inner()
        .expect("sink lock");
    (sink.stats, sink.records)
}

pub(crate) async fn open_item(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    sink: Arc<Mutex<OpenSink>>,
    item: Item,
    steps: usize,
    times: Vec<Instant>,
    measured: bool,
) {
    let mut record = ItemRecord::new(&item);
    for (step, &scheduled) in item.steps[..steps].iter().zip(&times) {
        tokio::time::sleep_until(scheduled.into()).await;
        let body = step.body;
        let (permit, acquired) = pool.acquire().await;
        let sent = Instant::now();
        let result = match acquired {
            Ok((mut connection, opened)) => {
                if opened {
                    shared.connections_opened.fetch_add(1, Relaxed);
                }
                record.sends[body] += 1;
                let request = pool.target().request_for(&item, step);
                let result = connection.send(request, shared.timeout).await;
                if result.is_ok() {
                    pool.release(connection);
                }
                result
            }
            Err(failure) => Err(failure),
        };
        drop(permit);
        let done = Instant::now();
        if result.as_ref().is_ok_and(|status| status.is_success()) {
            record.confirms[body] += 1;
        }
        shared.counted(&result, measured);
        if measured {
            sink.lock()
                .expect("sink lock")
                .stats
                .record(scheduled, sent, done, result);
        }
    }
    if record.sent() {
        sink.lock().expect("sink lock").records.push(record);
    }
}
