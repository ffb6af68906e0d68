//! A zero-copy protobuf reader: iterates the fields of a message as slices of the request bytes,
//! so rows are encoded straight from the OTLP request without building messages first.

/// Why a request could not be read, with the path of the field where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct WireError {
    pub path: &'static str,
    pub reason: &'static str,
}

/// One field's value, as it is on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    pub fn bytes(self, path: &'static str) -> Result<&'a [u8], WireError> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(WireError {
                path,
                reason: "wrong wire type, expected length-delimited",
            }),
        }
    }

    pub fn string(self, path: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(path)?).map_err(|_| WireError {
            path,
            reason: "string is not valid UTF-8",
        })
    }

    pub fn varint(self, path: &'static str) -> Result<u64, WireError> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(WireError {
                path,
                reason: "wrong wire type, expected varint",
            }),
        }
    }

    pub fn fixed64(self, path: &'static str) -> Result<u64, WireError> {
        match self {
            Value::Fixed64(value) => Ok(value),
            _ => Err(WireError {
                path,
                reason: "wrong wire type, expected fixed64",
            }),
        }
    }

    pub fn fixed32(self, path: &'static str) -> Result<u32, WireError> {
        match self {
            Value::Fixed32(value) => Ok(value),
            _ => Err(WireError {
                path,
                reason: "wrong wire type, expected fixed32",
            }),
        }
    }

    /// int32 and enum fields: protobuf sends negative values sign-extended to 64 bits.
    pub fn int32(self, path: &'static str) -> Result<i32, WireError> {
        self.varint(path).map(|v| v as i32)
    }

    pub fn uint32(self, path: &'static str) -> Result<u32, WireError> {
        self.varint(path).map(|v| v as u32)
    }

    /// double fields: the IEEE 754 bits as fixed64.
    pub fn double(self, path: &'static str) -> Result<f64, WireError> {
        self.fixed64(path).map(f64::from_bits)
    }

    pub fn sfixed64(self, path: &'static str) -> Result<i64, WireError> {
        self.fixed64(path).map(|v| v as i64)
    }

    /// sint32 fields, zigzag-encoded; the varint is cut to 32 bits first, as prost does.
    pub fn sint32(self, path: &'static str) -> Result<i32, WireError> {
        self.varint(path).map(|v| {
            let v = v as u32;
            ((v >> 1) as i32) ^ -((v & 1) as i32)
        })
    }

    /// The elements in one occurrence of a repeated fixed64 or double field. Like prost, this takes
    /// a packed run and a single element alike, whatever encoding the field is declared with.
    pub fn packed_fixed64(self, path: &'static str) -> Result<Packed<'a>, WireError> {
        match self {
            Value::Fixed64(value) => Ok(Packed::single(value, path, true)),
            Value::Bytes(run) => Ok(Packed::run(run, path, true)),
            _ => Err(WireError {
                path,
                reason: "wrong wire type, expected fixed64 or a packed run",
            }),
        }
    }

    /// The elements in one occurrence of a repeated varint field (uint64, int32, ...), packed or not.
    pub fn packed_varint(self, path: &'static str) -> Result<Packed<'a>, WireError> {
        match self {
            Value::Varint(value) => Ok(Packed::single(value, path, false)),
            Value::Bytes(run) => Ok(Packed::run(run, path, false)),
            _ => Err(WireError {
                path,
                reason: "wrong wire type, expected varint or a packed run",
            }),
        }
    }
}

/// The elements of a repeated scalar field in one occurrence, as raw 64-bit values: the element of
/// an unpacked field, or each element of a packed run. A run that ends inside an element is an error.
pub struct Packed<'a> {
    single: Option<u64>,
    run: Fields<'a>,
    fixed64: bool,
}

impl<'a> Packed<'a> {
    fn single(value: u64, path: &'static str, fixed64: bool) -> Self {
        Self {
            single: Some(value),
            run: Fields::new(&[], path),
            fixed64,
        }
    }

