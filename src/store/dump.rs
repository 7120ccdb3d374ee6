//! The dump file of `switchyard export` and `switchyard import`: every
//! durable row of a store, backend-neutral, streamed in and out without
//! holding more than one row in memory.
//!
//! ```text
//! file  := MAGIC  format version (u16 LE)  frame(Header)  frame(Frame::Row)*  frame(Frame::End)
//! frame := length (u32 LE)  postcard bytes
//! ```
//!
//! Postcard because it is already the stored records' encoding: a row's
//! record travels as the same versioned bytes redb holds (`[schema
//! version][body]`), so the dump needs no new format version when a
//! record gains one, and sealed connection secrets stay the sealed bytes.
//! The header carries the row count of every table (taken from the same
//! snapshot) and the master key's fingerprint; the end frame carries the
//! SHA-256 of every byte before it. A reader therefore knows a dump is
//! whole only once it has read the end frame, checked the digest, found
//! nothing after it and counted exactly the rows the header promised: a
//! truncated or altered file is refused, never half read.

use super::codec::{CodecError, Record};
use super::records::ConnectionRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// The first bytes of every dump.
pub const MAGIC: &[u8; 8] = b"SWYDUMP\n";
/// Version of the framing and of [`Header`], [`Frame`] and [`Row`]
/// (records inside rows carry their own schema versions).
pub const FORMAT_VERSION: u16 = 1;
/// No row comes near this (event payloads are bounded by
/// `limits.max_body_bytes`); a larger length means a corrupt file, and
/// refusing it keeps a flipped length byte from asking for gigabytes.
const MAX_FRAME_BYTES: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot read or write the dump: {0}")]
    Io(#[from] io::Error),
    #[error("not a switchyard dump (it does not start with the dump's magic bytes)")]
    NotADump,
    #[error("the dump has format version {0}, newer than this binary understands")]
    UnsupportedVersion(u16),
    #[error("the dump is truncated (it ends before its end marker); export it again")]
    Truncated,
    #[error("the dump is corrupt: {0}")]
    Corrupt(String),
    #[error("the dump is corrupt: its SHA-256 does not match the one it ends with")]
    DigestMismatch,
    #[error("the dump is corrupt: its header promises {expected} {table} rows, it holds {found}")]
    CountMismatch {
        table: &'static str,
        expected: u64,
        found: u64,
    },
}

/// The tables a dump carries, named as PostgreSQL's. Derived indexes
/// (redb's `event_deliveries`, `idempotency_by_age`) are rebuilt from
/// these (an event that also lists its deliveries is read by its list),
/// and `storage_probe` is scratch, so neither is dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Table {
    Workspaces,
    ApiKeys,
    WorkspacePurges,
    Connections,
    Rules,
    Events,
    Deliveries,
    Attempts,
    DeliveryQueue,
    IdempotencyKeys,
    OAuthStates,
    UsedLaunchTokens,
    AlertNoise,
    RuleNoise,
    SlackThreads,
}

impl Table {
    pub const ALL: [Table; 15] = [
        Table::Workspaces,
        Table::ApiKeys,
        Table::WorkspacePurges,
        Table::Connections,
        Table::Rules,
        Table::Events,
        Table::Deliveries,
        Table::Attempts,
        Table::DeliveryQueue,
        Table::IdempotencyKeys,
        Table::OAuthStates,
        Table::UsedLaunchTokens,
        Table::AlertNoise,
        Table::RuleNoise,
        Table::SlackThreads,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Workspaces => "workspaces",
            Table::ApiKeys => "api_keys",
            Table::WorkspacePurges => "workspace_purges",
            Table::Connections => "connections",
            Table::Rules => "rules",
            Table::Events => "events",
            Table::Deliveries => "deliveries",
            Table::Attempts => "attempts",
            Table::DeliveryQueue => "delivery_queue",
            Table::IdempotencyKeys => "idempotency_keys",
            Table::OAuthStates => "oauth_states",
            Table::UsedLaunchTokens => "used_launch_tokens",
            Table::AlertNoise => "alert_noise",
            Table::RuleNoise => "rule_noise",
            Table::SlackThreads => "slack_threads",
        }
    }
}

/// Rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts(BTreeMap<Table, u64>);

impl Counts {
    pub fn get(&self, table: Table) -> u64 {
        self.0.get(&table).copied().unwrap_or(0)
    }

