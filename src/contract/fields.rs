//! Typed request fields: what a path accepts, parsed and validated from the request's JSON.
//! Values arrive either as JSON (a write body) or as strings (query parameters of a read or
//! list), so every type accepts its natural JSON form and a string spelling of it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::contract::error::Error;

/// The largest single string value mayfly accepts. Statements and URLs fit easily; anything
/// larger is a mistake or an attack, and is refused before it reaches storage or a target.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Bool,
    /// Seconds: an integer, or a string such as `90`, `90s`, `15m`, `1h30m`, `2d`.
    Duration,
    /// A JSON array of strings, or one comma-separated string.
    StringList,
    /// SQL or similar text: a JSON array of strings, or one string kept whole (commas in a
    /// statement are not separators).
    Statements,
    /// String keys to string values: a JSON object, or one string `k1=v1,k2=v2`.
    StringMap,
    /// A JSON object or array (an HTTP call's description), or a string holding one, as
    /// the `bao write` command line sends it.
    Json,
}

impl FieldType {
    /// What the client should send, as said in error messages and help.
    pub fn expected(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Int => "an integer",
            FieldType::Bool => "a boolean (true or false)",
            FieldType::Duration => {
                "a duration: whole seconds or a string such as \"90s\", \"15m\", \"1h\", \"2d\""
            }
            FieldType::StringList => "a list of strings or one comma-separated string",
            FieldType::Statements => "a string or a list of strings",
            FieldType::StringMap => {
                "an object of string values or one string such as \"k1=v1,k2=v2\""
            }
            FieldType::Json => "a JSON object or array, or a string holding one",
        }
    }

    /// The OpenAPI schema type.
    pub fn openapi_type(self) -> &'static str {
        match self {
            FieldType::String | FieldType::Duration => "string",
            FieldType::Int => "integer",
            FieldType::Bool => "boolean",
            FieldType::StringList | FieldType::Statements => "array",
            FieldType::StringMap | FieldType::Json => "object",
        }
    }
}

/// A statement as OpenBao's engine takes it: one sent base64-encoded (as its documentation
/// suggests for statements with backticks, which a shell would run) is decoded. A statement has
/// spaces, so no real one is mistaken for base64.
fn unwrap_base64(statement: &str) -> String {
    use base64::Engine;
    let text = statement.trim();
    if text.len() < 8 || !text.len().is_multiple_of(4) || text.contains(char::is_whitespace) {
        return statement.to_owned();
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|decoded| decoded.contains(char::is_whitespace))
        .unwrap_or_else(|| statement.to_owned())
}

/// One field a path accepts.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
    pub description: &'static str,
    pub required: bool,
    /// Accepted on write, stored, never returned on read.
    pub secret: bool,
    pub default: Option<FieldValue>,
    /// Accepted for OpenBao's clients and kept, but not used by this kind: why, for the
    /// warning a write that gives it answers.
    pub unused: Option<&'static str>,
}

impl FieldDef {
    pub const fn new(name: &'static str, ty: FieldType, description: &'static str) -> Self {
        FieldDef {
            name,
            ty,
            description,
            required: false,
            secret: false,
            default: None,
            unused: None,
        }
    }

    /// A field OpenBao's engine takes that this kind keeps but does not use, and why.
    pub fn unused(mut self, why: &'static str) -> Self {
        self.unused = Some(why);
        self
    }

