//! The `rabbitmq` kind: a preset of the HTTP machinery for RabbitMQ's management API. A role
//! gives `tags` and per-vhost permissions as OpenBao's `rabbitmq` engine takes them; the calls
//! that create, grant, list and delete users follow from those.

use std::sync::Arc;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::redact::percent_encode;
use mayfly::{Backend, Error, ExpiryEnforcement, Target};
use serde_json::{Map, Value, json};

use crate::backend::{DEFAULT_TEMPLATE, check_base_url, client_fields, validate_client_fields};
use crate::spec::{Call, Create, List, RoleSpec};
use crate::target::{HttpTarget, Preset};

pub struct RabbitMq;

/// The connection as the HTTP machinery sees it: `connection_uri` is the base URL, and the
/// admin user logs in with basic auth.
fn as_http(config: &ConnectionConfig) -> ConnectionConfig {
    let mut http = config.clone();
    let uri = config.setting_str("connection_uri").unwrap_or_default();
    http.settings.insert("base_url".into(), json!(uri));
    http.settings.insert("auth_type".into(), json!("basic"));
    http
}

/// The permissions of one vhost, as OpenBao's `vhosts` field gives them.
fn permissions(field: &str, vhosts: &Value, keys: &[&str]) -> Result<Vec<(String, Value)>, Error> {
    let bad = |msg: String| Error::bad_request(format!("field '{field}': {msg}"));
    let Value::Object(map) = vhosts else {
        return Err(bad("expected a JSON object of vhost names".into()));
    };
    let mut out = Vec::new();
    for (vhost, perms) in map {
        no_placeholders(field, vhost)?;
        let Value::Object(p) = perms else {
            return Err(bad(format!("vhost '{vhost}': expected an object")));
        };
        for (k, v) in p {
            if !keys.contains(&k.as_str()) {
                return Err(bad(format!(
                    "vhost '{vhost}': unknown key '{k}', expected {}",
                    keys.join(", ")
                )));
            }
            no_placeholders(
                field,
                v.as_str().ok_or_else(|| {
                    bad(format!(
                        "vhost '{vhost}': '{k}' must be a string (a regular expression)"
                    ))
                })?,
            )?;
        }
        out.push((vhost.clone(), perms.clone()));
    }
    Ok(out)
}

/// The preset's values are literal: `{{` in them would be read as a placeholder.
fn no_placeholders(field: &str, text: &str) -> Result<(), Error> {
    if text.contains("{{") {
        return Err(Error::bad_request(format!(
            "field '{field}': '{{{{' is not allowed in '{}'",
            text.escape_default()
        )));
    }
    Ok(())
}

fn call(method: &str, path: String, body: Option<Value>) -> Call {
    Call {
        method: method.into(),
        path,
        headers: Map::new(),
        body,
    }
}

