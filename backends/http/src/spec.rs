//! A role's calls, as the role declares them: how a key is created, revoked, renewed and
//! listed on the service. Parsed from the role's settings, checked offline at role write, and
//! stored with each credential so that it is revoked as it was created.

use mayfly::Error;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::placeholders;

/// The methods a call may use. `LIST` is OpenBao's and Vault's listing verb.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "LIST"];

/// One HTTP call: method, path (with query) under the connection's `base_url`, headers and a
/// JSON body, all with placeholders.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: Map<String, Value>,
    #[serde(default)]
    pub body: Option<Value>,
}

/// How a timestamp the service returns is written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryFormat {
    /// Unix seconds.
    #[default]
    Unix,
    Rfc3339,
    /// Seconds from now (a TTL).
    Seconds,
}

/// The call that creates the key, and where in its answer the key's parts are.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Create {
    /// Taken from the same object as the fields below ([`with_call`]).
    #[serde(skip)]
    pub call: Call,
    /// JSON pointer to the secret the service made. Without it the service takes mayfly's
    /// password (`.Password`), which is what the client gets.
    #[serde(default)]
    pub secret_pointer: Option<String>,
    /// JSON pointer to the key's id, where the service chooses one; without it the key is
    /// addressed by its name.
    #[serde(default)]
    pub key_id_pointer: Option<String>,
    /// JSON pointer to when the service itself ends the key, where it says.
    #[serde(default)]
    pub expiry_pointer: Option<String>,
    #[serde(default)]
    pub expiry_format: ExpiryFormat,
}

/// The call that lists the service's keys, for the orphan scan and for finding the id of a key
/// whose creation was cut off before its id was recorded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Taken from the same object as the fields below ([`with_call`]).
    #[serde(skip)]
    pub call: Call,
    /// JSON pointer to the array of keys; empty for an answer that is the array.
    #[serde(default)]
    pub items_pointer: String,
    /// JSON pointer, in each item, to the key's name; without it the item is the name (or,
    /// with `lookup`, the id).
    #[serde(default)]
    pub name_pointer: Option<String>,
    /// JSON pointer, in each item, to the key's id; without it the id is the name.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// For services whose list gives ids only: a call per key (with `.KeyID`) whose answer
    /// holds the name at `lookup_name_pointer`.
    #[serde(default)]
    pub lookup: Option<Call>,
    #[serde(default)]
    pub lookup_name_pointer: Option<String>,
}

/// Every call of one role.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSpec {
    pub create: Create,
    /// Calls made after `create`, in order (permissions, say); if one fails the key is revoked
    /// and the issuance fails.
    pub post_create: Vec<Call>,
    /// Addressed by `.KeyID`; a 404 or 410 answer means the key is already gone.
    pub revoke: Call,
    pub renew: Option<Call>,
    pub list: Option<List>,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("field '{field}': {msg}"))
}

fn parse_field<T: for<'de> Deserialize<'de>>(
    settings: &Map<String, Value>,
    field: &str,
) -> Result<Option<T>, Error> {
    match settings.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| bad(field, e)),
    }
}

/// A call with extra fields of its own (`Create`, `List`): the call's fields go to a [`Call`],
/// the others to `T`, and a field that is neither's is refused. (serde's `flatten` cannot
/// refuse unknown fields.)
fn with_call<T: for<'de> Deserialize<'de>>(
    settings: &Map<String, Value>,
    field: &str,
    set: fn(&mut T, Call),
) -> Result<Option<T>, Error> {
    let Some(v) = settings.get(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Object(all) = v else {
        return Err(bad(field, "expected a JSON object"));
    };
    let (mut call, mut extra) = (Map::new(), Map::new());
    for (k, v) in all {
        let target = if matches!(k.as_str(), "method" | "path" | "headers" | "body") {
            &mut call
        } else {
            &mut extra
        };
        target.insert(k.clone(), v.clone());
    }
    let call: Call = serde_json::from_value(Value::Object(call)).map_err(|e| bad(field, e))?;
    let mut out: T = serde_json::from_value(Value::Object(extra)).map_err(|e| bad(field, e))?;
    set(&mut out, call);
    Ok(Some(out))
}

impl Call {
    /// Checks method, path, header names, pointers and placeholders; `field` names the call in
    /// errors. Returns the placeholders the call uses.
    fn check(&self, field: &str) -> Result<Vec<&str>, Error> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(bad(
                field,
                format!(
                    "method '{}' is not one of {}",
                    self.method.escape_default(),
                    METHODS.join(", ")
                ),
            ));
        }
        if !self.path.starts_with('/') {
            return Err(bad(
                field,
                format!(
                    "path '{}' must start with '/' (it is joined to the connection's base_url)",
                    self.path.escape_default()
                ),
            ));
        }
        let mut used = placeholders::fields_in(&self.path).map_err(|e| bad(field, e))?;
        if used.contains(&"Password") {
            return Err(bad(field, "'.Password' may appear only in a body"));
        }
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(bad(
                    field,
                    format!("header name '{}' is not valid", name.escape_default()),
                ));
            }
            let Value::String(v) = value else {
                return Err(bad(field, format!("header '{name}' must be a string")));
            };
            let fields = placeholders::fields_in(v).map_err(|e| bad(field, e))?;
            if fields.contains(&"Password") {
                return Err(bad(field, "'.Password' may appear only in a body"));
            }
            used.extend(fields);
        }
        if let Some(b) = &self.body {
            used.extend(placeholders::fields_in_body(b).map_err(|e| bad(field, e))?);
        }
        Ok(used)
    }
}

