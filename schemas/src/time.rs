//! Millisecond timestamps: `YYYY-MM-DD HH:MM:SS.mmm` (UTC) or epoch milliseconds.
//!
//! Hand-written because it runs once or twice per log line: a fixed-layout
//! parse plus days-from-civil arithmetic is an order of magnitude cheaper than
//! a general date library, and the contract only needs UTC.

/// The earliest accepted time (1970-01-01 00:00:00.000).
pub const MIN_MS: i64 = 0;
/// The latest accepted time (2999-12-31 23:59:59.999). Bounding the years
/// catches seconds-vs-milliseconds mix-ups and garbage in the time column.
pub const MAX_MS: i64 = 32_503_680_000_000 - 1;

const MS_PER_DAY: i64 = 86_400_000;

const FORMAT_ERR: &str = "expected YYYY-MM-DD HH:MM:SS[.mmm] or epoch milliseconds";

/// Parses `YYYY-MM-DD HH:MM:SS[.f]` (`T` instead of the space and a trailing
/// `Z` accepted; 1–3 fraction digits) or an integer of epoch milliseconds.
/// The error is a short human-readable reason; callers add the field name.
pub fn parse_ms(s: &str) -> Result<i64, &'static str> {
    parse_with_fraction(s, 3)
}

/// As [`parse_ms`] but accepts up to `max_frac` fraction digits, truncating
/// below milliseconds (Filebeat's `@timestamp` may carry micro/nanoseconds).
pub(crate) fn parse_with_fraction(s: &str, max_frac: usize) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("empty time");
    }
    if b.iter().all(u8::is_ascii_digit) {
        return parse_epoch(b);
    }
    if b.len() < 19 {
        return Err(FORMAT_ERR);
    }
    let shape_ok = b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':';
    if !shape_ok {
        return Err(FORMAT_ERR);
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;

    let mut rest = &b[19..];
    if let [head @ .., b'Z'] = rest {
        rest = head;
    }
    let mut millis = 0i64;
    if let [b'.', frac @ ..] = rest {
        if frac.is_empty() || frac.len() > max_frac || !frac.iter().all(u8::is_ascii_digit) {
            return Err(if max_frac == 3 {
                "fraction must be 1–3 digits"
            } else {
                "bad fraction of a second"
            });
        }
        for i in 0..3 {
            millis = millis * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
        }
    } else if !rest.is_empty() {
        return Err(FORMAT_ERR);
    }

    if !(1970..=2999).contains(&year) {
        return Err("year outside 1970–2999");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range for the month");
    }
    if hour > 23 {
        return Err("hour out of range");
    }
    if minute > 59 {
        return Err("minute out of range");
    }
    if second > 59 {
        return Err("second out of range");
    }
    let days = days_from_civil(year, month, day);
    Ok(days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis)
}

fn parse_epoch(b: &[u8]) -> Result<i64, &'static str> {
    // 16 digits already exceed MAX_MS; checking length first rules out overflow.
    if b.len() > 15 {
        return Err("epoch milliseconds outside years 1970–2999");
    }
    let v = b.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    if v > MAX_MS {
        return Err("epoch milliseconds outside years 1970–2999");
    }
    Ok(v)
}

