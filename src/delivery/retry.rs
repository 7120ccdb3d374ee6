//! Retry timing as pure functions: the schedule with jitter and the
//! `Retry-After` cap (destinations parse the header:
//! `destinations::retry_after`). No clocks are read here; callers pass `now`.

use std::time::Duration;

/// Longest `Retry-After` honoured; longer answers are capped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Each scheduled delay is moved by up to this fraction either way, so
/// deliveries that failed together do not retry in lockstep.
pub const JITTER: f64 = 0.2;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
}

impl RetryPolicy {
    /// `schedule[i]` is the delay after the (i+1)-th failed attempt; N delays
    /// allow N+1 attempts.
    pub fn new(schedule_seconds: &[u64]) -> Self {
        Self {
            schedule: schedule_seconds
                .iter()
                .map(|secs| Duration::from_secs(*secs))
                .collect(),
        }
    }

    /// When to try again after `failed_attempts` failures in this round, or
    /// `None` when the schedule is exhausted. `jitter` is in [-1, 1];
    /// `retry_after` (from a 429 or 503) replaces the scheduled delay.
    pub fn next_attempt_at(
        &self,
        failed_attempts: u32,
        retry_after: Option<Duration>,
        jitter: f64,
        now_ms: u64,
    ) -> Option<u64> {
        let index = usize::try_from(failed_attempts.checked_sub(1)?).ok()?;
        let scheduled = self.schedule.get(index)?;
        let delay = match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => jittered(*scheduled, jitter),
        };
        Some(now_ms.saturating_add(delay.as_millis() as u64))
    }
}

fn jittered(delay: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + JITTER * jitter.clamp(-1.0, 1.0);
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&[5, 300, 1800])
    }

    #[test]
    fn n_delays_allow_n_plus_one_attempts() {
        let policy = policy();
        assert_eq!(policy.next_attempt_at(1, None, 0.0, NOW), Some(NOW + 5_000));
        assert_eq!(
            policy.next_attempt_at(2, None, 0.0, NOW),
            Some(NOW + 300_000)
        );
        assert_eq!(
            policy.next_attempt_at(3, None, 0.0, NOW),
            Some(NOW + 1_800_000)
        );
        assert_eq!(
            policy.next_attempt_at(4, None, 0.0, NOW),
            None,
            "4 attempts made: dead"
        );
        assert_eq!(policy.next_attempt_at(0, None, 0.0, NOW), None);
        assert_eq!(
            RetryPolicy::new(&[]).next_attempt_at(1, None, 0.0, NOW),
            None
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy = policy();
        assert_eq!(
            policy.next_attempt_at(2, None, 1.0, NOW),
            Some(NOW + 360_000)
        );
        assert_eq!(
            policy.next_attempt_at(2, None, -1.0, NOW),
            Some(NOW + 240_000)
        );
        assert_eq!(
            policy.next_attempt_at(2, None, 7.0, NOW),
            Some(NOW + 360_000),
            "clamped"
        );
    }

    #[test]
    fn retry_after_replaces_the_schedule_and_is_capped() {
        let policy = policy();
        let wait = Some(Duration::from_secs(42));
        assert_eq!(
            policy.next_attempt_at(1, wait, 1.0, NOW),
            Some(NOW + 42_000)
        );
        let long = Some(Duration::from_secs(86_400));
        assert_eq!(
            policy.next_attempt_at(1, long, 0.0, NOW),
            Some(NOW + 3_600_000)
        );
        assert_eq!(
            policy.next_attempt_at(4, wait, 0.0, NOW),
            None,
            "still counts as an attempt"
        );
    }
}
