//! A minimal RowBinary encoder: rows are encoded once, straight from the parsed
//! (borrowed) record into the batch's byte buffer, so a batch is one contiguous
//! `Vec<u8>` that is cheap to keep for retries and is sent without re-encoding.

/// Appends ClickHouse RowBinary values to a buffer.
/// The `DateTime` value a row stores for `ts_ms`: seconds since the epoch,
/// clamped to UInt32 (recovery looks rows up by exactly this value).
pub fn datetime_secs(ts_ms: i64) -> u32 {
    ts_ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

pub trait RowBinary {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_i64(&mut self, v: i64);
    fn put_f64(&mut self, v: f64);
    /// `String`: LEB128 length, then the bytes (need not be UTF-8).
    fn put_bytes(&mut self, v: &[u8]);
    fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes())
    }
    /// `DateTime`: seconds since the epoch as UInt32 (clamped to its range).
    fn put_datetime_ms(&mut self, ts_ms: i64) {
        self.put_u32(datetime_secs(ts_ms))
    }
    /// `Array(String)` from an iterator with a known length.
    fn put_str_array<'s, I>(&mut self, items: I)
    where
        I: ExactSizeIterator<Item = &'s str>;
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl RowBinary for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v)
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn put_bytes(&mut self, v: &[u8]) {
        put_varint(self, v.len() as u64);
        self.extend_from_slice(v)
    }
    fn put_str_array<'s, I>(&mut self, items: I)
    where
        I: ExactSizeIterator<Item = &'s str>,
    {
        put_varint(self, items.len() as u64);
        for s in items {
            self.put_str(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_and_strings() {
        let mut b = Vec::new();
        b.put_str("");
        b.put_str("ab");
        let long = "x".repeat(300);
        b.put_str(&long);
        assert_eq!(&b[..4], &[0, 2, b'a', b'b']);
        assert_eq!(&b[4..6], &[0xAC, 0x02]); // 300 = 0b10_0101100
        assert_eq!(b.len(), 6 + 300);
    }

    #[test]
    fn datetime_clamps() {
        let mut b = Vec::new();
        b.put_datetime_ms(1_500);
        b.put_datetime_ms(-5);
        assert_eq!(b, [1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