    fn run(run: &'a [u8], path: &'static str, fixed64: bool) -> Self {
        Self {
            single: None,
            run: Fields::new(run, path),
            fixed64,
        }
    }
}

impl Iterator for Packed<'_> {
    type Item = Result<u64, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(value) = self.single.take() {
            return Some(Ok(value));
        }
        if self.run.pos >= self.run.buf.len() {
            return None;
        }
        Some(if self.fixed64 {
            Fields::take(&mut self.run, 8)
                .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
        } else {
            self.run.varint()
        })
    }
}

/// The fields of one message, in wire order. Groups (a deprecated encoding no OTLP field uses) are
/// skipped like any unknown field.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'static str,
}

impl<'a> Fields<'a> {
    /// `path` names the message in errors.
    pub fn new(buf: &'a [u8], path: &'static str) -> Self {
        Self { buf, pos: 0, path }
    }

    fn error(&mut self, reason: &'static str) -> WireError {
        // Stop after an error: the rest of the buffer has no reliable framing.
        self.pos = self.buf.len();
        WireError {
            path: self.path,
            reason,
        }
    }

    /// Where the next field starts.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        // Keys and lengths are nearly always one byte.
        if let Some(&byte) = self.buf.get(self.pos) {
            if byte < 0x80 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..len)) {
            Some(bytes) => {
                self.pos += len;
                Ok(bytes)
            }
            None => Err(self.error("field runs past the end of its message")),
        }
    }

    /// Skips a group whose start tag was just read, including nested groups.
    fn skip_group(&mut self, number: u32) -> Result<(), WireError> {
        loop {
            let key = self.varint()?;
            let (inner, wire_type) = ((key >> 3) as u32, key & 7);
            match wire_type {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = self.varint()?;
                    self.take(usize::try_from(len).unwrap_or(usize::MAX))?;
                }
                3 => self.skip_group(inner)?,
                4 if inner == number => return Ok(()),
                5 => {
                    self.take(4)?;
                }
                _ => return Err(self.error("malformed group")),
            }
        }
    }

    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let key = self.varint()?;
            let number =
                u32::try_from(key >> 3).map_err(|_| self.error("field number out of range"))?;
            if number == 0 {
                return Err(self.error("field number 0"));
            }
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => Value::Fixed64(u64::from_le_bytes(
                    self.take(8)?.try_into().unwrap_or([0; 8]),
                )),
                2 => {
                    let len = self.varint()?;
                    Value::Bytes(self.take(usize::try_from(len).unwrap_or(usize::MAX))?)
                }
                3 => {
                    self.skip_group(number)?;
                    continue;
                }
                5 => Value::Fixed32(u32::from_le_bytes(
                    self.take(4)?.try_into().unwrap_or([0; 4]),
                )),
                _ => return Err(self.error("invalid wire type")),
            };
            return Ok(Some((number, value)));
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_field().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, String)>, WireError> {
        Fields::new(buf, "Test")
            .map(|field| field.map(|(number, value)| (number, format!("{value:?}"))))
            .collect()
    }

    #[test]
    fn reads_every_wire_type_and_skips_groups() {
        let buf = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0, // 2: fixed64 1
            0x1a, 0x02, b'h', b'i', // 3: bytes "hi"
            0x23, 0x08, 0x01, 0x24, // 4: group holding field 1, skipped
            0x2d, 2, 0, 0, 0, // 5: fixed32 2
        ];
        assert_eq!(
            fields(&buf).expect("valid"),
            vec![
                (1, "Varint(150)".into()),
                (2, "Fixed64(1)".into()),
                (3, "Bytes([104, 105])".into()),
                (5, "Fixed32(2)".into()),
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for (buf, reason) in [
            (&[0x08][..], "truncated varint"),
            (
                &[0x0a, 0x05, 1][..],
                "field runs past the end of its message",
            ),
            (
                &[
                    0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ][..],
                "field runs past the end of its message",
            ),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ][..],
                "varint overflows 64 bits",
            ),
            (&[0x0e][..], "invalid wire type"),
            (&[0x00][..], "field number 0"),
            (&[0x0b, 0x14][..], "malformed group"),
            (&[0x0b][..], "truncated varint"),
            (&[0x11, 1, 2][..], "field runs past the end of its message"),
        ] {
            assert_eq!(
                fields(buf),
                Err(WireError {
                    path: "Test",
                    reason
                }),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn typed_access_names_the_field() {
        assert_eq!(
            Value::Varint(1).bytes("Span.name"),
            Err(WireError {
                path: "Span.name",
                reason: "wrong wire type, expected length-delimited"
            })
        );
        assert_eq!(
            Value::Bytes(&[0xff])
                .string("Span.name")
                .map_err(|e| e.to_string()),
            Err("Span.name: string is not valid UTF-8".into())
        );
        assert_eq!(Value::Varint(u64::MAX).int32("Span.kind"), Ok(-1));
    }

    #[test]
    fn doubles_and_zigzag_integers() {
        assert_eq!(Value::Fixed64(1.5f64.to_bits()).double("D"), Ok(1.5));
        assert_eq!(Value::Fixed64((-2i64) as u64).sfixed64("I"), Ok(-2));
        assert_eq!(
            Value::Varint(1).double("D"),
            Err(WireError {
                path: "D",
                reason: "wrong wire type, expected fixed64"
            })
        );
        for (wire, value) in [
            (0, 0),
            (1, -1),
            (2, 1),
            (3, -2),
            (0xffff_fffe, i32::MAX),
            (0xffff_ffff, i32::MIN),
        ] {
            assert_eq!(Value::Varint(wire).sint32("S"), Ok(value), "{wire}");
        }
        // Bits past the 32nd are dropped, as prost drops them.
        assert_eq!(Value::Varint(0x1_0000_0003).sint32("S"), Ok(-2));
    }

    #[test]
    fn repeated_scalars_packed_or_one_per_field() {
        let collect = |packed: Result<Packed<'_>, WireError>| {
            packed.and_then(Iterator::collect::<Result<Vec<u64>, _>>)
        };
        let run: Vec<u8> = [1u64, u64::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            collect(Value::Bytes(&run).packed_fixed64("F")),
            Ok(vec![1, u64::MAX])
        );
        assert_eq!(collect(Value::Fixed64(7).packed_fixed64("F")), Ok(vec![7]));
        assert_eq!(collect(Value::Bytes(&[]).packed_fixed64("F")), Ok(vec![]));
        assert_eq!(
            collect(Value::Bytes(&run[..12]).packed_fixed64("F")),
            Err(WireError {
                path: "F",
                reason: "field runs past the end of its message"
            })
        );
        assert_eq!(
            collect(Value::Varint(7).packed_fixed64("F")),
            Err(WireError {
                path: "F",
                reason: "wrong wire type, expected fixed64 or a packed run"
            })
        );

        assert_eq!(
            collect(Value::Bytes(&[0x01, 0x96, 0x01, 0x00]).packed_varint("V")),
            Ok(vec![1, 150, 0])
        );
        assert_eq!(collect(Value::Varint(9).packed_varint("V")), Ok(vec![9]));
        assert_eq!(
            collect(Value::Bytes(&[0x01, 0x96]).packed_varint("V")),
            Err(WireError {
                path: "V",
                reason: "truncated varint"
            })
        );
        assert_eq!(
            collect(Value::Fixed32(1).packed_varint("V")),
            Err(WireError {
                path: "V",
                reason: "wrong wire type, expected varint or a packed run"
            })
        );
        // After an error the run ends rather than reading garbage.
        let mut packed = Value::Bytes(&[0x80]).packed_varint("V").expect("a run");
        assert!(matches!(packed.next(), Some(Err(_))));
        assert!(packed.next().is_none());
    }
}
