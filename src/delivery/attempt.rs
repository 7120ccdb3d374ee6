//! One attempt, start to finish: read the delivery's context (or take the
//! one ingest kept, `warm.rs`), send through its destination, decide the
//! next step, record it durably.

use super::retry::MAX_RETRY_AFTER;
use super::scheduler::EngineDeps;
use super::warm::WarmContext;
use crate::destinations::{Job, Outcome, Verdict};
use crate::model::{Attempt, ConnectionStatus, DeliveryStatus, now_ms};
use crate::store::{AttemptOutcome, DeliveryContext, NextStep, QueueEntry};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// How long a delivery whose outcome could not be stored waits in memory
/// before it is tried again (its queue entry is still in the table).
const STORE_FAILURE_BACKOFF_MS: u64 = 5_000;

/// What an attempt tells the scheduler.
pub enum Report {
    /// The request was answered (or failed): the connection's slot is free
    /// for its next request, after the `Retry-After` pause if there is one.
    Answered {
        entry: QueueEntry,
        pause_connection_until: Option<u64>,
    },
    /// The attempt is over (its outcome recorded, or not: see [`Finished`]).
    Finished(Finished),
}

/// Tells the scheduler once that the attempt's request was answered. If it
/// never does (the attempt ended before sending), [`Report::Finished`] frees
/// the slot.
pub struct Answered {
    reports: mpsc::UnboundedSender<Report>,
    entry: QueueEntry,
}

impl Answered {
    pub fn new(reports: mpsc::UnboundedSender<Report>, entry: QueueEntry) -> Self {
        Self { reports, entry }
    }

    fn send(self, pause_connection_until: Option<u64>) {
        let _ = self.reports.send(Report::Answered {
            entry: self.entry,
            pause_connection_until,
        });
    }
}

/// What the scheduler needs to know once an attempt is over.
pub struct Finished {
    /// The entry as dispatched (its `due_ms` is its queue-table key).
    pub entry: QueueEntry,
    /// The delivery was queued again, due at this time.
    pub next_due_ms: Option<u64>,
    /// Nothing was recorded (storage trouble): run the same entry again at
    /// this time.
    pub rerun_at_ms: Option<u64>,
    /// Hold the whole connection until this time (`Retry-After`).
    pub pause_connection_until: Option<u64>,
}

impl Finished {
    fn done(entry: QueueEntry) -> Self {
        Self {
            entry,
            next_due_ms: None,
            rerun_at_ms: None,
            pause_connection_until: None,
        }
    }

    /// Nothing happened to the entry; try it again after a back-off.
    pub fn again_later(entry: QueueEntry) -> Self {
        Self {
            rerun_at_ms: Some(now_ms() + STORE_FAILURE_BACKOFF_MS),
            ..Self::done(entry)
        }
    }
}

