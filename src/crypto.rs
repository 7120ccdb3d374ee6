//! Secrets at rest: one master key encrypts every stored secret (Slack OAuth
//! tokens, webhook signing secrets, provider keys) before it reaches redb.
//!
//! Sealed format, version 1:
//!
//! ```text
//! [version = 1][24-byte random nonce][ciphertext][16-byte Poly1305 tag]
//! ```
//!
//! XChaCha20-Poly1305 is used because its 192-bit nonce is large enough to
//! pick at random on every seal, so no counter has to be stored or kept in
//! step across restarts. The caller's associated data (for example the
//! connection id) is authenticated with the ciphertext, so a sealed secret
//! copied into another record fails to open.
//!
//! # Losing the key loses the secrets
//!
//! The master key is the only way to decrypt stored secrets. If
//! `{data_dir}/master_key` is deleted, or the database is restored onto a host
//! with a different key, every stored secret is unrecoverable and each
//! integration has to be reconnected. Back the key up, but separately from the
//! database: a backup holding both gives away every secret it contains.

use base64::Engine as _;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The environment variable the server reads the master key from.
pub const MASTER_KEY_ENV: &str = "SWITCHYARD_MASTER_KEY";

/// Name of the key file inside the data directory.
pub const MASTER_KEY_FILE: &str = "master_key";

/// The 32-byte key that encrypts every secret stored by Switchyard.
///
/// **Losing it loses every stored secret**: there is no recovery. Keep
/// `{data_dir}/master_key` (or the `SWITCHYARD_MASTER_KEY` value) in your
/// backups, but store it apart from the database backups, since anyone holding
/// both can read every secret.
///
/// `Debug` shows only the [fingerprint](MasterKey::fingerprint), never the key.
pub struct MasterKey([u8; KEY_LEN]);

