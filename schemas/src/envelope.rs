//! The Filebeat Kafka-output document around each log line.
//!
//! Every Filebeat version users run is read: 6.x (`source`, `offset`,
//! `beat.hostname`/`beat.name`, `prospector.type`), 7.x/8.x `log` and
//! `filestream` inputs (`log.file.path`, `log.offset`, `host.name`,
//! `agent.hostname`, `input.type`), custom fields under `fields` or at the top
//! level (`fields_under_root: true`), `event.original` when `message` was
//! removed, and the raw codec's bare line.

use std::borrow::Cow;

use crate::json::{self, Obj, Scalar};
use crate::write::Json;
use crate::{time, ParseError};

#[cfg(test)]
mod reference;
mod scan;

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

/// The kept subset of Filebeat's document, as `scan` reads it. Every value
/// is loosely typed (`Scalar`, `Obj`) so that a bare JSON log line, which
/// may have its own `"host":"…"`, still decodes and is then recognised as
/// bare by its missing `message`; types are checked once we know it is an
/// envelope. `null` is the same as absent.
#[derive(Default)]
struct Doc<'a> {
    /// `@timestamp`.
    timestamp: Option<Scalar<'a>>,
    /// `message` when it is a string (unescaped; borrowed without escapes).
    message: Option<Cow<'a, str>>,
    log: Option<Obj<Log<'a>>>,
    host: Option<Obj<Host<'a>>>,
    fields: Option<Obj<Fields<'a>>>,
    /// `fields_under_root: true` puts the custom fields at the top level.
    log_type: Option<Scalar<'a>>,
    idc: Option<Scalar<'a>>,
    /// 6.x: `log.file.path` and `log.offset` were top-level `source`/`offset`.
    source: Option<Scalar<'a>>,
    offset: Option<Scalar<'a>>,
    /// 6.x: `beat.hostname` (the OS hostname) and `beat.name` (the `name`
    /// setting, by default the hostname); 6.0–6.2 have no `host` object.
    beat: Option<Obj<Beat<'a>>>,
    /// 7.x/8.x: `agent.hostname`, when a processor removed `host`.
    agent: Option<Obj<Agent<'a>>>,
    /// ECS `event.original`: the untouched line, when `message` was removed
    /// (or never set, e.g. by `preserve_original_event` plus a `drop_fields`).
    event: Option<Obj<Event<'a>>>,
}

#[derive(Default)]
struct Beat<'a> {
    hostname: Option<Scalar<'a>>,
    name: Option<Scalar<'a>>,
}

#[derive(Default)]
struct Agent<'a> {
    hostname: Option<Scalar<'a>>,
}

#[derive(Default)]
struct Event<'a> {
    original: Option<Scalar<'a>>,
}

#[derive(Default)]
struct Log<'a> {
    offset: Option<Scalar<'a>>,
    file: Option<Obj<File<'a>>>,
}

#[derive(Default)]
struct File<'a> {
    path: Option<Scalar<'a>>,
}

#[derive(Default)]
struct Host<'a> {
    name: Option<Scalar<'a>>,
}

#[derive(Default)]
struct Fields<'a> {
    log_type: Option<Scalar<'a>>,
    idc: Option<Scalar<'a>>,
}