pub async fn run(
    deps: &EngineDeps,
    entry: QueueEntry,
    warm: Option<WarmContext>,
    answered: Answered,
) -> Finished {
    let kept = warm.and_then(|warm| warm.for_attempt(&entry, &deps.rule_index));
    let source = if kept.is_some() { "ingest" } else { "store" };
    crate::telemetry::count(
        "switchyard_attempt_contexts_total",
        &[("source", source)],
        1,
    );
    let read = match kept {
        Some(context) => Ok(Some(context)),
        None => {
            deps.store
                .delivery_context(entry.workspace_id, entry.delivery_id)
                .await
        }
    };
    let context = match read {
        Ok(Some(context)) => context,
        // Gone with its workspace (or never there): its row must not come
        // back at every start.
        Ok(None) => return drop_stale(deps, entry).await,
        Err(error) => {
            tracing::error!(%error, delivery = %entry.delivery_id, "cannot read a due delivery");
            return Finished::again_later(entry);
        }
    };
    // A stale entry: the delivery was finished or queued again meanwhile.
    if context.delivery.next_attempt_at_ms != Some(entry.due_ms) {
        return drop_stale(deps, entry).await;
    }

    let at_ms = now_ms();
    let started = Instant::now();
    let outcome = send(deps, &context).await;
    let duration = started.elapsed();
    let finished_ms = at_ms + duration.as_millis() as u64;

    let (next, error, retry_after, connection_status) = match &outcome.verdict {
        Verdict::Delivered => (NextStep::Succeeded, None, None, None),
        Verdict::Retry { error, retry_after } => {
            let failed = context.round_attempts + 1;
            let jitter = rand::random::<f64>() * 2.0 - 1.0;
            let next = deps
                .policy
                .next_attempt_at(failed, *retry_after, jitter, finished_ms)
                .map_or(NextStep::Dead, NextStep::RetryAt);
            (next, Some(error.clone()), *retry_after, None)
        }
        Verdict::Permanent {
            error,
            connection_status,
        } => (
            NextStep::Dead,
            Some(error.clone()),
            None,
            *connection_status,
        ),
    };
    record_metrics(&context, &outcome, &next, duration.as_secs_f64());
    let pause_connection_until = retry_after
        .map(|wait| finished_ms.saturating_add(wait.min(MAX_RETRY_AFTER).as_millis() as u64));
    // The connection may take its next request while this outcome is
    // written, unless the answer changes the connection itself (a 410
    // disables it): then nothing more goes out until that is recorded.
    if connection_status.is_none() {
        answered.send(pause_connection_until);
    }

    let written = deps
        .store
        .record_attempt(AttemptOutcome {
            workspace_id: entry.workspace_id,
            delivery_id: entry.delivery_id,
            attempt: Attempt {
                at_ms,
                duration_ms: duration.as_millis() as u64,
                status_code: outcome.status_code,
                error,
                response: outcome.response,
            },
            next: next.clone(),
            connection_status,
            pause_connection_until,
        })
        .await;
    match written {
        // Its workspace was deleted meanwhile, or (nodes sharing a queue)
        // another node holds the connection now: nothing was recorded and
        // nothing is due again here.
        Ok(None) => Finished::done(entry),
        Ok(Some(_)) => {
            if connection_status.is_some() {
                deps.rule_index.invalidate(entry.workspace_id);
            }
            Finished {
                entry,
                next_due_ms: match next {
                    NextStep::RetryAt(due) => Some(due),
                    NextStep::Succeeded | NextStep::Dead => None,
                },
                rerun_at_ms: None,
                pause_connection_until,
            }
        }
        Err(error) => {
            tracing::error!(%error, delivery = %entry.delivery_id, "cannot record an attempt");
            Finished::again_later(entry)
        }
    }
}

/// Sends through the destination unless the delivery cannot go anywhere.
async fn send(deps: &EngineDeps, context: &DeliveryContext) -> Outcome {
    let Some(rule) = &context.rule else {
        return Outcome::permanent("the rule of this delivery was deleted");
    };
    let Some(connection) = &context.connection else {
        return Outcome::permanent("the connection of this delivery was deleted");
    };
    match connection.status {
        ConnectionStatus::Active => {}
        ConnectionStatus::Disabled => return Outcome::permanent("the connection is disabled"),
        ConnectionStatus::NeedsReauth => {
            return Outcome::permanent("the connection needs to be authorised again");
        }
    }
    let secrets = match deps
        .destinations
        .opened_secrets(&deps.master_key, connection)
    {
        Ok(secrets) => secrets,
        Err(error) => {
            tracing::error!(%error, connection = %connection.id, "cannot open connection secrets");
            return Outcome::permanent(
                "the connection's secrets cannot be decrypted with this master key",
            );
        }
    };
    let job = Job {
        delivery: &context.delivery,
        event: &context.event,
        rule,
        connection,
        secrets: secrets.value(),
        now: SystemTime::now(),
    };
    deps.destinations.send(&job).await
}

fn record_metrics(context: &DeliveryContext, outcome: &Outcome, next: &NextStep, seconds: f64) {
    let kind = context
        .connection
        .as_ref()
        .map_or("unknown", |connection| connection.kind.as_str());
    crate::telemetry::record(
        "switchyard_attempt_duration_seconds",
        &[("type", kind)],
        seconds,
    );
    let result = match next {
        NextStep::Succeeded => DeliveryStatus::Succeeded.as_str(),
        NextStep::RetryAt(_) => DeliveryStatus::Retrying.as_str(),
        NextStep::Dead => DeliveryStatus::Dead.as_str(),
    };
    crate::telemetry::count(
        "switchyard_attempts_total",
        &[("type", kind), ("result", result)],
        1,
    );
    if !matches!(outcome.verdict, Verdict::Delivered) {
        let connection = context.delivery.connection_id.to_string();
        metrics::counter!("switchyard_connection_failures_total", "connection" => connection)
            .increment(1);
    }
}

/// Finishes an entry that stands for no attempt, removing its queue row if
/// one is left (the store checks again inside its transaction).
async fn drop_stale(deps: &EngineDeps, entry: QueueEntry) -> Finished {
    match deps.store.drop_stale_queue_entry(entry).await {
        Ok(true) => tracing::debug!(delivery = %entry.delivery_id, "stale queue entry removed"),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, delivery = %entry.delivery_id, "cannot remove a stale queue entry");
        }
    }
    Finished::done(entry)
}
