//! `switchyard export` and `switchyard import`: moving a store's data to
//! another backend through a dump file (`store/dump.rs`). The backends do
//! the reading and writing (`store/redb_backend/export.rs`,
//! `store/postgres/import.rs`, `store/redb_backend/import.rs`); this is
//! the command-line side: the configuration, the master key check, the
//! atomic output file and the progress.

use super::progress::{Progress, duration_text};
use super::size_text;
use crate::config::{Config, StorageBackend};
use crate::crypto::MasterKey;
use crate::model::ConnectionId;
use crate::secret::Secret;
use crate::store::dump::{Counts, DumpError, DumpReader, DumpWriter, Header, Row};
use anyhow::{Context, bail};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Rows the file reader may run ahead of PostgreSQL.
const ROWS_IN_FLIGHT: usize = 1024;

#[derive(Debug, thiserror::Error)]
enum KeyError {
    #[error(
        "no master key: set SWITCHYARD_MASTER_KEY (or master_key), or put the instance's \
         master_key file in data_dir ({0}); the sealed secrets need the key they were sealed with"
    )]
    Missing(PathBuf),
    #[error(
        "wrong master key: the dump was sealed under master key {dump}, this configuration's \
         is {ours}; use the exporting instance's key (SWITCHYARD_MASTER_KEY or \
         data_dir/master_key); nothing was written"
    )]
    Fingerprint { dump: String, ours: String },
    #[error(
        "wrong master key: it does not open the secrets of connection {0}; use the key the \
         data was sealed with; nothing was written"
    )]
    Secrets(ConnectionId),
}

/// The master key the configuration names, never a new one.
fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    let from_env = config.master_key.as_ref().map(Secret::expose);
    match MasterKey::load_existing(&config.data_dir, from_env)? {
        Some((key, _)) => Ok(key),
        None => Err(KeyError::Missing(config.data_dir.clone()).into()),
    }
}

/// Writes the configured store's dump to `output`: into a temporary file
/// beside it, synced, then renamed, so `output` is whole or absent.
pub fn export(
    runtime: &tokio::runtime::Runtime,
    config_path: Option<PathBuf>,
    output: &Path,
) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    let key = master_key(&config)?;
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if output.exists() {
        bail!(
            "{} exists; export never overwrites a file",
            output.display()
        );
    }
    let file_name = output
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let partial = tempfile::Builder::new()
        .prefix(&format!("{file_name}."))
        .suffix(".tmp")
        .tempfile_in(&directory)
        .with_context(|| format!("cannot write in {}", directory.display()))?;
    let progress = Progress::spinner("counting the rows");
    let mut out = BufWriter::new(partial);
    let (counts, source) = match config.storage.backend {
        StorageBackend::Redb => export_redb(&config, &key, &progress, &mut out)?,
        StorageBackend::Postgres => {
            runtime.block_on(export_postgres(&config, &key, &progress, &mut out))?
        }
    };
    let partial = out
        .into_inner()
        .map_err(|error| error.into_error())
        .context("cannot write the dump")?;
    partial
        .as_file()
        .sync_all()
        .context("cannot write the dump")?;
    let bytes = partial.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    partial
        .persist_noclobber(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    // The rename is durable only once the directory is synced.
    File::open(&directory)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {}", directory.display()))?;
    let elapsed = duration_text(progress.elapsed());
    progress.finish(&format!(
        "exported {} rows from {source} to {} ({}) in {elapsed}: {}",
        counts.total(),
        output.display(),
        size_text(bytes),
        counts.summary()
    ));
    Ok(())
}

/// The stopped server's redb file, from one read snapshot.
fn export_redb(
    config: &Config,
    key: &MasterKey,
    progress: &Progress,
    out: &mut impl Write,
) -> anyhow::Result<(Counts, String)> {
    let database = config.database_path();
    let advance = progress.advancer();
    let opens_secrets =
        |id, sealed: &[u8]| crate::destinations::check_sealed_secrets(key, id, sealed);
    let info = crate::store::ExportInfo {
        switchyard_version: super::VERSION.to_string(),
        created_at_ms: crate::model::now_ms(),
        master_key_fingerprint: key.fingerprint(),
        opens_secrets: &opens_secrets,
        on_total: &|total| progress.expect_rows("exporting", total),
        cache_bytes: crate::store::StoreOptions::from_config(&config.storage).cache_bytes,
    };
    let counts = crate::store::export(&database, &info, out, &mut |rows| advance(rows))?;
    Ok((counts, format!("redb {}", database.display())))
}

