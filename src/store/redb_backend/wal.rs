//! The write-ahead log: what lets a 202 mean "on disk" without a durable
//! redb commit per group.
//!
//! A durable redb commit writes about ten scattered copy-on-write pages plus
//! its header and syncs them: about 350 µs on the reference disk, and every
//! ingest waits for one (docs/benchmarks.md, "What bounds it"). Appending
//! the same group to a preallocated file and syncing that costs one
//! contiguous write and one `fdatasync` (about 130 µs there). So the write
//! coordinator logs each group of ingests and attempt outcomes here, syncs
//! the log, then commits the group to redb with `Durability::None` (visible
//! to readers at once, on disk at the next durable commit), and only then
//! answers.
//!
//! A commit is durable instead (a checkpoint) when its batch holds any other
//! kind of write, when the log is full, and at least every
//! `checkpoint_every`; the log then starts over from its first record slot.
//! Every commit stores the last sequence number it contains (`WAL_STATE`).
//!
//! Recovery: after a crash redb is at its last durable commit. The log's
//! records after the sequence number that commit stored are applied again,
//! in order, by the same functions that applied them the first time (their
//! inputs, the time included, are all in the record), and committed
//! durably. Runs whenever the file is opened, by `serve` and by the offline
//! commands alike.
//!
//! Epochs: every open, once recovery has committed, draws a random epoch,
//! stores it in `WAL_STATE` (durably) and then starts the log afresh with
//! it in the header; each record's checksum covers it. A log whose epoch is
//! not the database's is never applied: one left by another database file,
//! one next to a restored copy, and records of an earlier run that a power
//! cut left past a torn one (numbers restart after a crash; epochs do not).
//!
//! File layout: a 4 KiB header (magic, epoch), then records, each
//! `len: u32, crc32: u32, seq: u64` (little endian) and `len` bytes of
//! payload; the checksum covers the epoch, the sequence number and the
//! payload. The file is zero-filled ahead of the records (1 MiB when
//! started, then 4 MiB at a time up to `storage.wal_mb`), so appends
//! overwrite allocated blocks and their sync writes no file-system
//! metadata. A scan stops at the first record that is torn, zero, or not
//! the next number: records of an earlier round past the current end are
//! older, never next.

use super::deferred::DeferredRows;
use super::deliveries;
use super::events::{self, PreparedIngest};
use super::scope::WriteScope;
use super::tables::WAL_STATE;
use crate::model::{Attempt, DeliveryId, WorkspaceId};
use crate::store::codec::{decode_body, encode_body};
use crate::store::{AttemptOutcome, CodecError, FaultSwitch, NextStep, StoreError};
use redb::{Database, ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the log is sized and how often it is folded into redb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// The log file's size; 0 turns the log off (every commit durable).
    pub capacity_bytes: u64,
    /// Longest time between two durable commits while writes come in.
    pub checkpoint_every: Duration,
    /// Least time between the starts of two groups of logged writes (the
    /// writer's group pacing, `writer.rs`); zero turns it off.
    pub group_wait: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 * 1024 * 1024,
            checkpoint_every: Duration::from_secs(1),
            group_wait: Duration::ZERO,
        }
    }
}

/// The log next to the database file `db_path`.
pub fn log_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    db_path.with_file_name(name)
}

/// A write the log can carry, encoded on the caller's thread.
pub fn encode_ingest(ingest: &PreparedIngest) -> Vec<u8> {
    encode_body(LOG_VERSION, &LoggedWrite::Ingest(ingest.to_wire()))
}

