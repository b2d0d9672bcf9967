//! Logs as go-hclog JSON lines on stderr, which the host re-logs at the level each line names.
//!
//! The host is strict (protocol document §7.2): `@timestamp` must match Go's layout
//! `2006-01-02T15:04:05.000000Z07:00` exactly or the line is demoted to DEBUG, and a non-string
//! `@level`, `@message` or `@timestamp` panics the whole server. So every value written here is a
//! string, and the timestamp is always UTC with six fractional digits and `Z`.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;

/// Installs the logger. mayfly's own events are kept from `MAYFLY_LOG` (default `debug`);
/// the libraries under it (h2, hyper, tonic) only from `warn`, so the host's log is not flooded.
pub fn init() {
    let ours = std::env::var("MAYFLY_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .unwrap_or(Level::DEBUG);
    tracing_subscriber::registry()
        .with(HclogLayer { ours })
        .init();
}

struct HclogLayer {
    ours: Level,
}

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        let max = if meta.target().starts_with("mayfly") {
            self.ours
        } else {
            Level::WARN
        };
        *meta.level() <= max
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = format_line(
            *event.metadata().level(),
            &fields.message,
            fields.rest,
            &timestamp(),
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
    }
}

/// One JSON line, every value a string.
fn format_line(level: Level, message: &str, rest: Map<String, Value>, timestamp: &str) -> String {
    let mut obj = rest;
    obj.insert("@level".into(), Value::String(hclog_level(level).into()));
    obj.insert("@message".into(), Value::String(message.into()));
    obj.insert("@timestamp".into(), Value::String(timestamp.into()));
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    line
}

fn hclog_level(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// Now, in Go's `2006-01-02T15:04:05.000000Z07:00` layout, in UTC.
fn timestamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
    s
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.rest
                .insert(field.name().into(), Value::String(value.into()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest.insert(field.name().into(), Value::String(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_matches_go_layout() {
        let ts = timestamp();
        assert_eq!(ts.len(), 27, "{ts}");
        let b = ts.as_bytes();
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19], b[26]),
            (b'-', b'-', b'T', b':', b':', b'.', b'Z')
        );
        assert!(ts[20..26].bytes().all(|c| c.is_ascii_digit()), "{ts}");
    }

    #[test]
    fn every_value_is_a_string() {
        let mut rest = Map::new();
        rest.insert("count".into(), Value::String("3".into()));
        let line = format_line(
            Level::ERROR,
            "boom \"quoted\"",
            rest,
            "2026-01-01T00:00:00.000000Z",
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        for (k, val) in v.as_object().unwrap() {
            assert!(val.is_string(), "{k} is not a string in {line}");
        }
        assert_eq!(v["@level"], "error");
        assert_eq!(v["@message"], "boom \"quoted\"");
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
    }
}
