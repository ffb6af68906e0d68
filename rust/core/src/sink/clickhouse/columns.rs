//! What the encoders of several tables share: attribute maps (and the attributes of a resource or
//! scope, encoded once for all its rows), hex ids, the range check of DateTime64(9) values, and
//! the tally of rows kept and items left out.

use super::gostring::write_as_string;
use super::native::{put_str, StringMap, Strings};
use super::{Blocks, Table};
use crate::sink::Encoded;
use crate::wire::{Fields, WireError};

/// The items of a request an encoder made rows of, and those it left out with the first one's
/// reason.
#[derive(Default)]
pub struct Tally {
    rows: u64,
    rejected: u64,
    first_rejection: Option<String>,
}

impl Tally {
    pub fn keep(&mut self) {
        self.rows += 1;
    }

    /// Counts an item left out; `reason` is asked for the first one only.
    pub fn reject(&mut self, reason: impl FnOnce() -> String) {
        self.rejected += 1;
        self.first_rejection.get_or_insert_with(reason);
    }

    /// The items counted so far, kept or not.
    pub fn items(&self) -> u64 {
        self.rows + self.rejected
    }

    /// The request encoded: `table`'s block of the rows kept, built by `block` from their count
    /// (no block when there are none), and the items left out.
    pub fn finish(self, table: Table, block: impl FnOnce(u64) -> Vec<u8>) -> Encoded<Blocks> {
        let mut blocks = Blocks::default();
        if self.rows > 0 {
            blocks.add(table, block(self.rows), self.rows);
        }
        Encoded {
            rows: blocks,
            rejected: self.rejected,
            first_rejection: self.first_rejection,
        }
    }
}

/// The attributes of the current resource or scope, encoded once and copied into each of its
/// items' rows; for a resource also its service name.
#[derive(Default)]
pub struct CachedAttributes {
    /// Where the cached message is in the request, to tell when the walk moved on.
    at: Option<(usize, usize)>,
    /// The keys and values as `String` column data, `count` pairs.
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
    pub count: u64,
    /// `AsString()` of a resource's first `service.name` attribute, whatever its type (pdata's
    /// `Map.Get` returns the first); empty for a scope.
    pub service_name: Vec<u8>,
    /// One value's `AsString()`, reused.
    scratch: Vec<u8>,
}

impl CachedAttributes {
    /// Caches the attributes and service name of a `Resource`, unless it is the one cached.
    pub fn update(&mut self, resource: &[u8]) -> Result<(), WireError> {
        self.load(resource, 1, "Resource.attributes", Some("service.name"))
    }

    /// Caches the attributes of an `InstrumentationScope`, unless it is the one cached.
    pub fn update_scope(&mut self, scope: &[u8]) -> Result<(), WireError> {
        self.load(scope, 3, "InstrumentationScope.attributes", None)
    }

    fn load(
        &mut self,
        message: &[u8],
        field: u32,
        path: &'static str,
        service_key: Option<&str>,
    ) -> Result<(), WireError> {
        let at = Some((message.as_ptr() as usize, message.len()));
        if self.at == at {
            return Ok(());
        }
        self.at = None;
        self.keys.clear();
        self.values.clear();
        self.count = 0;
        self.service_name.clear();
        let mut found_service = false;
        for_each_attribute(message, field, path, |key, value| {
            self.scratch.clear();
            write_as_string(&mut self.scratch, value)?;
            put_str(&mut self.keys, key.as_bytes());
            put_str(&mut self.values, &self.scratch);
            self.count += 1;
            if !found_service && service_key == Some(key) {
                found_service = true;
                self.service_name.extend_from_slice(&self.scratch);
            }
            Ok(())
        })?;
        self.at = at;
        Ok(())
    }

    /// Appends the cached attributes to a map column as one row.
    pub fn write_row(&self, map: &mut StringMap) {
        map.keys.data.extend_from_slice(&self.keys);
        map.values.data.extend_from_slice(&self.values);
        map.offsets.end_row(self.count);
    }
}

/// Calls `each` with the key and value (AnyValue bytes, empty when absent) of every KeyValue in
/// field `field` of `message`.
pub fn for_each_attribute<'a>(
    message: &'a [u8],
    field: u32,
    path: &'static str,
    mut each: impl FnMut(&'a str, &'a [u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    for entry in Fields::new(message, path) {
        let (number, value) = entry?;
        if number != field {
            continue;
        }
        let (mut key, mut any): (&str, &[u8]) = ("", &[]);
        for entry in Fields::new(value.bytes(path)?, "KeyValue") {
            match entry? {
                (1, v) => key = v.string("KeyValue.key")?,
                (2, v) => any = v.bytes("KeyValue.value")?,
                _ => {}
            }
        }
        each(key, any)?;
    }
    Ok(())
}

/// Appends the attributes in field `field` of `message` to a map column as one row: every pair in
/// wire order, duplicates included, each value as `AsString()`.
pub fn write_map(
    map: &mut StringMap,
    message: &[u8],
    field: u32,
    path: &'static str,
) -> Result<(), WireError> {
    let mut count = 0;
    for_each_attribute(message, field, path, |key, value| {
        map.keys.push(key.as_bytes());
        map.values.push_with(|out| write_as_string(out, value))?;
        count += 1;
        Ok(())
    })?;
    map.offsets.end_row(count);
    Ok(())
}

/// Lower-case hex, or nothing for an empty or all-zero id (traceutil.*ToHexOrEmptyString).
pub fn push_hex(column: &mut Strings, id: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if id.iter().all(|&b| b == 0) {
        column.push(b"");
        return;
    }
    let _ = column.push_with::<()>(|out| {
        for byte in id {
            out.push(DIGITS[usize::from(byte >> 4)]);
            out.push(DIGITS[usize::from(byte & 0x0f)]);
        }
        Ok(())
    });
}

/// Why a time of `value` nanoseconds cannot be stored: it is past DateTime64(9)'s Int64.
pub fn too_late(field: &str, value: u64) -> String {
    format!("{field} {value} is after 2262-04-11, the last instant DateTime64(9) holds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{kv, string_kv, value};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    #[test]
    fn ids_are_hex_and_zero_ids_empty() {
        let mut strings = Strings::default();
        push_hex(&mut strings, &[0xab, 0x01]);
        push_hex(&mut strings, &[0; 8]);
        push_hex(&mut strings, &[]);
        assert_eq!(strings.data, b"\x04ab01\x00\x00");
    }

    #[test]
    fn a_resource_is_encoded_once_with_its_first_service_name() {
        let resource = Resource {
            attributes: vec![
                kv("service.name", value(Value::IntValue(7))),
                string_kv("service.name", "second"),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let mut cache = CachedAttributes::default();
        cache.update(&resource).expect("valid");
        assert_eq!((cache.count, cache.service_name.as_slice()), (2, &b"7"[..]));
        let mut map = StringMap::default();
        cache.write_row(&mut map);
        assert_eq!(map.keys.data, b"\x0cservice.name\x0cservice.name");
        assert_eq!(map.values.data, b"\x017\x06second");
        assert_eq!(map.offsets.total(), 2);
        // A scope has no service name, whatever its attributes.
        cache.update_scope(&resource[..0]).expect("valid");
        assert_eq!((cache.count, cache.service_name.len()), (0, 0));
    }
}
