//! The delivery engine: a scheduler over the durable queue, attempts run as
//! tasks under per-connection caps, and outcomes written back through the
//! group commit.
//!
//! The queue table is the source of truth: an entry leaves it only in the
//! transaction that records its attempt, so after a crash every queued or
//! in-flight delivery is simply due again (at least once, never at most
//! once). The scheduler holds a bounded window of the table in memory, read
//! in per connection as room frees up and fed by ingest, retries and manual
//! requeues (see `scheduler.rs` for its invariants).

mod attempt;
pub mod retry;
mod scheduler;
mod secrets;
mod threads;
pub mod warm;

pub use scheduler::{Engine, EngineDeps, WindowSnapshot};
pub use secrets::StoreSecrets;
pub use threads::StoreThreads;
pub use warm::{WarmContext, WarmContexts};
