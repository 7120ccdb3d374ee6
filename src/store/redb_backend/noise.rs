//! Per-rule noise control, decided inside the ingest transaction.
//!
//! Why here: the single writer applies ingests one after another, so two
//! events for the same alert (in one batch or in two concurrent requests)
//! see each other's effect and cannot both pass a dedup window, and the
//! decision is durable with the deliveries it shapes. Two small tables hold
//! the state, both bounded: `alert_noise` keeps one row per (rule, alert)
//! sent within the last [`MAX_DEDUP_SECONDS`], pruned by
//! [`purge_expired`]; `rule_noise` one row per rule with noise controls,
//! removed with its rule or once its window is over and nothing is owed.

use super::tables::*;
use crate::model::AlertState;
use crate::model::DeliveryStatus;
use crate::store::codec::Record;
use crate::store::records::{DeliveryRecord, RuleNoiseRecord};
use crate::store::{MAX_DEDUP_SECONDS, NOISE_WINDOW_MS, NoiseCheck, StoreError};
use redb::{ReadableTable, Table, WriteTransaction};

/// The noise tables an ingest writes.
pub struct NoiseTables<'txn> {
    /// (workspace, rule, alert key) → when the rule last sent it (ms).
    pub alerts: Table<'txn, (u128, u128, &'static str), u64>,
    /// (workspace, rule) → [`RuleNoiseRecord`].
    pub rules: Table<'txn, (u128, u128), &'static [u8]>,
}

impl<'txn> NoiseTables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            alerts: txn.open_table(ALERT_NOISE)?,
            rules: txn.open_table(RULE_NOISE)?,
        })
    }
}

/// Decides whether a new delivery goes out or is suppressed, at `now_ms`,
/// and updates `record` and the noise state to match. Returns true when it
/// was suppressed.
///
/// - `dedup_seconds`: an `alert.triggered` whose alert this rule sent less
///   than that long ago is suppressed; `alert.resolved` forgets the alert,
///   so the next trigger is news again.
/// - `max_per_hour`: a fixed window opens with the first delivery after the
///   previous one closed and lasts an hour; past N deliveries in it the rest
///   are suppressed.
/// - Acknowledged and resolved are never suppressed (they still count).
/// - The next delivery that goes out carries how many were suppressed
///   since the last one (`suppressed_before`).
pub fn decide(
    tables: &mut NoiseTables<'_>,
    ws: u128,
    record: &mut DeliveryRecord,
    check: &NoiseCheck,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let rule = record.rule_id;
    let lifecycle = matches!(
        check.state,
        Some(AlertState::Acknowledged | AlertState::Resolved)
    );
    let mut state = match tables.rules.get((ws, rule))? {
        Some(bytes) => RuleNoiseRecord::decode(bytes.value())?,
        None => RuleNoiseRecord {
            window_start_ms: now_ms,
            sent_in_window: 0,
            suppressed_since_sent: 0,
        },
    };
    if now_ms >= state.window_start_ms.saturating_add(NOISE_WINDOW_MS) {
        state.window_start_ms = now_ms;
        state.sent_in_window = 0;
    }
    let duplicate = match (check.dedup_seconds, check.state, record.alert.as_deref()) {
        (Some(seconds), Some(AlertState::Triggered), Some(alert)) => tables
            .alerts
            .get((ws, rule, alert))?
            .is_some_and(|sent| now_ms < sent.value().saturating_add(u64::from(seconds) * 1000)),
        _ => false,
    };
    let over_rate = check
        .max_per_hour
        .is_some_and(|limit| state.sent_in_window >= limit);
    let suppress = !lifecycle && (duplicate || over_rate);
    if suppress {
        state.suppressed_since_sent = state.suppressed_since_sent.saturating_add(1);
        record.status = DeliveryStatus::Suppressed.into();
        record.next_attempt_at_ms = None;
    } else {
        if state.sent_in_window == 0 {
            state.window_start_ms = now_ms;
        }
        state.sent_in_window = state.sent_in_window.saturating_add(1);
        record.suppressed_before = state.suppressed_since_sent;
        state.suppressed_since_sent = 0;
        if let Some(alert) = record.alert.as_deref() {
            match check.state {
                Some(AlertState::Triggered) if check.dedup_seconds.is_some() => {
                    tables.alerts.insert((ws, rule, alert), now_ms)?;
                }
                Some(AlertState::Resolved) => {
                    tables.alerts.remove((ws, rule, alert))?;
                }
                _ => {}
            }
        }
    }
    tables.rules.insert((ws, rule), state.encode().as_slice())?;
    Ok(suppress)
}