/// RFC 9110's token characters, those a header name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_pointer(field: &str, what: &str, p: &Option<String>) -> Result<(), Error> {
    match p {
        Some(p) if !p.is_empty() && !p.starts_with('/') => Err(bad(
            field,
            format!(
                "{what} '{}' is not a JSON pointer: it must be empty or start with '/'",
                p.escape_default()
            ),
        )),
        _ => Ok(()),
    }
}

impl RoleSpec {
    /// The role's calls from its settings, checked; errors name the field.
    pub fn parse(settings: &Map<String, Value>) -> Result<RoleSpec, Error> {
        let create: Create =
            with_call(settings, "create", |c: &mut Create, call| c.call = call)?
                .ok_or_else(|| bad("create", "is required: the call that creates a key"))?;
        let revoke: Call = parse_field(settings, "revoke")?
            .ok_or_else(|| bad("revoke", "is required: the call that deletes a key"))?;
        let post_create: Vec<Call> = parse_field(settings, "post_create")?.unwrap_or_default();
        let renew: Option<Call> = parse_field(settings, "renew")?;
        let list: Option<List> = with_call(settings, "list", |l: &mut List, call| l.call = call)?;
        let spec = RoleSpec {
            create,
            post_create,
            revoke,
            renew,
            list,
        };
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), Error> {
        let used = self.create.call.check("create")?;
        if used.contains(&"KeyID") {
            return Err(bad("create", "'.KeyID' is not known before the key exists"));
        }
        for (what, p) in [
            ("secret_pointer", &self.create.secret_pointer),
            ("key_id_pointer", &self.create.key_id_pointer),
            ("expiry_pointer", &self.create.expiry_pointer),
        ] {
            check_pointer("create", what, p)?;
        }
        let takes_password = self.create.secret_pointer.is_none();
        if takes_password && !used.contains(&"Password") {
            return Err(bad(
                "create",
                "without 'secret_pointer' the service must take mayfly's password: use \
                 '{{ .Password }}' in the body, or give 'secret_pointer' where the service \
                 makes the secret",
            ));
        }
        if !takes_password && used.contains(&"Password") {
            return Err(bad(
                "create",
                "'.Password' and 'secret_pointer' exclude each other: either mayfly makes the \
                 secret or the service does",
            ));
        }
        if !used.contains(&"Name") && !used.contains(&"CredentialID") {
            return Err(bad(
                "create",
                "the key must carry mayfly's mark: use '{{ .Name }}' (or '{{ .CredentialID }}') \
                 so that the orphan scan can find a key whose creation was cut off",
            ));
        }
        for (i, call) in self.post_create.iter().enumerate() {
            let field = format!("post_create[{i}]");
            if call.check(&field)?.contains(&"Password") && !takes_password {
                return Err(bad(
                    &field,
                    "'.Password' is only known without 'secret_pointer'",
                ));
            }
        }
        let used = self.revoke.check("revoke")?;
        if !used.contains(&"KeyID") && !used.contains(&"Name") {
            return Err(bad(
                "revoke",
                "the call must address the key: use '{{ .KeyID }}' (or '{{ .Name }}')",
            ));
        }
        if used.contains(&"Password") {
            return Err(bad(
                "revoke",
                "'.Password' is not known when a key is revoked",
            ));
        }
        if let Some(r) = &self.renew
            && r.check("renew")?.contains(&"Password")
        {
            return Err(bad(
                "renew",
                "'.Password' is not known when a key is renewed",
            ));
        }
        match &self.list {
            Some(l) => self.check_list(l)?,
            None if self.create.key_id_pointer.is_some() => {
                return Err(bad(
                    "list",
                    "is required with 'key_id_pointer': a key whose creation is cut off (a \
                     crash) has no recorded id, and only a list call can find it to revoke it",
                ));
            }
            None => {}
        }
        Ok(())
    }