/// The calls of a rabbitmq role.
pub fn spec(settings: &Map<String, Value>) -> Result<RoleSpec, Error> {
    let tags = match settings.get("tags") {
        Some(Value::Array(t)) => t
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    no_placeholders("tags", &tags)?;
    let empty = json!({});
    let vhosts = permissions(
        "vhosts",
        settings.get("vhosts").unwrap_or(&empty),
        &["configure", "write", "read"],
    )?;
    let mut post_create: Vec<Call> = vhosts
        .into_iter()
        .map(|(vhost, perms)| {
            let path = format!("/api/permissions/{}/{{{{.Name}}}}", percent_encode(&vhost));
            call("PUT", path, Some(perms))
        })
        .collect();
    // vhost_topics: {"vhost": {"exchange": {"write": "...", "read": "..."}}}.
    if let Some(Value::Object(topics)) = settings.get("vhost_topics") {
        for (vhost, exchanges) in topics {
            for (exchange, perms) in permissions("vhost_topics", exchanges, &["write", "read"])? {
                let mut body = perms.as_object().cloned().unwrap_or_default();
                body.insert("exchange".into(), json!(exchange));
                no_placeholders("vhost_topics", vhost)?;
                let path = format!(
                    "/api/topic-permissions/{}/{{{{.Name}}}}",
                    percent_encode(vhost)
                );
                post_create.push(call("PUT", path, Some(Value::Object(body))));
            }
        }
    }
    Ok(RoleSpec {
        create: Create {
            call: call(
                "PUT",
                "/api/users/{{.Name}}".into(),
                Some(json!({"password": "{{.Password}}", "tags": tags})),
            ),
            secret_pointer: None,
            key_id_pointer: None,
            expiry_pointer: None,
            expiry_format: Default::default(),
        },
        post_create,
        revoke: call("DELETE", "/api/users/{{.Name}}".into(), None),
        renew: None,
        list: Some(List {
            call: call("GET", "/api/users?columns=name".into(), None),
            items_pointer: String::new(),
            name_pointer: Some("/name".into()),
            id_pointer: None,
            lookup: None,
            lookup_name_pointer: None,
        }),
    })
}

#[async_trait]
impl Backend for RabbitMq {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn default_username_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn expiry_enforcement(&self) -> ExpiryEnforcement {
        ExpiryEnforcement::SchedulerOnly
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        let mut fields = vec![
            FieldDef::new(
                "connection_uri",
                FieldType::String,
                "The URL of RabbitMQ's management API, e.g. http://127.0.0.1:15672.",
            ),
            FieldDef::new(
                "username",
                FieldType::String,
                "The administrator mayfly creates users as.",
            ),
            FieldDef::new("password", FieldType::String, "The password of that user.").secret(),
        ];
        fields.extend(client_fields());
        fields
    }

    fn reach(&self, config: &ConnectionConfig) -> mayfly::Reach {
        crate::backend::client_reach(config, "connection_uri")
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        check_base_url("connection_uri", config.setting_str("connection_uri"))?;
        if config.setting_str("username").is_none_or(str::is_empty) {
            return Err(Error::bad_request(
                "field 'username' is required: the administrator mayfly creates users as",
            ));
        }
        validate_client_fields(&as_http(config))
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        HttpTarget::new(&as_http(config), Preset::RabbitMq)?
            .verify("/api/whoami")
            .await
            .map_err(|e| Error::bad_request(format!("cannot use RabbitMQ: {e}")))
    }

    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        Ok(Arc::new(HttpTarget::new(
            &as_http(config),
            Preset::RabbitMq,
        )?))
    }

    fn role_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "tags",
                FieldType::StringList,
                "RabbitMQ user tags (management, monitoring, administrator…), comma-separated.",
            )
            .default(FieldValue::StringList(Vec::new())),
            FieldDef::new(
                "vhosts",
                FieldType::Json,
                "Permissions per vhost: {\"/\": {\"configure\": \".*\", \"write\": \".*\", \
                 \"read\": \".*\"}}.",
            ),
            FieldDef::new(
                "vhost_topics",
                FieldType::Json,
                "Topic permissions per vhost and exchange: {\"/\": {\"amq.topic\": \
                 {\"write\": \".*\", \"read\": \".*\"}}}.",
            ),
        ]
    }

    fn validate_role(&self, settings: &Map<String, Value>, _: &str) -> Result<(), Error> {
        spec(settings).map(|_| ())
    }

    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        crate::backend::check_key_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_become_calls() {
        let settings = json!({
            "tags": ["management", "monitoring"],
            "vhosts": {"/": {"configure": ".*", "write": "^mf\\.", "read": ".*"}},
            "vhost_topics": {"prod/eu": {"amq.topic": {"write": ".*", "read": ".*"}}}
        });
        let s = spec(settings.as_object().unwrap()).unwrap();
        assert_eq!(s.create.call.path, "/api/users/{{.Name}}");
        assert_eq!(
            s.create.call.body,
            Some(json!({"password": "{{.Password}}", "tags": "management,monitoring"}))
        );
        assert_eq!(s.post_create[0].path, "/api/permissions/%2F/{{.Name}}");
        assert_eq!(
            s.post_create[1].path,
            "/api/topic-permissions/prod%2Feu/{{.Name}}"
        );
        assert_eq!(
            s.post_create[1].body,
            Some(json!({"exchange": "amq.topic", "write": ".*", "read": ".*"}))
        );
        assert_eq!(s.revoke.method, "DELETE");
    }

    #[test]
    fn bad_permissions_are_refused_by_field() {
        for (settings, says) in [
            (
                json!({"vhosts": {"/": {"conf": ".*"}}}),
                "unknown key 'conf'",
            ),
            (json!({"vhosts": {"/": {"read": 1}}}), "must be a string"),
            (json!({"vhosts": ["/"]}), "expected a JSON object"),
            (json!({"tags": "a{{.Password}}"}), "field 'tags'"),
            (
                json!({"vhost_topics": {"/": {"amq.topic": {"configure": ".*"}}}}),
                "field 'vhost_topics'",
            ),
        ] {
            let err = spec(settings.as_object().unwrap()).unwrap_err().to_string();
            assert!(err.contains(says), "expected '{says}' in {err}");
        }
    }
}