/// Where a line came from and the line itself.
///
/// Filebeat's default JSON codec gives the full document; with
/// `codec.format: {string: '%{[message]}'}` the Kafka value is the bare line,
/// in which case only `message` (and `continuation`) is set. A value counts as
/// a JSON envelope when its first non-blank byte is `{` and it has a string
/// `message` (or `event.original`) field; otherwise it is the bare line (the
/// line's own JSON form has neither).
///
/// # Multiline events
///
/// Filebeat's `multiline` settings join a line with the lines that follow it
/// (a Java stack trace after an error line) into one event, separated by
/// `\n` (`log.flags: ["multiline"]`). No line format of ours contains a raw
/// newline (TSV escapes it, JSON encodes it), so the first line is the record
/// and the rest is its continuation: `message` is the first line and
/// `continuation` the lines after it, verbatim. Users expect the error line to
/// be a row like any other (findable by trace id, counted in the rollups)
/// *with* its stack trace, not a dead letter because the trace's tabs looked
/// like extra TSV fields; a first line that is itself malformed still fails
/// the line parser with its own reason. What a consumer does with the
/// continuation is its choice (ingest keeps it in the row's extras).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope<'a> {
    /// `@timestamp` (when Filebeat read the line), ms since epoch.
    pub read_ts_ms: Option<i64>,
    /// The raw log line (the first line of a multiline event). A bare value
    /// loses its trailing `\r`/`\n`; the line parsers ignore them anyway.
    pub message: Cow<'a, str>,
    /// The lines after the first of a multiline event (without the `\n`
    /// after the first line and without trailing `\r`/`\n`); `None` when the
    /// event was one line.
    pub continuation: Option<Cow<'a, str>>,
    /// `host.name`, else `agent.hostname`, else 6.x `beat.hostname`, else
    /// `beat.name`.
    pub host: Option<Cow<'a, str>>,
    /// `log.file.path`, else 6.x `source`.
    pub file_path: Option<Cow<'a, str>>,
    /// `log.offset`, else 6.x `offset`: byte offset of the line in its file.
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
    /// Anything that is not a JSON object with a string `message` or
    /// `event.original` (including malformed JSON) is taken as a bare line, so
    /// the line parser reports what is wrong with it. An envelope whose kept
    /// fields have the wrong type is a `BadField` naming the dotted path
    /// (`log.offset`). `fields.log_type`/`fields.idc` are also read from the
    /// top level (Filebeat's `fields_under_root: true`). The 6.x fields are
    /// only read (and type-checked) when the 7.x/8.x field is absent, so a
    /// custom top-level `source` or `offset` beside `log.*` is ignored.
    ///
    /// A multiline event is split into `message` and `continuation` (see the
    /// type's docs); a one-line event costs one `memchr` for that and no
    /// allocation.
    ///
    /// There is no size limit here: bounding message size is the consumer's
    /// job, before it calls this.
    pub fn parse(value: &'a [u8]) -> Result<Self, ParseError> {
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
        // Malformed JSON, or a document the serde_json decoder this replaces
        // rejected (`scan`'s docs), is a bare line.
        let Some(doc) = scan::doc(text) else {
            return Ok(bare());
        };
        let message = match (doc.message, doc.event) {
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

    /// Appends the Filebeat JSON document for this envelope (as Filebeat 8.x
    /// writes it, with `@metadata`, `input`, `agent`, `ecs`) to `out`.
    ///
    /// Fields that are `None` are omitted; `bare` is not represented (a bare
    /// value is just `message`, which the caller can send as is). A
    /// `continuation` is joined to `message` with `\n`, as Filebeat's
    /// multiline reader does (and `log.flags` is not written).
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
        match &self.continuation {
            None => doc.str("message", &self.message),
            Some(rest) => {
                let mut joined = String::with_capacity(self.message.len() + 1 + rest.len());
                joined.push_str(&self.message);
                joined.push('\n');
                joined.push_str(rest);
                doc.str("message", &joined)
            }
        };
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

/// Splits a Filebeat message into its first line and the lines after it
/// (`None` for a one-line message): the first `\n` ends the first line, whose
/// trailing `\r`s are dropped; the rest loses its trailing `\r`/`\n` and is
/// `None` if nothing is left. Borrowed text stays borrowed; an owned
/// (unescaped) one is truncated in place and only a continuation is copied.
fn split_lines(text: Cow<'_, str>) -> (Cow<'_, str>, Option<Cow<'_, str>>) {
    let Some(nl) = memchr::memchr(b'\n', text.as_bytes()) else {
        return (text, None);
    };
    let first_len = text[..nl].trim_end_matches('\r').len();
    let rest = text[nl + 1..].trim_end_matches(['\r', '\n']);
    let rest_range = (!rest.is_empty()).then(|| nl + 1..nl + 1 + rest.len());
    match text {
        Cow::Borrowed(t) => (
            Cow::Borrowed(&t[..first_len]),
            rest_range.map(|r| Cow::Borrowed(&t[r])),
        ),
        Cow::Owned(mut t) => {
            let rest = rest_range.map(|r| Cow::Owned(t[r].to_owned()));
            t.truncate(first_len);
            (Cow::Owned(t), rest)
        }
    }
}

#[cfg(test)]
mod tests {
    //! One test per document form users send. The fixtures follow real
    //! Filebeat output (field set and order of its Kafka JSON codec); only
    //! ids and times are shortened.

    use super::*;
    use crate::Request;

    /// A request line (README example) with its raw tabs, status 500.
    const LINE: &str = "2026-11-21 10:00:00.123\t4bf92f3577b34da6a3ce929d0e0e4736\t00f067aa0ba902b7\t\tad-gateway\t\t/v1/feed\t123456\t1001\t500\t12.75\tad-web-017\tyf\tregion=cn-north";
    /// What Filebeat's multiline reader appends: a Java stack trace, its lines
    /// joined with `\n`, tabs and all.
    const STACK: &str = "java.lang.IllegalStateException: bid service timed out\n\tat com.example.ad.BidClient.call(BidClient.java:88)\n\tat com.example.ad.Gateway.feed(Gateway.java:41)\nCaused by: java.net.SocketTimeoutException: Read timed out\n\t... 2 more";
    const PATH: &str = "/data/logs/adserver/trace.log";

    fn json(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    /// Parses `doc` and checks the kept fields; returns the envelope.
    fn parse_ok<'a>(doc: &'a str, host: &str, path: &str, offset: u64) -> Envelope<'a> {
        let env = Envelope::parse(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}: {doc}"));
        assert!(!env.bare, "{doc}");
        assert_eq!(env.host.as_deref(), Some(host), "host of {doc}");
        assert_eq!(env.file_path.as_deref(), Some(path), "file of {doc}");
        assert_eq!(env.file_offset, Some(offset), "offset of {doc}");
        env
    }

    fn request_status(line: &str) -> u16 {
        Request::parse(line).unwrap().status
    }

    #[test]
    fn filebeat_6x_log_prospector() {
        // 6.0–6.2: no `host` object, the host only in `beat`.
        let doc = format!(
            r#"{{"@timestamp":"2026-11-21T10:00:00.456Z","@metadata":{{"beat":"filebeat","type":"doc","version":"6.2.4","topic":"ad_request"}},"beat":{{"name":"ad-web-006","hostname":"ad-web-006","version":"6.2.4"}},"source":"{PATH}","offset":40960,"message":{},"prospector":{{"type":"log"}},"fields":{{"log_type":"request","idc":"yf"}}}}"#,
            json(LINE)
        );
        let env = parse_ok(&doc, "ad-web-006", PATH, 40960);
        assert_eq!(env.read_ts_ms, Some(1_795_255_200_456));
        assert_eq!(env.log_type.as_deref(), Some("request"));
        assert_eq!(env.idc.as_deref(), Some("yf"));
        assert_eq!(env.continuation, None);
        assert_eq!(request_status(&env.message), 500);

        // 6.3–6.8: `input` beside `prospector`, and `host.name` (= beat.name).
        let doc = format!(
            r#"{{"@timestamp":"2026-11-21T10:00:00.456Z","@metadata":{{"beat":"filebeat","type":"doc","version":"6.8.23","topic":"ad_request"}},"offset":40960,"prospector":{{"type":"log"}},"input":{{"type":"log"}},"beat":{{"name":"web-6","hostname":"ad-web-006","version":"6.8.23"}},"host":{{"name":"web-6"}},"source":"{PATH}","message":{}}}"#,
            json(LINE)
        );
        parse_ok(&doc, "web-6", PATH, 40960);
        // Without the OS hostname, `beat.name`.
        let doc = format!(
            r#"{{"beat":{{"name":"web-6"}},"source":"{PATH}","offset":7,"message":{}}}"#,
            json(LINE)
        );
        parse_ok(&doc, "web-6", PATH, 7);
        // A 6.x field of the wrong type names itself.
        let doc = r#"{"message":"x","source":"/a.log","offset":"812"}"#;
        assert!(matches!(
            Envelope::parse(doc.as_bytes()),
            Err(ParseError::BadField {
                field: "offset",
                offset: 33,
                ..
            })
        ));
        let doc = r#"{"message":"x","beat":"web-6"}"#;
        assert!(matches!(
            Envelope::parse(doc.as_bytes()),
            Err(ParseError::BadField { field: "beat", .. })
        ));
    }

    #[test]
    fn filebeat_7x_log_input() {
        let doc = format!(
            r#"{{"@timestamp":"2026-11-21T10:00:00.456Z","@metadata":{{"beat":"filebeat","type":"_doc","version":"7.17.18"}},"log":{{"offset":812,"file":{{"path":"{PATH}"}}}},"message":{},"input":{{"type":"log"}},"ecs":{{"version":"1.12.0"}},"host":{{"name":"ad-web-017"}},"agent":{{"type":"filebeat","version":"7.17.18","hostname":"ad-web-017","ephemeral_id":"8f3e2a0c","id":"0b7c1d9e","name":"ad-web-017"}}}}"#,
            json(LINE)
        );
        let env = parse_ok(&doc, "ad-web-017", PATH, 812);
        assert_eq!(env.message, LINE);
        assert_eq!(env.continuation, None);
        // `host` dropped by a processor: `agent.hostname`.
        let doc = format!(
            r#"{{"log":{{"offset":812,"file":{{"path":"{PATH}"}}}},"message":{},"agent":{{"type":"filebeat","hostname":"ad-web-018"}}}}"#,
            json(LINE)
        );
        parse_ok(&doc, "ad-web-018", PATH, 812);
        // 7.x/8.x fields win over top-level ones of the same 6.x names (custom
        // fields under root), which are then not even type-checked.
        let doc = format!(
            r#"{{"log":{{"offset":812,"file":{{"path":"{PATH}"}}}},"source":12,"offset":"x","host":{{"name":"h"}},"beat":"b","message":"x"}}"#
        );
        parse_ok(&doc, "h", PATH, 812);
    }

    #[test]
    fn filebeat_8x_filestream() {
        let doc = format!(
            r#"{{"@timestamp":"2026-11-21T10:00:00.456Z","@metadata":{{"beat":"filebeat","type":"_doc","version":"8.15.0"}},"log":{{"offset":812,"file":{{"path":"{PATH}","device_id":"64768","inode":"1837304"}}}},"message":{},"input":{{"type":"filestream"}},"ecs":{{"version":"8.0.0"}},"host":{{"name":"ad-web-017"}},"agent":{{"ephemeral_id":"8f3e2a0c","id":"0b7c1d9e","name":"ad-web-017","type":"filebeat","version":"8.15.0"}},"fields":{{"log_type":"request","idc":"yf"}}}}"#,
            json(LINE)
        );
        let env = parse_ok(&doc, "ad-web-017", PATH, 812);
        assert_eq!(env.log_type.as_deref(), Some("request"));
        assert_eq!(request_status(&env.message), 500);
    }

    #[test]
    fn fields_under_root() {
        let doc = format!(
            r#"{{"@timestamp":"2026-11-21T10:00:00.456Z","log":{{"offset":812,"file":{{"path":"{PATH}"}}}},"message":{},"input":{{"type":"filestream"}},"host":{{"name":"ad-web-017"}},"log_type":"request","idc":"zw"}}"#,
            json(LINE)
        );
        let env = parse_ok(&doc, "ad-web-017", PATH, 812);
        assert_eq!(env.log_type.as_deref(), Some("request"));
        assert_eq!(env.idc.as_deref(), Some("zw"));
    }

    #[test]
    fn event_original_when_message_was_removed() {
        let doc = format!(
            r#"{{"log":{{"offset":812,"file":{{"path":"{PATH}"}}}},"event":{{"original":{}}},"host":{{"name":"ad-web-017"}}}}"#,
            json(LINE)
        );
        let env = parse_ok(&doc, "ad-web-017", PATH, 812);
        assert_eq!(env.message, LINE);
        // `message` wins when both are there (it is what the input read).
        let doc = r#"{"message":"m","event":{"original":"o"}}"#;
        assert_eq!(Envelope::parse(doc.as_bytes()).unwrap().message, "m");
        // A non-string `event.original` is no line: the value is bare.
        let doc = r#"{"event":{"original":12}}"#;
        assert!(Envelope::parse(doc.as_bytes()).unwrap().bare);
    }

    #[test]
    fn crlf_line_endings() {
        // `line_terminator: line_feed` on a Windows-written file keeps the `\r`.
        let doc = format!(
            r#"{{"log":{{"offset":812,"file":{{"path":"{PATH}"}}}},"message":{},"host":{{"name":"h"}}}}"#,
            json(&format!("{LINE}\r"))
        );
        let env = parse_ok(&doc, "h", PATH, 812);
        assert_eq!(env.continuation, None);
        assert_eq!(request_status(&env.message), 500);
        // A bare value loses its `\r\n`.
        let bare = format!("{LINE}\r\n");
        let env = Envelope::parse(bare.as_bytes()).unwrap();
        assert!(env.bare);
        assert_eq!((&*env.message, env.continuation), (LINE, None));
        // A multiline event of `\r\n` lines: no `\r` left at the first line's end.
        let doc = format!(
            r#"{{"message":{}}}"#,
            json(&format!("{LINE}\r\n{STACK}\r\n"))
        );
        let env = Envelope::parse(doc.as_bytes()).unwrap();
        assert_eq!(env.message, LINE);
        assert_eq!(env.continuation.as_deref(), Some(STACK));
    }

    #[test]
    fn raw_codec_bare_line() {
        let env = Envelope::parse(LINE.as_bytes()).unwrap();
        assert_eq!(
            env,
            Envelope {
                message: Cow::Borrowed(LINE),
                bare: true,
                ..Envelope::default()
            }
        );
        assert!(matches!(env.message, Cow::Borrowed(_)));
        // A multiline event through the raw codec: split the same way, borrowed.
        let bare = format!("{LINE}\n{STACK}\n");
        let env = Envelope::parse(bare.as_bytes()).unwrap();
        assert!(env.bare);
        assert_eq!(env.message, LINE);
        assert_eq!(env.continuation.as_deref(), Some(STACK));
        assert!(matches!(
            (&env.message, &env.continuation),
            (Cow::Borrowed(_), Some(Cow::Borrowed(_)))
        ));
    }

    #[test]
    fn multiline_java_stack_trace() {
        // 7.x log input with `multiline.pattern: '^\d{4}-'`, negate, after.
        let doc = format!(
            r#"{{"@timestamp":"2026-11-21T10:00:00.456Z","@metadata":{{"beat":"filebeat","type":"_doc","version":"7.17.18"}},"log":{{"offset":81920,"file":{{"path":"{PATH}"}},"flags":["multiline"]}},"message":{},"input":{{"type":"log"}},"host":{{"name":"ad-web-007"}},"agent":{{"type":"filebeat","version":"7.17.18","hostname":"ad-web-007"}}}}"#,
            json(&format!("{LINE}\n{STACK}"))
        );
        let env = parse_ok(&doc, "ad-web-007", PATH, 81920);
        assert_eq!(env.message, LINE);
        assert_eq!(env.continuation.as_deref(), Some(STACK));
        assert_eq!(request_status(&env.message), 500);
        // The whole event parsed as one line is what dead-lettered it before.
        assert_eq!(
            Request::parse(&format!("{LINE}\n{STACK}"))
                .unwrap_err()
                .reason(),
            "field_count"
        );
        // Written back, Filebeat's form: the lines joined with `\n`.
        let mut out = String::new();
        env.write_json(&mut out);
        let again = Envelope::parse(out.as_bytes()).unwrap();
        assert_eq!(again, env);
        assert!(out.contains(&json(&format!("{LINE}\n{STACK}"))), "{out}");
    }

    #[test]
    fn multiline_with_a_bad_first_line() {
        // The first line's own fault is reported, at its own offset.
        let bad = LINE.replace("\t500\t", "\t5x0\t");
        let doc = format!(
            r#"{{"log":{{"offset":81920,"file":{{"path":"{PATH}"}},"flags":["multiline"]}},"message":{},"host":{{"name":"h"}}}}"#,
            json(&format!("{bad}\n{STACK}"))
        );
        let env = parse_ok(&doc, "h", PATH, 81920);
        assert_eq!(env.continuation.as_deref(), Some(STACK));
        let err = Request::parse(&env.message).unwrap_err();
        assert_eq!(err.reason(), "bad_field");
        assert!(
            matches!(err, ParseError::BadField { field: "status", offset, .. } if offset == LINE.find("\t500").unwrap() + 1),
            "{err}"
        );
        // A stack trace with no line before it (multiline misconfigured, or
        // the file cut mid-event) has an empty first line.
        let doc = format!(r#"{{"message":{}}}"#, json(&format!("\n{STACK}")));
        let env = Envelope::parse(doc.as_bytes()).unwrap();
        assert_eq!(Request::parse(&env.message).unwrap_err().reason(), "empty");
        assert_eq!(env.continuation.as_deref(), Some(STACK));
    }

    /// `message` is decoded by json::unescape_str: the same values, and a
    /// message serde_json rejects (a lone surrogate) still makes the whole
    /// value a bare line, even with an `event.original` beside it.
    #[test]
    fn message_decoding_matches_serde_json() {
        let e = Envelope::parse(br#"{"message" :  "a\tb\u00e9\/", "host":{"name":"h"}}"#).unwrap();
        assert_eq!(
            (&*e.message, e.bare, e.host.as_deref()),
            ("a\tb\u{e9}/", false, Some("h"))
        );
        assert!(matches!(
            Envelope::parse(br#"{"message":"plain"}"#).unwrap().message,
            Cow::Borrowed("plain")
        ));
        let raw = r#"{"message":"a\ud800b","event":{"original":"x"}}"#;
        let e = Envelope::parse(raw.as_bytes()).unwrap();
        assert_eq!((&*e.message, e.bare), (raw, true));
        let e = Envelope::parse(br#"{"message":7,"event":{"original":"x"}}"#).unwrap();
        assert_eq!((&*e.message, e.bare), ("x", false));
        let e = Envelope::parse(br#"{"message":null,"event":{"original":"x"}}"#).unwrap();
        assert_eq!((&*e.message, e.bare), ("x", false));
    }

    #[test]
    fn split_lines_borrows_and_trims() {
        let b = |s| split_lines(Cow::Borrowed(s));
        assert_eq!(b("a"), (Cow::Borrowed("a"), None));
        assert_eq!(b("a\n"), (Cow::Borrowed("a"), None));
        assert_eq!(b("a\r\n\r\n"), (Cow::Borrowed("a"), None));
        assert_eq!(
            b("a\r\nb\r\n"),
            (Cow::Borrowed("a"), Some(Cow::Borrowed("b")))
        );
        assert_eq!(
            b("a\n\nb"),
            (Cow::Borrowed("a"), Some(Cow::Borrowed("\nb")))
        );
        let (first, rest) = split_lines(Cow::Owned("a\tb\nc\td\n".to_string()));
        assert_eq!((&*first, rest.as_deref()), ("a\tb", Some("c\td")));
    }
}