fn digits(b: &[u8]) -> Result<i64, &'static str> {
    let mut v = 0i64;
    for &d in b {
        if !d.is_ascii_digit() {
            return Err(FORMAT_ERR);
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Ok(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]; total over all `i64` day counts that
/// can come from an `i64` of milliseconds.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Appends `YYYY-MM-DD HH:MM:SS.mmm` (UTC), the form the parsers accept.
///
/// Never panics; a time outside 0000–9999 is written with as many year digits
/// as it needs (and would then be rejected by [`parse_ms`]).
pub fn format_ms(ts_ms: i64, out: &mut String) {
    format_with(ts_ms, b' ', out);
}

/// Appends RFC 3339 with milliseconds and `Z` (`2026-11-21T10:00:00.123Z`),
/// as in Filebeat's `@timestamp`.
pub fn format_rfc3339_ms(ts_ms: i64, out: &mut String) {
    format_with(ts_ms, b'T', out);
    out.push('Z');
}

fn format_with(ts_ms: i64, sep: u8, out: &mut String) {
    let days = ts_ms.div_euclid(MS_PER_DAY);
    let in_day = ts_ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        push_digits(out, y, 4);
    } else {
        out.push_str(itoa::Buffer::new().format(y));
    }
    let secs = in_day / 1000;
    let mut buf = *b"-MM-DD HH:MM:SS.mmm";
    put2(&mut buf[1..3], m);
    put2(&mut buf[4..6], d);
    buf[6] = sep;
    put2(&mut buf[7..9], secs / 3600);
    put2(&mut buf[10..12], secs / 60 % 60);
    put2(&mut buf[13..15], secs % 60);
    let ms = in_day % 1000;
    buf[16] = b'0' + (ms / 100) as u8;
    buf[17] = b'0' + (ms / 10 % 10) as u8;
    buf[18] = b'0' + (ms % 10) as u8;
    // Every byte of `buf` is ASCII: digits, the separator (' ' or 'T'), '-', ':', '.'.
    out.extend(buf.iter().map(|&c| char::from(c)));
}

fn put2(dst: &mut [u8], v: i64) {
    dst[0] = b'0' + (v / 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

fn push_digits(out: &mut String, v: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (v / div % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ts: i64) -> String {
        let mut s = String::new();
        format_ms(ts, &mut s);
        s
    }

    #[test]
    fn known_values() {
        assert_eq!(parse_ms("1970-01-01 00:00:00"), Ok(0));
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("2026-11-21 10:00:00.123"), Ok(1_795_255_200_123));
        assert_eq!(parse_ms("2026-11-21T10:00:00.123Z"), Ok(1_795_255_200_123));
        assert_eq!(parse_ms("2026-11-21 10:00:00.1"), Ok(1_795_255_200_100));
        assert_eq!(parse_ms("2026-11-21 10:00:00.12"), Ok(1_795_255_200_120));
        assert_eq!(parse_ms("2026-11-21 10:00:00Z"), Ok(1_795_255_200_000));
        assert_eq!(parse_ms("1795255200123"), Ok(1_795_255_200_123));
        assert_eq!(parse_ms("2999-12-31 23:59:59.999"), Ok(MAX_MS));
        assert_eq!(parse_ms("2024-02-29 00:00:00"), Ok(1_709_164_800_000));
        assert_eq!(fmt(1_795_255_200_123), "2026-11-21 10:00:00.123");
        assert_eq!(fmt(0), "1970-01-01 00:00:00.000");
        assert_eq!(fmt(MAX_MS), "2999-12-31 23:59:59.999");
        let mut s = String::new();
        format_rfc3339_ms(1_795_255_200_123, &mut s);
        assert_eq!(s, "2026-11-21T10:00:00.123Z");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "2026-13-01 00:00:00",
            "2026-00-01 00:00:00",
            "2026-02-29 00:00:00",
            "2100-02-29 00:00:00",
            "2026-04-31 00:00:00",
            "1969-12-31 23:59:59.999",
            "3000-01-01 00:00:00",
            "2026-11-21 24:00:00",
            "2026-11-21 10:60:00",
            "2026-11-21 10:00:60",
            "2026-11-21 10:00:00.",
            "2026-11-21 10:00:00.1234",
            "2026-11-21 10:00:00.12a",
            "2026-11-21 10:00:00ZZ",
            "2026-11-21_10:00:00",
            "2026/11/21 10:00:00",
            "2026-11-21 10:00",
            "-1",
            "32503680000000",
            "99999999999999999999999",
            "+5",
            "2026-1a-21 10:00:00",
        ] {
            assert!(parse_ms(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn fraction_for_envelope() {
        assert_eq!(
            parse_with_fraction("2026-11-21T10:00:00.123456789Z", 9),
            Ok(1_795_255_200_123)
        );
    }

    #[test]
    fn civil_round_trip_over_range() {
        // Every day of the accepted range plus margins, both directions.
        let last = MAX_MS / MS_PER_DAY + 400;
        for day in -400..=last {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn format_never_panics_at_extremes() {
        for ts in [i64::MIN, i64::MAX, -1, -86_400_001] {
            let _ = fmt(ts);
        }
        assert_eq!(fmt(-1), "1969-12-31 23:59:59.999");
    }
}
