//! Placeholders in a call's path, headers and body: `{{ .Name }}` and the like, each value
//! escaped for the place it lands in, so that no value can change the shape of a request.
//!
//! - In the path, a value is percent-encoded whole (a `/` in it cannot add a path segment, a
//!   `&` cannot add a query parameter).
//! - In a header, a value with a control character (a line break) is refused.
//! - In the body (JSON), values land inside JSON strings built by a serializer, never spliced
//!   into JSON text. A string that is exactly one placeholder takes the value's own type, so
//!   `"ttl": "{{ .TTLSeconds }}"` sends a number.
//!
//! `.Password` (mayfly's password for kinds whose service takes one) may appear only in a body:
//! paths and headers end up in access logs.

use mayfly::redact::percent_encode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// The placeholders a call may use.
pub const KNOWN: &[&str] = &[
    "Name",
    "Password",
    "CredentialID",
    "TaskID",
    "RoleName",
    "Deadline",
    "DeadlineUnix",
    "TTLSeconds",
    "KeyID",
];

/// What placeholders stand for in one call.
#[derive(Default)]
pub struct Vars<'a> {
    /// The principal's name (the generated user name, the key's name).
    pub name: &'a str,
    pub password: Option<&'a SecretString>,
    pub credential_id: &'a str,
    pub task_id: &'a str,
    pub role_name: &'a str,
    /// Unix seconds.
    pub deadline: u64,
    /// Seconds from now to the deadline.
    pub ttl_seconds: u64,
    /// The key's id on the service; the name where the service addresses keys by name.
    pub key_id: &'a str,
}

impl std::fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vars")
            .field("name", &self.name)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("credential_id", &self.credential_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Where a template is used: decides the escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Path,
    Header,
    Body,
}

enum Val {
    Text(String),
    Number(u64),
}

