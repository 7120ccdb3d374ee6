//! Conversions between domain values and columns: ids are 16 big-endian
//! bytes (so byte order is id order), times signed milliseconds, counters
//! `integer`, enums their API names.

use super::error::{PgResult, corrupt};
use crate::model::{ConnectionKind, ConnectionStatus, DeliveryStatus, KeyKind};
use tokio_postgres::Row;

pub fn id(value: u128) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub fn ids(values: impl IntoIterator<Item = u128>) -> Vec<Vec<u8>> {
    values.into_iter().map(id).collect()
}

pub fn id_from(bytes: &[u8]) -> PgResult<u128> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("an id of {} bytes", bytes.len())))?;
    Ok(u128::from_be_bytes(bytes))
}

pub fn get_id(row: &Row, column: &str) -> PgResult<u128> {
    id_from(row.try_get::<_, &[u8]>(column)?)
}

pub fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn ms_from(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub fn get_ms(row: &Row, column: &str) -> PgResult<u64> {
    Ok(ms_from(row.try_get(column)?))
}

pub fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

pub fn get_count(row: &Row, column: &str) -> PgResult<u32> {
    Ok(u32::try_from(row.try_get::<_, i32>(column)?).unwrap_or(0))
}

pub fn get_opt_count(row: &Row, column: &str) -> PgResult<Option<u32>> {
    Ok(row
        .try_get::<_, Option<i32>>(column)?
        .map(|value| u32::try_from(value).unwrap_or(0)))
}

pub fn key_kind(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Publishable => "publishable",
        KeyKind::Secret => "secret",
        KeyKind::MeshesPublishable => "meshes_publishable",
    }
}

pub fn key_kind_from(text: &str) -> PgResult<KeyKind> {
    match text {
        "publishable" => Ok(KeyKind::Publishable),
        "secret" => Ok(KeyKind::Secret),
        "meshes_publishable" => Ok(KeyKind::MeshesPublishable),
        other => Err(corrupt(format!("key kind {other:?}"))),
    }
}

pub fn connection_kind_from(text: &str) -> PgResult<ConnectionKind> {
    ConnectionKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| corrupt(format!("connection kind {text:?}")))
}

pub fn connection_status(status: ConnectionStatus) -> &'static str {
    match status {
        ConnectionStatus::Active => "active",
        ConnectionStatus::NeedsReauth => "needs_reauth",
        ConnectionStatus::Disabled => "disabled",
    }
}

pub fn connection_status_from(text: &str) -> PgResult<ConnectionStatus> {
    match text {
        "active" => Ok(ConnectionStatus::Active),
        "needs_reauth" => Ok(ConnectionStatus::NeedsReauth),
        "disabled" => Ok(ConnectionStatus::Disabled),
        other => Err(corrupt(format!("connection status {other:?}"))),
    }
}

pub fn delivery_status_from(text: &str) -> PgResult<DeliveryStatus> {
    DeliveryStatus::parse(text).ok_or_else(|| corrupt(format!("delivery status {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_bytewise_as_they_sort_numerically() {
        let mut values = [0u128, 1, 255, 256, u128::MAX, 1 << 80, (1 << 80) - 1];
        let mut bytes: Vec<Vec<u8>> = values.iter().map(|value| id(*value)).collect();
        values.sort();
        bytes.sort();
        let back: Vec<u128> = bytes.iter().map(|b| id_from(b).unwrap()).collect();
        assert_eq!(back, values);
        assert!(id_from(&[1, 2, 3]).is_err());
    }

    #[test]
    fn enum_columns_round_trip() {
        for kind in ConnectionKind::ALL {
            assert_eq!(connection_kind_from(kind.as_str()).unwrap(), kind);
        }
        for status in [
            ConnectionStatus::Active,
            ConnectionStatus::NeedsReauth,
            ConnectionStatus::Disabled,
        ] {
            assert_eq!(
                connection_status_from(connection_status(status)).unwrap(),
                status
            );
        }
        for kind in [
            KeyKind::Publishable,
            KeyKind::Secret,
            KeyKind::MeshesPublishable,
        ] {
            assert_eq!(key_kind_from(key_kind(kind)).unwrap(), kind);
        }
    }
}
