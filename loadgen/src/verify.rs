//! How the pipeline reads a message: the reference the tests hold it to.
//!
//! [`parse_value`] does what an ingest worker does with a Kafka value from a
//! topic that carries `topic_type`: [`Envelope::parse`], then the log type
//! (`fields.log_type` overrides the topic's; an unknown name is
//! `unknown_log_type`), then that type's line parser. It hands the parsed line
//! to a closure because the line borrows from the envelope.

use schemas::{Envelope, Exposure, Interaction, Joined, LogType, ParseError, Request};

/// A parsed log line of any type.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    Request(Request<'a>),
    Exposure(Exposure<'a>),
    Interaction(Interaction<'a>),
    Joined(Joined<'a>),
}

impl Parsed<'_> {
    pub fn log_type(&self) -> LogType {
        match self {
            Parsed::Request(_) => LogType::Request,
            Parsed::Exposure(_) => LogType::Exposure,
            Parsed::Interaction(_) => LogType::Interaction,
            Parsed::Joined(_) => LogType::Joined,
        }
    }
}

/// The log type of an envelope read from a topic carrying `topic_type`.
pub fn log_type_of(topic_type: LogType, env: &Envelope<'_>) -> Result<LogType, ParseError> {
    match &env.log_type {
        None => Ok(topic_type),
        Some(name) => name
            .parse::<LogType>()
            .map_err(|_| ParseError::UnknownLogType(name.to_string())),
    }
}

/// Parses a Kafka value as the pipeline does and calls `f` with the result.
pub fn parse_value<R>(
    topic_type: LogType,
    value: &[u8],
    f: impl FnOnce(&Envelope<'_>, Parsed<'_>) -> R,
) -> Result<R, ParseError> {
    let env = Envelope::parse(value)?;
    let t = log_type_of(topic_type, &env)?;
    let line: &str = &env.message;
    let parsed = match t {
        LogType::Request => Parsed::Request(Request::parse(line)?),
        LogType::Exposure => Parsed::Exposure(Exposure::parse(line)?),
        LogType::Interaction => Parsed::Interaction(Interaction::parse(line)?),
        LogType::Joined => Parsed::Joined(Joined::parse(line)?),
    };
    Ok(f(&env, parsed))
}

/// The log type of a good message, or the reason code of a bad one.
pub fn classify(topic_type: LogType, value: &[u8]) -> Result<LogType, &'static str> {
    parse_value(topic_type, value, |_, p| p.log_type()).map_err(|e| e.reason())
}
