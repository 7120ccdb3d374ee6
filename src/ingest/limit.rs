//! The per-workspace ingest limit (`limits.events_per_second`, with a burst
//! of `limits.burst_seconds` seconds' worth): one tenant's flood cannot take
//! the single writer from the others.
//!
//! It is `governor`'s keyed GCRA limiter rather than a hand-rolled bucket:
//! GCRA keeps one timestamp per key (no refill task), `check_key_n` takes a
//! batch all or nothing and says when it would fit, and the crate is well
//! kept and tested. Keys are workspaces that authenticated, so the map is
//! bounded by the workspaces that exist; deleted or idle ones are pruned on
//! the request path (see [`IngestLimiter::check`]).

use crate::config::LimitsConfig;
use crate::model::WorkspaceId;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How often (in checks) the limiter looks at its size.
pub const PRUNE_CHECK_EVERY: u64 = 1024;
/// Below this many keys the limiter is never pruned.
pub const PRUNE_MIN_KEYS: usize = 1024;

type Keyed<C> = RateLimiter<
    WorkspaceId,
    DefaultKeyedStateStore<WorkspaceId>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Why an ingest was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Over the rate now; the whole request fits after `retry_after_secs`.
    #[error("this workspace is over its limit of {per_second} events per second")]
    RateLimited {
        per_second: u32,
        retry_after_secs: u64,
    },
    /// More events in one request than the whole burst: retrying can never
    /// help, the batch must be split.
    #[error(
        "a batch of {events} events is more than this workspace's burst of {burst} \
         (limits.events_per_second × limits.burst_seconds); send it in smaller batches"
    )]
    OverBurst { events: usize, burst: u32 },
}

/// The ingest limit of every workspace; off when `events_per_second` is 0.
pub struct IngestLimiter<C: Clock + Clone = MonotonicClock> {
    limiter: Option<Limited<C>>,
}

struct Limited<C: Clock> {
    keyed: Keyed<C>,
    clock: C,
    per_second: u32,
    burst: u32,
    checks: AtomicU64,
    /// Size at which the next prune happens: twice what the last one left,
    /// so pruning costs O(1) per check on average.
    prune_at: AtomicUsize,
}

impl IngestLimiter<MonotonicClock> {
    pub fn from_config(limits: &LimitsConfig) -> Self {
        Self::with_clock(
            limits.events_per_second,
            limits.burst_seconds,
            MonotonicClock,
        )
    }
}

impl<C: Clock + Clone> IngestLimiter<C> {
    pub fn with_clock(per_second: u32, burst_seconds: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            // Config validation keeps burst_seconds ≥ 1 when the limit is on.
            let burst = NonZeroU32::new(per_second.saturating_mul(burst_seconds)).unwrap_or(rate);
            let quota = Quota::per_second(rate).allow_burst(burst);
            Limited {
                keyed: RateLimiter::dashmap_with_clock(quota, clock.clone()),
                clock,
                per_second,
                burst: burst.get(),
                checks: AtomicU64::new(0),
                prune_at: AtomicUsize::new(PRUNE_MIN_KEYS),
            }
        });
        Self { limiter }
    }

    /// Takes `events` from the workspace's allowance, all or nothing.
    pub fn check(&self, workspace: WorkspaceId, events: usize) -> Result<(), Refusal> {
        let Some(limited) = &self.limiter else {
            return Ok(());
        };
        limited.prune_now_and_then();
        let over_burst = Refusal::OverBurst {
            events,
            burst: limited.burst,
        };
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return if events == 0 { Ok(()) } else { Err(over_burst) };
        };
        match limited.keyed.check_key_n(&workspace, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::RateLimited {
                per_second: limited.per_second,
                retry_after_secs: retry_after_secs(not_until.wait_time_from(limited.clock.now())),
            }),
            Err(_insufficient_capacity) => Err(over_burst),
        }
    }

    /// Workspaces whose state the limiter holds (for tests and bounds).
    pub fn tracked_workspaces(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, |limited| limited.keyed.len())
    }
}