/// Drops alerts sent longer ago than any dedup window, and rule rows whose
/// window is over with nothing suppressed to report. Returns how many.
pub fn purge_expired(txn: &WriteTransaction, now_ms: u64) -> Result<usize, StoreError> {
    let mut removed = 0;
    let alert_cutoff = now_ms.saturating_sub(u64::from(MAX_DEDUP_SECONDS) * 1000);
    txn.open_table(ALERT_NOISE)?.retain(|_, sent| {
        let keep = sent >= alert_cutoff;
        removed += usize::from(!keep);
        keep
    })?;
    let window_cutoff = now_ms.saturating_sub(NOISE_WINDOW_MS);
    txn.open_table(RULE_NOISE)?.retain(|_, bytes| {
        let keep = RuleNoiseRecord::decode(bytes).is_ok_and(|state| {
            state.suppressed_since_sent > 0 || state.window_start_ms > window_cutoff
        });
        removed += usize::from(!keep);
        keep
    })?;
    Ok(removed)
}

/// Forgets a rule's noise state (the rule was deleted).
pub fn forget_rule(txn: &WriteTransaction, ws: u128, rule: u128) -> Result<(), StoreError> {
    txn.open_table(RULE_NOISE)?.remove((ws, rule))?;
    txn.open_table(ALERT_NOISE)?
        .retain_in((ws, rule, "")..(ws, rule.saturating_add(1), ""), |_, _| {
            false
        })?;
    Ok(())
}