    pub fn set(&mut self, table: Table, rows: u64) {
        self.0.insert(table, rows);
    }

    pub fn add(&mut self, table: Table, rows: u64) {
        *self.0.entry(table).or_default() += rows;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `workspaces 2, api_keys 6, …` in [`Table::ALL`] order, tables with
    /// no rows left out.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = Table::ALL
            .into_iter()
            .filter(|table| self.get(*table) > 0)
            .map(|table| format!("{} {}", table.name(), self.get(table)))
            .collect();
        if parts.is_empty() {
            "no rows".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The backend the dump was taken from (`redb`).
    pub source: String,
    /// `--version` of the binary that wrote it.
    pub switchyard_version: String,
    pub created_at_ms: u64,
    /// [`crate::crypto::MasterKey::fingerprint`] of the key its sealed
    /// secrets need: an import with another key is refused before it
    /// writes anything.
    pub master_key_fingerprint: String,
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Frame {
    Row(Row),
    End {
        /// SHA-256 of every byte of the file before this frame.
        sha256: [u8; 32],
    },
}

/// One row. `record` fields are stored records as redb holds them
/// (`store::records`, decoded with `Record::decode`); ids are the 128-bit
/// ULIDs; times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Row {
    Workspace {
        id: u128,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    ApiKey {
        #[serde(with = "serde_bytes")]
        hash: Vec<u8>,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    WorkspacePurge {
        workspace: u128,
        deleted_at_ms: u64,
    },
    Connection {
        workspace: u128,
        id: u128,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    Rule {
        workspace: u128,
        id: u128,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    Event {
        workspace: u128,
        id: u128,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    Delivery {
        workspace: u128,
        id: u128,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    Attempt {
        delivery: u128,
        n: u32,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    Queued {
        connection: u128,
        due_ms: u64,
        delivery: u128,
        workspace: u128,
    },
    Idempotency {
        workspace: u128,
        key: String,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    OAuthState {
        nonce: u128,
        expires_at_ms: u64,
    },
    UsedLaunchToken {
        digest: u128,
        expires_at_ms: u64,
    },
    AlertNoise {
        workspace: u128,
        rule: u128,
        alert: String,
        last_sent_ms: u64,
    },
    RuleNoise {
        workspace: u128,
        rule: u128,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    SlackThread {
        workspace: u128,
        connection: u128,
        channel: String,
        alert: String,
        saved_at_ms: u64,
        ts: String,
    },
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Workspace { .. } => Table::Workspaces,
            Row::ApiKey { .. } => Table::ApiKeys,
            Row::WorkspacePurge { .. } => Table::WorkspacePurges,
            Row::Connection { .. } => Table::Connections,
            Row::Rule { .. } => Table::Rules,
            Row::Event { .. } => Table::Events,
            Row::Delivery { .. } => Table::Deliveries,
            Row::Attempt { .. } => Table::Attempts,
            Row::Queued { .. } => Table::DeliveryQueue,
            Row::Idempotency { .. } => Table::IdempotencyKeys,
            Row::OAuthState { .. } => Table::OAuthStates,
            Row::UsedLaunchToken { .. } => Table::UsedLaunchTokens,
            Row::AlertNoise { .. } => Table::AlertNoise,
            Row::RuleNoise { .. } => Table::RuleNoise,
            Row::SlackThread { .. } => Table::SlackThreads,
        }
    }

    /// A connection row's id and sealed secrets (to check the master key
    /// opens them); `None` for other rows.
    pub fn sealed_secrets(&self) -> Result<Option<(u128, Vec<u8>)>, CodecError> {
        match self {
            Row::Connection { id, record, .. } => {
                let record = ConnectionRecord::decode(record)?;
                Ok(Some((*id, record.sealed_secrets)))
            }
            _ => Ok(None),
        }
    }
}

/// Writes a dump: the header first, then rows, then [`DumpWriter::finish`].
pub struct DumpWriter<W: Write> {
    out: W,
    sha256: Sha256,
    promised: Counts,
    written: Counts,
    buffer: Vec<u8>,
    bytes: u64,
}

impl<W: Write> DumpWriter<W> {
    pub fn start(out: W, header: &Header) -> Result<Self, DumpError> {
        let mut writer = Self {
            out,
            sha256: Sha256::new(),
            promised: header.counts.clone(),
            written: Counts::default(),
            buffer: Vec::new(),
            bytes: 0,
        };
        writer.write_bytes(MAGIC)?;
        writer.write_bytes(&FORMAT_VERSION.to_le_bytes())?;
        writer.write_frame(header)?;
        Ok(writer)
    }

    pub fn row(&mut self, row: Row) -> Result<(), DumpError> {
        self.written.add(row.table(), 1);
        self.write_frame(&Frame::Row(row))
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the end frame and hands back the output (not yet synced).
    /// Refuses if the rows written are not the rows the header promised.
    pub fn finish(mut self) -> Result<W, DumpError> {
        check_counts(&self.promised, &self.written)?;
        let sha256: [u8; 32] = self.sha256.clone().finalize().into();
        self.write_frame(&Frame::End { sha256 })?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_frame<T: Serialize>(&mut self, value: &T) -> Result<(), DumpError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer = postcard::to_extend(value, buffer)
            .map_err(|error| DumpError::Corrupt(format!("cannot encode a frame: {error}")))?;
        let length = u32::try_from(buffer.len())
            .ok()
            .filter(|length| *length <= MAX_FRAME_BYTES)
            .ok_or_else(|| DumpError::Corrupt(format!("a row of {} bytes", buffer.len())))?;
        self.write_bytes(&length.to_le_bytes())?;
        self.write_bytes(&buffer)?;
        self.buffer = buffer;
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), DumpError> {
        self.out.write_all(bytes)?;
        self.sha256.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Reads a dump row by row. [`DumpReader::next_row`] answers `None` only
/// once the whole file has checked out (digest, counts, nothing after
/// the end), so a caller that commits on `None` never commits a damaged
/// dump.
pub struct DumpReader<R: Read> {
    input: R,
    sha256: Sha256,
    header: Header,
    seen: Counts,
    finished: bool,
    bytes: u64,
}

impl<R: Read> DumpReader<R> {
    pub fn open(input: R) -> Result<Self, DumpError> {
        let mut reader = Self {
            input,
            sha256: Sha256::new(),
            header: Header {
                source: String::new(),
                switchyard_version: String::new(),
                created_at_ms: 0,
                master_key_fingerprint: String::new(),
                counts: Counts::default(),
            },
            seen: Counts::default(),
            finished: false,
            bytes: 0,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(|error| match error {
            DumpError::Truncated => DumpError::NotADump,
            error => error,
        })?;
        if &magic != MAGIC {
            return Err(DumpError::NotADump);
        }
        let mut version = [0u8; 2];
        reader.read_exact(&mut version)?;
        let version = u16::from_le_bytes(version);
        if version != FORMAT_VERSION {
            return Err(DumpError::UnsupportedVersion(version));
        }
        let frame = reader.read_frame()?;
        reader.header = postcard::from_bytes(&frame)
            .map_err(|error| DumpError::Corrupt(format!("unreadable header: {error}")))?;
        Ok(reader)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes read so far (for progress).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn next_row(&mut self) -> Result<Option<Row>, DumpError> {
        if self.finished {
            return Ok(None);
        }
        let before_frame: [u8; 32] = self.sha256.clone().finalize().into();
        let frame = self.read_frame()?;
        match postcard::from_bytes::<Frame>(&frame) {
            Ok(Frame::Row(row)) => {
                let table = row.table();
                self.seen.add(table, 1);
                let expected = self.header.counts.get(table);
                if self.seen.get(table) > expected {
                    return Err(DumpError::CountMismatch {
                        table: table.name(),
                        expected,
                        found: self.seen.get(table),
                    });
                }
                Ok(Some(row))
            }
            Ok(Frame::End { sha256 }) => {
                if sha256 != before_frame {
                    return Err(DumpError::DigestMismatch);
                }
                let mut extra = [0u8; 1];
                if read_some(&mut self.input, &mut extra)? != 0 {
                    return Err(DumpError::Corrupt("bytes after its end marker".into()));
                }
                check_counts(&self.header.counts, &self.seen)?;
                self.finished = true;
                Ok(None)
            }
            Err(error) => Err(DumpError::Corrupt(format!("unreadable frame: {error}"))),
        }
    }

    fn read_frame(&mut self) -> Result<Vec<u8>, DumpError> {
        let mut length = [0u8; 4];
        self.read_exact(&mut length)?;
        let length = u32::from_le_bytes(length);
        if length > MAX_FRAME_BYTES {
            return Err(DumpError::Corrupt(format!("a frame of {length} bytes")));
        }
        let mut frame = vec![0u8; length as usize];
        self.read_exact(&mut frame)?;
        Ok(frame)
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<(), DumpError> {
        self.input.read_exact(buffer).map_err(|error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                DumpError::Truncated
            } else {
                DumpError::Io(error)
            }
        })?;
        self.sha256.update(&*buffer);
        self.bytes += buffer.len() as u64;
        Ok(())
    }
}

fn read_some(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

fn check_counts(expected: &Counts, found: &Counts) -> Result<(), DumpError> {
    for table in Table::ALL {
        if expected.get(table) != found.get(table) {
            return Err(DumpError::CountMismatch {
                table: table.name(),
                expected: expected.get(table),
                found: found.get(table),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows() -> Vec<Row> {
        vec![
            Row::Workspace {
                id: 7,
                record: vec![2, 1, 2, 3],
            },
            Row::ApiKey {
                hash: vec![9; 32],
                record: vec![1, 7, 0],
            },
            Row::Event {
                workspace: 7,
                id: 1 << 90,
                record: b"\x01payload {\"value\": 1}".to_vec(),
            },
            Row::Queued {
                connection: 3,
                due_ms: 1_700_000_000_000,
                delivery: 4,
                workspace: 7,
            },
            Row::SlackThread {
                workspace: 7,
                connection: 3,
                channel: "C1".into(),
                alert: "db-1".into(),
                saved_at_ms: 5,
                ts: "1.2".into(),
            },
        ]
    }

    fn dump_of(rows: &[Row]) -> Vec<u8> {
        let mut counts = Counts::default();
        for row in rows {
            counts.add(row.table(), 1);
        }
        let header = Header {
            source: "redb".into(),
            switchyard_version: "test".into(),
            created_at_ms: 1,
            master_key_fingerprint: "00ff".into(),
            counts,
        };
        let mut writer = DumpWriter::start(Vec::new(), &header).unwrap();
        for row in rows {
            writer.row(row.clone()).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Row>, DumpError> {
        let mut reader = DumpReader::open(bytes)?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row()? {
            rows.push(row);
        }
        Ok(rows)
    }

    #[test]
    fn rows_round_trip_with_the_header() {
        let rows = sample_rows();
        let bytes = dump_of(&rows);
        assert_eq!(read_all(&bytes).unwrap(), rows);
        let reader = DumpReader::open(bytes.as_slice()).unwrap();
        assert_eq!(reader.header().counts.total(), 5);
        assert_eq!(reader.header().master_key_fingerprint, "00ff");
        assert_eq!(
            reader.header().counts.summary(),
            "workspaces 1, api_keys 1, events 1, delivery_queue 1, slack_threads 1"
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = dump_of(&sample_rows());
        for end in 0..bytes.len() {
            let refused = read_all(&bytes[..end]);
            assert!(
                matches!(refused, Err(DumpError::Truncated | DumpError::NotADump)),
                "cut at {end}: {refused:?}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = dump_of(&sample_rows());
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                assert!(read_all(&damaged).is_err(), "byte {at} ^ {flip:#x} passed");
            }
        }
    }

    #[test]
    fn anything_after_the_end_is_refused() {
        let mut bytes = dump_of(&sample_rows());
        bytes.push(0);
        let refused = read_all(&bytes);
        assert!(matches!(refused, Err(DumpError::Corrupt(_))), "{refused:?}");
    }

    #[test]
    fn a_writer_refuses_rows_its_header_did_not_promise() {
        let header = Header {
            source: "redb".into(),
            switchyard_version: "test".into(),
            created_at_ms: 1,
            master_key_fingerprint: String::new(),
            counts: Counts::default(),
        };
        let mut writer = DumpWriter::start(Vec::new(), &header).unwrap();
        writer
            .row(Row::OAuthState {
                nonce: 1,
                expires_at_ms: 2,
            })
            .unwrap();
        assert!(matches!(
            writer.finish(),
            Err(DumpError::CountMismatch {
                table: "oauth_states",
                expected: 0,
                found: 1
            })
        ));
    }

    #[test]
    fn other_files_and_versions_are_named() {
        assert!(matches!(
            read_all(b"SQLite format 3\0 and more"),
            Err(DumpError::NotADump)
        ));
        let mut bytes = dump_of(&sample_rows());
        bytes[8] = 2;
        assert!(matches!(
            read_all(&bytes),
            Err(DumpError::UnsupportedVersion(2))
        ));
    }
}
