//! The contract between the services that write ad logs and this pipeline.
//!
//! Every Kafka message is a Filebeat document ([`envelope`]) wrapping one log
//! line, or the bare line when Filebeat's `codec.format` is used. The line is
//! one of the [`LogType`]s; its exact format is documented in `schemas/README.md`.
//!
//! Parsers borrow from the input where they can (`Cow::Borrowed`) and only
//! allocate when a field had to be unescaped. Every failure is a [`ParseError`]
//! naming the field, what was wrong and the byte offset, so a dead letter says
//! exactly why it was rejected. Writers (`write_tsv`, `write_json`) produce the
//! exact formats the parsers accept; the load generator and the joiner use them.

pub mod envelope;
pub mod error;
pub mod exposure;
mod fields;
pub mod interaction;
pub mod joined;
mod json;
mod owned;
pub mod request;
mod scan;
pub mod time;
pub mod tsv;
mod write;

use std::borrow::Cow;

pub use envelope::Envelope;
pub use error::ParseError;
pub use exposure::Exposure;
pub use fields::MAX_ID_LEN;
pub use interaction::Interaction;
pub use joined::joined_id;
pub use joined::Joined;
pub use request::Request;

/// `key=value` attributes in line order (duplicates kept).
pub type Extras<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// A parsed line of any [`LogType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Request(Request<'a>),
    Exposure(Exposure<'a>),
    Interaction(Interaction<'a>),
    Joined(Joined<'a>),
}

impl<'a> Record<'a> {
    pub fn log_type(&self) -> LogType {
        match self {
            Record::Request(_) => LogType::Request,
            Record::Exposure(_) => LogType::Exposure,
            Record::Interaction(_) => LogType::Interaction,
            Record::Joined(_) => LogType::Joined,
        }
    }

    /// Appends the TSV form (no trailing newline).
    pub fn write_tsv(&self, out: &mut String) {
        match self {
            Record::Request(r) => r.write_tsv(out),
            Record::Exposure(r) => r.write_tsv(out),
            Record::Interaction(r) => r.write_tsv(out),
            Record::Joined(r) => r.write_tsv(out),
        }
    }

    /// Appends the JSON-object form (no trailing newline).
    pub fn write_json(&self, out: &mut String) {
        match self {
            Record::Request(r) => r.write_json(out),
            Record::Exposure(r) => r.write_json(out),
            Record::Interaction(r) => r.write_json(out),
            Record::Joined(r) => r.write_json(out),
        }
    }

    /// Detaches the record from the input buffer.
    pub fn into_owned(self) -> Record<'static> {
        match self {
            Record::Request(r) => Record::Request(r.into_owned()),
            Record::Exposure(r) => Record::Exposure(r.into_owned()),
            Record::Interaction(r) => Record::Interaction(r.into_owned()),
            Record::Joined(r) => Record::Joined(r.into_owned()),
        }
    }
}

/// Parses one line (TSV, or JSON when it starts with `{`) as log type `t`.
pub fn parse_line(t: LogType, line: &str) -> Result<Record<'_>, ParseError> {
    Ok(match t {
        LogType::Request => Record::Request(Request::parse(line)?),
        LogType::Exposure => Record::Exposure(Exposure::parse(line)?),
        LogType::Interaction => Record::Interaction(Interaction::parse(line)?),
        LogType::Joined => Record::Joined(Joined::parse(line)?),
    })
}

/// The kinds of log line the pipeline understands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    Request,
    Exposure,
    Interaction,
    Joined,
}

impl LogType {
    pub const ALL: [LogType; 4] = [
        LogType::Request,
        LogType::Exposure,
        LogType::Interaction,
        LogType::Joined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Request => "request",
            LogType::Exposure => "exposure",
            LogType::Interaction => "interaction",
            LogType::Joined => "joined",
        }
    }
}

impl std::str::FromStr for LogType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "request" => Ok(LogType::Request),
            "exposure" => Ok(LogType::Exposure),
            "interaction" => Ok(LogType::Interaction),
            "joined" => Ok(LogType::Joined),
            other => Err(format!(
                "unknown log type {other:?} (expected request, exposure, interaction or joined)"
            )),
        }
    }
}

impl std::fmt::Display for LogType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