/// Forgets a deleted workspace's noise state.
pub fn forget_workspace(txn: &WriteTransaction, ws: u128) -> Result<(), StoreError> {
    txn.open_table(RULE_NOISE)?
        .retain_in((ws, 0)..=(ws, u128::MAX), |_, _| false)?;
    txn.open_table(ALERT_NOISE)?
        .retain_in((ws, 0, "")..(ws.saturating_add(1), 0, ""), |_, _| false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StoredDeliveryStatus;
    use redb::{Database, ReadableTableMetadata};

    fn delivery(rule: u128, alert: &str) -> DeliveryRecord {
        DeliveryRecord {
            event_id: 1,
            rule_id: rule,
            connection_id: 2,
            status: StoredDeliveryStatus::Pending,
            attempt_count: 0,
            round_attempts: 0,
            next_attempt_at_ms: Some(0),
            created_at_ms: 0,
            updated_at_ms: 0,
            alert: Some(alert.into()),
            suppressed_before: 0,
            first_attempt: None,
        }
    }

    /// Runs `decide` for each (state, alert, at) in one transaction; which
    /// were suppressed, and each delivery's `suppressed_before`.
    fn decide_all(check: NoiseCheck, events: &[(AlertState, &str, u64)]) -> (Vec<bool>, Vec<u32>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("noise.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let (mut suppressed, mut carried) = (Vec::new(), Vec::new());
        {
            let mut tables = NoiseTables::open(&txn).unwrap();
            for &(state, alert, at) in events {
                let mut record = delivery(9, alert);
                let check = NoiseCheck {
                    state: Some(state),
                    ..check
                };
                let held = decide(&mut tables, 1, &mut record, &check, at).unwrap();
                assert_eq!(held, record.next_attempt_at_ms.is_none());
                suppressed.push(held);
                carried.push(record.suppressed_before);
            }
        }
        txn.commit().unwrap();
        (suppressed, carried)
    }

    use AlertState::{Acknowledged, Resolved, Triggered};

    #[test]
    fn dedup_holds_a_repeat_within_the_window_only_and_resolve_ends_it() {
        let check = NoiseCheck {
            dedup_seconds: Some(60),
            ..NoiseCheck::default()
        };
        let (suppressed, carried) = decide_all(
            check,
            &[
                (Triggered, "a", 0),
                (Triggered, "a", 59_999),
                (Triggered, "b", 59_999),
                (Triggered, "a", 60_000),
                (Acknowledged, "a", 60_001),
                (Resolved, "a", 60_002),
                (Triggered, "a", 60_003),
                (Triggered, "a", 60_004),
            ],
        );
        assert_eq!(
            suppressed,
            [false, true, false, false, false, false, false, true]
        );
        assert_eq!(carried, [0, 0, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn state_past_every_window_is_purged_and_rules_forget_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("noise.redb")).unwrap();
        let day = u64::from(MAX_DEDUP_SECONDS) * 1000;
        let txn = db.begin_write().unwrap();
        {
            let mut tables = NoiseTables::open(&txn).unwrap();
            let check = NoiseCheck {
                dedup_seconds: Some(60),
                max_per_hour: Some(1),
                state: Some(Triggered),
            };
            // Rule 9 sends "old" at 0 and holds "x" back; rule 8 sends "new"
            // a day later, its window still open.
            decide(&mut tables, 1, &mut delivery(9, "old"), &check, 0).unwrap();
            decide(&mut tables, 1, &mut delivery(9, "x"), &check, 1).unwrap();
            decide(&mut tables, 1, &mut delivery(8, "new"), &check, day).unwrap();
        }
        // Rule 9 still owes a count, so its row stays; its old alert goes.
        assert_eq!(purge_expired(&txn, day + 1).unwrap(), 1);
        forget_rule(&txn, 1, 9).unwrap();
        let alerts = txn.open_table(ALERT_NOISE).unwrap();
        let rules = txn.open_table(RULE_NOISE).unwrap();
        assert!(alerts.get((1, 9, "old")).unwrap().is_none());
        assert!(alerts.get((1, 8, "new")).unwrap().is_some());
        assert!(rules.get((1, 9)).unwrap().is_none());
        assert!(rules.get((1, 8)).unwrap().is_some());
        drop((alerts, rules));
        // An hour after rule 8's window opened, with nothing owed, it goes.
        assert_eq!(purge_expired(&txn, day + NOISE_WINDOW_MS).unwrap(), 1);
        forget_workspace(&txn, 1).unwrap();
        assert!(txn.open_table(ALERT_NOISE).unwrap().is_empty().unwrap());
    }

    #[test]
    fn max_per_hour_is_a_fixed_window_from_its_first_delivery() {
        let check = NoiseCheck {
            max_per_hour: Some(2),
            ..NoiseCheck::default()
        };
        let hour = NOISE_WINDOW_MS;
        let (suppressed, carried) = decide_all(
            check,
            &[
                (Triggered, "a", 1_000),
                (Triggered, "b", 2_000),
                (Triggered, "c", 3_000),
                (Resolved, "c", 4_000),
                (Triggered, "d", 1_000 + hour - 1),
                (Triggered, "e", 1_000 + hour),
                (Triggered, "f", 1_000 + hour + 1),
                (Triggered, "g", 1_000 + hour + 2),
            ],
        );
        assert_eq!(
            suppressed,
            [false, false, true, false, true, false, false, true]
        );
        // The resolve went out over the limit carrying one; the new window's
        // first delivery carries the one held after it.
        assert_eq!(carried, [0, 0, 0, 1, 0, 1, 0, 0]);
    }
}