/// Where [`MasterKey::load`] found its key; worth logging at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// Taken from `SWITCHYARD_MASTER_KEY`.
    Environment,
    /// Read from an existing key file.
    File(PathBuf),
    /// Generated on this start and written to a new key file, which now needs
    /// backing up.
    Generated(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("SWITCHYARD_MASTER_KEY must be 32 bytes in base64 or hex")]
    InvalidEnvKey,
    #[error("{} must contain 32 bytes in base64 or hex", path.display())]
    InvalidKeyFile { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    ReadKeyFile { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    WriteKeyFile { path: PathBuf, source: io::Error },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(#[from] rand::rand_core::OsError),
    #[error("cannot encrypt secret: plaintext or associated data too long")]
    Encrypt,
    #[error("sealed secret is truncated: {len} bytes, at least {MIN_SEALED_LEN} needed")]
    Truncated { len: usize },
    #[error("sealed secret has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("cannot decrypt secret: wrong master key, wrong owner, or corrupted data")]
    Decrypt,
}

impl MasterKey {
    /// Finds the master key: `from_env` (the value of `SWITCHYARD_MASTER_KEY`,
    /// `None` when unset) wins, then `{data_dir}/master_key`; if neither
    /// exists a new key is generated and written to that file with mode 0600.
    ///
    /// Both sources hold 32 bytes as base64 (standard or URL-safe, padded or
    /// not) or as 64 hex characters; surrounding whitespace is ignored.
    pub fn load(
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<(MasterKey, MasterKeySource), CryptoError> {
        if let Some(value) = from_env {
            let key = decode_key(value).ok_or(CryptoError::InvalidEnvKey)?;
            return Ok((key, MasterKeySource::Environment));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        if let Some(key) = read_key_file(&path)? {
            return Ok((key, MasterKeySource::File(path)));
        }
        let key = MasterKey::generate()?;
        match write_new_key_file(&path, &key) {
            Ok(()) => Ok((key, MasterKeySource::Generated(path))),
            // Another process started at the same moment and won the race:
            // use its key, so both end up encrypting with the same one. (If
            // it is still mid-write this reports a bad file; a restart works.)
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => match read_key_file(&path)? {
                Some(key) => Ok((key, MasterKeySource::File(path))),
                None => Err(CryptoError::InvalidKeyFile { path }),
            },
            Err(source) => Err(CryptoError::WriteKeyFile { path, source }),
        }
    }

    /// Like [`MasterKey::load`] but never generates one: `None` when
    /// neither source holds a key (`switchyard export` and `import` need
    /// the key the data was sealed with, not a new one).
    pub fn load_existing(
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<Option<(MasterKey, MasterKeySource)>, CryptoError> {
        if let Some(value) = from_env {
            let key = decode_key(value).ok_or(CryptoError::InvalidEnvKey)?;
            return Ok(Some((key, MasterKeySource::Environment)));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        Ok(read_key_file(&path)?.map(|key| (key, MasterKeySource::File(path))))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<MasterKey, CryptoError> {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.try_fill_bytes(&mut bytes)?;
        Ok(MasterKey(bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey(bytes)
    }

    /// A short id for the key, safe to log ("master key 3f9a…"): the first
    /// 8 bytes of a domain-separated SHA-256, as 16 hex characters. It lets an
    /// operator see that two hosts or two starts use the same key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(FINGERPRINT_DOMAIN)
            .chain_update(self.0)
            .finalize();
        hex_encode(&digest[..8])
    }

    /// Encrypts `plaintext`, binding it to `associated_data` (the owner's id),
    /// which must be passed again, unchanged, to [`MasterKey::open`].
    ///
    /// Fails only if the OS random generator fails or the input exceeds
    /// the cipher's 256 GiB limit.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.try_fill_bytes(&mut nonce)?;
        let aad = header_bound_aad(FORMAT_VERSION, associated_data);
        let ciphertext = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;

        let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts the output of [`MasterKey::seal`]. Any wrong key, wrong
    /// associated data or changed byte gives an error, never a panic.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (&version, rest) = sealed
            .split_first()
            .ok_or(CryptoError::Truncated { len: 0 })?;
        if version != FORMAT_VERSION {
            return Err(CryptoError::UnknownVersion(version));
        }
        if sealed.len() < MIN_SEALED_LEN {
            return Err(CryptoError::Truncated { len: sealed.len() });
        }
        let (nonce, ciphertext) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(CryptoError::Truncated { len: sealed.len() })?;
        let aad = header_bound_aad(version, associated_data);
        self.cipher()
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    // Best effort without a zeroize dependency: `black_box` keeps the
    // compiler from dropping the wipe as a dead store.
    fn drop(&mut self) {
        self.0 = [0; KEY_LEN];
        std::hint::black_box(&self.0);
    }
}

impl fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => write!(f, "environment variable {MASTER_KEY_ENV}"),
            Self::File(path) => write!(f, "key file {}", path.display()),
            Self::Generated(path) => write!(f, "newly generated key file {}", path.display()),
        }
    }
}

const KEY_LEN: usize = 32;
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// An empty plaintext still carries the header and the tag.
const MIN_SEALED_LEN: usize = HEADER_LEN + TAG_LEN;
const FINGERPRINT_DOMAIN: &[u8] = b"switchyard master key fingerprint v1\0";

/// The version byte is authenticated along with the caller's data, so a
/// ciphertext can't be relabelled as a future format.
fn header_bound_aad(version: u8, associated_data: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + associated_data.len());
    aad.push(version);
    aad.extend_from_slice(associated_data);
    aad
}

/// `Ok(None)` when the file does not exist, so the caller can generate one.
fn read_key_file(path: &Path) -> Result<Option<MasterKey>, CryptoError> {
    let contents = match fs::read(path) {
        Ok(contents) => contents,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CryptoError::ReadKeyFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    std::str::from_utf8(&contents)
        .ok()
        .and_then(decode_key)
        .map(Some)
        .ok_or_else(|| CryptoError::InvalidKeyFile {
            path: path.to_owned(),
        })
}

/// Writes a key file that did not exist before. `create_new` means a
/// concurrent start can't overwrite a key that may already be in use, and
/// both the file and its directory entry are synced, since secrets encrypted
/// under a key that vanishes in a crash are lost.
fn write_new_key_file(path: &Path, key: &MasterKey) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(key.0);
    file.write_all(format!("{encoded}\n").as_bytes())?;
    file.sync_all()?;
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// 64 hex characters, or base64 in either alphabet with or without padding.
/// The forms can't be confused: 32 bytes is 43 or 44 base64 characters.
fn decode_key(text: &str) -> Option<MasterKey> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

    let text = text.trim();
    let bytes = if text.len() == 2 * KEY_LEN {
        hex_decode(text)?
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .ok()?
    };
    let bytes: [u8; KEY_LEN] = bytes.try_into().ok()?;
    Some(MasterKey(bytes))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    // Digit by digit, because `from_str_radix` would also accept a sign.
    fn nibble(digit: u8) -> Option<u8> {
        char::from(digit)
            .to_digit(16)
            .and_then(|n| u8::try_from(n).ok())
    }
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OWNER: &[u8] = b"conn_01HZX3";

    fn key() -> MasterKey {
        MasterKey::generate().unwrap()
    }

    #[test]
    fn round_trip() {
        let key = key();
        let sealed = key.seal(b"xoxb-slack-token", OWNER).unwrap();
        assert_eq!(sealed[0], FORMAT_VERSION);
        assert_eq!(sealed.len(), MIN_SEALED_LEN + b"xoxb-slack-token".len());
        assert_eq!(key.open(&sealed, OWNER).unwrap(), b"xoxb-slack-token");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = key();
        let sealed = key.seal(b"", b"").unwrap();
        assert_eq!(sealed.len(), MIN_SEALED_LEN);
        assert_eq!(key.open(&sealed, b"").unwrap(), b"");
    }

    #[test]
    fn each_seal_uses_a_new_nonce() {
        let key = key();
        let first = key.seal(b"same", OWNER).unwrap();
        let second = key.seal(b"same", OWNER).unwrap();
        assert_ne!(first, second);
        assert_ne!(first[1..HEADER_LEN], second[1..HEADER_LEN]);
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = key().seal(b"secret", OWNER).unwrap();
        assert!(matches!(
            key().open(&sealed, OWNER),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn wrong_associated_data_fails() {
        let key = key();
        let sealed = key.seal(b"secret", OWNER).unwrap();
        assert!(matches!(
            key.open(&sealed, b"conn_OTHER"),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(key.open(&sealed, b""), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn every_single_byte_tamper_fails() {
        let key = key();
        let sealed = key.seal(b"webhook signing secret", OWNER).unwrap();
        for position in 0..sealed.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut tampered = sealed.clone();
                tampered[position] ^= flip;
                assert!(
                    key.open(&tampered, OWNER).is_err(),
                    "tamper at byte {position} with {flip:#x} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_fails() {
        let key = key();
        let sealed = key.seal(b"provider key", OWNER).unwrap();
        for len in 0..sealed.len() {
            assert!(key.open(&sealed[..len], OWNER).is_err(), "length {len}");
        }
        assert!(matches!(
            key.open(&sealed[..MIN_SEALED_LEN - 1], OWNER),
            Err(CryptoError::Truncated { .. })
        ));
        assert!(matches!(
            key.open(&[], OWNER),
            Err(CryptoError::Truncated { len: 0 })
        ));
    }

    #[test]
    fn unknown_version_is_named() {
        let key = key();
        let mut sealed = key.seal(b"secret", OWNER).unwrap();
        sealed[0] = 2;
        assert!(matches!(
            key.open(&sealed, OWNER),
            Err(CryptoError::UnknownVersion(2))
        ));
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key = MasterKey::from_bytes([0xab; 32]);
        let debug = format!("{key:?}");
        assert!(!debug.to_lowercase().contains("abab"), "{debug}");
        assert!(debug.contains(&key.fingerprint()));
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let a = MasterKey::from_bytes([7; 32]);
        let b = MasterKey::from_bytes([7; 32]);
        let c = MasterKey::from_bytes([8; 32]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert!(a.fingerprint().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn env_accepts_base64_and_hex_forms() {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let dir = tempfile::tempdir().unwrap();
        // 0xfb/0xff bytes make the standard and URL-safe encodings differ.
        let bytes: [u8; 32] = std::array::from_fn(|i| if i % 2 == 0 { 0xfb } else { 0xff });
        let expected = MasterKey::from_bytes(bytes).fingerprint();
        let hex = hex_encode(&bytes);
        let forms = [
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            hex.clone(),
            hex.to_uppercase(),
            format!("  {hex}\n"),
        ];
        for form in forms {
            let (key, source) = MasterKey::load(dir.path(), Some(&form)).unwrap();
            assert_eq!(key.fingerprint(), expected, "form {form:?}");
            assert_eq!(source, MasterKeySource::Environment);
        }
        // The environment wins without touching the data directory.
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn bad_env_is_refused_with_the_message() {
        use base64::engine::general_purpose::STANDARD;
        let dir = tempfile::tempdir().unwrap();
        let bad = [
            String::new(),
            "not a key".to_owned(),
            STANDARD.encode([1u8; 31]),
            STANDARD.encode([1u8; 33]),
            "g".repeat(64),
            "ab".repeat(31),
        ];
        for value in bad {
            let err = MasterKey::load(dir.path(), Some(&value)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "SWITCHYARD_MASTER_KEY must be 32 bytes in base64 or hex",
                "value {value:?}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn generated_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);

        let (first, source) = MasterKey::load(dir.path(), None).unwrap();
        assert_eq!(source, MasterKeySource::Generated(path.clone()));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let (second, source) = MasterKey::load(dir.path(), None).unwrap();
        assert_eq!(source, MasterKeySource::File(path));
        assert_eq!(first.fingerprint(), second.fingerprint());
        let sealed = first.seal(b"survives restart", OWNER).unwrap();
        assert_eq!(second.open(&sealed, OWNER).unwrap(), b"survives restart");
    }

    #[test]
    fn key_file_accepts_hex_with_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        fs::write(&path, format!("\n {}\n\n", hex_encode(&[3; 32]))).unwrap();
        let (key, source) = MasterKey::load(dir.path(), None).unwrap();
        assert_eq!(source, MasterKeySource::File(path));
        assert_eq!(
            key.fingerprint(),
            MasterKey::from_bytes([3; 32]).fingerprint()
        );
    }

    #[test]
    fn corrupt_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        fs::write(&path, "truncated").unwrap();
        let err = MasterKey::load(dir.path(), None).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidKeyFile { .. }));
        assert!(err.to_string().contains("master_key"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "truncated");
    }

    #[test]
    fn unreadable_key_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails, not NotFound.
        fs::create_dir(dir.path().join(MASTER_KEY_FILE)).unwrap();
        let err = MasterKey::load(dir.path(), None).unwrap_err();
        assert!(matches!(err, CryptoError::ReadKeyFile { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    #[test]
    fn missing_data_dir_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let (_, source) = MasterKey::load(&data_dir, None).unwrap();
        assert_eq!(
            source,
            MasterKeySource::Generated(data_dir.join(MASTER_KEY_FILE))
        );
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips(
            plaintext in proptest::collection::vec(any::<u8>(), 0..1024),
            associated_data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = MasterKey::from_bytes([42; 32]);
            let sealed = key.seal(&plaintext, &associated_data).unwrap();
            prop_assert_eq!(key.open(&sealed, &associated_data).unwrap(), plaintext);
        }

        #[test]
        fn open_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            associated_data in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let key = MasterKey::from_bytes([42; 32]);
            // Forged input can't authenticate: overwhelmingly unlikely to pass.
            prop_assert!(key.open(&bytes, &associated_data).is_err());
        }
    }
}
