//! Locks that hold across every node sharing the database: PostgreSQL
//! session advisory locks.
//!
//! A lock lives on a connection taken out of the pool for as long as it is
//! held. Dropping the guard drops that connection, and PostgreSQL releases
//! a session's advisory locks when the session ends: so the lock goes on
//! every path (return, error, panic, a cancelled future) with no unlock to
//! await in `Drop`, and a connection still holding a lock can never go
//! back into the pool. Locks are taken rarely (a Slack token refresh, about
//! twice a day per connection), so the connection this costs is nothing.

use super::error::PgResult;
use crate::model::ConnectionId;
use crate::store::{SharedLock, SharedLockGuard, StoreError};
use deadpool_postgres::Pool;
use std::time::Duration;

/// The two-key advisory lock space (apart from the one-key space that
/// migrations and other locks use): the first key names the kind of lock
/// ("SY" and 1), the second the connection (its id folded to 32 bits; two
/// connections that fold alike only wait for each other).
const SLACK_REFRESH: i32 = 0x5359_0001;

fn keys(lock: SharedLock) -> (i32, i32) {
    match lock {
        SharedLock::SlackRefresh(ConnectionId(id)) => (SLACK_REFRESH, fold(id)),
    }
}

fn fold(id: u128) -> i32 {
    let folded = (id as u32) ^ ((id >> 32) as u32) ^ ((id >> 64) as u32) ^ ((id >> 96) as u32);
    folded as i32
}

/// Waits at most `wait` for `lock` (PostgreSQL's `lock_timeout`), then
/// holds it until the guard drops.
pub async fn take(pool: &Pool, lock: SharedLock, wait: Duration) -> PgResult<SharedLockGuard> {
    let client = deadpool_postgres::Object::take(pool.get().await?);
    let (kind, key) = keys(lock);
    let wait_ms = format!("{}ms", wait.as_millis().max(1));
    client
        .execute("SELECT set_config('lock_timeout', $1, false)", &[&wait_ms])
        .await?;
    match client
        .execute("SELECT pg_advisory_lock($1, $2)", &[&kind, &key])
        .await
    {
        Ok(_) => Ok(SharedLockGuard::new(client)),
        Err(error)
            if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
        {
            Err(StoreError::Unavailable(format!(
                "{lock:?} still held by another node after {wait:?}"
            ))
            .into())
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_of_a_connection_id_reaches_its_key() {
        for bit in 0..128 {
            assert_ne!(fold(1u128 << bit), 0, "bit {bit}");
        }
        let lock = SharedLock::SlackRefresh(ConnectionId(7));
        assert_eq!(keys(lock), (SLACK_REFRESH, 7));
    }
}
