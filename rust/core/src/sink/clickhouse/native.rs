//! ClickHouse's Native format, written column by column as a request is read.
//!
//! A block is `NumColumns` and `NumRows` (VarUInt, LEB128 like protobuf varints), then for each
//! column its name and type (strings) and its data, all rows of it together:
//!
//! * `String`: per row a VarUInt length and the bytes.
//! * `Int64`, `UInt64`, `Float64`, `DateTime64(9)` (nanoseconds as Int64): 8 bytes little-endian
//!   per row; `Int32`, `UInt32`: 4 bytes; `UInt8`, `Bool`: 1 byte.
//! * `Array(T)`: per row the cumulative element count as UInt64 LE (the end offset of the row's
//!   elements), then all elements of all rows as one column of `T`.
//! * `Map(K, V)`: the same offsets, then all keys as a `K` column, then all values as a `V` column.
//!
//! Over HTTP (`INSERT ... FORMAT Native`) a block has no BlockInfo header: that belongs to the TCP
//! protocol only. The server converts a column whose type differs from the table's
//! (`input_format_native_allow_types_conversion`, on by default), so `String` is sent for
//! `LowCardinality(String)` and `Map(String, String)` for `Map(LowCardinality(String), String)`.
//! The layout is the one the `clickhouse` crate's own writer (src/native/writer.rs) produces.

/// Appends a VarUInt.
pub fn put_varuint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a `String` value: its length and bytes.
pub fn put_str(out: &mut Vec<u8>, value: &[u8]) {
    put_varuint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A `String` column.
#[derive(Default)]
pub struct Strings {
    pub data: Vec<u8>,
}

impl Strings {
    pub fn push(&mut self, value: &[u8]) {
        put_str(&mut self.data, value);
    }

    /// A value whose bytes `write` appends to the buffer it is given; its length is found after.
    /// Values shorter than 128 bytes, nearly all of them, cost no move: the one-byte length is
    /// reserved before and filled in after.
    pub fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = self.data.len();
        self.data.push(0);
        write(&mut self.data)?;
        let len = self.data.len() - at - 1;
        if len < 0x80 {
            self.data[at] = len as u8;
        } else {
            let mut prefix = Vec::with_capacity(10);
            put_varuint(&mut prefix, len as u64);
            self.data.splice(at..at + 1, prefix);
        }
        Ok(())
    }
}

/// A fixed-width column of 8-byte little-endian values: `Int64`, `UInt64`, `Float64`,
/// `DateTime64(9)`.
#[derive(Default)]
pub struct Fixed64 {
    pub data: Vec<u8>,
}

impl Fixed64 {
    pub fn push_i64(&mut self, value: i64) {
        self.data.extend_from_slice(&value.to_le_bytes());
    }

    pub fn push_u64(&mut self, value: u64) {
        self.data.extend_from_slice(&value.to_le_bytes());
    }

    pub fn push_f64(&mut self, value: f64) {
        self.data.extend_from_slice(&value.to_le_bytes());
    }
}

/// A fixed-width column of 4-byte little-endian values: `Int32`, `UInt32`.
#[derive(Default)]
pub struct Fixed32 {
    pub data: Vec<u8>,
}

impl Fixed32 {
    pub fn push_i32(&mut self, value: i32) {
        self.data.extend_from_slice(&value.to_le_bytes());
    }

    pub fn push_u32(&mut self, value: u32) {
        self.data.extend_from_slice(&value.to_le_bytes());
    }
}

/// A column of one byte per row: `UInt8`, `Bool` (0 or 1).
#[derive(Default)]
pub struct Fixed8 {
    pub data: Vec<u8>,
}

impl Fixed8 {
    pub fn push(&mut self, value: u8) {
        self.data.push(value);
    }

    pub fn push_bool(&mut self, value: bool) {
        self.data.push(u8::from(value));
    }
}

/// The offsets of an `Array` or `Map` column: one cumulative element count per row.
#[derive(Default)]
pub struct Offsets {
    pub data: Vec<u8>,
    total: u64,
}