    /// The warning for a write that gives this field, when it is [`FieldDef::unused`].
    pub fn unused_warning(&self, kind: &str) -> Option<String> {
        self.unused.map(|why| {
            format!(
                "field '{}' is accepted for OpenBao's clients but not used by kind '{kind}': {why}",
                self.name
            )
        })
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn default(mut self, value: FieldValue) -> Self {
        self.default = Some(value);
        self
    }

    /// Parses one raw value of this field, naming the field in any error.
    pub fn parse(&self, raw: &Value) -> Result<FieldValue, Error> {
        let wrong = || {
            Error::bad_request(format!(
                "field '{}': expected {}, got {}",
                self.name,
                self.ty.expected(),
                describe(raw)
            ))
        };
        let value = match (self.ty, raw) {
            (FieldType::String, Value::String(s)) => FieldValue::String(s.clone()),
            (FieldType::Int, Value::Number(n)) => FieldValue::Int(n.as_i64().ok_or_else(wrong)?),
            (FieldType::Int, Value::String(s)) => {
                FieldValue::Int(s.trim().parse().map_err(|_| wrong())?)
            }
            (FieldType::Bool, Value::Bool(b)) => FieldValue::Bool(*b),
            (FieldType::Bool, Value::String(s)) => FieldValue::Bool(match s.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(wrong()),
            }),
            (FieldType::Duration, Value::Number(n)) => {
                FieldValue::Duration(n.as_u64().ok_or_else(wrong)?)
            }
            (FieldType::Duration, Value::String(s)) => {
                FieldValue::Duration(parse_duration(s).ok_or_else(wrong)?)
            }
            (FieldType::StringList, Value::String(s)) => FieldValue::StringList(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            (FieldType::Statements, Value::String(s)) if s.trim().is_empty() => {
                FieldValue::StringList(Vec::new())
            }
            (FieldType::Statements, Value::String(s)) => {
                FieldValue::StringList(vec![unwrap_base64(s)])
            }
            (FieldType::Statements, Value::Array(items)) => FieldValue::StringList(
                items
                    .iter()
                    .map(|i| i.as_str().map(unwrap_base64).ok_or_else(wrong))
                    .collect::<Result<_, _>>()?,
            ),
            (FieldType::StringList, Value::Array(items)) => FieldValue::StringList(
                items
                    .iter()
                    .map(|i| i.as_str().map(String::from).ok_or_else(wrong))
                    .collect::<Result<_, _>>()?,
            ),
            (FieldType::StringMap, Value::Object(map)) => FieldValue::StringMap(
                map.iter()
                    .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect::<Option<_>>()
                    .ok_or_else(wrong)?,
            ),
            (FieldType::StringMap, Value::String(s)) => FieldValue::StringMap(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=')?;
                        Some((k.trim().to_owned(), v.trim().to_owned()))
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(wrong)?,
            ),
            (FieldType::Json, Value::Object(_) | Value::Array(_)) => FieldValue::Json(raw.clone()),
            (FieldType::Json, Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => FieldValue::Json(v),
                Ok(_) => return Err(wrong()),
                Err(e) => {
                    return Err(Error::bad_request(format!(
                        "field '{}': expected {}, but the string is not JSON: {e}",
                        self.name,
                        self.ty.expected()
                    )));
                }
            },
            _ => return Err(wrong()),
        };
        let len = match &value {
            FieldValue::Json(v) => v.to_string().len(),
            FieldValue::String(s) => s.len(),
            FieldValue::StringList(l) => l.iter().map(String::len).sum(),
            FieldValue::StringMap(m) => m.iter().map(|(k, v)| k.len() + v.len()).sum(),
            _ => 0,
        };
        if len > MAX_FIELD_BYTES {
            return Err(Error::bad_request(format!(
                "field '{}': {len} bytes is too long, at most {MAX_FIELD_BYTES} bytes are accepted",
                self.name
            )));
        }
        Ok(value)
    }
}

/// A parsed field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    String(String),
    Int(i64),
    Bool(bool),
    Duration(u64),
    StringList(Vec<String>),
    StringMap(BTreeMap<String, String>),
    Json(Value),
}

impl FieldValue {
    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::String(s) => Value::String(s.clone()),
            FieldValue::Int(i) => Value::from(*i),
            FieldValue::Bool(b) => Value::Bool(*b),
            FieldValue::Duration(secs) => Value::from(*secs),
            FieldValue::StringList(l) => {
                Value::Array(l.iter().cloned().map(Value::String).collect())
            }
            FieldValue::StringMap(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
            FieldValue::Json(v) => v.clone(),
        }
    }
}

/// The fields a request set, parsed against the path's definitions.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    values: BTreeMap<&'static str, FieldValue>,
}

