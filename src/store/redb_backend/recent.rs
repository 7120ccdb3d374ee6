//! Attempt outcomes that a read transaction begun now might not see yet,
//! by delivery: lets a delivery's context be read without making the
//! writer commit.
//!
//! While the writer holds answered writes that no commit holds
//! ([`Writer::holds_unpublished`](super::writer::Writer::holds_unpublished)),
//! a read that must see them waits for the writer's snapshot: a commit of
//! the open transaction at its next turn. For the context of an attempt
//! (`Store::delivery_context`) that commit was most of the cost of a first
//! attempt whose context ingest had not kept: about 44 k more instructions
//! in the writer per delivered event (docs/benchmarks.md, twentieth sitting).
//!
//! A context (the workspace, the delivery's row, its event, rule and
//! connection) changes through the write-ahead log's writes in two ways
//! only: the ingest that creates the delivery, and the outcomes of its own
//! attempts. Every other change to it (a rule or connection edited, a
//! requeue by hand, a connection an outcome disables, a workspace deleted)
//! is not logged, so it is committed before it is answered. So a read begun
//! now sees every write answered for a delivery when it finds the delivery
//! at all (else the ingest that created it may be unpublished: read the
//! writer's snapshot) and no outcome of it waits for a commit. This map
//! says the latter: for each delivery whose outcome was answered lately,
//! the count of publishing commits ([`Writer::publishes`]) that holds it.
//!
//! An outcome counts from the moment its write returns to the store: a read
//! that runs while the outcome is being written may or may not see it, as
//! with any write and read that overlap. The scheduler reads a delivery's
//! context again only after its previous attempt's outcome has returned,
//! and it never drops that write's future before then (a dropped one would
//! leave its outcome untracked: the write still happens).
//!
//! Bounded: at most [`MAX_TRACKED`] deliveries. When the map is full,
//! entries already published go; if that is not enough (more outcomes
//! than that wait in one open transaction, which can take a batch past
//! `PUBLISH_AFTER_JOBS`), every read waits for the publishing commit the
//! newest of them needs instead (`floor`) and the map starts over.
//!
//! [`Writer::publishes`]: super::writer::Writer::publishes

use crate::model::{DeliveryId, IdMap};
use std::sync::{Mutex, PoisonError};

/// Deliveries tracked at most.
pub const MAX_TRACKED: usize = 4096;

/// See the module comment.
#[derive(Default)]
pub struct RecentOutcomes {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Publishing commits every read needs to have seen.
    floor: u64,
    /// Publishing commits a read of the delivery needs to have seen.
    needs: IdMap<u128, u64>,
}

impl RecentOutcomes {
    /// An outcome for `delivery` was answered; `publishes` is the
    /// writer's count read after the answer. The open transaction that may
    /// hold it is published by the next publishing commit at the latest.
    pub fn answered(&self, delivery: DeliveryId, publishes: u64) {
        let needed = publishes + 1;
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner.needs.entry(delivery.0).or_insert(needed);
        *entry = (*entry).max(needed);
        if inner.needs.len() > MAX_TRACKED {
            inner.needs.retain(|_, needs| *needs > publishes);
            if inner.needs.len() > MAX_TRACKED {
                // Another caller may have read a later count than this
                // one: the floor is the most any entry needs.
                let most = inner.needs.values().copied().max().unwrap_or(needed);
                inner.floor = inner.floor.max(most);
                inner.needs.clear();
            }
        }
    }

    /// True when a read transaction begun after `publishes` was read from
    /// the writer holds every outcome answered for `delivery`.
    pub fn seen_by(&self, delivery: DeliveryId, publishes: u64) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.floor <= publishes
            && inner
                .needs
                .get(&delivery.0)
                .is_none_or(|needs| *needs <= publishes)
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, u64) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.needs.len(), inner.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_seen_once_the_next_publishing_commit_is() {
        let recent = RecentOutcomes::default();
        assert!(recent.seen_by(DeliveryId(1), 0), "nothing answered yet");
        recent.answered(DeliveryId(1), 5);
        assert!(!recent.seen_by(DeliveryId(1), 5));
        assert!(recent.seen_by(DeliveryId(1), 6));
        assert!(recent.seen_by(DeliveryId(2), 5), "another delivery");
        // A later outcome of the same delivery, answered after another
        // publish, needs that one's successor.
        recent.answered(DeliveryId(1), 6);
        assert!(!recent.seen_by(DeliveryId(1), 6));
        assert!(recent.seen_by(DeliveryId(1), 7));
    }

    #[test]
    fn the_map_stays_within_its_bound_and_never_says_seen_too_early() {
        let recent = RecentOutcomes::default();
        // More outcomes than the bound, none of them published yet.
        let count = MAX_TRACKED as u128 * 3;
        for id in 0..count {
            recent.answered(DeliveryId(id), 9);
            assert!(recent.tracked().0 <= MAX_TRACKED);
        }
        for id in 0..count {
            assert!(!recent.seen_by(DeliveryId(id), 9), "delivery {id}");
            assert!(recent.seen_by(DeliveryId(id), 10), "delivery {id}");
        }
        // Published ones make room without raising the floor.
        let recent = RecentOutcomes::default();
        for id in 0..count {
            recent.answered(DeliveryId(id), id as u64);
            assert!(recent.tracked().0 <= MAX_TRACKED);
            assert_eq!(recent.tracked().1, 0, "floor not raised");
        }
        let last = count - 1;
        assert!(!recent.seen_by(DeliveryId(last), last as u64));
        assert!(recent.seen_by(DeliveryId(0), 1));
    }

    /// A caller that read the count before a publish can fill the map
    /// after others that read it after: the floor must cover them all.
    #[test]
    fn a_late_caller_that_fills_the_map_does_not_lower_what_others_need() {
        let recent = RecentOutcomes::default();
        for id in 0..MAX_TRACKED as u128 {
            recent.answered(DeliveryId(id), 6);
        }
        recent.answered(DeliveryId(u128::MAX), 5);
        assert_eq!(recent.tracked(), (0, 7));
        assert!(!recent.seen_by(DeliveryId(0), 6));
        assert!(recent.seen_by(DeliveryId(0), 7));
    }
}
