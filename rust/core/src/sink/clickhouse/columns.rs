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
}

impl CachedAttributes {
    /// Caches the attributes and service name of a `Resource`, unless it is the one cached.
    pub fn update<'a>(
        &mut self,
        resource: &'a [u8],
        pairs: &mut SortedPairs<'a>,
    ) -> Result<(), WireError> {
        self.load(
            resource,
            1,
            "Resource.attributes",
            Some("service.name"),
            pairs,
        )
    }

    /// Caches the attributes of an `InstrumentationScope`, unless it is the one cached.
    pub fn update_scope<'a>(
        &mut self,
        scope: &'a [u8],
        pairs: &mut SortedPairs<'a>,
    ) -> Result<(), WireError> {
        self.load(scope, 3, "InstrumentationScope.attributes", None, pairs)
    }

    fn load<'a>(
        &mut self,
        message: &'a [u8],
        field: u32,
        path: &'static str,
        service_key: Option<&str>,
        pairs: &mut SortedPairs<'a>,
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
        // The sort keeps the pairs of one key in wire order: the first found is the first sent.
        let mut found_service = false;
        for (key, value) in pairs.read(message, field, path)?.iter() {
            put_str(&mut self.keys, key.as_bytes());
            put_str(&mut self.values, value);
            self.count += 1;
            if !found_service && service_key == Some(key) {
                found_service = true;
                self.service_name.extend_from_slice(value);
            }
        }
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

/// The pairs of one map, sorted by key bytes as contrib's ClickHouse client sorts them, read into
/// buffers kept from map to map. Sorted, the same attributes in another wire order are the same
/// map: `cityHash64(Attributes)` in the metric tables' sort key, the rollups' series hash, and
/// `toString` of a map read the same as for contrib's rows.
#[derive(Default)]
pub struct SortedPairs<'a> {
    /// `AsString()` of every value, back to back.
    values: Vec<u8>,
    /// Each pair's key and where its value is in `values`.
    pairs: Vec<(&'a str, usize, usize)>,
}

impl<'a> SortedPairs<'a> {
    /// Reads the attributes in field `field` of `message` and sorts them by key. Pairs of one key
    /// stay in wire order: ties are broken by where the value was written, which a stable sort would
    /// do with a buffer of its own.
    pub fn read(
        &mut self,
        message: &'a [u8],
        field: u32,
        path: &'static str,
    ) -> Result<&Self, WireError> {
        let Self { values, pairs } = self;
        values.clear();
        pairs.clear();
        for_each_attribute(message, field, path, |key, value| {
            let start = values.len();
            write_as_string(values, value)?;
            pairs.push((key, start, values.len()));
            Ok(())
        })?;
        pairs.sort_unstable();
        Ok(self)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &[u8])> + '_ {
        self.pairs
            .iter()
            .map(|&(key, start, end)| (key, &self.values[start..end]))
    }

    /// Appends the pairs to a map column as one row.
    pub fn write(&self, map: &mut StringMap) {
        for (key, value) in self.iter() {
            map.keys.push(key.as_bytes());
            map.values.push(value);
        }
        map.offsets.end_row(self.pairs.len() as u64);
    }

    /// Reads the attributes in field `field` of `message` into a map column as one row.
    pub fn read_into(
        &mut self,
        map: &mut StringMap,
        message: &'a [u8],
        field: u32,
        path: &'static str,
    ) -> Result<(), WireError> {
        self.read(message, field, path)?.write(map);
        Ok(())
    }
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
                string_kv("z", "last"),
                kv("service.name", value(Value::IntValue(7))),
                string_kv("service.name", "second"),
                string_kv("a", "first"),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let mut cache = CachedAttributes::default();
        let mut pairs = SortedPairs::default();
        cache.update(&resource, &mut pairs).expect("valid");
        assert_eq!((cache.count, cache.service_name.as_slice()), (4, &b"7"[..]));
        let mut map = StringMap::default();
        cache.write_row(&mut map);
        // Sorted by key; the two service.name pairs in the order they were sent.
        assert_eq!(map.keys.data, b"\x01a\x0cservice.name\x0cservice.name\x01z");
        assert_eq!(map.values.data, b"\x05first\x017\x06second\x04last");
        assert_eq!(map.offsets.total(), 4);
        // A scope has no service name, whatever its attributes.
        cache
            .update_scope(&resource[..0], &mut pairs)
            .expect("valid");
        assert_eq!((cache.count, cache.service_name.len()), (0, 0));
    }
}
