//! Small tables: OAuth states, used launch tokens, Slack threads, and the
//! expiry of noise state.

use super::columns::{id, ms, ms_from};
use super::error::PgResult;
use crate::model::ThreadKey;
use crate::store::MAX_DEDUP_SECONDS;
use crate::store::NOISE_WINDOW_MS;
use tokio_postgres::{GenericClient, Transaction};

fn removed(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

pub async fn put_oauth_state(
    txn: &Transaction<'_>,
    nonce: u128,
    expires_at_ms: u64,
) -> PgResult<()> {
    txn.execute(
        "INSERT INTO oauth_states (nonce, expires_at_ms) VALUES ($1, $2)
         ON CONFLICT (nonce) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms",
        &[&id(nonce), &ms(expires_at_ms)],
    )
    .await?;
    Ok(())
}

/// Uses a nonce up: the delete is the check, so of two nodes racing only
/// one gets the row back.
pub async fn consume_oauth_state(
    txn: &Transaction<'_>,
    nonce: u128,
    now_ms: u64,
) -> PgResult<bool> {
    let row = txn
        .query_opt(
            "DELETE FROM oauth_states WHERE nonce = $1 RETURNING expires_at_ms",
            &[&id(nonce)],
        )
        .await?;
    let expires_at = row.map(|row| row.try_get::<_, i64>(0)).transpose()?;
    Ok(expires_at.is_some_and(|expires_at| now_ms < ms_from(expires_at)))
}

pub async fn purge_oauth_states(txn: &Transaction<'_>, now_ms: u64) -> PgResult<usize> {
    let rows = txn
        .execute(
            "DELETE FROM oauth_states WHERE expires_at_ms <= $1",
            &[&ms(now_ms)],
        )
        .await?;
    Ok(removed(rows))
}

/// True only the first time: the insert is the check.
pub async fn use_launch_token(
    txn: &Transaction<'_>,
    digest: u128,
    expires_at_ms: u64,
) -> PgResult<bool> {
    let inserted = txn
        .execute(
            "INSERT INTO used_launch_tokens (digest, expires_at_ms) VALUES ($1, $2)
             ON CONFLICT (digest) DO NOTHING",
            &[&id(digest), &ms(expires_at_ms)],
        )
        .await?;
    Ok(inserted == 1)
}

pub async fn purge_used_launch_tokens(txn: &Transaction<'_>, now_ms: u64) -> PgResult<usize> {
    let rows = txn
        .execute(
            "DELETE FROM used_launch_tokens WHERE expires_at_ms <= $1",
            &[&ms(now_ms)],
        )
        .await?;
    Ok(removed(rows))
}

pub async fn slack_thread<C: GenericClient + Sync>(
    client: &C,
    key: &ThreadKey,
) -> PgResult<Option<String>> {
    let row = client
        .query_opt(
            "SELECT ts FROM slack_threads
             WHERE workspace_id = $1 AND connection_id = $2 AND channel = $3 AND alert = $4",
            &[
                &id(key.workspace.0),
                &id(key.connection.0),
                &key.channel,
                &key.alert,
            ],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Remembers the thread; a later first message replaces it.
pub async fn save_slack_thread(
    txn: &Transaction<'_>,
    key: &ThreadKey,
    ts: &str,
    now_ms: u64,
) -> PgResult<()> {
    txn.execute(
        "INSERT INTO slack_threads (workspace_id, connection_id, channel, alert, saved_at_ms, ts)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (workspace_id, connection_id, channel, alert) DO UPDATE SET
             saved_at_ms = EXCLUDED.saved_at_ms, ts = EXCLUDED.ts",
        &[
            &id(key.workspace.0),
            &id(key.connection.0),
            &key.channel,
            &key.alert,
            &ms(now_ms),
            &ts,
        ],
    )
    .await?;
    Ok(())
}

pub async fn purge_slack_threads(txn: &Transaction<'_>, older_than_ms: u64) -> PgResult<usize> {
    let rows = txn
        .execute(
            "DELETE FROM slack_threads WHERE saved_at_ms < $1",
            &[&ms(older_than_ms)],
        )
        .await?;
    Ok(removed(rows))
}

/// Drops alerts sent longer ago than any dedup window, and rule windows
/// that are over with nothing suppressed to report.
pub async fn purge_noise_state(txn: &Transaction<'_>, now_ms: u64) -> PgResult<usize> {
    let alert_cutoff = now_ms.saturating_sub(u64::from(MAX_DEDUP_SECONDS) * 1000);
    let alerts = txn
        .execute(
            "DELETE FROM alert_noise WHERE last_sent_ms < $1",
            &[&ms(alert_cutoff)],
        )
        .await?;
    let window_cutoff = now_ms.saturating_sub(NOISE_WINDOW_MS);
    let rules = txn
        .execute(
            "DELETE FROM rule_noise WHERE suppressed_since_sent = 0 AND window_start_ms <= $1",
            &[&ms(window_cutoff)],
        )
        .await?;
    Ok(removed(alerts + rules))
}