impl Offsets {
    /// Ends a row that holds `count` elements.
    pub fn end_row(&mut self, count: u64) {
        self.total += count;
        self.data.extend_from_slice(&self.total.to_le_bytes());
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A `Map(String, String)` column.
#[derive(Default)]
pub struct StringMap {
    pub offsets: Offsets,
    pub keys: Strings,
    pub values: Strings,
}

impl StringMap {
    fn write_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offsets.data);
        out.extend_from_slice(&self.keys.data);
        out.extend_from_slice(&self.values.data);
    }
}

/// One column's data, ready for [`Block::column`].
pub enum Data<'c> {
    Strings(&'c Strings),
    Fixed8(&'c Fixed8),
    Fixed64(&'c Fixed64),
    Fixed32(&'c Fixed32),
    StringMap(&'c StringMap),
    /// `Array(T)`: the offsets, then the elements.
    Array(&'c Offsets, Box<Data<'c>>),
}

impl Data<'_> {
    /// The bytes of the column's data.
    pub fn byte_len(&self) -> usize {
        match self {
            Data::Strings(s) => s.data.len(),
            Data::Fixed8(f) => f.data.len(),
            Data::Fixed64(f) => f.data.len(),
            Data::Fixed32(f) => f.data.len(),
            Data::StringMap(m) => m.offsets.data.len() + m.keys.data.len() + m.values.data.len(),
            Data::Array(offsets, inner) => offsets.data.len() + inner.byte_len(),
        }
    }

    fn write_into(&self, out: &mut Vec<u8>) {
        match self {
            Data::Strings(s) => out.extend_from_slice(&s.data),
            Data::Fixed8(f) => out.extend_from_slice(&f.data),
            Data::Fixed64(f) => out.extend_from_slice(&f.data),
            Data::Fixed32(f) => out.extend_from_slice(&f.data),
            Data::StringMap(m) => m.write_into(out),
            Data::Array(offsets, inner) => {
                out.extend_from_slice(&offsets.data);
                inner.write_into(out);
            }
        }
    }
}

/// Assembles a block from its columns, in the order of the INSERT's column list.
pub struct Block {
    out: Vec<u8>,
}

impl Block {
    /// `columns` is the number of columns that will follow; `capacity` the bytes they take.
    pub fn new(columns: usize, rows: u64, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity + 32 * columns + 20);
        put_varuint(&mut out, columns as u64);
        put_varuint(&mut out, rows);
        Self { out }
    }

    pub fn column(&mut self, name: &str, data_type: &str, data: &Data<'_>) {
        put_str(&mut self.out, name.as_bytes());
        put_str(&mut self.out, data_type.as_bytes());
        self.out.reserve(data.byte_len());
        data.write_into(&mut self.out);
    }

    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    /// A whole block of `rows` rows: the columns named and typed in `columns`, with their `data`
    /// in the same order.
    pub fn of(columns: &[(&str, &str)], data: &[Data<'_>], rows: u64) -> Vec<u8> {
        debug_assert_eq!(columns.len(), data.len());
        let capacity = data.iter().map(Data::byte_len).sum();
        let mut block = Block::new(columns.len(), rows, capacity);
        for ((name, data_type), data) in columns.iter().zip(data) {
            block.column(name, data_type, data);
        }
        block.finish()
    }
}

/// Blocks read back into values, for tests.
#[cfg(test)]
pub mod read {
    /// One value of a column.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Cell {
        Str(String),
        /// `UInt8`, `UInt64`.
        UInt(u64),
        /// `Int64`, `DateTime64(9)`.
        Int(i64),
        Map(Vec<(String, String)>),
        Array(Vec<Cell>),
    }

    /// A column of a block: its name, type and one cell per row.
    #[derive(Debug)]
    pub struct Column {
        pub name: String,
        pub data_type: String,
        pub cells: Vec<Cell>,
    }

    /// Every column of a block, which must be all of `bytes`.
    pub fn block(mut bytes: &[u8]) -> Vec<Column> {
        let data = &mut bytes;
        let columns = varuint(data);
        let rows = varuint(data) as usize;
        let columns = (0..columns)
            .map(|_| {
                let name = string(data);
                let data_type = string(data);
                let cells = cells(data, &data_type, rows);
                Column {
                    name,
                    data_type,
                    cells,
                }
            })
            .collect();
        assert!(
            data.is_empty(),
            "{} bytes after the last column",
            data.len()
        );
        columns
    }

    fn cells(data: &mut &[u8], data_type: &str, rows: usize) -> Vec<Cell> {
        let fixed = |data: &mut &[u8], width: usize| -> Vec<[u8; 8]> {
            take(data, rows * width)
                .chunks(width)
                .map(|chunk| {
                    let mut value = [0; 8];
                    value[..width].copy_from_slice(chunk);
                    value
                })
                .collect()
        };
        if let Some(inner) = data_type
            .strip_prefix("Array(")
            .and_then(|t| t.strip_suffix(')'))
        {
            let ends = offsets(data, rows);
            let mut elements = cells(data, inner, ends.last().copied().unwrap_or(0)).into_iter();
            let mut start = 0;
            return ends
                .iter()
                .map(|&end| {
                    let row = elements.by_ref().take(end - start).collect();
                    start = end;
                    Cell::Array(row)
                })
                .collect();
        }
        match data_type {
            "String" => (0..rows).map(|_| Cell::Str(string(data))).collect(),
            "UInt8" => fixed(data, 1)
                .into_iter()
                .map(|v| Cell::UInt(u64::from_le_bytes(v)))
                .collect(),
            "UInt64" => fixed(data, 8)
                .into_iter()
                .map(|v| Cell::UInt(u64::from_le_bytes(v)))
                .collect(),
            "Int64" | "DateTime64(9)" => fixed(data, 8)
                .into_iter()
                .map(|v| Cell::Int(i64::from_le_bytes(v)))
                .collect(),
            "Map(String, String)" => {
                let ends = offsets(data, rows);
                let total = ends.last().copied().unwrap_or(0);
                let keys: Vec<String> = (0..total).map(|_| string(data)).collect();
                let values: Vec<String> = (0..total).map(|_| string(data)).collect();
                let mut start = 0;
                ends.iter()
                    .map(|&end| {
                        let row = (start..end)
                            .map(|i| (keys[i].clone(), values[i].clone()))
                            .collect();
                        start = end;
                        Cell::Map(row)
                    })
                    .collect()
            }
            other => panic!("no reader for {other}"),
        }
    }

    fn offsets(data: &mut &[u8], rows: usize) -> Vec<usize> {
        let ends: Vec<usize> = take(data, rows * 8)
            .chunks(8)
            .map(|chunk| {
                let end = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                usize::try_from(end).expect("an offset that fits")
            })
            .collect();
        assert!(ends.windows(2).all(|w| w[0] <= w[1]), "offsets {ends:?}");
        ends
    }

    fn varuint(data: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = take(data, 1)[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
        }
        panic!("VarUInt longer than 10 bytes")
    }

    fn string(data: &mut &[u8]) -> String {
        let len = usize::try_from(varuint(data)).expect("a length that fits");
        String::from_utf8(take(data, len).to_vec()).expect("UTF-8")
    }

    fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(data.len() >= n, "the block ends {n} bytes early");
        let (taken, rest) = data.split_at(n);
        *data = rest;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_is_leb128() {
        for (value, bytes) in [
            (0u64, &[0u8][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varuint(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
    }

    #[test]
    fn push_with_fixes_up_long_lengths() {
        let mut strings = Strings::default();
        strings
            .push_with::<()>(|out| {
                out.extend_from_slice(b"ab");
                Ok(())
            })
            .expect("ok");
        let long = vec![b'x'; 300];
        strings
            .push_with::<()>(|out| {
                out.extend_from_slice(&long);
                Ok(())
            })
            .expect("ok");
        strings.push(b"");
        let mut want = vec![2, b'a', b'b', 0xac, 0x02];
        want.extend_from_slice(&long);
        want.push(0);
        assert_eq!(strings.data, want);
    }

    #[test]
    fn a_block_of_a_string_a_map_and_an_array_of_maps() {
        let mut names = Strings::default();
        names.push(b"a");
        names.push(b"bc");
        let mut map = StringMap::default();
        map.keys.push(b"k");
        map.values.push(b"v");
        map.offsets.end_row(1);
        map.offsets.end_row(0);
        let mut inner = StringMap::default();
        inner.keys.push(b"k");
        inner.values.push(b"v");
        inner.offsets.end_row(1);
        let mut outer = Offsets::default();
        outer.end_row(0);
        outer.end_row(1);
        let mut block = Block::new(3, 2, 0);
        block.column("N", "String", &Data::Strings(&names));
        block.column("M", "Map(String, String)", &Data::StringMap(&map));
        block.column(
            "A",
            "Array(Map(String, String))",
            &Data::Array(&outer, Box::new(Data::StringMap(&inner))),
        );
        let out = block.finish();
        let mut want = vec![3, 2];
        want.extend_from_slice(b"\x01N\x06String\x01a\x02bc");
        want.extend_from_slice(b"\x01M\x13Map(String, String)");
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"\x01k\x01v");
        want.extend_from_slice(b"\x01A\x1aArray(Map(String, String))");
        want.extend_from_slice(&0u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"\x01k\x01v");
        assert_eq!(out, want);
    }

    #[test]
    fn blocks_read_back() {
        let mut flags = Fixed8::default();
        flags.push(1);
        flags.push(255);
        let mut times = Fixed64::default();
        times.push_i64(-1);
        times.push_i64(7);
        let mut map = StringMap::default();
        map.offsets.end_row(0);
        map.keys.push(b"k");
        map.values.push(b"v");
        map.offsets.end_row(1);
        let mut names = Strings::default();
        names.push(b"a");
        let mut outer = Offsets::default();
        outer.end_row(1);
        outer.end_row(0);
        let mut block = Block::new(4, 2, 0);
        block.column("F", "UInt8", &Data::Fixed8(&flags));
        block.column("T", "DateTime64(9)", &Data::Fixed64(&times));
        block.column("M", "Map(String, String)", &Data::StringMap(&map));
        block.column(
            "A",
            "Array(String)",
            &Data::Array(&outer, Box::new(Data::Strings(&names))),
        );
        let block = block.finish();
        assert_eq!(&block[..10], b"\x04\x02\x01F\x05UInt8");
        assert_eq!(&block[10..12], &[1, 255]);
        use read::Cell::*;
        let columns: Vec<_> = read::block(&block)
            .into_iter()
            .map(|c| (c.name, c.data_type, c.cells))
            .collect();
        assert_eq!(
            columns,
            vec![
                ("F".into(), "UInt8".into(), vec![UInt(1), UInt(255)]),
                ("T".into(), "DateTime64(9)".into(), vec![Int(-1), Int(7)]),
                (
                    "M".into(),
                    "Map(String, String)".into(),
                    vec![Map(vec![]), Map(vec![("k".into(), "v".into())])]
                ),
                (
                    "A".into(),
                    "Array(String)".into(),
                    vec![Array(vec![Str("a".into())]), Array(vec![])]
                ),
            ]
        );
    }

    #[test]
    fn fixed_width_columns_are_little_endian() {
        let mut float = Fixed64::default();
        float.push_f64(1.5);
        let mut int = Fixed32::default();
        int.push_i32(-2);
        let mut uint = Fixed32::default();
        uint.push_u32(u32::MAX);
        let mut flags = Fixed8::default();
        flags.push_bool(true);
        let mut offsets = Offsets::default();
        offsets.end_row(1);
        let out = Block::of(
            &[
                ("F", "Float64"),
                ("I", "Int32"),
                ("U", "UInt32"),
                ("B", "Bool"),
                ("A", "Array(Float64)"),
            ],
            &[
                Data::Fixed64(&float),
                Data::Fixed32(&int),
                Data::Fixed32(&uint),
                Data::Fixed8(&flags),
                Data::Array(&offsets, Box::new(Data::Fixed64(&float))),
            ],
            1,
        );
        let mut want = vec![5, 1];
        want.extend_from_slice(b"\x01F\x07Float64");
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(b"\x01I\x05Int32\xfe\xff\xff\xff");
        want.extend_from_slice(b"\x01U\x06UInt32\xff\xff\xff\xff");
        want.extend_from_slice(b"\x01B\x04Bool\x01");
        want.extend_from_slice(b"\x01A\x0eArray(Float64)");
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(out, want);
    }
}
