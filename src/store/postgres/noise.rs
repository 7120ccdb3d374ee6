//! Per-rule noise control, decided inside the ingest transaction, as the
//! redb store does (`redb_backend/noise.rs` explains why there): the rows a
//! batch needs are read `FOR UPDATE`, so two nodes ingesting events of one
//! alert at once decide one after the other; the decisions are made here
//! in memory, in ingest order, and written back in the same transaction.

use crate::model::AlertState;
use crate::store::{NOISE_WINDOW_MS, NoiseCheck};
use std::collections::HashMap;

/// One rule's `max_per_hour` window and what it held back since it last
/// sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleWindow {
    pub window_start_ms: u64,
    pub sent_in_window: u32,
    pub suppressed_since_sent: u32,
}

/// The noise rows one ingest batch touches, keyed by (workspace, rule) and
/// (workspace, rule, alert).
#[derive(Debug, Default)]
pub struct NoiseState {
    pub rules: HashMap<(u128, u128), RuleWindow>,
    /// When the rule last sent the alert; `None`: forgotten (resolved).
    pub alerts: HashMap<(u128, u128, String), Option<u64>>,
}

/// What [`NoiseState::decide`] said about one new delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub suppress: bool,
    /// For one that goes out: how many were suppressed before it.
    pub suppressed_before: u32,
}

impl NoiseState {
    /// Decides whether a new delivery of `rule` for `alert` at `now_ms` goes
    /// out, and updates the state to match. Same rules as redb's:
    /// - `dedup_seconds`: a trigger of an alert this rule sent less than
    ///   that long ago is suppressed; a resolve forgets the alert.
    /// - `max_per_hour`: a fixed window opens with the first delivery after
    ///   the previous one closed; past N in it the rest are suppressed.
    /// - Acknowledged and resolved are never suppressed (they still count).
    pub fn decide(
        &mut self,
        ws: u128,
        rule: u128,
        alert: Option<&str>,
        check: &NoiseCheck,
        now_ms: u64,
    ) -> Decision {
        let lifecycle = matches!(
            check.state,
            Some(AlertState::Acknowledged | AlertState::Resolved)
        );
        let mut window = self.rules.get(&(ws, rule)).copied().unwrap_or(RuleWindow {
            window_start_ms: now_ms,
            sent_in_window: 0,
            suppressed_since_sent: 0,
        });
        if now_ms >= window.window_start_ms.saturating_add(NOISE_WINDOW_MS) {
            window.window_start_ms = now_ms;
            window.sent_in_window = 0;
        }
        let duplicate = match (check.dedup_seconds, check.state, alert) {
            (Some(seconds), Some(AlertState::Triggered), Some(alert)) => self
                .alerts
                .get(&(ws, rule, alert.to_string()))
                .copied()
                .flatten()
                .is_some_and(|sent| now_ms < sent.saturating_add(u64::from(seconds) * 1000)),
            _ => false,
        };
        let over_rate = check
            .max_per_hour
            .is_some_and(|limit| window.sent_in_window >= limit);
        let suppress = !lifecycle && (duplicate || over_rate);
        let mut suppressed_before = 0;
        if suppress {
            window.suppressed_since_sent = window.suppressed_since_sent.saturating_add(1);
        } else {
            if window.sent_in_window == 0 {
                window.window_start_ms = now_ms;
            }
            window.sent_in_window = window.sent_in_window.saturating_add(1);
            suppressed_before = window.suppressed_since_sent;
            window.suppressed_since_sent = 0;
            if let Some(alert) = alert {
                let key = (ws, rule, alert.to_string());
                match check.state {
                    Some(AlertState::Triggered) if check.dedup_seconds.is_some() => {
                        self.alerts.insert(key, Some(now_ms));
                    }
                    Some(AlertState::Resolved) => {
                        self.alerts.insert(key, None);
                    }
                    _ => {}
                }
            }
        }
        self.rules.insert((ws, rule), window);
        Decision {
            suppress,
            suppressed_before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dedup: Option<u32>, max: Option<u32>, state: AlertState) -> NoiseCheck {
        NoiseCheck {
            dedup_seconds: dedup,
            max_per_hour: max,
            state: Some(state),
        }
    }

    #[test]
    fn dedup_holds_a_repeat_within_the_window_only_and_resolve_ends_it() {
        let mut state = NoiseState::default();
        let dedup = check(Some(60), None, AlertState::Triggered);
        let resolve = check(Some(60), None, AlertState::Resolved);
        let mut run = |check: &NoiseCheck, at: u64| state.decide(1, 2, Some("a"), check, at);
        assert!(!run(&dedup, 0).suppress);
        assert!(run(&dedup, 59_999).suppress);
        let after = run(&dedup, 60_000);
        assert_eq!((after.suppress, after.suppressed_before), (false, 1));
        assert!(!run(&resolve, 60_001).suppress);
        assert!(!run(&dedup, 60_002).suppress, "a resolve forgets the alert");
    }

    #[test]
    fn max_per_hour_is_a_fixed_window_and_lifecycle_events_always_go() {
        let mut state = NoiseState::default();
        let capped = check(None, Some(2), AlertState::Triggered);
        let ack = check(None, Some(2), AlertState::Acknowledged);
        let sent: Vec<bool> = [0, 1, 2, 3]
            .iter()
            .map(|at| !state.decide(1, 2, None, &capped, *at).suppress)
            .collect();
        assert_eq!(sent, [true, true, false, false]);
        let acknowledged = state.decide(1, 2, None, &ack, 4);
        assert_eq!(
            (acknowledged.suppress, acknowledged.suppressed_before),
            (false, 2)
        );
        assert!(state.decide(1, 2, None, &capped, 5).suppress);
        let next_hour = state.decide(1, 2, None, &capped, NOISE_WINDOW_MS);
        assert_eq!(
            (next_hour.suppress, next_hour.suppressed_before),
            (false, 1)
        );
        assert!(!state.decide(1, 3, None, &capped, 5).suppress, "per rule");
    }
}