    fn check_list(&self, l: &List) -> Result<(), Error> {
        if !l.call.check("list")?.is_empty() {
            return Err(bad(
                "list",
                "a list call is not about one key and takes no placeholders",
            ));
        }
        for (what, p) in [
            ("items_pointer", &Some(l.items_pointer.clone())),
            ("name_pointer", &l.name_pointer),
            ("id_pointer", &l.id_pointer),
            ("lookup_name_pointer", &l.lookup_name_pointer),
        ] {
            check_pointer("list", what, p)?;
        }
        match (&l.lookup, &l.lookup_name_pointer) {
            (Some(call), Some(_)) => {
                let used = call.check("list.lookup")?;
                if !used.contains(&"KeyID") {
                    return Err(bad(
                        "list",
                        "'lookup' must address the key by '{{ .KeyID }}'",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(bad("list", "'lookup' needs 'lookup_name_pointer'"));
            }
            (None, Some(_)) => {
                return Err(bad("list", "'lookup_name_pointer' needs 'lookup'"));
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Whether the service makes the secret (an API key) rather than take mayfly's password.
    pub fn service_makes_secret(&self) -> bool {
        self.create.secret_pointer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tokens() -> Map<String, Value> {
        json!({
            "create": {"method": "POST", "path": "/v1/auth/token/create",
                       "body": {"display_name": "{{.Name}}", "ttl": "{{.TTLSeconds}}"},
                       "secret_pointer": "/auth/client_token",
                       "key_id_pointer": "/auth/accessor",
                       "expiry_pointer": "/auth/lease_duration", "expiry_format": "seconds"},
            "revoke": {"method": "POST", "path": "/v1/auth/token/revoke-accessor",
                       "body": {"accessor": "{{.KeyID}}"}},
            "list": {"method": "LIST", "path": "/v1/auth/token/accessors",
                     "items_pointer": "/data/keys",
                     "lookup": {"method": "POST", "path": "/v1/auth/token/lookup-accessor",
                                "body": {"accessor": "{{.KeyID}}"}},
                     "lookup_name_pointer": "/data/meta/mayfly_name"}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn refused(mut settings: Map<String, Value>, field: &str, v: Value, says: &str) {
        settings.insert(field.into(), v);
        let err = RoleSpec::parse(&settings).unwrap_err().to_string();
        assert!(err.contains(says), "expected '{says}' in: {err}");
    }

    #[test]
    fn a_token_service_role_parses() {
        let spec = RoleSpec::parse(&tokens()).unwrap();
        assert!(spec.service_makes_secret());
        assert_eq!(spec.create.expiry_format, ExpiryFormat::Seconds);
        assert!(spec.list.unwrap().lookup.is_some());
    }

    #[test]
    fn bad_roles_are_refused_by_field() {
        let t = tokens();
        refused(
            t.clone(),
            "create",
            json!({"method": "GET"}),
            "missing field `path`",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "FETCH", "path": "/x",
            "secret_pointer": "/a", "body": {"n": "{{.Name}}"}}),
            "method 'FETCH'",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "POST", "path": "x",
            "secret_pointer": "/a"}),
            "must start with '/'",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "POST", "path": "/x", "oops": 1}),
            "unknown field `oops`",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "POST", "path": "/x",
            "secret_pointer": "/a"}),
            "mayfly's mark",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "POST", "path": "/x/{{.Name}}"}),
            "must take mayfly's password",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "POST", "path": "/x/{{.Name}}",
            "secret_pointer": "a"}),
            "not a JSON pointer",
        );
        refused(
            t.clone(),
            "revoke",
            json!({"method": "DELETE", "path": "/keys"}),
            "must address the key",
        );
        refused(
            t.clone(),
            "revoke",
            json!({"method": "DELETE", "path": "/k/{{.Password}}"}),
            "only in a body",
        );
        refused(
            t.clone(),
            "create",
            json!({"method": "POST", "path": "/x/{{.Name}}",
            "headers": {"X-Bad Name": "1"}, "secret_pointer": "/a"}),
            "header name",
        );
        let mut no_list = t.clone();
        no_list.remove("list");
        let err = RoleSpec::parse(&no_list).unwrap_err().to_string();
        assert!(err.contains("field 'list'"), "{err}");
        refused(
            t,
            "list",
            json!({"method": "GET", "path": "/k/{{.Name}}"}),
            "takes no placeholders",
        );
        let err = RoleSpec::parse(&Map::new()).unwrap_err().to_string();
        assert!(err.contains("field 'create': is required"), "{err}");
    }
}
