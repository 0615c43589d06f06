//! Time ranges from `--since 1h` or `--from … --to …` (UTC), as every
//! command that reads a time window takes them (`adlog-trace`, `ingest reconcile`).

/// An inclusive range of whole seconds since the Unix epoch (the `ts` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_s: u32,
    pub to_s: u32,
}

/// `90s`, `30m`, `1h`, `2d`, `1w` (or plain seconds) → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(p) => s.split_at(p),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (expected e.g. 90s, 30m, 1h, 2d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m, h, d or w)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("duration {s:?} must be positive and sane"))
}

/// `YYYY-MM-DD HH:MM:SS[.mmm]` (or with `T`, trailing `Z`), `YYYY-MM-DD`,
/// epoch seconds, or `now` → epoch seconds (UTC).
pub fn parse_time(s: &str, now_s: u64) -> Result<u64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_s);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("bad time {s:?}"));
    }
    let full = if s.len() == 10 {
        format!("{s} 00:00:00")
    } else {
        s.to_string()
    };
    schemas::time::parse_ms(&full)
        .map(|ms| (ms / 1000) as u64)
        .map_err(|e| format!("bad time {s:?}: {e} (or YYYY-MM-DD, epoch seconds, now; UTC)"))
}

impl Range {
    /// From `--since` (a duration back from now) or `--from`/`--to` (`to`
    /// defaults to now); `default_since` when none is given, or the whole time
    /// range (`None`) if that is `None` too.
    pub fn from_args(
        since: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        default_since: Option<u64>,
        now_s: u64,
    ) -> Result<Option<Range>, String> {
        if since.is_some() && (from.is_some() || to.is_some()) {
            return Err("give either --since or --from/--to, not both".into());
        }
        let (from_s, to_s) = match (since, from, to) {
            (Some(d), _, _) => (now_s.saturating_sub(parse_duration(d)?), now_s),
            (None, Some(f), t) => (
                parse_time(f, now_s)?,
                t.map_or(Ok(now_s), |t| parse_time(t, now_s))?,
            ),
            (None, None, Some(_)) => return Err("--to needs --from".into()),
            (None, None, None) => match default_since {
                Some(d) => (now_s.saturating_sub(d), now_s),
                None => return Ok(None),
            },
        };
        if from_s > to_s {
            return Err("the range ends before it starts (--from is after --to)".into());
        }
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(Some(Range {
            from_s: clamp(from_s),
            to_s: clamp(to_s),
        }))
    }

    pub fn from_text(&self) -> String {
        secs_text(self.from_s)
    }

    pub fn to_text(&self) -> String {
        secs_text(self.to_s)
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC).
fn secs_text(s: u32) -> String {
    let mut t = String::with_capacity(23);
    schemas::time::format_ms(i64::from(s) * 1000, &mut t);
    t.truncate(19);
    t
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} .. {} UTC", self.from_text(), self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_763_719_200; // 2025-11-21 10:00:00

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("15"), Ok(15));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("0h").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("2025-11-21 10:00:00", NOW), Ok(NOW));
        assert_eq!(parse_time("2025-11-21T10:00:00Z", NOW), Ok(NOW));
        assert_eq!(parse_time("2025-11-21", NOW), Ok(NOW - 36_000));
        assert_eq!(parse_time("1763719200", NOW), Ok(NOW));
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert!(parse_time("yesterday", NOW).is_err());
    }

    #[test]
    fn ranges() {
        let r = Range::from_args(Some("1h"), None, None, None, NOW)
            .unwrap()
            .unwrap();
        assert_eq!((r.from_s as u64, r.to_s as u64), (NOW - 3600, NOW));
        assert_eq!(
            r.to_string(),
            "2025-11-21 09:00:00 .. 2025-11-21 10:00:00 UTC"
        );
        let r = Range::from_args(
            None,
            Some("2025-11-21"),
            Some("2025-11-21 01:00:00"),
            None,
            NOW,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.to_s - r.from_s, 3600);
        assert_eq!(Range::from_args(None, None, None, None, NOW), Ok(None));
        assert!(Range::from_args(None, None, None, Some(60), NOW)
            .unwrap()
            .is_some());
        assert!(Range::from_args(Some("1h"), Some("now"), None, None, NOW).is_err());
        assert!(Range::from_args(None, Some("now"), Some("2020-01-01"), None, NOW).is_err());
        assert!(Range::from_args(None, None, Some("now"), None, NOW).is_err());
    }
}
