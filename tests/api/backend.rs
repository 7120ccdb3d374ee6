//! Which store the API tests run on. `SWITCHYARD_TEST_BACKEND=postgres`
//! (set by `scripts/test` for its second pass) runs them on PostgreSQL:
//! each data dir gets a database of its own on the server named by
//! `SWITCHYARD_TEST_POSTGRES_URL`, derived from the data dir's path so a
//! restart on the same dir (in-process or a child `switchyard serve`)
//! finds the same data. Tests about redb itself (the file, compaction,
//! backups, faults injected into the file) call [`redb_only`] and return;
//! tests of several nodes on one database call [`postgres_only`].

use sha2::{Digest, Sha256};
use std::path::Path;
use switchyard::config::{Config, PostgresTls, StorageBackend};
use switchyard::secret::Secret;

pub const MISSING_URL: &str = "SWITCHYARD_TEST_BACKEND=postgres needs \
     SWITCHYARD_TEST_POSTGRES_URL: run scripts/test, or set SWITCHYARD_TEST_POSTGRES_URL to a \
     PostgreSQL server the tests may create databases on (scripts/postgres-dev starts one)";

pub fn on_postgres() -> bool {
    match std::env::var("SWITCHYARD_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("redb") | Err(_) => false,
        Ok(other) => panic!("SWITCHYARD_TEST_BACKEND={other:?}: expected redb or postgres"),
    }
}

/// True (after saying so) when this test is about redb itself and the
/// suite runs on PostgreSQL: the caller returns early.
pub fn redb_only(test: &str) -> bool {
    if on_postgres() {
        println!("{test}: redb only (it tests the redb file itself); not run on PostgreSQL");
        return true;
    }
    false
}

/// True (after saying so) when this test needs PostgreSQL (several nodes
/// sharing one database) and the suite runs on redb: the caller returns
/// early. The PostgreSQL pass (`SWITCHYARD_TEST_BACKEND=postgres`) runs it.
pub fn postgres_only(test: &str) -> bool {
    if !on_postgres() {
        println!("{test}: PostgreSQL only (several nodes on one database); not run on redb");
        return true;
    }
    false
}

/// The environment a child `switchyard serve` on `data_dir` needs.
pub async fn child_env(data_dir: &Path) -> Vec<(String, String)> {
    if !on_postgres() {
        return Vec::new();
    }
    vec![
        ("SWITCHYARD_STORAGE__BACKEND".into(), "postgres".into()),
        (
            "SWITCHYARD_STORAGE__POSTGRES__URL".into(),
            database_for(data_dir).await,
        ),
    ]
}

/// Points `config` at the backend under test (unless the test chose
/// PostgreSQL itself).
pub async fn configure(config: &mut Config) {
    if !on_postgres() || config.storage.backend == StorageBackend::Postgres {
        return;
    }
    config.storage.backend = StorageBackend::Postgres;
    config.storage.postgres.url = Some(Secret::new(database_for(&config.data_dir).await));
    config.storage.postgres.pool_size = 8;
    config.storage.postgres.tls = PostgresTls::Disable;
    // What validation requires of a file; tests set long timeouts in code.
    let least_lease = config.delivery.timeout_seconds + 5;
    let lease = &mut config.storage.postgres.lease_seconds;
    *lease = (*lease).max(least_lease);
}

/// The URL of `data_dir`'s database, created if it does not exist yet.
pub async fn database_for(data_dir: &Path) -> String {
    let server = std::env::var("SWITCHYARD_TEST_POSTGRES_URL").expect(MISSING_URL);
    let name = database_name(data_dir);
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connect to SWITCHYARD_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    if let Err(error) = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
    {
        let exists = error.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE);
        assert!(exists, "create {name}: {error}");
    }
    if server.starts_with("postgres://") || server.starts_with("postgresql://") {
        let separator = if server.contains('?') { '&' } else { '?' };
        format!("{server}{separator}dbname={name}")
    } else {
        format!("{server} dbname={name}")
    }
}

fn database_name(data_dir: &Path) -> String {
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("switchyard_api_{hex}")
}

/// Drops `data_dir`'s database, if the suite runs on PostgreSQL.
pub fn drop_database_for(data_dir: &Path) {
    if !on_postgres() {
        return;
    }
    let name = database_name(data_dir);
    // Called from Drop, maybe inside a runtime: a thread of its own.
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to drop the test database");
        runtime.block_on(async {
            let server = std::env::var("SWITCHYARD_TEST_POSTGRES_URL").expect(MISSING_URL);
            let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                .await
                .expect("connect to SWITCHYARD_TEST_POSTGRES_URL");
            tokio::spawn(connection);
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
        })
    })
    .join();
    if let Ok(Err(error)) = dropped {
        eprintln!(
            "could not drop the test database of {}: {error}",
            data_dir.display()
        );
    }
}

/// Everything the store holds for `data_dir`, as text a secret would show
/// up in: on redb every file under the data dir; on PostgreSQL every row
/// of every table, with `bytea` values decoded from their hex form.
pub async fn stored_text(data_dir: &Path) -> String {
    if !on_postgres() {
        let mut text = String::new();
        let mut pending = vec![data_dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
                }
            }
        }
        return text;
    }
    let (client, connection) =
        tokio_postgres::connect(&database_for(data_dir).await, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap();
    let mut text = String::new();
    for table in tables {
        let name: String = table.get(0);
        for row in client
            .query(&format!("SELECT t::text FROM {name} t"), &[])
            .await
            .unwrap()
        {
            let row: String = row.get(0);
            text.push_str(&row);
            text.push_str(&decoded_bytea(&row));
            text.push('\n');
        }
    }
    text
}

/// The `\x…` hex runs of a row's text form, decoded and read as text.
fn decoded_bytea(row: &str) -> String {
    let mut decoded = String::new();
    for run in row.split("\\x").skip(1) {
        let hex: Vec<u8> = run
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .collect::<Vec<_>>()
            .chunks_exact(2)
            .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
            .collect();
        decoded.push_str(&String::from_utf8_lossy(&hex));
        decoded.push('\n');
    }
    decoded
}
