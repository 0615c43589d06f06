//! Parse errors precise enough to be a dead letter's reason.

/// Why a message or line was rejected. `reason()` is a short stable code used
/// as a metrics label; `Display` is the full human-readable message.
///
/// Offsets are bytes from the start of the parsed text (the Kafka value for
/// the envelope, the line otherwise), so a dead letter can point at the spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// `offset` is that of the first byte that is not valid UTF-8.
    #[error("message is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 { offset: usize },
    /// Malformed JSON; `offset` is where serde_json stopped.
    #[error("invalid JSON at byte {offset}: {detail}")]
    InvalidJson { offset: usize, detail: String },
    /// Nothing but whitespace (after the trailing `\r`/`\n` is removed).
    #[error("empty line")]
    Empty,
    /// A TSV line with the wrong number of fields (`found` counts them all).
    #[error("expected {expected} tab-separated fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    /// A key absent from a JSON line.
    #[error("missing field `{field}`")]
    MissingField { field: &'static str },
    /// A field that is present but invalid. `field` is the contract's name
    /// (a dotted path like `log.offset` for the envelope). `offset` is the
    /// start of the TSV field (the backslash of a bad escape, the pair of a
    /// bad extra), or the first occurrence of the quoted key in JSON.
    #[error("field `{field}` at byte {offset}: {detail}")]
    BadField {
        field: &'static str,
        offset: usize,
        detail: String,
    },
    #[error("message too large: {size} bytes (limit {limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("unknown log type {0:?}")]
    UnknownLogType(String),
}

impl ParseError {
    /// A short, stable, low-cardinality code for metrics labels and the
    /// dead-letter table's `reason` column.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::InvalidUtf8 { .. } => "invalid_utf8",
            ParseError::InvalidJson { .. } => "invalid_json",
            ParseError::Empty => "empty",
            ParseError::FieldCount { .. } => "field_count",
            ParseError::MissingField { .. } => "missing_field",
            ParseError::BadField { .. } => "bad_field",
            ParseError::TooLarge { .. } => "too_large",
            ParseError::UnknownLogType(_) => "unknown_log_type",
        }
    }
}