impl<C: Clock> Limited<C> {
    /// Drops workspaces whose bucket is full again (indistinguishable from
    /// a fresh one), when the map has doubled since the last prune.
    fn prune_now_and_then(&self) {
        if !self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_CHECK_EVERY)
        {
            return;
        }
        if self.keyed.len() < self.prune_at.load(Ordering::Relaxed) {
            return;
        }
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
        let left = self.keyed.len();
        self.prune_at.store(
            PRUNE_MIN_KEYS.max(left.saturating_mul(2)),
            Ordering::Relaxed,
        );
    }
}

/// `Retry-After` in whole seconds: rounded up, so a client that waits that
/// long is let in, and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        per_second: u32,
        burst_seconds: u32,
    ) -> (IngestLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            IngestLimiter::with_clock(per_second, burst_seconds, clock.clone()),
            clock,
        )
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        for (wait, expected) in [
            (Duration::ZERO, 1),
            (Duration::from_nanos(1), 1),
            (Duration::from_millis(999), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1001), 2),
            (Duration::from_millis(2500), 3),
            (Duration::from_secs(7), 7),
        ] {
            assert_eq!(retry_after_secs(wait), expected, "{wait:?}");
        }
    }

    #[test]
    fn zero_events_per_second_turns_the_limit_off() {
        let (limiter, _) = limiter(0, 5);
        let ws = WorkspaceId::new();
        for _ in 0..10_000 {
            assert_eq!(limiter.check(ws, 500), Ok(()));
        }
        assert_eq!(limiter.tracked_workspaces(), 0);
    }

    #[test]
    fn a_workspace_gets_its_burst_then_the_rate_and_others_are_untouched() {
        let (limiter, clock) = limiter(2, 1);
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        assert_eq!(limiter.check(a, 1), Ok(()));
        assert_eq!(limiter.check(a, 1), Ok(()));
        assert_eq!(
            limiter.check(a, 1),
            Err(Refusal::RateLimited {
                per_second: 2,
                retry_after_secs: 1
            })
        );
        assert_eq!(limiter.check(b, 2), Ok(()), "another workspace's bucket");
        // One event comes back every half second.
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(a, 1), Ok(()));
        assert!(limiter.check(a, 1).is_err());
    }

    #[test]
    fn a_batch_counts_each_event_and_waits_until_all_of_it_fits() {
        let (limiter, clock) = limiter(2, 2);
        let ws = WorkspaceId::new();
        assert_eq!(limiter.check(ws, 3), Ok(()));
        // One left; four need 1.5 s more, which is 2 s in whole seconds.
        assert_eq!(
            limiter.check(ws, 4),
            Err(Refusal::RateLimited {
                per_second: 2,
                retry_after_secs: 2
            })
        );
        clock.advance(Duration::from_millis(1500));
        assert_eq!(limiter.check(ws, 4), Ok(()));
    }

    #[test]
    fn a_batch_larger_than_the_burst_can_never_pass() {
        let (limiter, _) = limiter(2, 3);
        let ws = WorkspaceId::new();
        assert_eq!(
            limiter.check(ws, 7),
            Err(Refusal::OverBurst {
                events: 7,
                burst: 6
            })
        );
        assert_eq!(limiter.check(ws, 6), Ok(()), "nothing was taken");
    }

    #[test]
    fn workspaces_whose_bucket_refilled_are_pruned_so_the_map_stays_bounded() {
        let (limiter, clock) = limiter(1, 1);
        let wave = 2 * PRUNE_MIN_KEYS;
        let waves = 10;
        let mut largest = 0;
        for _ in 0..waves {
            for _ in 0..wave {
                limiter.check(WorkspaceId::new(), 1).unwrap();
                largest = largest.max(limiter.tracked_workspaces());
            }
            // Every bucket of this wave is full again: the workspaces are
            // indistinguishable from new ones and may go.
            clock.advance(Duration::from_secs(2));
        }
        // Without pruning the map would hold every workspace ever seen.
        assert!(
            largest <= 2 * wave + PRUNE_CHECK_EVERY as usize,
            "held {largest} of {} workspaces seen",
            waves * wave
        );
    }
}
