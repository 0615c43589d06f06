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
pub mod interaction;
pub mod joined;
pub mod request;
pub mod time;
pub mod tsv;

pub use envelope::Envelope;
pub use error::ParseError;
pub use exposure::Exposure;
pub use interaction::Interaction;
pub use joined::Joined;
pub use request::Request;

/// The kinds of log line the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
