//! How redb's errors become [`StoreError`]s: the only place that knows which
//! of them mean the disk failed.

use crate::store::StoreError;

/// I/O errors, and the latched handle that follows one (see `handle.rs`),
/// are what the write coordinator recovers from by opening the file again.
fn is_io_failure(error: &redb::Error) -> bool {
    matches!(
        error,
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
    )
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        let io_failure = is_io_failure(&error);
        StoreError::backend(error, io_failure)
    }
}

macro_rules! via_redb_error {
    ($($source:ty),*) => {$(
        impl From<$source> for StoreError {
            fn from(error: $source) -> Self {
                redb::Error::from(error).into()
            }
        }
    )*};
}
via_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);
