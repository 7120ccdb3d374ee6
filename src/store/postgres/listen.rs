//! One dedicated connection per node that `LISTEN`s for what the other
//! nodes tell it (`pg_notify`, delivered at their commit).
//!
//! A pooled connection cannot do this (the pool drives its connections and
//! drops what the server sends unasked), so the listener opens its own and
//! reopens it with a backoff when it breaks. Notifications sent while it
//! was down are lost, so after every (re)connect each subscription is told
//! once with an empty payload: "look, something may have changed". Users
//! also poll (the scheduler refills every second on a shared queue), so a
//! lost wake-up costs a delay, never an entry.
//!
//! Each channel is a [`Subscription`]; adding one (cache invalidation, say)
//! is one more entry in the list given to [`start`].

use super::connect;
use crate::config::PostgresConfig;
use std::time::Duration;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// A channel and what to do with each notification on it (its payload; an
/// empty one after a reconnect). Called on the listener's task: keep it
/// short and never blocking.
pub struct Subscription {
    pub channel: &'static str,
    pub on_notify: Box<dyn Fn(&str) + Send + Sync>,
}

/// Listens until `close` is cancelled.
pub fn start(
    settings: PostgresConfig,
    subscriptions: Vec<Subscription>,
    close: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut retry = FIRST_RETRY;
        loop {
            let session = tokio::select! {
                () = close.cancelled() => return,
                session = listen(&settings, &subscriptions) => session,
            };
            match session {
                Ok(()) => retry = FIRST_RETRY,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?retry, "the PostgreSQL notification listener is down");
                }
            }
            tokio::select! {
                () = close.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    })
}

/// One session: connect, `LISTEN` on every channel, hand notifications on
/// until the connection ends. `Ok` if it was up and then ended.
async fn listen(
    settings: &PostgresConfig,
    subscriptions: &[Subscription],
) -> Result<(), super::error::PgError> {
    let (client, mut messages) = connect::dedicated(settings).await?;
    for subscription in subscriptions {
        // Channel names are our own constants, not input.
        client
            .batch_execute(&format!("LISTEN {}", subscription.channel))
            .await?;
    }
    tracing::debug!("listening for PostgreSQL notifications");
    for subscription in subscriptions {
        (subscription.on_notify)("");
    }
    while let Some(message) = messages.recv().await {
        if let AsyncMessage::Notification(notification) = message {
            for subscription in subscriptions {
                if subscription.channel == notification.channel() {
                    (subscription.on_notify)(notification.payload());
                }
            }
        }
    }
    // The client is kept alive until here: dropping it would end the
    // connection.
    drop(client);
    tracing::warn!("the PostgreSQL notification connection ended; reopening it");
    Ok(())
}
