//! PostgreSQL binary COPY encoding (the PGCOPY format), written by hand so that a row goes from the
//! decoded OTLP message into one growing buffer without intermediate values.

use bytes::Bytes;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
const JSONB_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy)]
pub struct RowStart(usize);

/// Rows of one table in PGCOPY binary format, header included.
pub struct CopyRows {
    buf: Vec<u8>,
    rows: u64,
    columns: i16,
}

impl CopyRows {
    pub fn new(columns: i16) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf, rows: 0, columns }
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

    /// A timestamptz from Unix nanoseconds, truncated to PostgreSQL's microsecond precision.
    pub fn timestamptz_from_unix_nanos(&mut self, unix_nanos: i64) {
        self.int8(unix_nanos.div_euclid(1000) - POSTGRES_EPOCH_MICROS);
    }

    /// A jsonb value whose JSON text `write` appends.
    pub fn jsonb(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.variable(|out| {
            out.push(JSONB_VERSION);
            write(out);
        });
    }

    /// Finishes the COPY data with its trailer.
    pub fn finish(mut self) -> Bytes {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        Bytes::from(self.buf)
    }

    /// A field whose length is known only after writing it: reserve the length, write, patch.
    fn variable(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let len = self.buf.len() - at - 4;
        self.buf[at..at + 4].copy_from_slice(&field_len(len).to_be_bytes());
    }

    fn length_prefix(&mut self, len: usize) {
        self.buf.extend_from_slice(&field_len(len).to_be_bytes());
    }
}

/// PGCOPY lengths are i32. PostgreSQL refuses fields over 1 GB anyway, and rows that large are
/// discarded before the COPY (see `MAX_ROW_BYTES` in spans.rs), so saturating is never observed.
fn field_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
pub(crate) mod parse {
    //! A reader for the format above, for tests: rows of fields, each `None` for NULL.

    pub fn rows(data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        assert_eq!(&data[..11], super::SIGNATURE);
        let mut at = 19;
        let mut rows = Vec::new();
        loop {
            let count = i16::from_be_bytes([data[at], data[at + 1]]);
            at += 2;
            if count == -1 {
                assert_eq!(at, data.len(), "trailing bytes after the trailer");
                return rows;
            }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_fields_and_trailer() {
        let mut rows = CopyRows::new(7);
        rows.start_row();
        rows.null();
        rows.bytea(&[1, 2]);
        rows.text("a\0b");
        rows.int2(-2);
        rows.int4(7);
        rows.timestamptz_from_unix_nanos(946_684_800_000_001_999);
        rows.jsonb(|out| out.extend_from_slice(b"{}"));
        assert_eq!(rows.rows(), 1);
        let parsed = parse::rows(&rows.finish());
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
    fn timestamps_before_2000_and_at_the_epoch() {
        let mut rows = CopyRows::new(1);
        rows.start_row();
        rows.timestamptz_from_unix_nanos(0);
        let parsed = parse::rows(&rows.finish());
        assert_eq!(parsed[0][0], Some((-POSTGRES_EPOCH_MICROS).to_be_bytes().to_vec()));
    }
}
