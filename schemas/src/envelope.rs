//! The Filebeat Kafka-output document around each log line.

use std::borrow::Cow;

use serde::Deserialize;

use crate::json::{self, Obj, Scalar};
use crate::write::Json;
use crate::{time, ParseError};

/// The object a kept key holds; anything else there is a `BadField`.
fn object<T>(text: &str, v: Option<Obj<T>>, field: &'static str) -> Result<Option<T>, ParseError> {
    match v {
        None => Ok(None),
        Some(Obj::Obj(o)) => Ok(Some(o)),
        Some(Obj::NotObject) => Err(ParseError::BadField {
            field,
            offset: json::key_offset(text, field.rsplit('.').next().unwrap_or(field)),
            detail: "expected an object".into(),
        }),
    }
}

/// The kept subset of Filebeat's document. Every value is loosely typed
/// (`Scalar`, `Obj`) so that a bare JSON log line, which may have its own
/// `"host":"…"`, still deserializes and is then recognised as bare by its
/// missing `message`; types are checked once we know it is an envelope.
#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(rename = "@timestamp", borrow, default)]
    timestamp: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    message: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    log: Option<Obj<Log<'a>>>,
    #[serde(borrow, default)]
    host: Option<Obj<Host<'a>>>,
    #[serde(borrow, default)]
    fields: Option<Obj<Fields<'a>>>,
    /// `fields_under_root: true` puts the custom fields at the top level.
    #[serde(borrow, default)]
    log_type: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    idc: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Log<'a> {
    #[serde(borrow, default)]
    offset: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    file: Option<Obj<File<'a>>>,
}

#[derive(Deserialize)]
struct File<'a> {
    #[serde(borrow, default)]
    path: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Host<'a> {
    #[serde(borrow, default)]
    name: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    log_type: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    idc: Option<Scalar<'a>>,
}

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
    ///
    /// Anything that is not a JSON object with a string `message` (including
    /// malformed JSON) is taken as a bare line, so the line parser reports
    /// what is wrong with it. An envelope whose kept fields have the wrong
    /// type is a `BadField` naming the dotted path (`log.offset`).
    /// `fields.log_type`/`fields.idc` are also read from the top level
    /// (Filebeat's `fields_under_root: true`).
    ///
    /// There is no size limit here: bounding message size is the consumer's
    /// job, before it calls this.
    pub fn parse(value: &'a [u8]) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(value).map_err(|e| ParseError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let bare = || Envelope {
            message: Cow::Borrowed(text.trim_end_matches(['\r', '\n'])),
            bare: true,
            ..Envelope::default()
        };
        if !text.trim_start().starts_with('{') {
            return Ok(bare());
        }
        let Ok(doc) = serde_json::from_str::<Doc>(text) else {
            return Ok(bare());
        };
        let Some(Scalar::Str(message)) = doc.message else {
            return Ok(bare());
        };

        let bad = |field: &'static str, key: &str, detail: String| ParseError::BadField {
            field,
            offset: json::key_offset(text, key),
            detail,
        };
        let string = |v: Option<Scalar<'a>>, field: &'static str, key: &str| match v {
            None => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s)),
            Some(other) => Err(bad(
                field,
                key,
                format!("expected a string, found {}", other.kind()),
            )),
        };

        let read_ts_ms = match string(doc.timestamp, "@timestamp", "@timestamp")? {
            None => None,
            Some(ts) => Some(
                time::parse_with_fraction(&ts, 9)
                    .map_err(|d| bad("@timestamp", "@timestamp", d.into()))?,
            ),
        };
        let (mut file_offset, mut file_path) = (None, None);
        if let Some(log) = object(text, doc.log, "log")? {
            file_offset = match log.offset {
                None => None,
                Some(Scalar::UInt(v)) => Some(v),
                Some(other) => {
                    return Err(bad(
                        "log.offset",
                        "offset",
                        format!("expected an unsigned integer, found {}", other.kind()),
                    ))
                }
            };
            if let Some(file) = object(text, log.file, "log.file")? {
                file_path = string(file.path, "log.file.path", "path")?;
            }
        }
        let host = match object(text, doc.host, "host")? {
            Some(h) => string(h.name, "host.name", "name")?,
            None => None,
        };
        let (mut log_type, mut idc) = (
            string(doc.log_type, "log_type", "log_type")?,
            string(doc.idc, "idc", "idc")?,
        );
        if let Some(f) = object(text, doc.fields, "fields")? {
            if let Some(t) = string(f.log_type, "fields.log_type", "log_type")? {
                log_type = Some(t);
            }
            if let Some(i) = string(f.idc, "fields.idc", "idc")? {
                idc = Some(i);
            }
        }
        Ok(Envelope {
            read_ts_ms,
            message,
            host,
            file_path,
            file_offset,
            log_type,
            idc,
            bare: false,
        })
    }

    /// Appends the Filebeat JSON document for this envelope (as Filebeat 8.x
    /// writes it, with `@metadata`, `input`, `agent`, `ecs`) to `out`.
    ///
    /// Fields that are `None` are omitted; `bare` is not represented (a bare
    /// value is just `message`, which the caller can send as is).
    pub fn write_json(&self, out: &mut String) {
        let mut doc = Json::new(out);
        if let Some(ts) = self.read_ts_ms {
            doc.raw_value("@timestamp", |out| {
                out.push('"');
                time::format_rfc3339_ms(ts, out);
                out.push('"');
            });
        }
        doc.raw_value("@metadata", |out| {
            out.push_str(r#"{"beat":"filebeat","type":"_doc","version":"8.15.0"}"#)
        });
        doc.str("message", &self.message);
        if self.file_offset.is_some() || self.file_path.is_some() {
            let mut log = doc.object("log");
            if let Some(offset) = self.file_offset {
                log.uint("offset", offset);
            }
            if let Some(path) = &self.file_path {
                log.object("file").str("path", path).end();
            }
            log.end();
        }
        doc.raw_value("input", |out| out.push_str(r#"{"type":"filestream"}"#));
        if let Some(host) = &self.host {
            doc.object("host").str("name", host).end();
        }
        doc.raw_value("agent", |out| {
            out.push_str(r#"{"type":"filebeat","version":"8.15.0"}"#)
        });
        doc.raw_value("ecs", |out| out.push_str(r#"{"version":"8.0.0"}"#));
        if self.log_type.is_some() || self.idc.is_some() {
            let mut fields = doc.object("fields");
            if let Some(t) = &self.log_type {
                fields.str("log_type", t);
            }
            if let Some(idc) = &self.idc {
                fields.str("idc", idc);
            }
            fields.end();
        }
        doc.end();
    }
}
