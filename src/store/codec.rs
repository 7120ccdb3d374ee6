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
///
/// The buffer starts at [`INITIAL_CAPACITY`]: grown from one byte, it was
/// reallocated about six times per record, which was most of the cost of
/// encoding on the write path (docs/benchmarks.md). A counting pass to size
/// it exactly cost nearly as much as the growth, since 128-bit ids are
/// varint-encoded twice.
pub fn encode_body<T: Serialize>(version: u8, body: &T) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(INITIAL_CAPACITY);
    bytes.push(version);
    // Serialising plain structs of integers, strings and byte vectors into a
    // Vec cannot fail; an error here would be a bug in the record type.
    match postcard::to_extend(body, bytes) {
        Ok(bytes) => bytes,
        Err(error) => unreachable!("postcard cannot fail on record bodies: {error}"),
    }
}

/// Room for a delivery, an attempt or a small event without growing.
const INITIAL_CAPACITY: usize = 256;

pub fn decode_body<T: DeserializeOwned>(kind: &'static str, body: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(body).map_err(|source| CodecError::Corrupt { kind, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Body {
        id: u128,
        name: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        at_ms: Option<u64>,
    }

    #[test]
    fn a_body_is_written_after_its_version() {
        let body = Body {
            id: u128::MAX - 7,
            name: "alert.triggered".into(),
            payload: br#"{"value":1840}"#.repeat(40),
            at_ms: Some(1_764_000_000_000),
        };
        let bytes = encode_body(3, &body);
        assert_eq!(bytes[0], 3);
        assert_eq!(decode_body::<Body>("test", &bytes[1..]).unwrap(), body);
    }
}
