//! The Filebeat Kafka-output document around each log line.

use std::borrow::Cow;

use crate::ParseError;

/// Where a line came from and the line itself.
///
/// Filebeat's default JSON codec gives the full document; with
/// `codec.format: {string: '%{[message]}'}` the Kafka value is the bare line,
/// in which case only `message` is set. A value counts as a JSON envelope when
/// its first non-blank byte is `{` and it has a string `message` field;
/// otherwise it is the bare line (the line's own JSON form has no `message`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope<'a> {
    /// `@timestamp` (when Filebeat read the line), ms since epoch.
    pub read_ts_ms: Option<i64>,
    /// The raw log line.
    pub message: Cow<'a, str>,
    /// `host.name`.
    pub host: Option<Cow<'a, str>>,
    /// `log.file.path`.
    pub file_path: Option<Cow<'a, str>>,
    /// `log.offset`: byte offset of the line in its file.
    pub file_offset: Option<u64>,
    /// `fields.log_type`: overrides the topic → type mapping.
    pub log_type: Option<Cow<'a, str>>,
    /// `fields.idc`.
    pub idc: Option<Cow<'a, str>>,
    /// True when the value was a bare line (`codec.format`).
    pub bare: bool,
}

impl<'a> Envelope<'a> {
    /// Parses a Kafka message value. Invalid UTF-8 is an error (the raw bytes go
    /// to the dead-letter table).
    pub fn parse(value: &'a [u8]) -> Result<Self, ParseError> {
        let _ = value;
        todo!()
    }

    /// Appends the Filebeat JSON document for this envelope (as Filebeat 8.x
    /// writes it, with `@metadata`, `input`, `agent`, `ecs`) to `out`.
    pub fn write_json(&self, out: &mut String) {
        let _ = out;
        todo!()
    }
}