/// An attempt's outcome as a log record; `None` for the rare outcome that
/// also changes the connection (its `updated_at` is read from the clock, so
/// it goes through a durable commit instead).
pub fn encode_attempt(outcome: &AttemptOutcome) -> Option<Vec<u8>> {
    if outcome.connection_status.is_some() {
        return None;
    }
    let attempt = &outcome.attempt;
    let wire = AttemptWire {
        workspace: outcome.workspace_id.0,
        delivery: outcome.delivery_id.0,
        at_ms: attempt.at_ms,
        duration_ms: attempt.duration_ms,
        status_code: attempt.status_code,
        error: attempt.error.clone(),
        response: attempt.response.clone(),
        next: match outcome.next {
            NextStep::Succeeded => NextWire::Succeeded,
            NextStep::Dead => NextWire::Dead,
            NextStep::RetryAt(due) => NextWire::RetryAt(due),
        },
        pause_connection_until: outcome.pause_connection_until,
    };
    Some(encode_body(LOG_VERSION, &LoggedWrite::Attempt(wire)))
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "write-ahead log {path}: record {found} follows {applied}, which the database holds; \
         records in between are missing"
    )]
    Gap {
        path: PathBuf,
        applied: u64,
        found: u64,
    },
    #[error("write-ahead log {path}: record {seq}: {source}")]
    Record {
        path: PathBuf,
        seq: u64,
        source: CodecError,
    },
    #[error("write-ahead log {path}: applying record {seq}: {source}")]
    Replay {
        path: PathBuf,
        seq: u64,
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WalError> for StoreError {
    fn from(error: WalError) -> Self {
        match error {
            WalError::Store(error) => error,
            WalError::Io { .. } => StoreError::backend(error, true),
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// What [`Wal::open`] does once the database holds everything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Afterwards {
    /// Start the log afresh: the server is about to write.
    Log,
    /// Nothing more: an offline command, or the log turned off.
    Stop,
}

/// What the log did with a batch.
pub enum Logged {
    /// Every job is in the log and synced, up to this sequence number:
    /// commit without durability.
    Through(u64),
    /// Commit durably (a checkpoint); the log starts over once it is.
    Checkpoint,
}

/// The open log, owned by the write coordinator.
pub struct Wal {
    file: File,
    path: PathBuf,
    options: WalOptions,
    /// Where the next record goes.
    end: u64,
    /// How far the file is zero-filled.
    allocated: u64,
    /// This run's epoch (see the module comment).
    epoch: u128,
    /// The number the next record gets. Not reused within a run unless the
    /// records that had it were wiped from the file, or never written
    /// (`wipe_last_batch`, `failed_batch`).
    next_seq: u64,
    /// Where the last batch's records start, and its first number.
    batch_start: u64,
    batch_first_seq: u64,
    /// The last sequence number of a batch answered as stored.
    acknowledged: u64,
    last_checkpoint: Instant,
    buffer: Vec<u8>,
    /// Test seam: fails the log's writes as it fails the database's.
    faults: Option<FaultSwitch>,
    /// The thread that writes and syncs (`None`: on the writer's own).
    syncer: Option<Syncer>,
    /// A write on the syncer: where the log ends and how far it is
    /// zero-filled once it is done.
    in_flight: Option<(u64, u64)>,
}

/// The log's writer thread and its two channels.
struct Syncer {
    jobs: std::sync::mpsc::SyncSender<LogWrite>,
    done: std::sync::mpsc::Receiver<Written>,
}

/// One batch's records, to be written at `at`, after zero-filling
/// `zero_from..zero_to` (growing the file), then synced.
struct LogWrite {
    buffer: Vec<u8>,
    at: u64,
    zero_from: u64,
    zero_to: u64,
    /// Test seam: may hold the sync (`FaultSwitch::hold_log_syncs`).
    faults: Option<FaultSwitch>,
}

/// What a [`LogWrite`] did: its buffer back for the next batch, and the
/// result.
struct Written {
    buffer: Vec<u8>,
    result: std::io::Result<()>,
    /// False when it failed before any record was written (growing the
    /// file): then there is nothing to wipe.
    records_touched: bool,
}

impl LogWrite {
    /// Grows the file if it must, then writes and syncs, on whichever
    /// thread calls it, and records how long a successful write and sync
    /// took (growing aside) in `switchyard_wal_sync_seconds`.
    fn run(self, file: &File) -> Written {
        if let Err(error) = zero_fill(file, self.zero_from, self.zero_to) {
            return Written {
                buffer: self.buffer,
                result: Err(error),
                records_touched: false,
            };
        }
        let started = Instant::now();
        let result = file.write_all_at(&self.buffer, self.at).and_then(|()| {
            if let Some(switch) = &self.faults {
                switch.before_log_sync();
                switch.check_log_sync()?;
            }
            file.sync_data()
        });
        if result.is_ok() {
            crate::telemetry::record(
                "switchyard_wal_sync_seconds",
                &[],
                started.elapsed().as_secs_f64(),
            );
        }
        Written {
            buffer: self.buffer,
            result,
            records_touched: true,
        }
    }
}

impl Syncer {
    fn start(file: &File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<LogWrite>(1);
        let (outbox, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("switchyard-wal".into())
            .spawn(move || {
                while let Ok(write) = inbox.recv() {
                    if let Some(switch) = &write.faults {
                        switch.count_log_thread_sync();
                    }
                    if outbox.send(write.run(&file)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self { jobs, done })
    }
}

/// Writes zeros over `from..to` of `file`.
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let chunk = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..chunk], at)?;
        at += chunk as u64;
    }
    Ok(())
}

impl Wal {
    /// Opens (or creates) the log of the database at `db_path`, applies the
    /// records the database does not hold yet and commits them durably.
    /// With the log turned off, an existing log is still applied (it may
    /// hold acknowledged writes) and then removed.
    pub fn recover(
        db: &Database,
        db_path: &Path,
        options: WalOptions,
    ) -> Result<Option<Self>, WalError> {
        let path = log_path(db_path);
        if options.capacity_bytes == 0 {
            if path.exists() {
                Self::open(db, &path, options, Afterwards::Stop)?;
                std::fs::remove_file(&path).map_err(|source| WalError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            return Ok(None);
        }
        Self::open(db, &path, options, Afterwards::Log).map(Some)
    }

    /// For the offline commands (compact, export): applies what an existing
    /// log holds that the database does not, leaving the file in place.
    pub fn replay_existing(db: &Database, db_path: &Path) -> Result<(), WalError> {
        let path = log_path(db_path);
        if !path.exists() {
            return Ok(());
        }
        Self::open(db, &path, WalOptions::default(), Afterwards::Stop).map(drop)
    }

    /// Fails the log's writes while `switch` is on (`StoreOptions::faults`).
    pub fn with_faults(mut self, switch: Option<FaultSwitch>) -> Self {
        self.faults = switch;
        self
    }

    pub fn checkpoint_every(&self) -> Duration {
        self.options.checkpoint_every
    }

    pub fn group_wait(&self) -> Duration {
        self.options.group_wait
    }

    /// Applies what the log holds that the database does not, and moves the
    /// database to a new epoch; with `Afterwards::Log`, then starts the log
    /// afresh for this run and its writer thread. With `Stop`, the file is
    /// left as it is: its old epoch no longer matches, so nothing in it is
    /// applied again.
    fn open(
        db: &Database,
        path: &Path,
        options: WalOptions,
        afterwards: Afterwards,
    ) -> Result<Self, WalError> {
        let io = |source| WalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (epoch, applied) = database_state(db)?;
        let mut open = OpenOptions::new();
        open.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let file = open.open(path).map_err(io)?;
        let capacity = options
            .capacity_bytes
            .max(HEADER_BYTES + RECORD_HEADER_BYTES);
        let mut wal = Self {
            file,
            path: path.to_path_buf(),
            options: WalOptions {
                capacity_bytes: capacity,
                ..options
            },
            end: HEADER_BYTES,
            allocated: 0,
            epoch: 0,
            next_seq: applied + 1,
            batch_start: HEADER_BYTES,
            batch_first_seq: applied + 1,
            acknowledged: applied,
            last_checkpoint: Instant::now(),
            buffer: Vec::new(),
            faults: None,
            syncer: None,
            in_flight: None,
        };
        let mut last = applied;
        let header = wal.header_epoch().map_err(io)?;
        if let Some(epoch) = epoch.filter(|&epoch| header == Some(epoch)) {
            wal.epoch = epoch;
            last = wal.replay(db, applied, u64::MAX, None, None)?;
        }
        // This run's epoch goes into the database before the log is started
        // afresh with it: a crash in between leaves a log that matches
        // nothing, which is right, as everything is in redb by then.
        wal.next_seq = last.max(applied) + 1;
        wal.acknowledged = wal.next_seq - 1;
        wal.epoch = rand::random::<u128>();
        let txn = db.begin_write().map_err(StoreError::from)?;
        {
            let mut table = txn.open_table(WAL_STATE).map_err(StoreError::from)?;
            table
                .insert(EPOCH_KEY, wal.epoch)
                .map_err(StoreError::from)?;
            table
                .insert(APPLIED_KEY, u128::from(wal.next_seq - 1))
                .map_err(StoreError::from)?;
        }
        txn.commit().map_err(StoreError::from)?;
        if afterwards == Afterwards::Stop {
            return Ok(wal);
        }
        wal.initialise()?;
        wal.syncer = match Syncer::start(&wal.file) {
            Ok(syncer) => Some(syncer),
            Err(error) => {
                tracing::warn!(%error, "cannot start the log's writer thread; logging on the writer's");
                None
            }
        };
        Ok(wal)
    }

    /// Decides how `records` (one per job, `None` for a job the log does not
    /// carry) are made durable. When the log carries them, their write and
    /// sync start on the log's own thread, so the writer applies the batch
    /// meanwhile; [`Wal::finish`] waits for them. A batch of one small
    /// record is written and synced here, before it is applied. A job the
    /// batch then refuses keeps its record: applied again at recovery, it
    /// is refused the same way. (Ops check before they write, except where a stored
    /// record fails to decode halfway through a change: the writer then
    /// retries the batch without the job, and a replay does the same.)
    /// A batch whose write or sync fails is wiped before the error is
    /// returned, here or by [`Wal::finish`] (unless it failed before any
    /// record was written: its numbers are then given back).
    pub fn begin<'a>(
        &mut self,
        records: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> Result<Logged, WalError> {
        // The interval runs from the round's first record: after a quiet
        // spell the first batch is logged, not made durable.
        if !self.holds_records() {
            self.last_checkpoint = Instant::now();
        } else if self.last_checkpoint.elapsed() >= self.options.checkpoint_every {
            return Ok(Logged::Checkpoint);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let mut seq = self.next_seq;
        for record in records {
            let Some(payload) = record else {
                self.keep_buffer(buffer);
                return Ok(Logged::Checkpoint);
            };
            let (len, checksum) = frame(self.epoch, seq, payload);
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&checksum.to_le_bytes());
            buffer.extend_from_slice(&seq.to_le_bytes());
            buffer.extend_from_slice(payload);
            seq += 1;
        }
        let end = self.end + buffer.len() as u64;
        if seq == self.next_seq || end > self.options.capacity_bytes {
            self.keep_buffer(buffer);
            return Ok(Logged::Checkpoint);
        }
        // Numbers are spent before the write: if it fails, what may have
        // landed must not look like the records written after it. (They
        // are given back once the records are wiped: `failed_batch`.)
        self.batch_start = self.end;
        self.batch_first_seq = self.next_seq;
        self.next_seq = seq;
        let write = LogWrite {
            buffer,
            at: self.end,
            zero_from: self.allocated,
            zero_to: self.grow_target(end),
            faults: self.faults.clone(),
        };
        let failing = self.faults.as_ref().map_or(Ok(()), FaultSwitch::check_log);
        if let Err(source) = failing {
            self.buffer = write.buffer;
            return Err(WalError::Io {
                path: self.path.clone(),
                source,
            });
        }
        let (end_after, allocated_after) = (end, write.zero_to.max(self.allocated));
        // A lone small record (at a low rate, every batch) is synced here:
        // handing it to the log's thread would overlap its sync with an
        // apply of a few microseconds, at the price of two wake-ups.
        let lone_and_small =
            seq - self.batch_first_seq == 1 && write.buffer.len() <= SYNCED_HERE_BYTES;
        match self.syncer.as_ref().filter(|_| !lone_and_small) {
            Some(syncer) => {
                if let Err(error) = syncer.jobs.send(write) {
                    self.buffer = error.0.buffer;
                    return Err(WalError::Io {
                        path: self.path.clone(),
                        source: std::io::Error::other("the log's writer thread stopped"),
                    });
                }
                self.in_flight = Some((end_after, allocated_after));
            }
            None => {
                let written = write.run(&self.file);
                self.keep_buffer(written.buffer);
                if let Err(source) = written.result {
                    return Err(self.failed_batch(end_after, written.records_touched, source));
                }
                self.end = end_after;
                self.allocated = allocated_after;
            }
        }
        Ok(Logged::Through(seq - 1))
    }

    /// Waits until the write [`Wal::begin`] started is synced (or failed).
    pub fn finish(&mut self) -> Result<(), WalError> {
        let Some((end, allocated)) = self.in_flight.take() else {
            return Ok(());
        };
        let done = self.syncer.as_ref().map(|syncer| syncer.done.recv());
        let written = match done {
            Some(Ok(done)) => done,
            // What it wrote before it stopped is unknown: wiped too.
            _ => Written {
                buffer: Vec::new(),
                result: Err(std::io::Error::other("the log's writer thread stopped")),
                records_touched: true,
            },
        };
        self.keep_buffer(written.buffer);
        if let Err(source) = written.result {
            return Err(self.failed_batch(end, written.records_touched, source));
        }
        self.end = end;
        self.allocated = allocated;
        Ok(())
    }

    /// The write or sync of the last batch (ending at `end`) failed, and
    /// its callers are told so. Its records may have reached the file all
    /// the same (after a failed `fdatasync` the kernel may still hold
    /// them), and a restart before the storage probe's recovery would
    /// apply them: unless none was written (`records_touched`), they are
    /// wiped, as [`Wal::retract_last_batch`] does. If the wipe fails too,
    /// what is on disk is unknown; the numbers stay spent, and the probe's
    /// recovery skips them (README, "Disk full").
    fn failed_batch(
        &mut self,
        end: u64,
        records_touched: bool,
        source: std::io::Error,
    ) -> WalError {
        debug_assert_eq!(
            self.end, self.batch_start,
            "a failed batch never moved the end"
        );
        let wiped = if records_touched {
            self.wipe_last_batch(end)
        } else {
            self.next_seq = self.batch_first_seq;
            Ok(())
        };
        if let Err(error) = wiped {
            tracing::warn!(%error, "wiping a batch the write-ahead log failed to write or sync");
        }
        WalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Zeros the last batch's records, `batch_start..end`, syncs, and gives
    /// their place and numbers to the next batch.
    fn wipe_last_batch(&mut self, end: u64) -> Result<(), WalError> {
        let faults = self.faults.as_ref().map_or(Ok(()), FaultSwitch::check_log);
        faults
            .and_then(|()| zero_fill(&self.file, self.batch_start, end))
            .and_then(|()| self.file.sync_data())
            .map_err(|source| WalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.end = self.batch_start;
        self.next_seq = self.batch_first_seq;
        Ok(())
    }

    /// Keeps a batch's buffer for the next one, unless a big batch grew it
    /// past what is worth holding on to.
    fn keep_buffer(&mut self, buffer: Vec<u8>) {
        self.buffer = if buffer.capacity() > MAX_KEPT_BUFFER {
            Vec::new()
        } else {
            buffer
        };
    }

    /// The sequence number a durable commit made now stores: every number
    /// spent so far. Records of a batch that failed after it was logged
    /// are skipped with it (their callers were told it failed), and the
    /// next round starts right after it.
    pub fn applied_through(&self) -> u64 {
        self.next_seq - 1
    }

    /// A logged batch was applied and its callers are answered (its
    /// records are synced; redb commits it later, without a sync).
    pub fn acknowledge(&mut self, seq: u64) {
        self.acknowledged = seq;
    }

    /// True once the batch logged up to `seq` was acknowledged.
    pub fn acknowledged(&self, seq: u64) -> bool {
        self.acknowledged >= seq
    }

    /// The last batch was logged but its commit failed, and its callers are
    /// told so: wipes its records from the file (synced), so a crash cannot
    /// bring them back, and gives their place and numbers to the next batch.
    /// If the batch's sync fails ([`Wal::finish`] wipes it then) or the
    /// wipe fails, the error is returned, and the writer stops storage
    /// until the probe's durable commit has skipped any numbers still
    /// spent.
    pub fn retract_last_batch(&mut self) -> Result<(), WalError> {
        self.finish()?;
        if self.end <= self.batch_start || self.acknowledged >= self.batch_first_seq {
            return Ok(());
        }
        self.wipe_last_batch(self.end)
    }

    /// A durable commit succeeded: everything logged so far is in redb, and
    /// the log starts over.
    pub fn checkpointed(&mut self) {
        self.end = HEADER_BYTES;
        self.last_checkpoint = Instant::now();
    }

    /// True when records wait in the log for a durable commit.
    pub fn holds_records(&self) -> bool {
        self.end > HEADER_BYTES
    }

    /// After a storage failure the database was opened again, at its last
    /// durable commit (or the writer aborted its open transaction, see
    /// `writer.rs`): applies the records acknowledged since the database's
    /// last commit, commits them durably with every number spent so far,
    /// and starts the log over.
    /// Records written by a batch that failed are left out: its callers
    /// were told it failed.
    ///
    /// The queue rows the writer holds back (`held`) go into the first of
    /// those commits: once the log starts over, the rows of events that an
    /// earlier commit already held have nothing left to come back from, so
    /// no commit may move the log's position past them without them.
    pub fn recover_after_failure(
        &mut self,
        db: &Database,
        held: Option<&RefCell<DeferredRows>>,
    ) -> Result<(), WalError> {
        let (_, applied) = database_state(db)?;
        // A commit that reported failing may have landed all the same, and
        // the reopened file then holds numbers this log gave back: they are
        // never handed out again (a record numbered at or below what the
        // database holds would be skipped by the next replay).
        self.next_seq = self.next_seq.max(applied + 1);
        let replayed = self.replay(
            db,
            applied,
            self.acknowledged,
            Some(self.next_seq - 1),
            held,
        );
        if let Some(held) = held {
            let mut held = held.borrow_mut();
            match replayed {
                Ok(_) => held.committed(),
                // Held again: written with the next try.
                Err(_) => held.rolled_back(),
            }
        }
        replayed?;
        self.acknowledged = self.next_seq - 1;
        Ok(())
    }

    /// Applies the records numbered `applied + 1 ..= up_to` found in the
    /// log and commits them durably, in one transaction with `mark` (or the
    /// last number applied) as what the database holds; returns the last
    /// number seen. `held` queue rows are written in the first transaction.
    ///
    /// A record refused again (it was refused the first time too, see
    /// [`Wal::begin`]) may have written part of its change before it
    /// failed, so its transaction is aborted and applied again without it,
    /// as the writer did with its batch.
    fn replay(
        &mut self,
        db: &Database,
        applied: u64,
        up_to: u64,
        mark: Option<u64>,
        mut held: Option<&RefCell<DeferredRows>>,
    ) -> Result<u64, WalError> {
        let io = |source| WalError::Io {
            path: self.path.clone(),
            source,
        };
        let size = self.file.metadata().map_err(io)?.len();
        let mut last = applied;
        let mut through = applied;
        let mut replayed = 0u64;
        let mut refused = Vec::new();
        let mut records = RecordReader::new(&self.file, size, self.epoch);
        let mut chunk_start = records.position();
        let mut next = records.next().map_err(io)?;
        // In transactions of about `REPLAY_CHUNK_BYTES` of records, each
        // committed with the number it reaches, so a long log never builds
        // one huge transaction.
        loop {
            let txn = db.begin_write().map_err(StoreError::from)?;
            let before = (last, through, replayed);
            let mut chunk_bytes = 0usize;
            let mut chunk_records = 0u64;
            let held_here = held.take();
            if let Some(held) = held_here {
                WriteScope::deferring(&txn, held).flush_queue()?;
            }
            let mut refused_here = None;
            {
                let mut scope = WriteScope::new(&txn);
                while let Some(seq) = next {
                    last = seq;
                    if seq > applied && seq <= up_to {
                        if replayed == 0 && seq != applied + 1 {
                            return Err(WalError::Gap {
                                path: self.path.clone(),
                                applied,
                                found: seq,
                            });
                        }
                        let payload = records.payload();
                        chunk_bytes += payload.len();
                        if !refused.contains(&seq) {
                            let write = decode(payload).map_err(|source| WalError::Record {
                                path: self.path.clone(),
                                seq,
                                source,
                            })?;
                            match apply(&mut scope, write) {
                                Ok(()) => {}
                                Err(error) if !matches!(error, StoreError::Backend { .. }) => {
                                    tracing::warn!(%error, seq, "a logged write is refused again; skipped");
                                    refused_here = Some(seq);
                                    break;
                                }
                                Err(source) => {
                                    return Err(WalError::Replay {
                                        path: self.path.clone(),
                                        seq,
                                        source,
                                    });
                                }
                            }
                        }
                        replayed += 1;
                        chunk_records += 1;
                        through = seq;
                    }
                    next = records.next().map_err(io)?;
                    if chunk_bytes >= REPLAY_CHUNK_BYTES {
                        break;
                    }
                }
            }
            if let Some(seq) = refused_here {
                // Nothing of the refused record's change stays: the chunk
                // goes again from its first record, skipping it.
                txn.abort().map_err(StoreError::from)?;
                if let Some(rows) = held_here {
                    rows.borrow_mut().rolled_back();
                }
                held = held_here;
                refused.push(seq);
                (last, through, replayed) = before;
                records.rewind(chunk_start);
                next = records.next().map_err(io)?;
                continue;
            }
            if next.is_some() {
                store_applied(&txn, through)?;
                txn.commit().map_err(StoreError::from)?;
                // The held rows are in the file now: a later chunk's failure
                // must not hold them again (written twice, the stored copy
                // would outlive its delivery's first outcome).
                if let Some(rows) = held_here {
                    rows.borrow_mut().committed();
                }
                chunk_start = records.position_of_current();
                continue;
            }
            if chunk_records == 0 && mark.is_none() && held_here.is_none() {
                txn.abort().map_err(StoreError::from)?;
            } else {
                store_applied(&txn, mark.unwrap_or(through).max(through))?;
                txn.commit().map_err(StoreError::from)?;
            }
            break;
        }
        drop(records);
        if replayed > 0 {
            tracing::info!(
                records = replayed.saturating_sub(refused.len() as u64),
                skipped = refused.len(),
                through,
                log = %self.path.display(),
                "applied the write-ahead log's records the database did not hold yet"
            );
        }
        self.checkpointed();
        Ok(last)
    }

    /// The epoch in the file's header, if it has one.
    fn header_epoch(&self) -> std::io::Result<Option<u128>> {
        let mut header = [0u8; 24];
        match self.file.read_exact_at(&mut header, 0) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error),
        }
        if header[..8] != MAGIC {
            return Ok(None);
        }
        let mut epoch = [0u8; 16];
        epoch.copy_from_slice(&header[8..24]);
        Ok(Some(u128::from_le_bytes(epoch)))
    }

    /// Starts the file afresh for this run's epoch: the header, then zeros
    /// (`INITIAL_BYTES`), synced, with the directory entry synced too.
    fn initialise(&mut self) -> Result<(), WalError> {
        let path = self.path.clone();
        let io = |source| WalError::Io { path, source };
        let mut header = vec![0u8; HEADER_BYTES as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..24].copy_from_slice(&self.epoch.to_le_bytes());
        let initial = INITIAL_BYTES.min(self.options.capacity_bytes);
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(&header, 0))
            .and_then(|()| zero_fill(&self.file, HEADER_BYTES, initial))
            .and_then(|()| self.file.sync_all())
            .and_then(
                |()| match self.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    Some(dir) => File::open(dir).and_then(|dir| dir.sync_all()),
                    None => Ok(()),
                },
            );
        written.map_err(io)?;
        self.allocated = initial.max(HEADER_BYTES);
        self.checkpointed();
        self.batch_start = HEADER_BYTES;
        Ok(())
    }

    /// How far the file must be zero-filled for the log to end at `end`:
    /// `GROW_BYTES` steps, never past the capacity.
    fn grow_target(&self, end: u64) -> u64 {
        if end <= self.allocated {
            return self.allocated;
        }
        end.div_ceil(GROW_BYTES)
            .saturating_mul(GROW_BYTES)
            .min(self.options.capacity_bytes)
            .max(end)
    }
}

/// Reads the log's records in file order, one at a time, up to the first
/// that is torn, zero, or not the next number.
struct RecordReader<'a> {
    file: &'a File,
    epoch: u128,
    at: u64,
    size: u64,
    expected: Option<u64>,
    /// Where the last record read begins.
    current: ReadPosition,
    payload: Vec<u8>,
}

#[derive(Clone, Copy)]
struct ReadPosition {
    at: u64,
    expected: Option<u64>,
}

impl<'a> RecordReader<'a> {
    fn new(file: &'a File, size: u64, epoch: u128) -> Self {
        let start = ReadPosition {
            at: HEADER_BYTES,
            expected: None,
        };
        Self {
            file,
            epoch,
            at: start.at,
            size,
            expected: start.expected,
            current: start,
            payload: Vec::new(),
        }
    }

    /// Where the reader stands: [`Self::rewind`] to it reads the same
    /// records again.
    fn position(&self) -> ReadPosition {
        ReadPosition {
            at: self.at,
            expected: self.expected,
        }
    }

    /// Where the record [`Self::next`] returned last begins (where the
    /// reader stood before it).
    fn position_of_current(&self) -> ReadPosition {
        self.current
    }

    fn rewind(&mut self, to: ReadPosition) {
        self.at = to.at;
        self.expected = to.expected;
    }

    /// The next record's number; its payload is then [`Self::payload`].
    fn next(&mut self) -> std::io::Result<Option<u64>> {
        let Some(payload_at) = self
            .at
            .checked_add(RECORD_HEADER_BYTES)
            .filter(|&start| start <= self.size)
        else {
            return Ok(None);
        };
        let mut head = [0u8; RECORD_HEADER_BYTES as usize];
        self.file.read_exact_at(&mut head, self.at)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3, seq @ ..] = head;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let checksum = u32::from_le_bytes([c0, c1, c2, c3]);
        let seq = u64::from_le_bytes(seq);
        let end = payload_at + u64::from(len);
        if len == 0 || end > self.size || self.expected.is_some_and(|next| seq != next) {
            return Ok(None);
        }
        self.payload.resize(len as usize, 0);
        self.file.read_exact_at(&mut self.payload, payload_at)?;
        if frame(self.epoch, seq, &self.payload) != (len, checksum) {
            return Ok(None);
        }
        self.current = self.position();
        self.expected = Some(seq + 1);
        self.at = end;
        Ok(Some(seq))
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Stores the last sequence number the transaction's commit will contain.
pub fn store_applied(txn: &WriteTransaction, seq: u64) -> Result<(), StoreError> {
    txn.open_table(WAL_STATE)?
        .insert(APPLIED_KEY, u128::from(seq))?;
    Ok(())
}

const MAGIC: [u8; 8] = *b"SWYWAL\x00\x01";
const HEADER_BYTES: u64 = 4096;
const RECORD_HEADER_BYTES: u64 = 16;
/// Zero-filled when the log is created; then it grows `GROW_BYTES` at a time.
const INITIAL_BYTES: u64 = 1024 * 1024;
const GROW_BYTES: u64 = 4 * 1024 * 1024;
/// Records applied per recovery transaction, about.
const REPLAY_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// The encode buffer is kept between batches unless a batch grew it past this.
const MAX_KEPT_BUFFER: usize = 4 * 1024 * 1024;
/// A batch of one record at most this big (framed) is written and synced
/// on the writer's thread (see [`Wal::begin`]).
const SYNCED_HERE_BYTES: usize = 4096;
/// The first byte of every record's payload.
const LOG_VERSION: u8 = 1;
const EPOCH_KEY: u8 = 0;
const APPLIED_KEY: u8 = 1;

/// The payload's length and its checksum (over the epoch, the number and
/// the payload).
fn frame(epoch: u128, seq: u64, payload: &[u8]) -> (u32, u32) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    (payload.len() as u32, hasher.finalize())
}

/// The log epoch the database expects (none before its first open with a
/// log) and the last log record it holds.
fn database_state(db: &Database) -> Result<(Option<u128>, u64), StoreError> {
    let read = db.begin_read()?;
    match read.open_table(WAL_STATE) {
        Ok(table) => {
            let epoch = table.get(EPOCH_KEY)?.map(|value| value.value());
            let applied = table.get(APPLIED_KEY)?.map_or(0, |value| value.value());
            Ok((epoch, u64::try_from(applied).unwrap_or(u64::MAX)))
        }
        Err(redb::TableError::TableDoesNotExist(_)) => Ok((None, 0)),
        Err(error) => Err(error.into()),
    }
}

/// A record's payload: its version byte, then the body.
fn decode(payload: &[u8]) -> Result<LoggedWrite, CodecError> {
    const KIND: &str = "write-ahead log";
    match payload.split_first() {
        Some((&LOG_VERSION, body)) => decode_body(KIND, body),
        Some((&version, _)) => Err(CodecError::UnknownVersion {
            kind: KIND,
            version,
        }),
        None => Err(CodecError::Empty { kind: KIND }),
    }
}

/// Applies a logged write as the writer did the first time.
fn apply(scope: &mut WriteScope<'_>, write: LoggedWrite) -> Result<(), StoreError> {
    match write {
        LoggedWrite::Ingest(wire) => {
            let ingest = PreparedIngest::from_wire(wire)?;
            events::ingest(scope.ingest_tables()?, &ingest)?;
        }
        LoggedWrite::Attempt(wire) => {
            let outcome = AttemptOutcome {
                workspace_id: WorkspaceId(wire.workspace),
                delivery_id: DeliveryId(wire.delivery),
                attempt: Attempt {
                    at_ms: wire.at_ms,
                    duration_ms: wire.duration_ms,
                    status_code: wire.status_code,
                    error: wire.error,
                    response: wire.response,
                },
                next: match wire.next {
                    NextWire::Succeeded => NextStep::Succeeded,
                    NextWire::Dead => NextStep::Dead,
                    NextWire::RetryAt(due) => NextStep::RetryAt(due),
                },
                connection_status: None,
                pause_connection_until: wire.pause_connection_until,
            };
            deliveries::record_attempt(scope, &outcome)?;
        }
    }
    Ok(())
}

/// A logged write, version 1. Frozen: a new shape is a new version.
#[derive(Serialize, Deserialize)]
enum LoggedWrite {
    Ingest(IngestWire),
    Attempt(AttemptWire),
}

#[derive(Serialize, Deserialize)]
pub struct IngestWire {
    pub workspace: u128,
    pub now_ms: u64,
    pub events: Vec<EventWire>,
    pub deliveries: Vec<NewDeliveryWire>,
    /// (key, status, response).
    pub idempotency: Option<(String, u16, Vec<u8>)>,
}

/// Byte strings go through `serde_bytes`: one copy, not a sequence of
/// single bytes (the same postcard encoding either way).
#[derive(Serialize, Deserialize)]
pub struct EventWire {
    pub id: u128,
    /// The encoded event record.
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub struct NewDeliveryWire {
    pub workspace: u128,
    pub id: u128,
    pub event_id: u128,
    /// The encoded delivery record (it carries its own version).
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
    /// (dedup seconds, max per hour, alert state: 0 none, 1 triggered,
    /// 2 acknowledged, 3 resolved).
    pub noise: Option<(Option<u32>, Option<u32>, u8)>,
}

#[derive(Serialize, Deserialize)]
struct AttemptWire {
    workspace: u128,
    delivery: u128,
    at_ms: u64,
    duration_ms: u64,
    status_code: Option<u16>,
    error: Option<String>,
    response: Option<String>,
    next: NextWire,
    pause_connection_until: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum NextWire {
    Succeeded,
    Dead,
    RetryAt(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ConnectionId, Delivery, DeliveryId, DeliveryStatus, Event, EventId, EventName, RuleId,
        WorkspaceId,
    };
    use crate::store::codec::Record;
    use crate::store::records::{DeliveryRecord, EventRecord};
    use crate::store::redb_backend::events::PreparedIngest;
    use crate::store::redb_backend::tables::{ATTEMPTS, DELIVERIES, EVENTS, QUEUE};
    use crate::store::redb_backend::writer::{WriteOp, Writer};
    use crate::store::{
        AttemptOutcome, IdempotentAnswer, IngestBatch, IngestOutcome, NewWorkspace, NextStep,
        RedbStore, Requeue, Store, StoreOptions,
    };
    use redb::ReadableTableMetadata;
    use std::sync::Arc;

    const WS: WorkspaceId = WorkspaceId(1);

    fn options(checkpoint_every: Duration) -> StoreOptions {
        StoreOptions {
            wal: WalOptions {
                capacity_bytes: 1024 * 1024,
                checkpoint_every,
                ..WalOptions::default()
            },
            ..StoreOptions::default()
        }
    }

    /// A log of `capacity_bytes` that the timer never checkpoints.
    fn with_log_of(capacity_bytes: u64) -> StoreOptions {
        StoreOptions {
            wal: WalOptions {
                capacity_bytes,
                checkpoint_every: Duration::from_secs(600),
                ..WalOptions::default()
            },
            ..StoreOptions::default()
        }
    }

    /// A store whose only durable commits are the workspace's creation and
    /// whatever unlogged write a test makes.
    async fn store(path: &Path) -> Arc<RedbStore> {
        store_with(path, options(Duration::from_secs(600))).await
    }

    /// As [`store`], with a fault switch.
    async fn store_with_faults(path: &Path) -> (Arc<RedbStore>, FaultSwitch) {
        let switch = FaultSwitch::new();
        let options = StoreOptions {
            faults: Some(switch.clone()),
            ..options(Duration::from_secs(600))
        };
        (store_with(path, options).await, switch)
    }

    async fn store_with(path: &Path, options: StoreOptions) -> Arc<RedbStore> {
        let store = RedbStore::open(path, options).unwrap();
        store
            .create_workspace(NewWorkspace::for_tests(WS, "wal"))
            .await
            .unwrap();
        store
    }

    fn batch(n: u128, idempotency_key: Option<&str>) -> IngestBatch {
        let event = Event {
            id: EventId(n),
            workspace_id: WS,
            name: EventName::parse("alert.triggered").unwrap(),
            resource: None,
            resource_id: None,
            payload: br#"{"value": 1840}"#.to_vec(),
            received_at_ms: 1_000 + n as u64,
        };
        let delivery = Delivery {
            id: DeliveryId(n),
            workspace_id: WS,
            event_id: event.id,
            rule_id: RuleId(1),
            connection_id: ConnectionId(1),
            status: DeliveryStatus::Pending,
            attempt_count: 0,
            next_attempt_at_ms: Some(event.received_at_ms),
            created_at_ms: event.received_at_ms,
            updated_at_ms: event.received_at_ms,
            alert: None,
            suppressed_before: 0,
        };
        IngestBatch {
            idempotency: idempotency_key.map(|key| IdempotentAnswer {
                key: key.into(),
                status: 202,
                response: b"first".to_vec(),
            }),
            ..IngestBatch::for_tests(event, vec![delivery])
        }
    }

    /// `batch` with a payload that makes its log record bigger than a
    /// lone record the writer syncs itself (`SYNCED_HERE_BYTES`).
    fn over_4_kib(mut batch: IngestBatch) -> IngestBatch {
        batch.events[0].payload =
            format!(r#"{{"note": "{}"}}"#, "x".repeat(SYNCED_HERE_BYTES)).into_bytes();
        batch
    }

    /// Connection 1, which `batch`'s deliveries name.
    fn webhook_connection() -> crate::model::Connection {
        crate::model::Connection {
            id: ConnectionId(1),
            workspace_id: WS,
            name: "hook".into(),
            kind: crate::model::ConnectionKind::Webhook,
            status: crate::model::ConnectionStatus::Active,
            config: serde_json::json!({"url": "https://example.test/hook"}),
            sealed_secrets: vec![1, 2, 3],
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
        }
    }

    fn succeeded(n: u128) -> AttemptOutcome {
        AttemptOutcome::succeeded_for_tests(WS, DeliveryId(n), 2_000)
    }

    async fn ingest(store: &RedbStore, n: u128) {
        let outcome = store.ingest(batch(n, None)).await.unwrap();
        assert_eq!(outcome, IngestOutcome::Stored { suppressed: vec![] });
    }

    /// The database file and its log as a SIGKILL would leave them: what the
    /// writes handed the kernel, with no clean close.
    fn crash_image(path: &Path, into: &Path) -> PathBuf {
        let copy = into.join("copy.redb");
        std::fs::copy(path, &copy).unwrap();
        std::fs::copy(log_path(path), log_path(&copy)).unwrap();
        copy
    }

    /// Events and attempts (first attempts are kept in their delivery's
    /// row) in the file itself, log not applied.
    fn rows_without_the_log(path: &Path) -> (u64, u64) {
        use redb::ReadableTable;
        let db = Database::open(path).unwrap();
        let read = db.begin_read().unwrap();
        let events = read.open_table(EVENTS).unwrap().len().unwrap();
        let later_attempts = read.open_table(ATTEMPTS).unwrap().len().unwrap();
        let first_attempts = read
            .open_table(DELIVERIES)
            .unwrap()
            .iter()
            .unwrap()
            .filter(|row| {
                let record = DeliveryRecord::decode(row.as_ref().unwrap().1.value()).unwrap();
                record.first_attempt.is_some()
            })
            .count() as u64;
        (events, later_attempts + first_attempts)
    }

    /// Each record's (offset, length including its header), in file order.
    fn record_spans(path: &Path) -> Vec<(usize, usize)> {
        let bytes = std::fs::read(log_path(path)).unwrap();
        let mut spans = Vec::new();
        let mut at = HEADER_BYTES as usize;
        loop {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                return spans;
            }
            spans.push((at, RECORD_HEADER_BYTES as usize + len));
            at += RECORD_HEADER_BYTES as usize + len;
        }
    }

    /// "202 = synced": an ingest and an attempt's outcome are not answered
    /// while their `fdatasync` waits, whether the writer syncs them (a lone
    /// small record) or the log's thread does (a record over 4 KiB here),
    /// which reports back only once the sync has returned.
    #[tokio::test]
    async fn callers_are_answered_only_after_their_records_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, switch) = store_with_faults(&dir.path().join("s.redb")).await;
        ingest(&store, 1).await;

        let ingesting = {
            let store = store.clone();
            held_until_synced(&switch, async move { store.ingest(batch(2, None)).await }).await
        };
        let answer = ingesting.await.unwrap().unwrap();
        assert_eq!(answer, IngestOutcome::Stored { suppressed: vec![] });

        let recording = {
            let store = store.clone();
            held_until_synced(
                &switch,
                async move { store.record_attempt(succeeded(1)).await },
            )
            .await
        };
        assert!(recording.await.unwrap().unwrap().is_some());
        assert_eq!(switch.log_syncs_on_log_thread(), 0);

        let big = over_4_kib(batch(3, None));
        let ingesting = {
            let store = store.clone();
            held_until_synced(&switch, async move { store.ingest(big).await }).await
        };
        assert!(ingesting.await.unwrap().is_ok());
        assert_eq!(
            switch.log_syncs_on_log_thread(),
            1,
            "synced by the log's thread"
        );
    }

    /// A lone small write is synced by the writer before it is applied,
    /// without waking the log's thread; a group still goes to that thread.
    /// Both are durable.
    #[tokio::test]
    async fn a_lone_small_write_is_synced_by_the_writer_and_a_group_by_the_log_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (store, switch) = store_with_faults(&path).await;
        let writer = store.writer.clone().unwrap();
        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());
        assert_eq!(switch.log_syncs(), 3, "each write synced");
        assert_eq!(switch.log_syncs_on_log_thread(), 0, "synced by the writer");

        // Ingest 3's sync holds the writer while three more queue up:
        // released, the writer takes them as one batch of three.
        switch.hold_log_syncs(true);
        let mut writes = vec![tokio::spawn({
            let store = store.clone();
            async move { ingest(&store, 3).await }
        })];
        let held = wait_until(|| switch.log_syncs_waiting() == 1).await;
        for n in 4..=6 {
            let store = store.clone();
            writes.push(tokio::spawn(async move { ingest(&store, n).await }));
        }
        let queued = wait_until(|| writer.waiting() == 3).await;
        switch.hold_log_syncs(false);
        assert!(held && queued, "the writes queued up");
        for write in writes {
            write.await.unwrap();
        }
        assert_eq!(switch.log_syncs(), 5, "the three in one sync");
        assert_eq!(
            switch.log_syncs_on_log_thread(),
            1,
            "the group on the log's thread"
        );

        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(rows_without_the_log(&copy).0, 0, "only the log holds them");
        let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
        for n in 1..=6 {
            let event = recovered.event(WS, EventId(n)).await.unwrap();
            assert!(event.is_some(), "event {n} is durable");
        }
        let (delivery, _) = recovered
            .delivery(WS, DeliveryId(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Succeeded);
        store.close().await.unwrap();
    }

    /// A sync that fails is reported the same way whichever thread made
    /// it: the caller is told, storage stops taking writes until a probe
    /// gets through, and the event is not stored.
    #[tokio::test]
    async fn a_failed_sync_fails_its_write_on_either_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (store, switch) = store_with_faults(&dir.path().join("s.redb")).await;
        ingest(&store, 1).await;
        let big = over_4_kib(batch(3, None));
        for (n, write) in [(2, batch(2, None)), (3, big)] {
            let refused = refused_at_its_sync(&store, &switch, write, true).await;
            assert!(refused, "write {n} reached its sync and was refused");
            switch.fail_log_writes(false);
            switch.fail_database_writes(false);
            writes_come_back(&store).await;
            assert!(store.event(WS, EventId(n)).await.unwrap().is_none());
        }
        assert_eq!(switch.log_syncs_on_log_thread(), 1, "one on each thread");
        ingest(&store, 4).await;
        store.close().await.unwrap();
    }

    /// A write whose sync failed is refused, and its records are wiped
    /// from the log before the caller hears of it: a restart before the
    /// storage probe has run (the crash image below, taken while the
    /// database file keeps the probe failing) does not bring it back, on
    /// either thread. The writes answered before it do come back.
    #[tokio::test]
    async fn a_write_whose_sync_failed_does_not_come_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (store, switch) = store_with_faults(&path).await;
        ingest(&store, 1).await;
        let big = over_4_kib(batch(3, Some("three")));
        for (n, write) in [(2, batch(2, Some("two"))), (3, big)] {
            let refused = refused_at_its_sync(&store, &switch, write, false).await;
            assert!(refused, "write {n} reached its sync and was refused");
            let crashed = tempfile::tempdir().unwrap();
            let copy = crash_image(&path, crashed.path());
            switch.fail_database_writes(false);
            writes_come_back(&store).await;

            let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
            assert!(recovered.event(WS, EventId(1)).await.unwrap().is_some());
            assert!(
                recovered.event(WS, EventId(n)).await.unwrap().is_none(),
                "write {n} was wiped from the log"
            );
            recovered.close().await.unwrap();
            assert!(store.event(WS, EventId(n)).await.unwrap().is_none());
        }
        assert_eq!(switch.log_syncs_on_log_thread(), 1, "one on each thread");
        ingest(&store, 4).await;
        store.close().await.unwrap();
    }

    /// When the wipe after a failed sync fails too (the log's disk keeps
    /// failing), the refused write may come back after a restart: its
    /// outcome is unknown, as the README says, and a retry with its
    /// idempotency key gets the first answer instead of a second event.
    /// (This pins down the documented outcome and that a wipe obeys the
    /// fault switch; the test above is the one that needs the wipe.)
    #[tokio::test]
    async fn a_refused_write_the_log_could_not_wipe_is_replayed_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (store, switch) = store_with_faults(&path).await;
        ingest(&store, 1).await;
        let refused = refused_at_its_sync(&store, &switch, batch(2, Some("k")), true).await;
        assert!(refused, "the write reached its sync and was refused");
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        switch.fail_log_writes(false);
        switch.fail_database_writes(false);
        writes_come_back(&store).await;
        assert!(
            store.event(WS, EventId(2)).await.unwrap().is_none(),
            "the probe's recovery skips its number"
        );
        store.close().await.unwrap();

        let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
        assert!(recovered.event(WS, EventId(2)).await.unwrap().is_some());
        let retried = recovered.ingest(batch(3, Some("k"))).await.unwrap();
        assert_eq!(
            retried,
            IngestOutcome::Replayed {
                status: 202,
                response: b"first".to_vec()
            }
        );
        assert!(recovered.event(WS, EventId(3)).await.unwrap().is_none());
        recovered.close().await.unwrap();
    }

    /// A logged batch whose every job was refused is wiped from the log
    /// once its sync is done. When that sync fails and so does the wipe,
    /// its numbers stay spent, and storage stops until the probe's durable
    /// commit has skipped them: otherwise the next write, logged after the
    /// gap, would not be replayed after a crash.
    #[tokio::test]
    async fn a_refused_batch_the_log_could_not_wipe_stops_storage_until_its_numbers_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (store, switch) = store_with_faults(&path).await;
        let writer = store.writer.clone().unwrap();
        ingest(&store, 1).await;
        // The read commits the open transaction, so the batch below is
        // alone in its own and nothing answered is aborted with it.
        assert!(store.event(WS, EventId(1)).await.unwrap().is_some());

        switch.hold_log_syncs(true);
        let refused: WriteOp<()> = Box::new(|_| Err(StoreError::Corrupt("refused".into())));
        let record = encode_ingest(&PreparedIngest::new(over_4_kib(batch(9, None))));
        let writing = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write_logged(refused, Some(record)).await }
        });
        let held = wait_until(|| switch.log_syncs_waiting() == 1).await;
        switch.fail_log_writes(true);
        switch.hold_log_syncs(false);
        assert!(held, "the batch went to the log's thread");
        assert!(writing.await.unwrap().is_err(), "the job is refused");
        let stopped = wait_until(|| !store.is_writable()).await;
        switch.fail_log_writes(false);
        assert!(stopped, "storage stops");
        writes_come_back(&store).await;

        ingest(&store, 2).await;
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
        assert!(recovered.event(WS, EventId(1)).await.unwrap().is_some());
        assert!(
            recovered.event(WS, EventId(2)).await.unwrap().is_some(),
            "the write logged after the spent numbers came back"
        );
        recovered.close().await.unwrap();
        store.close().await.unwrap();
    }

    /// Runs `write` with its log sync failing once its records are written
    /// (that sync alone, or with `log_keeps_failing` every log write after
    /// it, a wipe included); true when the write was refused and storage
    /// stopped taking writes. The database file is left failing, so that
    /// no probe recovers storage until the test says so
    /// (`fail_database_writes`).
    async fn refused_at_its_sync(
        store: &Arc<RedbStore>,
        switch: &FaultSwitch,
        write: IngestBatch,
        log_keeps_failing: bool,
    ) -> bool {
        switch.hold_log_syncs(true);
        let ingesting = tokio::spawn({
            let store = store.clone();
            async move { store.ingest(write).await }
        });
        let held = wait_until(|| switch.log_syncs_waiting() == 1).await;
        if log_keeps_failing {
            switch.fail_log_writes(true);
        } else {
            switch.fail_next_log_sync();
        }
        switch.fail_database_writes(true);
        switch.hold_log_syncs(false);
        let refused = ingesting.await.unwrap().is_err();
        held && refused && !store.is_writable()
    }

    /// Runs `write` with the log's syncs held; checks it is not answered
    /// while its sync waits, then lets the sync go. The hold is released
    /// before any assertion fails: a store dropped while a sync is held
    /// would wait for it forever.
    async fn held_until_synced<T: Send + 'static>(
        switch: &FaultSwitch,
        write: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        switch.hold_log_syncs(true);
        let task = tokio::spawn(write);
        for _ in 0..1_000 {
            if switch.log_syncs_waiting() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting = switch.log_syncs_waiting();
        // The records are written (and, on the log's thread, the batch
        // applied); an answer sent before the sync would arrive well
        // within this grace period.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answered_early = task.is_finished();
        switch.hold_log_syncs(false);
        assert_eq!(waiting, 1, "the write reached the sync");
        assert!(!answered_early, "answered before the log was synced");
        task
    }

    #[tokio::test]
    async fn writes_held_only_by_the_log_are_applied_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        ingest(&store, 1).await;
        let first = store.ingest(batch(2, Some("k"))).await.unwrap();
        assert_eq!(first, IngestOutcome::Stored { suppressed: vec![] });
        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());

        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(
            rows_without_the_log(&copy),
            (0, 0),
            "redb's own file holds only its last durable commit"
        );

        let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
        assert!(recovered.event(WS, EventId(1)).await.unwrap().is_some());
        assert!(recovered.event(WS, EventId(2)).await.unwrap().is_some());
        let (delivery, attempts) = recovered
            .delivery(WS, DeliveryId(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Succeeded);
        assert_eq!(attempts.len(), 1);
        let again = recovered.ingest(batch(3, Some("k"))).await.unwrap();
        assert_eq!(
            again,
            IngestOutcome::Replayed {
                status: 202,
                response: b"first".to_vec()
            },
            "the idempotency key came back with its first answer"
        );
        let after = tempfile::tempdir().unwrap();
        assert_eq!(
            rows_without_the_log(&crash_image(&copy, after.path())),
            (2, 1),
            "the recovery committed durably"
        );
        recovered.close().await.unwrap();
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn records_a_checkpoint_holds_are_never_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());
        // Not logged: a durable commit, and the log starts over.
        store.put_oauth_state(9, u64::MAX).await.unwrap();
        let checkpointed = tempfile::tempdir().unwrap();
        assert_eq!(
            rows_without_the_log(&crash_image(&path, checkpointed.path())),
            (2, 1)
        );
        ingest(&store, 3).await;

        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(
            record_spans(&copy).len(),
            3,
            "the new round's record, then the previous round's two behind it"
        );
        let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
        let (_, attempts) = recovered
            .delivery(WS, DeliveryId(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempts.len(), 1, "the outcome before the checkpoint once");
        assert!(recovered.event(WS, EventId(3)).await.unwrap().is_some());
        recovered.close().await.unwrap();
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_damaged_log_applies_the_records_before_the_damage_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        for n in 1..=6 {
            ingest(&store, n).await;
        }
        let crashed = tempfile::tempdir().unwrap();
        let image = crash_image(&path, crashed.path());
        let spans = record_spans(&image);
        assert_eq!(spans.len(), 6);
        let pristine = std::fs::read(log_path(&image)).unwrap();
        // Every record, damaged at its header, its number and its payload,
        // then cut there (zeros, as a torn append leaves the preallocated
        // file): only the records before it come back, and opening never
        // fails.
        for (index, &(start, len)) in spans.iter().enumerate() {
            for (damage, at) in [
                ("flip", start),
                ("flip", start + 9),
                ("flip", start + len - 1),
                ("cut", start + len / 2),
            ] {
                let case = tempfile::tempdir().unwrap();
                let copy = crash_image(&image, case.path());
                let mut log = pristine.clone();
                match damage {
                    "flip" => log[at] ^= 0x40,
                    _ => log[at..].iter_mut().for_each(|byte| *byte = 0),
                }
                std::fs::write(log_path(&copy), &log).unwrap();
                let db = Database::create(&copy).unwrap();
                let wal = Wal::recover(&db, &copy, WalOptions::default()).unwrap();
                drop(wal);
                let read = db.begin_read().unwrap();
                let events = read.open_table(EVENTS).unwrap();
                for n in 1..=6u128 {
                    let present = events.get((WS.0, n)).unwrap().is_some();
                    assert_eq!(
                        present,
                        (n as usize) <= index,
                        "{damage} at byte {at} of record {}: event {n}",
                        index + 1
                    );
                }
            }
        }
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_log_left_by_another_database_is_never_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        ingest(&store, 1).await;
        let crashed = tempfile::tempdir().unwrap();
        let image = crash_image(&path, crashed.path());
        store.close().await.unwrap();

        // Another database with the same workspace, given the first one's log.
        let other_dir = tempfile::tempdir().unwrap();
        let other = other_dir.path().join("other.redb");
        let opened = self::store(&other).await;
        opened.close().await.unwrap();
        drop(opened);
        std::fs::copy(log_path(&image), log_path(&other)).unwrap();
        let reopened = RedbStore::open(&other, options(Duration::from_secs(600))).unwrap();
        assert!(reopened.event(WS, EventId(1)).await.unwrap().is_none());
        reopened.close().await.unwrap();
    }

    #[tokio::test]
    async fn with_the_log_turned_off_a_left_log_is_applied_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        ingest(&store, 1).await;
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        store.close().await.unwrap();

        let off = StoreOptions {
            wal: WalOptions {
                capacity_bytes: 0,
                ..WalOptions::default()
            },
            ..StoreOptions::default()
        };
        let recovered = RedbStore::open(&copy, off).unwrap();
        assert!(recovered.event(WS, EventId(1)).await.unwrap().is_some());
        assert!(!log_path(&copy).exists());
        ingest(&recovered, 2).await;
        let after = tempfile::tempdir().unwrap();
        let image = after.path().join("image.redb");
        std::fs::copy(&copy, &image).unwrap();
        assert_eq!(
            rows_without_the_log(&image).0,
            2,
            "each batch a durable commit without a log"
        );
        recovered.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_full_log_makes_the_commit_durable_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let small = with_log_of(HEADER_BYTES + 600);
        let store = store_with(&path, small).await;
        for n in 1..=10 {
            ingest(&store, n).await;
        }
        let (durable, _) = rows_without_the_log(&crash_image(&path, dir.path()));
        assert!(
            (1..10).contains(&durable),
            "some batches did not fit and were committed durably: {durable} of 10"
        );
        let crashed = tempfile::tempdir().unwrap();
        let recovered =
            RedbStore::open(&crash_image(&path, crashed.path()), StoreOptions::default()).unwrap();
        for n in 1..=10 {
            assert!(
                recovered.event(WS, EventId(n)).await.unwrap().is_some(),
                "event {n}"
            );
        }
        // The queue rows the writer held back went in with each durable
        // commit, before the log started over.
        assert_eq!(recovered.queue_len().await.unwrap(), 10);
        recovered.close().await.unwrap();
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_restored_copy_of_the_database_ignores_the_log_of_a_later_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        ingest(&store, 1).await;
        store.close().await.unwrap();
        drop(store);
        let saved = dir.path().join("saved.redb");
        std::fs::copy(&path, &saved).unwrap();

        let store = RedbStore::open(&path, options(Duration::from_secs(600))).unwrap();
        ingest(&store, 2).await;
        let crashed = tempfile::tempdir().unwrap();
        let image = crash_image(&path, crashed.path());
        store.close().await.unwrap();
        // The copy put back in place, next to the later run's log.
        std::fs::copy(&saved, &image).unwrap();
        let restored = RedbStore::open(&image, options(Duration::from_secs(600))).unwrap();
        assert!(restored.event(WS, EventId(1)).await.unwrap().is_some());
        assert!(
            restored.event(WS, EventId(2)).await.unwrap().is_none(),
            "the later run's records are not applied to the copy"
        );
        restored.close().await.unwrap();
    }

    #[test]
    fn a_new_delivery_with_noise_control_crosses_the_log_unchanged() {
        use crate::model::AlertState;
        use crate::store::NoiseCheck;
        for state in [
            None,
            Some(AlertState::Triggered),
            Some(AlertState::Acknowledged),
            Some(AlertState::Resolved),
        ] {
            let mut ingest = batch(7, Some("key"));
            let check = NoiseCheck {
                dedup_seconds: Some(60),
                max_per_hour: Some(3),
                state,
            };
            ingest.noise.insert(DeliveryId(7), check);
            let prepared = PreparedIngest::new(ingest);
            let LoggedWrite::Ingest(wire) = decode(&encode_ingest(&prepared)[..]).unwrap() else {
                panic!("an ingest");
            };
            let back = PreparedIngest::from_wire(wire).unwrap();
            assert_eq!(encode_ingest(&back), encode_ingest(&prepared), "{state:?}");
        }
        let mut outcome = succeeded(3);
        outcome.next = NextStep::RetryAt(9_000);
        outcome.pause_connection_until = Some(10_000);
        let LoggedWrite::Attempt(wire) = decode(&encode_attempt(&outcome).unwrap()).unwrap() else {
            panic!("an attempt");
        };
        assert_eq!(
            (wire.delivery, wire.pause_connection_until),
            (3, Some(10_000))
        );
        assert!(matches!(wire.next, NextWire::RetryAt(9_000)));
        outcome.connection_status = Some(crate::model::ConnectionStatus::Disabled);
        assert!(
            encode_attempt(&outcome).is_none(),
            "a connection status change is not logged"
        );
        assert!(matches!(
            decode(&[9, 0, 0]),
            Err(CodecError::UnknownVersion { version: 9, .. })
        ));
    }

    #[test]
    fn an_older_releases_logged_event_has_its_deliveries_indexed_when_applied() {
        use crate::store::DeliveryQuery;
        use crate::store::redb_backend::tables::{EVENT_DELIVERIES, WORKSPACES, create_all};
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("s.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        txn.open_table(WORKSPACES)
            .unwrap()
            .insert(WS.0, b"w".as_slice())
            .unwrap();
        {
            let mut scope = WriteScope::new(&txn);
            for (n, older) in [(5, true), (6, false)] {
                let LoggedWrite::Ingest(mut wire) =
                    decode(&encode_ingest(&PreparedIngest::new(batch(n, None)))[..]).unwrap()
                else {
                    panic!("an ingest");
                };
                if older {
                    let record = EventRecord::decode(&wire.events[0].record).unwrap();
                    wire.events[0].record = record.encode_version_one();
                }
                apply(&mut scope, LoggedWrite::Ingest(wire)).unwrap();
            }
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let index = read.open_table(EVENT_DELIVERIES).unwrap();
        assert_eq!(index.len().unwrap(), 1, "only the older record's delivery");
        assert!(index.get((WS.0, 5, 5)).unwrap().is_some());
        for n in [5, 6] {
            let query = DeliveryQuery {
                status: None,
                event_id: Some(EventId(n)),
                connection_id: None,
                before: None,
                limit: 10,
            };
            let page = deliveries::list(&read, WS, &query).unwrap();
            let ids: Vec<DeliveryId> = page.deliveries.iter().map(|d| d.id).collect();
            assert_eq!(ids, [DeliveryId(n)], "event {n}");
        }
    }

    #[tokio::test]
    async fn a_log_longer_than_one_recovery_transaction_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let big = with_log_of(32 * 1024 * 1024);
        let store = store_with(&path, big).await;
        // 16 records of about 600 KB: two recovery transactions.
        for round in 0..16u128 {
            let mut events = Vec::new();
            for n in 0..500u128 {
                let mut one = batch(round * 1_000 + n + 1, None);
                one.events[0].payload = vec![b'x'; 1_000];
                events.push(one);
            }
            let mut ingest = events.remove(0);
            for mut more in events {
                ingest.events.append(&mut more.events);
                ingest.deliveries.append(&mut more.deliveries);
            }
            store.ingest(ingest).await.unwrap();
        }
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(rows_without_the_log(&copy).0, 0);
        let recovered = RedbStore::open(&copy, StoreOptions::default()).unwrap();
        recovered.close().await.unwrap();
        drop(recovered);
        assert_eq!(rows_without_the_log(&copy).0, 8_000);
        store.close().await.unwrap();
    }

    /// New deliveries' queue rows wait in the writer (`deferred.rs`): a
    /// first outcome drops its row without writing it, every reader of the
    /// queue sees the others, a checkpoint writes them, and after a crash
    /// the log brings back exactly the rows still queued.
    #[tokio::test]
    async fn queue_rows_held_in_the_writer_reach_readers_checkpoints_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert_eq!(queue_in_the_table(&store), Vec::<u128>::new(), "held");
        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());
        assert_eq!(
            store.queue_len().await.unwrap(),
            1,
            "written for the reader"
        );
        assert_eq!(queue_in_the_table(&store), [2]);

        ingest(&store, 3).await;
        let heads = store.queue_heads().await.unwrap();
        assert_eq!(heads.backlog, 2);
        assert_eq!(queue_in_the_table(&store), [2, 3]);

        ingest(&store, 4).await;
        // Not logged: a durable commit, which starts the log over, so the
        // file itself must hold the row still waiting.
        store.put_oauth_state(9, u64::MAX).await.unwrap();
        let checkpointed = tempfile::tempdir().unwrap();
        let image = crash_image(&path, checkpointed.path());
        assert_eq!(queue_without_the_log(&image), [2, 3, 4]);

        // Only in the log: 5 stays queued, 6 was delivered, 2 too.
        ingest(&store, 5).await;
        ingest(&store, 6).await;
        assert!(store.record_attempt(succeeded(6)).await.unwrap().is_some());
        assert!(store.record_attempt(succeeded(2)).await.unwrap().is_some());
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(queue_without_the_log(&copy), [2, 3, 4]);
        let recovered = RedbStore::open(&copy, options(Duration::from_secs(600))).unwrap();
        assert_eq!(queue_in_the_table(&recovered), [3, 4, 5]);
        assert_eq!(recovered.queue_len().await.unwrap(), 3);
        recovered.close().await.unwrap();

        // Closing checkpoints: the file is complete without its log.
        ingest(&store, 7).await;
        store.close().await.unwrap();
        drop(store);
        assert_eq!(queue_without_the_log(&path), [3, 4, 5, 7]);
    }

    /// A write on the bare transaction (here a deleted workspace's purge)
    /// sees the rows the writer holds back, even those of its own batch:
    /// none outlives its delivery.
    #[tokio::test]
    async fn a_purge_removes_queue_rows_the_writer_held_back_in_its_own_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (store, switch) = store_with_faults(&dir.path().join("s.redb")).await;
        let writer = store.writer.clone().unwrap();
        // The writer waits in a durable commit's sync while an ingest, the
        // workspace's deletion and its purge queue up behind it, in that
        // order: released, it takes the three as one batch.
        switch.hold_database_syncs(true);
        let holding = tokio::spawn(store.put_oauth_state(9, u64::MAX));
        let held = wait_until(|| switch.database_syncs_waiting() == 1).await;
        let ingesting = tokio::spawn({
            let store = store.clone();
            async move { store.ingest(batch(1, None)).await }
        });
        let queued_1 = wait_until(|| writer.waiting() == 1).await;
        let deleting = tokio::spawn(store.delete_workspace(WS));
        let queued_2 = wait_until(|| writer.waiting() == 2).await;
        let purging = tokio::spawn(store.purge_deleted(1_000));
        let queued_3 = wait_until(|| writer.waiting() == 3).await;
        switch.hold_database_syncs(false);
        assert!(
            held && queued_1 && queued_2 && queued_3,
            "the writes queued up"
        );

        holding.await.unwrap().unwrap();
        ingesting.await.unwrap().unwrap();
        assert!(deleting.await.unwrap().unwrap());
        let more = purging.await.unwrap().unwrap();
        assert!(!more, "one step purged the workspace");
        assert_eq!(store.queue_len().await.unwrap(), 0);
        store.close().await.unwrap();
    }

    /// Polls `condition` for up to ten seconds; whether it came true.
    async fn wait_until(condition: impl Fn() -> bool) -> bool {
        for _ in 0..10_000 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }

    /// When the log alone fails, redb's handle is sound, and closing it
    /// (the probe reopens the file) keeps its unsynced commits: the log's
    /// replay then has nothing to apply, and the queue rows held back must
    /// come back from the writer itself.
    #[tokio::test]
    async fn queue_rows_held_back_survive_a_failure_of_the_log_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, switch) = store_with_faults(&dir.path().join("s.redb")).await;
        ingest(&store, 1).await;
        assert_eq!(queue_in_the_table(&store), Vec::<u128>::new(), "held");

        switch.fail_log_writes(true);
        assert!(store.ingest(batch(2, None)).await.is_err());
        assert!(!store.is_writable());
        switch.fail_log_writes(false);
        writes_come_back(&store).await;

        assert_eq!(queue_in_the_table(&store), [1]);
        assert!(store.event(WS, EventId(2)).await.unwrap().is_none());
        ingest(&store, 3).await;
        assert_eq!(store.queue_len().await.unwrap(), 2);
        store.close().await.unwrap();
    }

    /// Logged writes are answered from the open transaction, before any
    /// commit holds them; a read after the answer still sees them, in
    /// every kind of read (a point read, a scan on the blocking pool).
    #[tokio::test]
    async fn a_read_after_an_answer_sees_the_write_the_open_transaction_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("s.redb")).await;
        let writer = store.writer.clone().unwrap();
        ingest(&store, 1).await;
        assert!(writer.holds_unpublished());
        assert_eq!(events_in_the_file(&store), 0, "no commit holds it yet");
        assert!(store.event(WS, EventId(1)).await.unwrap().is_some());
        assert!(!writer.holds_unpublished(), "the read had it committed");
        assert_eq!(events_in_the_file(&store), 1);

        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());
        assert!(writer.holds_unpublished());
        let (delivery, _) = store.delivery(WS, DeliveryId(1)).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Succeeded);

        ingest(&store, 2).await;
        assert!(writer.holds_unpublished());
        let query = crate::store::EventQuery {
            name: None,
            before: None,
            limit: 10,
        };
        let page = store.events(WS, query).await.unwrap();
        assert_eq!(page.events.len(), 2, "the scan sees the second event");

        // A requeue of every dead delivery scans a snapshot first.
        let dead = AttemptOutcome {
            next: NextStep::Dead,
            ..succeeded(2)
        };
        assert!(store.record_attempt(dead).await.unwrap().is_some());
        assert!(writer.holds_unpublished());
        let every_dead = Requeue::Matching {
            status: DeliveryStatus::Dead,
            since_ms: 0,
            limit: 10,
        };
        let requeued = store.requeue(WS, every_dead, 5_000).await.unwrap();
        assert_eq!(requeued.len(), 1, "the scan sees the dead delivery");
        store.close().await.unwrap();
    }

    /// A delivery's context is read without making the writer commit when
    /// a read begun now holds every write answered for it (`recent.rs`):
    /// its ingest is published and no outcome of it waits for a commit.
    /// Otherwise the writer's snapshot is read, as for any read.
    #[tokio::test]
    async fn a_context_is_read_without_a_commit_when_nothing_of_it_waits() {
        use crate::model::ConnectionStatus;
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("s.redb")).await;
        let writer = store.writer.clone().unwrap();
        let context = |n: u128| {
            let store = store.clone();
            async move {
                store
                    .delivery_context(WS, DeliveryId(n))
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let retry = |n: u128, at: u64| AttemptOutcome {
            next: NextStep::RetryAt(at),
            ..succeeded(n)
        };

        // New, in the open transaction only: found in the snapshot.
        ingest(&store, 1).await;
        assert_eq!(context(1).await.delivery.attempt_count, 0);
        assert!(!writer.holds_unpublished(), "the snapshot published it");

        ingest(&store, 2).await;
        assert!(writer.holds_unpublished());
        assert_eq!(context(1).await.delivery.attempt_count, 0);
        assert!(writer.holds_unpublished(), "read without a commit");

        // An outcome of delivery 1 waits in the open transaction: its
        // context must show it.
        store
            .record_attempt(retry(1, 9_000))
            .await
            .unwrap()
            .unwrap();
        assert!(writer.holds_unpublished());
        let first = context(1).await;
        assert_eq!(first.delivery.attempt_count, 1);
        assert_eq!(first.delivery.status, DeliveryStatus::Retrying);
        assert!(!writer.holds_unpublished(), "read in the snapshot");

        // Once published, the next outcome needs the snapshot again; other
        // deliveries do not.
        ingest(&store, 3).await;
        store
            .record_attempt(retry(1, 10_000))
            .await
            .unwrap()
            .unwrap();
        assert!(writer.holds_unpublished());
        assert_eq!(context(2).await.delivery.attempt_count, 0);
        assert!(writer.holds_unpublished(), "read without a commit");
        assert_eq!(context(1).await.delivery.attempt_count, 2);
        assert!(!writer.holds_unpublished(), "read in the snapshot");

        // An outcome that disables the connection is not logged: it is
        // committed before it is answered, so a context read without a
        // commit shows it.
        store.create_connection(webhook_connection()).await.unwrap();
        let disabling = AttemptOutcome {
            next: NextStep::Dead,
            connection_status: Some(ConnectionStatus::Disabled),
            ..succeeded(2)
        };
        store.record_attempt(disabling).await.unwrap().unwrap();
        ingest(&store, 4).await;
        assert!(writer.holds_unpublished());
        let third = context(3).await;
        assert!(writer.holds_unpublished(), "read without a commit");
        let status = third.connection.map(|connection| connection.status);
        assert_eq!(status, Some(ConnectionStatus::Disabled));
        store.close().await.unwrap();
    }

    /// A new database and its log, with no writer: for tests of the log's
    /// own recovery steps.
    fn database_with_a_log(dir: &Path) -> (Database, Wal) {
        let path = dir.join("s.redb");
        let db = Database::create(&path).unwrap();
        let wal = Wal::recover(&db, &path, WalOptions::default())
            .unwrap()
            .unwrap();
        (db, wal)
    }

    /// Queue rows as the writer holds them back after answering their
    /// batch: one, for `delivery`.
    fn one_answered_held_row(delivery: u128) -> RefCell<DeferredRows> {
        use super::super::deferred::QueueRow;
        let held = RefCell::new(DeferredRows::new(16));
        let row = QueueRow {
            connection: 1,
            due_ms: 7,
            workspace: WS.0,
        };
        assert!(held.borrow_mut().hold(delivery, row));
        held.borrow_mut().acknowledged();
        held
    }

    /// After a failure, the replay's durable commit, which starts the log
    /// over, carries the queue rows the writer held back: no commit moves
    /// the log's position past an event without its row.
    #[test]
    fn recovery_after_a_failure_writes_the_held_rows_in_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut wal) = database_with_a_log(dir.path());
        let held = one_answered_held_row(42);

        wal.recover_after_failure(&db, Some(&held)).unwrap();

        assert!(held.borrow().is_empty(), "written, not held any more");
        assert!(!wal.holds_records(), "the log started over");
        assert_eq!(queued_ids(&db.begin_read().unwrap()), [42]);
    }

    /// The reopened database may hold a log position past the numbers the
    /// log gave back (a commit that reported failing landed all the same):
    /// the next record is numbered after it, so the next replay does not
    /// skip it as already applied.
    #[test]
    fn recovery_never_reuses_numbers_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut wal) = database_with_a_log(dir.path());
        let ahead = wal.next_seq + 100;
        let txn = db.begin_write().unwrap();
        store_applied(&txn, ahead).unwrap();
        txn.commit().unwrap();

        wal.recover_after_failure(&db, None).unwrap();

        let record = encode_ingest(&PreparedIngest::new(batch(1, None)));
        assert_eq!(log_synced(&mut wal, &[&record]), ahead + 1);
    }

    /// Logs `records` as one batch and waits for their sync, without
    /// applying them; the last one's number.
    fn log_synced(wal: &mut Wal, records: &[&[u8]]) -> u64 {
        let logged = wal.begin(records.iter().map(|record| Some(*record)));
        let Logged::Through(through) = logged.unwrap() else {
            panic!("logged, not a checkpoint");
        };
        wal.finish().unwrap();
        through
    }

    /// A logged write refused again in a replay after it wrote part of its
    /// change (here ingest 3, whose rule's stored noise state does not
    /// decode, read after its event went in) leaves none of it; the
    /// records around it are applied. At start-up, where the writer died
    /// before its retry without the job was committed:
    /// (With a first record of 9 MiB, the refused one is in the replay's
    /// second transaction, after another.)
    #[test]
    fn a_write_refused_halfway_at_start_up_leaves_nothing_of_its_change() {
        for first_payload in [16, REPLAY_CHUNK_BYTES + 1024 * 1024] {
            let dir = tempfile::tempdir().unwrap();
            let (db, mut wal) = database_with_a_log(dir.path());
            log_a_write_refused_halfway(&db, &mut wal, first_payload);
            drop(wal);

            let path = dir.path().join("s.redb");
            let wal = Wal::recover(&db, &path, WalOptions::default()).unwrap();

            assert!(wal.is_some_and(|wal| !wal.holds_records()));
            let read = db.begin_read().unwrap();
            let label = format!("first payload {first_payload} bytes");
            assert_eq!(event_ids(&read), [1, 2, 4], "nothing of event 3, {label}");
            assert_eq!(queued_ids(&read), [1, 2, 4], "{label}");
        }
    }

    /// The same after a storage failure, with queue rows held back, which
    /// go in once: the transaction that held them is applied again.
    #[test]
    fn a_write_refused_halfway_after_a_failure_leaves_nothing_and_keeps_the_held_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut wal) = database_with_a_log(dir.path());
        let through = log_a_write_refused_halfway(&db, &mut wal, 16);
        wal.acknowledge(through);
        let held = one_answered_held_row(42);

        wal.recover_after_failure(&db, Some(&held)).unwrap();

        assert!(held.borrow().is_empty(), "written, not held any more");
        let read = db.begin_read().unwrap();
        assert_eq!(event_ids(&read), [1, 2, 4], "nothing of event 3");
        assert_eq!(queued_ids(&read), [1, 2, 4, 42]);
    }

    /// The held rows go into the replay's first transaction; when a later
    /// one fails (here on a record that does not decode), they stay
    /// written and are not held again (a second copy would outlive its
    /// delivery's first outcome).
    #[test]
    fn held_rows_stay_written_when_a_later_replay_transaction_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut wal) = database_with_a_log(dir.path());
        let mut first = batch(1, None);
        first.events[0].payload = vec![b'x'; REPLAY_CHUNK_BYTES + 1024 * 1024];
        let first = encode_ingest(&PreparedIngest::new(first));
        let undecodable = [9u8, 0, 0];
        let through = log_synced(&mut wal, &[&first, &undecodable]);
        wal.acknowledge(through);
        let held = one_answered_held_row(42);

        let recovered = wal.recover_after_failure(&db, Some(&held));

        assert!(
            matches!(recovered, Err(WalError::Record { .. })),
            "{recovered:?}"
        );
        assert!(held.borrow().is_empty(), "written, not held again");
        assert_eq!(queued_ids(&db.begin_read().unwrap()), [42]);
    }

    /// Commits the workspace and a rule noise state that does not decode,
    /// then logs (not applies) ingests 1 to 4, the third with noise
    /// control, the first with a payload of `first_payload` bytes; returns
    /// the last record's number.
    fn log_a_write_refused_halfway(db: &Database, wal: &mut Wal, first_payload: usize) -> u64 {
        use crate::store::NoiseCheck;
        use crate::store::redb_backend::tables::{RULE_NOISE, WORKSPACES};
        let txn = db.begin_write().unwrap();
        txn.open_table(WORKSPACES)
            .unwrap()
            .insert(WS.0, b"w".as_slice())
            .unwrap();
        txn.open_table(RULE_NOISE)
            .unwrap()
            .insert((WS.0, 1), [0xff, 0xff].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let records: Vec<Vec<u8>> = (1..=4)
            .map(|n| {
                let mut ingest = batch(n, None);
                if n == 1 {
                    ingest.events[0].payload = vec![b'x'; first_payload];
                }
                if n == 3 {
                    let check = NoiseCheck {
                        max_per_hour: Some(10),
                        ..NoiseCheck::default()
                    };
                    ingest.noise.insert(DeliveryId(3), check);
                }
                encode_ingest(&PreparedIngest::new(ingest))
            })
            .collect();
        let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        log_synced(wal, &records)
    }

    fn event_ids(read: &redb::ReadTransaction) -> Vec<u128> {
        use redb::ReadableTable;
        let table = read.open_table(EVENTS).unwrap();
        table
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value().1)
            .collect()
    }

    /// The logged batches of one open transaction share the tables its jobs
    /// opened (`writer.rs`, `KeptScope`). An unlogged write (an outcome
    /// that disables its connection) commits that transaction with its
    /// tables closed first, and the next logged batch opens them again in a
    /// new one.
    #[tokio::test]
    async fn batches_of_one_open_transaction_share_its_tables() {
        use crate::model::ConnectionStatus;
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("s.redb")).await;
        let writer = store.writer.clone().unwrap();
        store.create_connection(webhook_connection()).await.unwrap();

        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());
        let disabling = AttemptOutcome {
            next: NextStep::Dead,
            connection_status: Some(ConnectionStatus::Disabled),
            ..succeeded(2)
        };
        assert!(writer.holds_unpublished());
        assert_eq!(
            events_in_the_file(&store),
            0,
            "the open transaction holds it"
        );
        assert!(store.record_attempt(disabling).await.unwrap().is_some());
        assert!(!writer.holds_unpublished());
        assert_eq!(
            events_in_the_file(&store),
            2,
            "committed before the unlogged write"
        );
        ingest(&store, 3).await;
        assert!(store.record_attempt(succeeded(3)).await.unwrap().is_some());
        assert!(writer.holds_unpublished());
        assert_eq!(
            events_in_the_file(&store),
            2,
            "a new open transaction holds 3"
        );

        for n in 1..=3 {
            assert!(
                store.event(WS, EventId(n)).await.unwrap().is_some(),
                "event {n}"
            );
        }
        let status = |n: u128| {
            let store = store.clone();
            async move {
                let (delivery, _) = store.delivery(WS, DeliveryId(n)).await.unwrap().unwrap();
                delivery.status
            }
        };
        assert_eq!(status(1).await, DeliveryStatus::Succeeded);
        assert_eq!(status(2).await, DeliveryStatus::Dead);
        assert_eq!(status(3).await, DeliveryStatus::Succeeded);
        let connection = store
            .connection(WS, ConnectionId(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connection.status, ConnectionStatus::Disabled);
        assert_eq!(events_in_the_file(&store), 3);
        store.close().await.unwrap();

        // And all of it is in the file on its own.
        drop(store);
        let reopened = self::store(&dir.path().join("s.redb")).await;
        assert_eq!(events_in_the_file(&reopened), 3);
        let (delivery, _) = reopened.delivery(WS, DeliveryId(2)).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Dead);
        reopened.close().await.unwrap();
    }

    /// The writes the open transaction held when storage failed were
    /// answered: they come back from the log when storage is reopened. The
    /// queue rows held back stay right: the replay redoes those writes in
    /// the table, and the rows held and taken by them stand, so no row is
    /// lost and none is left for a finished delivery.
    #[tokio::test]
    async fn answered_writes_and_held_queue_rows_survive_an_aborted_open_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, switch) = store_with_faults(&dir.path().join("s.redb")).await;
        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert!(
            store.event(WS, EventId(2)).await.unwrap().is_some(),
            "committed"
        );
        assert!(store.record_attempt(succeeded(1)).await.unwrap().is_some());
        ingest(&store, 3).await;
        assert_eq!(queue_in_the_table(&store), Vec::<u128>::new(), "held");

        assert_eq!(
            events_in_the_file(&store),
            2,
            "3 is in the open transaction"
        );

        fail_the_log_for_one_ingest(&store, &switch, 4).await;

        assert_eq!(events_in_the_file(&store), 3, "replayed from the log");
        assert_eq!(queue_in_the_table(&store), [2, 3]);
        let (delivery, attempts) = store.delivery(WS, DeliveryId(1)).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Succeeded, "replayed");
        assert_eq!(attempts.len(), 1);
        assert!(
            store.event(WS, EventId(4)).await.unwrap().is_none(),
            "refused"
        );
        assert!(
            store.event(WS, EventId(3)).await.unwrap().is_some(),
            "replayed"
        );
        store.close().await.unwrap();
    }

    /// The open transaction is committed once its jobs' log records reach
    /// `PUBLISH_AFTER_BYTES`, with no reader asking: its changed pages are
    /// held in memory until then.
    #[tokio::test]
    async fn the_open_transaction_is_committed_once_its_records_reach_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let roomy_log = with_log_of(16 * 1024 * 1024);
        let store = store_with(&path, roomy_log).await;
        let writer = store.writer.clone().unwrap();
        let payload = vec![b'7'; 200 * 1024];
        // 25 records of a little over 200 KiB: one commit, after about 21.
        for n in 1..=25 {
            let mut big = batch(n, None);
            big.events[0].payload = payload.clone();
            store.ingest(big).await.unwrap();
        }
        // The commit follows the answer; no reader asks for it.
        assert!(wait_until(|| events_in_the_file(&store) > 0).await);
        let committed = events_in_the_file(&store);
        assert!(
            (19..=21).contains(&committed),
            "{committed} events in the commit"
        );
        assert!(writer.holds_unpublished(), "the rest are in the next one");
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(rows_without_the_log(&copy).0, 0, "committed without a sync");
        store.close().await.unwrap();
    }

    /// Group pacing (`storage.wal_group_wait_us`): a group of logged
    /// writes starts no sooner than the wait after the previous one, and
    /// takes every write that arrived meanwhile in one log sync.
    #[tokio::test]
    async fn paced_groups_start_a_wait_apart_and_take_what_arrived_meanwhile() {
        const WAIT: Duration = Duration::from_millis(200);
        let dir = tempfile::tempdir().unwrap();
        let switch = FaultSwitch::new();
        let paced = StoreOptions {
            faults: Some(switch.clone()),
            wal: WalOptions {
                group_wait: WAIT,
                ..with_log_of(1024 * 1024).wal
            },
            ..StoreOptions::default()
        };
        let store = store_with(&dir.path().join("s.redb"), paced).await;

        // One write at a time: the second group waits for the first one's
        // start plus the wait.
        let started = Instant::now();
        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert!(started.elapsed() >= WAIT, "{:?}", started.elapsed());

        // Writes sent one by one while the next group waits go out in one
        // sync (without pacing, each would find the writer idle).
        let syncs_before = switch.log_syncs();
        let mut writes = Vec::new();
        for n in 3..=6 {
            let store = store.clone();
            writes.push(tokio::spawn(async move { ingest(&store, n).await }));
            tokio::time::sleep(WAIT / 10).await;
        }
        for write in writes {
            write.await.unwrap();
        }
        assert_eq!(switch.log_syncs() - syncs_before, 1);
        store.close().await.unwrap();
    }

    /// A paced wait never holds up what may not wait: a reader, a write the
    /// log does not carry, closing. With a 30 s wait, each ends it.
    #[tokio::test]
    async fn a_reader_an_unlogged_write_or_closing_ends_a_paced_wait() {
        const WAIT: Duration = Duration::from_secs(30);
        let dir = tempfile::tempdir().unwrap();
        let paced = StoreOptions {
            wal: WalOptions {
                group_wait: WAIT,
                ..with_log_of(1024 * 1024).wal
            },
            ..StoreOptions::default()
        };
        let store = store_with(&dir.path().join("s.redb"), paced).await;
        let started = Instant::now();
        ingest(&store, 1).await; // the first group does not wait
        let waiting = |n| {
            let store = store.clone();
            tokio::spawn(async move { ingest(&store, n).await })
        };
        // Each ingest below waits for company until the next step ends its
        // wait; the pause lets the writer take it first.
        let pause = Duration::from_millis(100);

        let write = waiting(2);
        tokio::time::sleep(pause).await;
        assert!(store.event(WS, EventId(1)).await.unwrap().is_some());
        write.await.unwrap();

        let write = waiting(3);
        tokio::time::sleep(pause).await;
        store
            .create_workspace(NewWorkspace::for_tests(WorkspaceId(2), "other"))
            .await
            .unwrap();
        write.await.unwrap();

        let write = waiting(4);
        tokio::time::sleep(pause).await;
        store.close().await.unwrap();
        write.await.unwrap();
        assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    }

    /// A logged job refused after it wrote part of its change leaves none
    /// of it, whether the open transaction was empty or held writes
    /// already answered; those stay, and are made durable on the way.
    #[tokio::test]
    async fn a_logged_job_refused_halfway_leaves_nothing_and_answered_writes_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = store(&path).await;
        let writer = store.writer.clone().unwrap();
        assert!(refused_halfway(&writer).await.is_err());
        assert!(!partial_in_the_file(&store));
        ingest(&store, 1).await;
        // Committed (not durably), its queue row still held back.
        assert!(store.event(WS, EventId(1)).await.unwrap().is_some());
        ingest(&store, 2).await;
        assert_eq!(
            events_in_the_file(&store),
            1,
            "2 is in the open transaction"
        );
        assert!(refused_halfway(&writer).await.is_err());
        assert!(!partial_in_the_file(&store));
        assert!(!writer.holds_unpublished());
        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(
            rows_without_the_log(&copy).0,
            2,
            "the answered ingests are durable"
        );
        assert_eq!(
            queue_without_the_log(&copy),
            [1, 2],
            "with their queue rows"
        );
        ingest(&store, 3).await;
        assert!(
            store.event(WS, EventId(3)).await.unwrap().is_some(),
            "read: committed"
        );
        assert!(!partial_in_the_file(&store), "nothing of it in any commit");
        assert!(store.event(WS, EventId(9)).await.unwrap().is_none());
        store.close().await.unwrap();
    }

    /// A refused job in a batch with a good one, while the open
    /// transaction holds answered writes and a commit holds an event whose
    /// queue row is held back: the good job and every answered write are
    /// made durable with every queue row, and nothing of the refused job.
    #[tokio::test]
    async fn a_refused_job_beside_answered_writes_loses_no_queue_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (store, switch) = store_with_faults(&path).await;
        let writer = store.writer.clone().unwrap();
        ingest(&store, 1).await;
        assert!(
            store.event(WS, EventId(1)).await.unwrap().is_some(),
            "committed"
        );
        ingest(&store, 2).await;
        // Ingest 4 waits in its log sync while the refused job and ingest 3
        // queue up behind it: released, the writer takes them as one batch.
        switch.hold_log_syncs(true);
        let holding = tokio::spawn({
            let store = store.clone();
            async move { store.ingest(batch(4, None)).await }
        });
        let held = wait_until(|| switch.log_syncs_waiting() == 1).await;
        let refusing = tokio::spawn(refused_halfway(&writer));
        let queued_1 = wait_until(|| writer.waiting() == 1).await;
        let good = tokio::spawn({
            let store = store.clone();
            async move { store.ingest(batch(3, None)).await }
        });
        let queued_2 = wait_until(|| writer.waiting() == 2).await;
        switch.hold_log_syncs(false);
        assert!(held && queued_1 && queued_2, "the writes queued up");
        holding.await.unwrap().unwrap();
        assert!(refusing.await.unwrap().is_err());
        good.await.unwrap().unwrap();

        let crashed = tempfile::tempdir().unwrap();
        let copy = crash_image(&path, crashed.path());
        assert_eq!(rows_without_the_log(&copy).0, 4, "every event is durable");
        assert_eq!(queue_without_the_log(&copy), [1, 2, 3, 4]);
        assert!(!partial_in_the_file(&store), "nothing of the refused job");
        store.close().await.unwrap();
    }

    /// The log fails the write of ingest `n` (refused, storage failing),
    /// then works again: returns once the probe has storage back.
    async fn fail_the_log_for_one_ingest(store: &RedbStore, switch: &FaultSwitch, n: u128) {
        switch.fail_log_writes(true);
        assert!(store.ingest(batch(n, None)).await.is_err());
        assert!(!store.is_writable());
        switch.fail_log_writes(false);
        writes_come_back(store).await;
    }

    /// Returns once the probe has storage back after a failure.
    async fn writes_come_back(store: &RedbStore) {
        let mut writable = store.writable();
        tokio::time::timeout(Duration::from_secs(20), writable.wait_for(|ok| *ok))
            .await
            .expect("the probe brings writes back")
            .unwrap();
    }

    /// A logged write (carrying an ingest record) that writes a row of
    /// `PARTIAL`, then fails as a record that does not decode would.
    fn refused_halfway(writer: &Writer) -> impl Future<Output = Result<(), StoreError>> + use<> {
        let op: WriteOp<()> = Box::new(|scope| {
            scope.txn()?.open_table(PARTIAL)?.insert(1, 1)?;
            Err(StoreError::Corrupt("refused halfway".into()))
        });
        let record = encode_ingest(&PreparedIngest::new(batch(9, None)));
        let writer = writer.clone();
        async move { writer.write_logged(op, Some(record)).await }
    }

    const PARTIAL: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("partial");

    /// Whether any commit holds a row of `PARTIAL`.
    fn partial_in_the_file(store: &RedbStore) -> bool {
        let read = store.slot.get().unwrap().begin_read().unwrap();
        read.open_table(PARTIAL)
            .is_ok_and(|table| table.len().unwrap() > 0)
    }

    /// Events committed to the live database so far, read around the writer.
    fn events_in_the_file(store: &RedbStore) -> u64 {
        let read = store.slot.get().unwrap().begin_read().unwrap();
        read.open_table(EVENTS).unwrap().len().unwrap()
    }

    /// A reader's snapshot is taken after the held rows are written, even
    /// when every job of its batch was refused (nothing else commits).
    #[tokio::test]
    async fn a_reader_in_a_batch_of_refused_jobs_still_sees_the_held_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, switch) = store_with_faults(&dir.path().join("s.redb")).await;
        let writer = store.writer.clone().unwrap();
        ingest(&store, 1).await;
        // The writer waits in the next ingest's log sync while a refused
        // write and a reader queue up behind it: released, it takes the two
        // as one batch.
        switch.hold_log_syncs(true);
        let holding = tokio::spawn({
            let store = store.clone();
            async move { store.ingest(batch(2, None)).await }
        });
        let held = wait_until(|| switch.log_syncs_waiting() == 1).await;
        let refusing = tokio::spawn({
            let writer = writer.clone();
            async move {
                let refused: crate::store::redb_backend::writer::WriteOp<()> =
                    Box::new(|_| Err(StoreError::Corrupt("refused on purpose".into())));
                writer.write(refused).await
            }
        });
        let queued_1 = wait_until(|| writer.waiting() == 1).await;
        let reading = tokio::spawn(store.queue_len());
        let queued_2 = wait_until(|| writer.waiting() == 2).await;
        switch.hold_log_syncs(false);
        assert!(held && queued_1 && queued_2, "the writes queued up");

        holding.await.unwrap().unwrap();
        assert!(refusing.await.unwrap().is_err());
        assert_eq!(reading.await.unwrap().unwrap(), 2);
        store.close().await.unwrap();
    }

    /// A backup has no log to restore held rows from: it is taken from a
    /// snapshot in which every pending delivery has its row.
    #[tokio::test]
    async fn a_backup_holds_the_queue_rows_the_writer_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("s.redb")).await;
        ingest(&store, 1).await;
        ingest(&store, 2).await;
        assert_eq!(queue_in_the_table(&store), Vec::<u128>::new(), "held");
        let copy = dir.path().join("backup.redb");
        let target = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&copy)
            .unwrap();
        let source = store.backup_source().unwrap();
        source.backup(target).await.unwrap();
        assert_eq!(queue_without_the_log(&copy), [1, 2]);
        store.close().await.unwrap();
    }

    /// Delivery ids in the live database's queue table, as written so far.
    fn queue_in_the_table(store: &RedbStore) -> Vec<u128> {
        let read = store.slot.get().unwrap().begin_read().unwrap();
        queued_ids(&read)
    }

    /// Delivery ids in the file's queue table, log not applied.
    fn queue_without_the_log(path: &Path) -> Vec<u128> {
        let db = Database::open(path).unwrap();
        queued_ids(&db.begin_read().unwrap())
    }

    fn queued_ids(read: &redb::ReadTransaction) -> Vec<u128> {
        use redb::ReadableTable;
        let table = read.open_table(QUEUE).unwrap();
        let mut ids: Vec<u128> = table
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value().2)
            .collect();
        ids.sort_unstable();
        ids
    }
}
