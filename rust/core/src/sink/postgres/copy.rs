//! PostgreSQL binary COPY encoding (the PGCOPY format), written by hand so that a row goes from the
//! decoded OTLP message into one growing buffer without intermediate values.

use std::ops::Range;

use bytes::Bytes;

/// Element type OIDs of the arrays written here, which PostgreSQL checks against the column's.
const INT8_OID: u32 = 20;
const FLOAT8_OID: u32 = 701;

/// What every COPY starts with: the signature, no flags, no header extension.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// What every COPY ends with: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];
/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
const JSONB_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy)]
pub struct RowStart(usize);

/// Rows of one table in PGCOPY binary format, without header and trailer, so that the rows of many
/// requests can be sent in one COPY.
pub struct CopyRows {
    buf: Vec<u8>,
    rows: u64,
    columns: i16,
}

impl CopyRows {
    /// Rows of `columns` fields, with room for `bytes` of them before the buffer grows.
    pub fn new(columns: i16, bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            rows: 0,
            columns,
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Starts a row; the caller then writes exactly `columns` fields. Returns where the row begins,
    /// for [`CopyRows::discard_row`].
    pub fn start_row(&mut self) -> RowStart {
        let start = RowStart(self.buf.len());
        self.buf.extend_from_slice(&self.columns.to_be_bytes());
        self.rows += 1;
        start
    }

    /// Bytes written since `start`.
    pub fn row_len(&self, start: RowStart) -> usize {
        self.buf.len() - start.0
    }

    /// Removes the row begun at `start`, which must be the last one.
    pub fn discard_row(&mut self, start: RowStart) {
        self.buf.truncate(start.0);
        self.rows -= 1;
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn bytea(&mut self, value: &[u8]) {
        self.length_prefix(value.len());
        self.buf.extend_from_slice(value);
    }

    /// A text value. PostgreSQL text cannot hold NUL, so each NUL becomes U+FFFD.
    pub fn text(&mut self, value: &str) {
        if memchr::memchr(0, value.as_bytes()).is_none() {
            self.length_prefix(value.len());
            self.buf.extend_from_slice(value.as_bytes());
        } else {
            self.variable(|out| {
                for (i, part) in value.split('\0').enumerate() {
                    if i > 0 {
                        out.extend_from_slice("\u{fffd}".as_bytes());
                    }
                    out.extend_from_slice(part.as_bytes());
                }
            });
        }
    }

    pub fn int2(&mut self, value: i16) {
        self.buf.extend_from_slice(&2i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int4(&mut self, value: i32) {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A float8 (double precision): its IEEE 754 bits, so NaN and infinities are kept.
    pub fn float8(&mut self, value: f64) {
        self.int8(value.to_bits() as i64);
    }

    pub fn bool(&mut self, value: bool) {
        self.buf.extend_from_slice(&1i32.to_be_bytes());
        self.buf.push(u8::from(value));
    }

    /// A one-dimensional bigint[] without NULLs.
    pub fn int8_array(&mut self, values: impl ExactSizeIterator<Item = i64>) {
        self.array(INT8_OID, values.len(), values.map(i64::to_be_bytes));
    }

    /// A one-dimensional double precision[] without NULLs.
    pub fn float8_array(&mut self, values: impl ExactSizeIterator<Item = f64>) {
        self.array(
            FLOAT8_OID,
            values.len(),
            values.map(|v| v.to_bits().to_be_bytes()),
        );
    }

    /// A timestamptz from Unix nanoseconds, truncated to PostgreSQL's microsecond precision.
    pub fn timestamptz_from_unix_nanos(&mut self, unix_nanos: i64) {
        self.int8(unix_nanos.div_euclid(1000) - POSTGRES_EPOCH_MICROS);
    }

    /// A jsonb value whose JSON text `write` appends. If `write` fails, the caller abandons the
    /// whole buffer, so what was written is never sent.
    pub fn jsonb<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let mut result = Ok(());
        self.variable(|out| {
            out.push(JSONB_VERSION);
            result = write(out);
        });
        result
    }

    /// A jsonb value whose JSON text was written before (shared by many rows).
    pub fn jsonb_text(&mut self, json: &[u8]) {
        self.variable(|out| {
            out.push(JSONB_VERSION);
            out.extend_from_slice(json);
        });
    }

    pub fn finish(self) -> Chunk {
        Chunk {
            data: Bytes::from(self.buf),
            rows: self.rows,
            columns: self.columns,
        }
    }

    /// A field whose length is known only after writing it: reserve the length, write, patch.
    fn variable(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let len = self.buf.len() - at - 4;
        self.buf[at..at + 4].copy_from_slice(&field_len(len).to_be_bytes());
    }

    /// PostgreSQL's binary array (array_send): dimension count, has-NULL flag, element type, then
    /// per dimension its length and lower bound, then each element with its length. An empty array
    /// has no dimensions.
    fn array(&mut self, element_oid: u32, len: usize, elements: impl Iterator<Item = [u8; 8]>) {
        self.variable(|out| {
            out.extend_from_slice(&i32::from(len > 0).to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&element_oid.to_be_bytes());
            if len > 0 {
                out.extend_from_slice(&field_len(len).to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
            }
            out.reserve(len * 12);
            for element in elements {
                out.extend_from_slice(&8i32.to_be_bytes());
                out.extend_from_slice(&element);
            }
        });
    }

    fn length_prefix(&mut self, len: usize) {
        self.buf.extend_from_slice(&field_len(len).to_be_bytes());
    }
}

/// Finished rows, ready to be sent between a [`HEADER`] and a [`TRAILER`].
#[derive(Debug, Clone)]
pub struct Chunk {
    pub data: Bytes,
    pub rows: u64,
    columns: i16,
}

impl Chunk {
    /// The byte range of each row, found by walking the field lengths. Only needed to isolate rows
    /// that PostgreSQL refuses, so the ranges are not kept while encoding.
    pub fn row_ranges(&self) -> Vec<Range<usize>> {
        let data = &self.data[..];
        let mut ranges = Vec::with_capacity(self.rows as usize);
        let mut at = 0;
        while at + 2 <= data.len() {
            let start = at;
            at += 2;
            for _ in 0..self.columns {
                let len = data
                    .get(at..at + 4)
                    .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                at += 4 + usize::try_from(len).unwrap_or(0);
            }
            ranges.push(start..at.min(data.len()));
        }
        ranges
    }
}

/// PGCOPY lengths are i32. PostgreSQL refuses fields over 1 GB anyway, and rows that large are
/// discarded before the COPY (see `MAX_ROW_BYTES` in spans.rs), so saturating is never observed.
fn field_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
pub(crate) mod parse {
    //! A reader for the rows of a chunk, for tests: rows of fields, each `None` for NULL.

    pub type Row = Vec<Option<Vec<u8>>>;

    /// The field of `row` in column `name` of `columns`.
    pub fn field<'r>(columns: &[&str], row: &'r Row, name: &str) -> &'r Option<Vec<u8>> {
        &row[columns
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name}"))]
    }

    /// The bytes of a field that must not be NULL.
    pub fn value(columns: &[&str], row: &Row, name: &str) -> Vec<u8> {
        field(columns, row, name)
            .clone()
            .unwrap_or_else(|| panic!("{name} is NULL"))
    }

    pub fn jsonb(bytes: &[u8]) -> serde_json::Value {
        assert_eq!(bytes[0], 1, "jsonb version byte");
        serde_json::from_slice(&bytes[1..]).expect("valid JSON")
    }

    /// Defines `column`, `text`, `int2`, `int4`, `int8` and `json`: the fields of a row of a table
    /// with these columns, read by column name.
    macro_rules! readers_for {
        ($columns:expr) => {
            #[allow(dead_code)]
            fn column<'r>(row: &'r parse::Row, name: &str) -> &'r Option<Vec<u8>> {
                parse::field($columns, row, name)
            }

            #[allow(dead_code)]
            fn text(row: &parse::Row, name: &str) -> String {
                String::from_utf8(parse::value($columns, row, name)).expect("UTF-8")
            }

            #[allow(dead_code)]
            fn int8(row: &parse::Row, name: &str) -> i64 {
                i64::from_be_bytes(
                    parse::value($columns, row, name)
                        .try_into()
                        .expect("8 bytes"),
                )
            }

            #[allow(dead_code)]
            fn int4(row: &parse::Row, name: &str) -> i32 {
                i32::from_be_bytes(
                    parse::value($columns, row, name)
                        .try_into()
                        .expect("4 bytes"),
                )
            }

            #[allow(dead_code)]
            fn int2(row: &parse::Row, name: &str) -> i16 {
                i16::from_be_bytes(
                    parse::value($columns, row, name)
                        .try_into()
                        .expect("2 bytes"),
                )
            }

            #[allow(dead_code)]
            fn json(row: &parse::Row, name: &str) -> serde_json::Value {
                parse::jsonb(&parse::value($columns, row, name))
            }
        };
    }
    pub(crate) use readers_for;

    pub fn rows(data: &[u8]) -> Vec<Row> {
        let mut at = 0;
        let mut rows = Vec::new();
        while at < data.len() {
            let count = i16::from_be_bytes([data[at], data[at + 1]]);
            at += 2;
            let mut row = Vec::new();
            for _ in 0..count {
                let len = i32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                at += 4;
                if len < 0 {
                    row.push(None);
                } else {
                    let len = len as usize;
                    row.push(Some(data[at..at + len].to_vec()));
                    at += len;
                }
            }
            rows.push(row);
        }
        rows
    }

    /// The elements of a one-dimensional binary array of 8-byte elements of type `element_oid`,
    /// checking every header field.
    fn array(field: &[u8], element_oid: u32) -> Vec<[u8; 8]> {
        let int = |at: usize| i32::from_be_bytes(field[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(int(4), 0, "has-NULL flag");
        assert_eq!(int(8) as u32, element_oid, "element type");
        match int(0) {
            0 => {
                assert_eq!(field.len(), 12, "an empty array is its header");
                Vec::new()
            }
            1 => {
                let len = usize::try_from(int(12)).expect("a dimension length");
                assert_eq!(int(16), 1, "lower bound");
                assert_eq!(field.len(), 20 + 12 * len, "array length");
                (0..len)
                    .map(|i| {
                        let at = 20 + 12 * i;
                        assert_eq!(int(at), 8, "element length");
                        field[at + 4..at + 12].try_into().expect("8 bytes")
                    })
                    .collect()
            }
            ndim => panic!("{ndim} dimensions"),
        }
    }

    pub fn int8_array(field: &[u8]) -> Vec<i64> {
        array(field, super::INT8_OID)
            .into_iter()
            .map(i64::from_be_bytes)
            .collect()
    }

    pub fn float8_array(field: &[u8]) -> Vec<f64> {
        array(field, super::FLOAT8_OID)
            .into_iter()
            .map(f64::from_be_bytes)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_fields_and_trailer() {
        let mut rows = CopyRows::new(7, 0);
        rows.start_row();
        rows.null();
        rows.bytea(&[1, 2]);
        rows.text("a\0b");
        rows.int2(-2);
        rows.int4(7);
        rows.timestamptz_from_unix_nanos(946_684_800_000_001_999);
        rows.jsonb(|out| {
            out.extend_from_slice(b"{}");
            Ok::<_, ()>(())
        })
        .expect("infallible");
        assert_eq!(rows.rows(), 1);
        let parsed = parse::rows(&rows.finish().data);
        assert_eq!(
            parsed,
            vec![vec![
                None,
                Some(vec![1, 2]),
                Some("a\u{fffd}b".as_bytes().to_vec()),
                Some((-2i16).to_be_bytes().to_vec()),
                Some(7i32.to_be_bytes().to_vec()),
                Some(1i64.to_be_bytes().to_vec()),
                Some(b"\x01{}".to_vec()),
            ]]
        );
    }

    #[test]
    fn row_ranges_split_a_chunk_into_its_rows() {
        let mut rows = CopyRows::new(2, 0);
        rows.start_row();
        rows.text("first");
        rows.null();
        rows.start_row();
        rows.int8(1);
        rows.bytea(&[]);
        let chunk = rows.finish();
        let ranges = chunk.row_ranges();
        assert_eq!(ranges, vec![0..2 + 9 + 4, 15..15 + 2 + 12 + 4]);
        assert_eq!(ranges[1].end, chunk.data.len());
        assert_eq!(
            parse::rows(&chunk.data[ranges[1].clone()]),
            vec![vec![Some(1i64.to_be_bytes().to_vec()), Some(vec![])]]
        );
    }

    #[test]
    fn header_and_trailer_frame_any_rows() {
        assert_eq!(HEADER.len(), 19);
        assert_eq!(&HEADER[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(TRAILER, (-1i16).to_be_bytes());
    }

    #[test]
    fn timestamps_before_2000_and_at_the_epoch() {
        let mut rows = CopyRows::new(1, 0);
        rows.start_row();
        rows.timestamptz_from_unix_nanos(0);
        let parsed = parse::rows(&rows.finish().data);
        assert_eq!(
            parsed[0][0],
            Some((-POSTGRES_EPOCH_MICROS).to_be_bytes().to_vec())
        );
    }

    #[test]
    fn floats_bools_and_arrays() {
        let mut rows = CopyRows::new(6, 0);
        rows.start_row();
        rows.float8(-1.5);
        rows.bool(true);
        rows.int8_array([1, -2, i64::MAX].into_iter());
        rows.int8_array(std::iter::empty());
        rows.float8_array([0.5, f64::INFINITY].into_iter());
        rows.float8_array(std::iter::empty());
        let parsed = parse::rows(&rows.finish().data);
        let row = &parsed[0];
        assert_eq!(row[0], Some((-1.5f64).to_be_bytes().to_vec()));
        assert_eq!(row[1], Some(vec![1]));
        // ndim 1, no NULLs, OID 20, 3 elements from index 1, then (length 8, value) each.
        let mut expected = [1i32, 0, 20, 3, 1]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        for value in [1i64, -2, i64::MAX] {
            expected.extend_from_slice(&8i32.to_be_bytes());
            expected.extend_from_slice(&value.to_be_bytes());
        }
        assert_eq!(row[2].as_deref(), Some(&expected[..]));
        assert_eq!(
            parse::int8_array(row[2].as_deref().expect("not null")),
            vec![1, -2, i64::MAX]
        );
        // An empty array has no dimensions, only its element type.
        assert_eq!(
            row[3],
            Some([0i32, 0, 20].iter().flat_map(|v| v.to_be_bytes()).collect())
        );
        assert_eq!(
            parse::float8_array(row[4].as_deref().expect("not null")),
            vec![0.5, f64::INFINITY]
        );
        assert_eq!(
            row[5],
            Some(
                [0i32, 0, 701]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect()
            )
        );
    }
}
