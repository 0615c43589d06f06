//! The serde_json derive decoder that `Envelope::parse` used before the
//! one-pass scanner (`scan`), kept verbatim as the reference the scanner is
//! tested against: the same documents accepted, the same values, the same
//! errors.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{split_lines, Envelope};
use crate::json::{self, Obj, Scalar};
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
    /// Raw, unescaped by [`json::unescape_str`] (the hot path's one big string).
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
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
    /// 6.x: `log.file.path` and `log.offset` were top-level `source`/`offset`.
    #[serde(borrow, default)]
    source: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    offset: Option<Scalar<'a>>,
    /// 6.x: `beat.hostname` (the OS hostname) and `beat.name` (the `name`
    /// setting, by default the hostname); 6.0–6.2 have no `host` object.
    #[serde(borrow, default)]
    beat: Option<Obj<Beat<'a>>>,
    /// 7.x/8.x: `agent.hostname`, when a processor removed `host`.
    #[serde(borrow, default)]
    agent: Option<Obj<Agent<'a>>>,
    /// ECS `event.original`: the untouched line, when `message` was removed
    /// (or never set, e.g. by `preserve_original_event` plus a `drop_fields`).
    #[serde(borrow, default)]
    event: Option<Obj<Event<'a>>>,
}

#[derive(Deserialize)]
struct Beat<'a> {
    #[serde(borrow, default)]
    hostname: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    name: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Agent<'a> {
    #[serde(borrow, default)]
    hostname: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    original: Option<Scalar<'a>>,
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

/// `Envelope::parse` as it was.
pub(super) fn parse(value: &[u8]) -> Result<Envelope<'_>, ParseError> {
    Envelope::parse_reference(value)
}

impl<'a> Envelope<'a> {
    fn parse_reference(value: &'a [u8]) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(value).map_err(|e| ParseError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let bare = || {
            let (message, continuation) =
                split_lines(Cow::Borrowed(text.trim_end_matches(['\r', '\n'])));
            Envelope {
                message,
                continuation,
                bare: true,
                ..Envelope::default()
            }
        };
        if !text.trim_start().starts_with('{') {
            return Ok(bare());
        }
        let Ok(doc) = serde_json::from_str::<Doc>(text) else {
            return Ok(bare());
        };
        // A `message` that is no valid string made the document malformed
        // JSON (bare line) when serde_json decoded it: the same here.
        let message = match doc.message.map(|raw| json::unescape_str(raw.get())) {
            Some(Some(Err(_))) => return Ok(bare()),
            Some(Some(Ok(m))) => Some(m),
            Some(None) | None => None,
        };
        let message = match (message, doc.event) {
            (Some(m), _) => m,
            (
                _,
                Some(Obj::Obj(Event {
                    original: Some(Scalar::Str(m)),
                })),
            ) => m,
            _ => return Ok(bare()),
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
        let uint = |v: Option<Scalar<'a>>, field: &'static str, key: &str| match v {
            None => Ok(None),
            Some(Scalar::UInt(v)) => Ok(Some(v)),
            Some(other) => Err(bad(
                field,
                key,
                format!("expected an unsigned integer, found {}", other.kind()),
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
            file_offset = uint(log.offset, "log.offset", "offset")?;
            if let Some(file) = object(text, log.file, "log.file")? {
                file_path = string(file.path, "log.file.path", "path")?;
            }
        }
        if file_path.is_none() {
            file_path = string(doc.source, "source", "source")?;
        }
        if file_offset.is_none() {
            file_offset = uint(doc.offset, "offset", "offset")?;
        }
        let mut host = match object(text, doc.host, "host")? {
            Some(h) => string(h.name, "host.name", "name")?,
            None => None,
        };
        if host.is_none() {
            if let Some(a) = object(text, doc.agent, "agent")? {
                host = string(a.hostname, "agent.hostname", "hostname")?;
            }
        }
        if host.is_none() {
            if let Some(b) = object(text, doc.beat, "beat")? {
                host = match string(b.hostname, "beat.hostname", "hostname")? {
                    Some(h) => Some(h),
                    None => string(b.name, "beat.name", "name")?,
                };
            }
        }
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
        let (message, continuation) = split_lines(message);
        Ok(Envelope {
            read_ts_ms,
            message,
            continuation,
            host,
            file_path,
            file_offset,
            log_type,
            idc,
            bare: false,
        })
    }
}