impl Fields {
    /// Parses `data` against `defs`. Unknown fields are refused with the list of accepted ones;
    /// `required` is not checked here, since an update may leave a stored value in place.
    pub fn parse(defs: &[FieldDef], data: &Map<String, Value>) -> Result<Fields, Error> {
        let mut values = BTreeMap::new();
        for (key, raw) in data {
            let def = defs.iter().find(|d| d.name == key).ok_or_else(|| {
                let known: Vec<&str> = defs.iter().map(|d| d.name).collect();
                Error::bad_request(format!(
                    "unknown field '{}': this path accepts {}",
                    truncate(key, 64),
                    if known.is_empty() {
                        "no fields".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
            if raw.is_null() {
                continue;
            }
            values.insert(def.name, def.parse(raw)?);
        }
        Ok(Fields { values })
    }

    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.values.get(name)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(FieldValue::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name) {
            Some(FieldValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(FieldValue::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// A duration field, in seconds.
    pub fn duration(&self, name: &str) -> Option<u64> {
        match self.values.get(name) {
            Some(FieldValue::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn list(&self, name: &str) -> Option<&[String]> {
        match self.values.get(name) {
            Some(FieldValue::StringList(l)) => Some(l),
            _ => None,
        }
    }

    pub fn map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        match self.values.get(name) {
            Some(FieldValue::StringMap(m)) => Some(m),
            _ => None,
        }
    }
}

/// Parses `90`, `90s`, `15m`, `1h30m`, `2d` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    number.is_empty().then_some(total)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string \"{}\"", truncate(s, 40)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> Vec<FieldDef> {
        vec![
            FieldDef::new("name", FieldType::String, ""),
            FieldDef::new("count", FieldType::Int, ""),
            FieldDef::new("on", FieldType::Bool, ""),
            FieldDef::new("ttl", FieldType::Duration, ""),
            FieldDef::new("roles", FieldType::StringList, ""),
        ]
    }

    fn parse(v: Value) -> Result<Fields, Error> {
        Fields::parse(&defs(), v.as_object().unwrap())
    }

    #[test]
    fn statements_sent_base64_encoded_are_decoded_and_others_kept() {
        let def = FieldDef::new("creation_statements", FieldType::Statements, "");
        // OpenBao's MySQL documentation, verbatim.
        let encoded = "Q1JFQVRFIFVTRVIgJ3t7bmFtZX19J0AnJScgSURFTlRJRklFRCBCWSAne3twYXNzd29yZH19JzsgR1JBTlQgU0VMRUNUIE9OIGBmb29hcHBcXyVgLiogVE8gJ3t7bmFtZX19J0AnJSc7";
        let decoded = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON `fooapp\\_%`.* TO '{{name}}'@'%';";
        for raw in [json!(encoded), json!([encoded])] {
            assert_eq!(
                def.parse(&raw).unwrap(),
                FieldValue::StringList(vec![decoded.to_owned()])
            );
        }
        for kept in ["DROP ROLE x", "abcdabcd", "SELECT 1;"] {
            assert_eq!(
                def.parse(&json!(kept)).unwrap(),
                FieldValue::StringList(vec![kept.to_owned()])
            );
        }
    }

    #[test]
    fn accepts_json_and_string_spellings() {
        let f =
            parse(json!({"count": "7", "on": "true", "ttl": "1h30m", "roles": "a, b"})).unwrap();
        assert_eq!(f.get("count"), Some(&FieldValue::Int(7)));
        assert_eq!(f.bool("on"), Some(true));
        assert_eq!(f.get("ttl"), Some(&FieldValue::Duration(5400)));
        assert_eq!(f.list("roles").unwrap(), ["a", "b"]);
        let f = parse(json!({"count": 7, "on": false, "ttl": 30, "roles": ["x"]})).unwrap();
        assert_eq!(f.get("ttl"), Some(&FieldValue::Duration(30)));
        assert_eq!(f.list("roles").unwrap(), ["x"]);
    }

    #[test]
    fn errors_name_the_field_and_the_expected_type() {
        let e = parse(json!({"count": "seven"})).unwrap_err();
        assert!(
            e.to_string().contains("field 'count': expected an integer"),
            "{e}"
        );
        let e = parse(json!({"on": 3})).unwrap_err();
        assert!(
            e.to_string().contains("field 'on': expected a boolean"),
            "{e}"
        );
        let e = parse(json!({"ttl": "soon"})).unwrap_err();
        assert!(
            e.to_string().contains("field 'ttl': expected a duration"),
            "{e}"
        );
        let e = parse(json!({"bogus": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field 'bogus'"), "{e}");
        assert!(e.to_string().contains("name, count, on, ttl, roles"), "{e}");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn oversized_values_are_refused() {
        let e = parse(json!({"name": "x".repeat(MAX_FIELD_BYTES + 1)})).unwrap_err();
        assert!(e.to_string().contains("field 'name'") && e.to_string().contains("too long"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("2d1s"), Some(172_801));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("5m3"), None);
        assert_eq!(parse_duration(""), None);
    }
}
