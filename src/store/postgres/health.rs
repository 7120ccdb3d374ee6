//! Whether the database takes writes now. A connection failure flips the
//! store's `writable` watch to false (`/readyz` 503, ingest 503, the
//! delivery engine pauses) and starts one probe that retries `SELECT 1` on
//! a backoff from 0.5 s to 5 s; the first that gets through flips it back.
//! Nothing needs restarting: the pool opens fresh connections on demand.

use super::error::PgError;
use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

const FIRST_PROBE: Duration = Duration::from_millis(500);
const LAST_PROBE: Duration = Duration::from_secs(5);

pub struct Health {
    writable: watch::Sender<bool>,
    probing: AtomicBool,
    pool: Pool,
}

impl Health {
    pub fn new(pool: Pool) -> Arc<Self> {
        Arc::new(Self {
            writable: watch::Sender::new(true),
            probing: AtomicBool::new(false),
            pool,
        })
    }

    pub fn writable(&self) -> watch::Receiver<bool> {
        self.writable.subscribe()
    }

    pub fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    /// Turns an error into the store's, noting a lost database on the way.
    pub fn observe(self: &Arc<Self>, error: PgError) -> StoreError {
        if error.is_connection_failure() {
            self.lost(&error);
        }
        error.into()
    }

    fn lost(self: &Arc<Self>, error: &PgError) {
        self.writable
            .send_if_modified(|writable| std::mem::replace(writable, false));
        metrics::gauge!("switchyard_storage_writable").set(0.0);
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(%error, "PostgreSQL is unreachable; probing until it answers");
        metrics::counter!("switchyard_storage_errors_total").increment(1);
        tokio::spawn(probe(Arc::downgrade(self)));
    }
}

async fn probe(health: Weak<Health>) {
    let mut wait = FIRST_PROBE;
    loop {
        tokio::time::sleep(wait).await;
        // The store is gone: nobody is waiting for an answer.
        let Some(health) = health.upgrade() else {
            return;
        };
        let reached = match health.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        };
        if reached {
            health.probing.store(false, Ordering::Release);
            health.writable.send_replace(true);
            metrics::gauge!("switchyard_storage_writable").set(1.0);
            tracing::info!("PostgreSQL answers again; writes resume");
            return;
        }
        wait = (wait * 2).min(LAST_PROBE);
    }
}