impl Vars<'_> {
    fn get(&self, field: &str) -> Option<Val> {
        Some(match field {
            "Name" => Val::Text(self.name.to_owned()),
            "Password" => Val::Text(self.password?.expose_secret().to_owned()),
            "CredentialID" => Val::Text(self.credential_id.to_owned()),
            "TaskID" => Val::Text(self.task_id.to_owned()),
            "RoleName" => Val::Text(self.role_name.to_owned()),
            "Deadline" => Val::Text(rfc3339(self.deadline)),
            "DeadlineUnix" => Val::Number(self.deadline),
            "TTLSeconds" => Val::Number(self.ttl_seconds),
            "KeyID" => Val::Text(self.key_id.to_owned()),
            _ => return None,
        })
    }
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// One piece of a template: literal text, or a placeholder's field name.
enum Piece<'t> {
    Text(&'t str),
    Field(&'t str),
}

/// Splits `template` into pieces; errors say what is wrong, for the caller to place.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or("a placeholder opened with {{ is never closed with }}")?;
        let inner = after[..end].trim();
        let field = inner
            .strip_prefix('.')
            .filter(|f| KNOWN.contains(f))
            .ok_or_else(|| {
                format!(
                    "unknown placeholder '{{{{{}}}}}': expected one of {}",
                    after[..end].escape_default(),
                    KNOWN
                        .iter()
                        .map(|k| format!(".{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        out.push(Piece::Field(field));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn render(template: &str, vars: &Vars<'_>, place: Place) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(f) => {
                if f == "Password" && place != Place::Body {
                    return Err(
                        "'.Password' may appear only in a body: paths and headers end up in \
                         access logs"
                            .into(),
                    );
                }
                let value = match vars.get(f) {
                    Some(Val::Text(s)) => s,
                    Some(Val::Number(n)) => n.to_string(),
                    None => return Err(format!("'.{f}' has no value in this call")),
                };
                match place {
                    Place::Path => out.push_str(&percent_encode(&value)),
                    Place::Header if value.chars().any(char::is_control) => {
                        return Err(format!("the value of '.{f}' holds a control character"));
                    }
                    Place::Header | Place::Body => out.push_str(&value),
                }
            }
        }
    }
    Ok(out)
}

/// The path (and query) of a call, each value percent-encoded.
pub fn path(template: &str, vars: &Vars<'_>) -> Result<String, String> {
    render(template, vars, Place::Path)
}

/// A header value.
pub fn header(template: &str, vars: &Vars<'_>) -> Result<String, String> {
    render(template, vars, Place::Header)
}

/// A JSON body: every string in it rendered, object keys left as written.
pub fn body(template: &Value, vars: &Vars<'_>) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => {
            let parts = pieces(s)?;
            match parts.as_slice() {
                [Piece::Field(f)] if *f != "Password" => match vars.get(f) {
                    Some(Val::Number(n)) => Value::from(n),
                    Some(Val::Text(t)) => Value::String(t),
                    None => return Err(format!("'.{f}' has no value in this call")),
                },
                _ => Value::String(render(s, vars, Place::Body)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| body(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), body(v, vars)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// The placeholders `template` uses (for checks at role write), or what is wrong with it.
pub fn fields_in(template: &str) -> Result<Vec<&str>, String> {
    Ok(pieces(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Field(f) => Some(f),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Every placeholder in the strings of a JSON body.
pub fn fields_in_body(template: &Value) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    match template {
        Value::String(s) => out.extend(fields_in(s)?),
        Value::Array(items) => {
            for i in items {
                out.extend(fields_in_body(i)?);
            }
        }
        Value::Object(map) => {
            for v in map.values() {
                out.extend(fields_in_body(v)?);
            }
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(password: &SecretString) -> Vars<'_> {
        Vars {
            name: "mf-web-a/b?c&d",
            password: Some(password),
            credential_id: "c1",
            task_id: "",
            role_name: "web",
            deadline: 1_800_000_000,
            ttl_seconds: 300,
            key_id: "k 1",
        }
    }

    #[test]
    fn path_values_are_encoded_whole() {
        let pw = SecretString::from("pw");
        let p = path("/api/users/{{ .Name }}?id={{.KeyID}}", &vars(&pw)).unwrap();
        assert_eq!(p, "/api/users/mf-web-a%2Fb%3Fc%26d?id=k%201");
    }

    #[test]
    fn password_only_in_a_body() {
        let pw = SecretString::from("s3cret");
        let err = path("/x/{{.Password}}", &vars(&pw)).unwrap_err();
        assert!(err.contains("only in a body"), "{err}");
        assert!(header("Bearer {{.Password}}", &vars(&pw)).is_err());
        let b = body(&json!({"password": "{{ .Password }}"}), &vars(&pw)).unwrap();
        assert_eq!(b, json!({"password": "s3cret"}));
    }

    #[test]
    fn body_keeps_json_shape_and_types() {
        let pw = SecretString::from("p\"w");
        let t = json!({"name": "x-{{.Name}}\"", "ttl": "{{ .TTLSeconds }}",
                       "until": "{{.Deadline}}", "list": ["{{.RoleName}}", 7], "pw": "{{.Password}}"});
        let b = body(&t, &vars(&pw)).unwrap();
        assert_eq!(
            b,
            json!({"name": "x-mf-web-a/b?c&d\"", "ttl": 300, "until": "2027-01-15T08:00:00Z",
                   "list": ["web", 7], "pw": "p\"w"})
        );
    }

    #[test]
    fn header_refuses_line_breaks() {
        let pw = SecretString::from("pw");
        let mut v = vars(&pw);
        v.name = "a\r\nX-Evil: 1";
        let err = header("{{.Name}}", &v).unwrap_err();
        assert!(err.contains("control character"), "{err}");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_named() {
        let err = fields_in("/x/{{ .Nope }}").unwrap_err();
        assert!(err.contains(".Nope") && err.contains(".KeyID"), "{err}");
        assert!(
            fields_in("/x/{{ .Name")
                .unwrap_err()
                .contains("never closed")
        );
        assert_eq!(
            fields_in_body(&json!({"a": ["{{.Name}}", {"b": "{{.KeyID}}"}]})).unwrap(),
            vec!["Name", "KeyID"]
        );
    }
}