/// PostgreSQL, from one snapshot; the nodes may keep running.
async fn export_postgres(
    config: &Config,
    key: &MasterKey,
    progress: &Progress,
    out: &mut impl Write,
) -> anyhow::Result<(Counts, String)> {
    let mut sink = PgDumpSink {
        out: Some(out),
        dump: None,
        key,
        secrets_checked: false,
        progress,
        counts: Counts::default(),
    };
    let target = crate::store::postgres::export(&config.storage.postgres, &mut sink).await?;
    match sink.dump.take() {
        Some(dump) => {
            dump.finish()?;
        }
        None => bail!("the export ended before it started"),
    }
    Ok((sink.counts, format!("PostgreSQL {target}")))
}

/// Writes what the PostgreSQL export reads into the dump, checking the
/// master key on the first connection as the redb export does.
struct PgDumpSink<'a, W: Write> {
    out: Option<W>,
    dump: Option<DumpWriter<W>>,
    key: &'a MasterKey,
    secrets_checked: bool,
    progress: &'a Progress,
    counts: Counts,
}

impl<W: Write> crate::store::postgres::ExportSink for PgDumpSink<'_, W> {
    fn start(&mut self, counts: &Counts) -> Result<(), String> {
        let out = self.out.take().ok_or("the export started twice")?;
        let header = Header {
            source: "postgres".into(),
            switchyard_version: super::VERSION.to_string(),
            created_at_ms: crate::model::now_ms(),
            master_key_fingerprint: self.key.fingerprint(),
            counts: counts.clone(),
        };
        self.dump = Some(DumpWriter::start(out, &header).map_err(|error| error.to_string())?);
        self.counts = counts.clone();
        self.progress.expect_rows("exporting", counts.total());
        Ok(())
    }

    fn row(&mut self, row: Row) -> Result<(), String> {
        if !self.secrets_checked
            && let Some((id, sealed)) = row.sealed_secrets().map_err(|error| error.to_string())?
        {
            let id = ConnectionId(id);
            if !crate::destinations::check_sealed_secrets(self.key, id, &sealed) {
                return Err(crate::store::ExportError::WrongMasterKey(id).to_string());
            }
            self.secrets_checked = true;
        }
        let dump = self.dump.as_mut().ok_or("a row before the header")?;
        dump.row(row).map_err(|error| error.to_string())?;
        self.progress.advance(1);
        Ok(())
    }
}

/// Checks the whole dump and the master key, then loads it into the
/// configured store, which must be empty, all or nothing.
pub async fn import(config_path: Option<PathBuf>, input: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    let key = master_key(&config)?;
    let size = std::fs::metadata(&input)
        .with_context(|| format!("cannot read {}", input.display()))?
        .len();

    let progress = Progress::spinner("checking the dump");
    progress.expect_bytes("checking the dump", Some(size));
    let checked = {
        let (input, advance) = (input.clone(), progress.advancer());
        tokio::task::spawn_blocking(move || check(&input, &key, advance)).await??
    };
    drop(progress);

    let progress = Progress::spinner("importing");
    progress.expect_bytes("importing", Some(size));
    let target = match config.storage.backend {
        StorageBackend::Postgres => import_postgres(&config, &input, &checked, &progress).await?,
        StorageBackend::Redb => import_redb(&config, &input, &progress).await?,
    };
    let elapsed = duration_text(progress.elapsed());
    progress.finish(&format!(
        "imported {} rows from {} into {target} in {elapsed} (exported from {} by switchyard \
         {}): {}",
        checked.counts.total(),
        input.display(),
        checked.source,
        checked.switchyard_version,
        checked.counts.summary()
    ));
    Ok(())
}

