//! The retention task: every `retention.interval`, a sweep removes the
//! events received more than `retention.events` ago, with their deliveries
//! and attempts, a bounded number of rows per transaction (through the one
//! writer, so ingest keeps committing in between). What it removes is
//! counted in `switchyard_retention_deleted_total{table}`; the task also
//! keeps `switchyard_database_bytes` current.

use crate::config::RetentionConfig;
use crate::model::now_ms;
use crate::store::{RetentionStep, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Rows examined or removed per transaction, as for deleted workspaces:
/// a few milliseconds of the writer's time.
pub const ROWS_PER_COMMIT: usize = 2_000;

/// Runs a sweep every `config.interval` until `shutdown`; with retention
/// `"0"` it only keeps the database size gauge current.
pub async fn run(
    store: Arc<dyn Store>,
    config: RetentionConfig,
    database: PathBuf,
    shutdown: CancellationToken,
) {
    for table in ["events", "deliveries", "attempts"] {
        // Registered at zero, so the series exist before the first removal.
        metrics::counter!("switchyard_retention_deleted_total", "table" => table).increment(0);
    }
    let keep = config.events.duration();
    let mut interval = tokio::time::interval(config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Some(keep) = keep {
            // A retention longer than u64 milliseconds keeps everything.
            let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
            let cutoff_ms = now_ms().saturating_sub(keep_ms);
            match sweep(store.as_ref(), cutoff_ms, ROWS_PER_COMMIT, &shutdown).await {
                Ok(swept) if swept.events > 0 => tracing::info!(
                    events = swept.events,
                    deliveries = swept.deliveries,
                    attempts = swept.attempts,
                    held = swept.held,
                    "retention removed old events"
                ),
                Ok(swept) if swept.held > 0 => tracing::debug!(
                    held = swept.held,
                    "retention kept old events whose deliveries are still queued"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "the retention sweep stopped"),
            }
        }
        crate::telemetry::record_database_size(&database);
    }
}

/// One whole sweep, step by step, until every event received before
/// `cutoff_ms` has been looked at (or shutdown); the summed counts.
pub async fn sweep(
    store: &dyn Store,
    cutoff_ms: u64,
    budget: usize,
    shutdown: &CancellationToken,
) -> Result<RetentionStep, StoreError> {
    let mut swept = RetentionStep::default();
    while !shutdown.is_cancelled() {
        let step = store
            .purge_old_events(cutoff_ms, swept.next, budget)
            .await?;
        for (table, rows) in [
            ("events", step.events),
            ("deliveries", step.deliveries),
            ("attempts", step.attempts),
        ] {
            metrics::counter!("switchyard_retention_deleted_total", "table" => table)
                .increment(rows);
        }
        swept.add(&step);
        if swept.next.is_none() {
            break;
        }
    }
    Ok(swept)
}
