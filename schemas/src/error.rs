//! Parse errors precise enough to be a dead letter's reason.

/// Why a message or line was rejected. `reason()` is a short stable code used
/// as a metrics label; `Display` is the full human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("invalid JSON at byte {offset}: {detail}")]
    InvalidJson { offset: usize, detail: String },
    #[error("empty line")]
    Empty,
    #[error("expected {expected} tab-separated fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("missing field `{field}`")]
    MissingField { field: &'static str },
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