/// Streams the rows from a reader thread into one PostgreSQL transaction.
async fn import_postgres(
    config: &Config,
    input: &Path,
    checked: &Header,
    progress: &Progress,
) -> anyhow::Result<String> {
    let (rows, receiver) = tokio::sync::mpsc::channel(ROWS_IN_FLIGHT);
    let reader = {
        let (input, advance) = (input.to_path_buf(), progress.advancer());
        tokio::task::spawn_blocking(move || send_rows(&input, rows, advance))
    };
    let imported =
        crate::store::postgres::import(&config.storage.postgres, &checked.counts, receiver).await;
    // The reader stops once the import stops listening; its own errors
    // reached the import through the channel.
    let _ = reader.await;
    Ok(format!("PostgreSQL {}", imported?))
}

/// Reads the rows into one redb write transaction on a blocking thread.
async fn import_redb(config: &Config, input: &Path, progress: &Progress) -> anyhow::Result<String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let path = config.database_path();
    let cache_bytes = crate::store::StoreOptions::from_config(&config.storage).cache_bytes;
    let (input, target, advance) = (input.to_path_buf(), path.clone(), progress.advancer());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let file =
            File::open(&input).with_context(|| format!("cannot read {}", input.display()))?;
        let mut reader = DumpReader::open(BufReader::new(file)).map_err(refused)?;
        let mut read = 0;
        crate::store::import_redb(&target, cache_bytes, &mut reader, &mut |bytes| {
            advance(bytes - read);
            read = bytes;
        })?;
        Ok(())
    })
    .await??;
    Ok(format!("redb {}", path.display()))
}

/// Reads the whole dump before anything is written: a damaged file, or a
/// master key other than the one its secrets were sealed with, is refused
/// here. Every connection's secrets are opened (and dropped) to be sure.
fn check(input: &Path, key: &MasterKey, advance: impl Fn(u64)) -> anyhow::Result<Header> {
    let file = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let mut reader = DumpReader::open(BufReader::new(file)).map_err(refused)?;
    let header = reader.header().clone();
    if header.master_key_fingerprint != key.fingerprint() {
        return Err(KeyError::Fingerprint {
            dump: header.master_key_fingerprint,
            ours: key.fingerprint(),
        }
        .into());
    }
    let mut read = 0;
    while let Some(row) = reader.next_row().map_err(refused)? {
        // A record damaged inside (the file's digest is checked only at its
        // end) is refused in the same words as a damaged frame.
        let sealed = row.sealed_secrets().map_err(|error| {
            anyhow::Error::new(error).context("refused the dump; nothing was written")
        })?;
        if let Some((id, sealed)) = sealed
            && !crate::destinations::check_sealed_secrets(key, ConnectionId(id), &sealed)
        {
            return Err(KeyError::Secrets(ConnectionId(id)).into());
        }
        advance(reader.bytes() - read);
        read = reader.bytes();
    }
    Ok(header)
}

fn refused(error: DumpError) -> anyhow::Error {
    anyhow::Error::new(error).context("refused the dump; nothing was written")
}

/// Streams the dump's rows to the import, then `Ok(None)` once the reader
/// has verified the whole file (the import commits on nothing else), or
/// the error that stopped it.
fn send_rows(
    input: &Path,
    rows: tokio::sync::mpsc::Sender<Result<Option<Row>, DumpError>>,
    advance: impl Fn(u64),
) {
    let mut reader = match File::open(input)
        .map_err(DumpError::from)
        .and_then(|file| DumpReader::open(BufReader::new(file)))
    {
        Ok(reader) => reader,
        Err(error) => {
            let _ = rows.blocking_send(Err(error));
            return;
        }
    };
    let mut read = 0;
    loop {
        let next = reader.next_row();
        advance(reader.bytes() - read);
        read = reader.bytes();
        let last = !matches!(next, Ok(Some(_)));
        if rows.blocking_send(next).is_err() || last {
            return;
        }
    }
}
