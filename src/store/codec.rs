//! Record encoding: one schema-version byte, then the postcard body.
//!
//! Each stored record type has frozen, versioned body structs. Decoding
//! dispatches on the version byte and upgrades older bodies to the current
//! shape, so a file written by an older release stays readable. JSON payloads
//! are kept as raw bytes: postcard is not self-describing and cannot decode a
//! `serde_json::Value`.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty {kind} record")]
    Empty { kind: &'static str },
    #[error("{kind} record has schema version {version}, newer than this release understands")]
    UnknownVersion { kind: &'static str, version: u8 },
    #[error("corrupt {kind} record: {source}")]
    Corrupt {
        kind: &'static str,
        source: postcard::Error,
    },
}

/// A record stored in redb with a leading schema-version byte.
pub trait Record: Sized {
    /// Names the record in errors.
    const KIND: &'static str;
    /// The version `encode` writes.
    const VERSION: u8;

    fn encode(&self) -> Vec<u8>;

    /// Decodes the body of a record written with `version`.
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError>;

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or(CodecError::Empty { kind: Self::KIND })?;
        Self::decode_version(version, body)
    }
}

/// Writes `version` then the postcard encoding of `body`.
pub fn encode_body<T: Serialize>(version: u8, body: &T) -> Vec<u8> {
    let bytes = vec![version];
    // Serialising plain structs of integers, strings and byte vectors into a
    // Vec cannot fail; an error here would be a bug in the record type.
    match postcard::to_extend(body, bytes) {
        Ok(bytes) => bytes,
        Err(error) => unreachable!("postcard cannot fail on record bodies: {error}"),
    }
}

pub fn decode_body<T: DeserializeOwned>(kind: &'static str, body: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(body).map_err(|source| CodecError::Corrupt { kind, source })
}
