//! The `redis` kind: each credential is an ACL user (`ACL SETUSER`), on every configured node.
//!
//! Nodes that do not replicate ACLs to each other (independent servers, or the nodes of a
//! cluster, whose ACLs are per node) must each hold the user: it is created on all or on none,
//! and revocation succeeds only once every node is rid of it, so a node that was down is
//! cleaned by the scheduler's retries when it returns.
//!
//! Redis has no per-user expiry: the scheduler is the guarantee.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::{Backend, Error, ExpiryEnforcement, Target};
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::resp::Tls;
use crate::target::RedisTarget;

/// How long connecting to a node, or one command (or pipeline), may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// The rules of a role that gives none: read any key, and PING (which clients send to check
/// their connections; it is not in @read).
const DEFAULT_RULES: [&str; 3] = ["~*", "+@read", "+ping"];
/// Rules a role may not give: mayfly alone decides whether the user is on and its password.
const IDENTITY_RULES: [&str; 5] = ["on", "off", "nopass", "resetpass", "reset"];

pub struct Redis;

#[async_trait]
impl Backend for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["redis-database-plugin", "valkey", "valkey-database-plugin"]
    }

    fn expiry_enforcement(&self) -> ExpiryEnforcement {
        ExpiryEnforcement::SchedulerOnly
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "host",
                FieldType::String,
                "The Redis server's host name or address.",
            ),
            FieldDef::new("port", FieldType::Int, "The Redis server's port.")
                .default(FieldValue::Int(6379)),
            FieldDef::new(
                "nodes",
                FieldType::StringList,
                "Further nodes as host:port, each holding its own ACL (independent servers or \
                 cluster nodes). Users are created on every node and removed from every node.",
            ),
            FieldDef::new(
                "username",
                FieldType::String,
                "The ACL user mayfly connects as (it needs +acl and +client); empty is \
                 'default'.",
            ),
            FieldDef::new("password", FieldType::String, "The password of that user.").secret(),
            FieldDef::new(
                "max_open_connections",
                FieldType::Int,
                "The most idle connections mayfly keeps to each node.",
            )
            .default(FieldValue::Int(4)),
            FieldDef::new(
                "connection_url",
                FieldType::String,
                "OpenBao's valkey plugin's other form: redis://, rediss://, valkey:// or \
                 valkeys://user:password@host:port (the s forms turn tls on). Kept as host, \
                 port, username, tls and the write-only password; not with those fields.",
            ),
            FieldDef::new(
                "tls",
                FieldType::Bool,
                "Connect to every node over TLS (as OpenBao's redis plugin). The node's \
                 certificate is checked against ca_cert, or the system's CAs, and must name the \
                 host mayfly connects to.",
            ),
            FieldDef::new(
                "ca_cert",
                FieldType::String,
                "With tls: PEM certificates of the CAs that sign the nodes' certificates.",
            ),
            FieldDef::new(
                "insecure_tls",
                FieldType::Bool,
                "With tls: take any certificate from the nodes (encrypted, but not \
                 authenticated).",
            ),
            FieldDef::new(
                "tls_certificate",
                FieldType::String,
                "With tls: PEM client certificate, for nodes that ask for one \
                 (tls-auth-clients).",
            ),
            FieldDef::new(
                "private_key",
                FieldType::String,
                "With tls: the PEM private key of tls_certificate.",
            )
            .secret(),
        ]
    }

    fn normalize_connection(
        &self,
        config: &mut ConnectionConfig,
        given: &Map<String, Value>,
    ) -> Result<(), Error> {
        let Some(raw) = config.settings.remove("connection_url") else {
            return Ok(());
        };
        let Some(raw) = raw.as_str().filter(|u| !u.is_empty()) else {
            return Ok(());
        };
        let url = url::Url::parse(raw).map_err(|e| {
            Error::bad_request(format!(
                "field 'connection_url': expected valkey://user:password@host:port ({e})"
            ))
        })?;
        let tls = match url.scheme() {
            "redis" | "valkey" => false,
            "rediss" | "valkeys" => true,
            other => {
                return Err(Error::bad_request(format!(
                    "field 'connection_url': expected the scheme redis, rediss, valkey or \
                     valkeys, got {other}"
                )));
            }
        };
        const FIELDS: [&str; 5] = ["host", "port", "username", "password", "tls"];
        if let Some(field) = FIELDS.into_iter().find(|f| given.contains_key(*f)) {
            return Err(Error::bad_request(format!(
                "field 'connection_url': give it or '{field}' and the other connection fields, \
                 not both"
            )));
        }
        // The URL replaces what the connection said before.
        for field in FIELDS {
            config.settings.remove(field);
            config.secrets.remove(field);
        }
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let decode = mayfly::redact::percent_decode;
        config.settings.insert("host".into(), Value::from(host));
        config
            .settings
            .insert("port".into(), Value::from(url.port().unwrap_or(6379)));
        if !url.username().is_empty() {
            config
                .settings
                .insert("username".into(), Value::from(decode(url.username())));
        }
        if let Some(password) = url.password() {
            config
                .secrets
                .insert("password".into(), SecretString::from(decode(password)));
        }
        if tls {
            config.settings.insert("tls".into(), Value::Bool(true));
        }
        Ok(())
    }

    fn reach(&self, config: &ConnectionConfig) -> mayfly::Reach {
        let mut reach = ["host", "port", "nodes"]
            .into_iter()
            .fold(mayfly::Reach::default(), |r, f| r.with_setting(config, f));
        // Plain text, then TLS with any certificate, then TLS with the certificate checked.
        reach.server_check = match (flag(config, "tls"), flag(config, "insecure_tls")) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => 2,
        };
        reach
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        nodes(config)?;
        tls(config)?;
        match config.setting_i64("max_open_connections") {
            Some(n) if !(1..=100).contains(&n) => Err(Error::bad_request(format!(
                "field 'max_open_connections': expected an integer from 1 to 100, got {n}"
            ))),
            _ => Ok(()),
        }
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        RedisTarget::new(config)?.ping_every_node().await
    }

    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        Ok(RedisTarget::shared(config)?)
    }

    fn role_fields(&self) -> Vec<FieldDef> {
        let openbao = "Accepted as OpenBao's engine takes it.";
        vec![
            FieldDef::new(
                "creation_statements",
                FieldType::Statements,
                "The user's ACL rules, as OpenBao's redis plugin takes them (a JSON list such as \
                 [\"~cache:*\", \"+get\"]) or space-separated (~cache:* +get). Default: ~* \
                 +@read +ping, read-only on every key. mayfly sets the password and turns the \
                 user on itself.",
            ),
            FieldDef::new("revocation_statements", FieldType::Statements, openbao)
                .unused("a Redis user is removed with ACL DELUSER on every node"),
            FieldDef::new("renew_statements", FieldType::Statements, openbao).unused(
                "Redis users have no expiry of their own; mayfly revokes them at the deadline",
            ),
            FieldDef::new("rollback_statements", FieldType::Statements, openbao).unused(
                "a Redis user is made in one ACL SETUSER, which leaves nothing to roll back",
            ),
        ]
        .into_iter()
        .chain(mayfly::credential_type::fields())
        .collect()
    }

    fn validate_role(&self, settings: &Map<String, Value>, _: &str) -> Result<(), Error> {
        mayfly::credential_type::check(self.kind(), settings)?;
        rules(settings).map(|_| ())
    }

    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.len() > 128 {
            return Err(Error::bad_request(format!(
                "a Redis user name must be 1 to 128 bytes, got {}",
                name.len()
            )));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::bad_request(format!(
                "user name '{}' contains white space or a control character",
                name.escape_default()
            )));
        }
        Ok(())
    }
}

/// Every node as `host:port`: `host`/`port` first, then `nodes`.
fn flag(config: &ConnectionConfig, field: &str) -> bool {
    config
        .settings
        .get(field)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The connection's TLS settings, `None` without `tls`; errors name the field at fault.
pub(crate) fn tls(config: &ConnectionConfig) -> Result<Option<Tls>, Error> {
    let set = |field: &str| config.setting_str(field).filter(|s| !s.is_empty());
    if !flag(config, "tls") {
        let stray = ["ca_cert", "insecure_tls", "tls_certificate"]
            .into_iter()
            .find(|f| set(f).is_some() || flag(config, f));
        return match stray {
            Some(f) => Err(Error::bad_request(format!(
                "field '{f}' needs tls=true: without it mayfly talks to Redis in plain text"
            ))),
            None => Ok(None),
        };
    }
    let client = mayfly_tls::client_config(&mayfly_tls::ClientTls {
        ca: set("ca_cert").map(|pem| ("ca_cert", pem)),
        certificate: set("tls_certificate"),
        key: config.secret("private_key").filter(|s| !s.is_empty()),
        insecure: flag(config, "insecure_tls"),
    })?;
    Ok(Some(Tls::new(client)))
}

pub(crate) fn nodes(config: &ConnectionConfig) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    if let Some(host) = config.setting_str("host").filter(|h| !h.is_empty()) {
        let port = config.setting_i64("port").unwrap_or(6379);
        if !(1..=65535).contains(&port) {
            return Err(Error::bad_request(format!(
                "field 'port': expected a port from 1 to 65535, got {port}"
            )));
        }
        check_host("host", host)?;
        out.push(format!("{host}:{port}"));
    }
    let extra = config
        .settings
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for node in extra {
        let (host, port) = node.rsplit_once(':').ok_or_else(|| {
            Error::bad_request(format!(
                "field 'nodes': expected host:port, got '{}'",
                node.escape_default()
            ))
        })?;
        check_host("nodes", host)?;
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(Error::bad_request(format!(
                "field 'nodes': expected a port from 1 to 65535 in '{}'",
                node.escape_default()
            )));
        }
        out.push(node.to_owned());
    }
    if out.is_empty() {
        return Err(Error::bad_request(
            "field 'host' is required (or 'nodes'): the Redis server to manage users on",
        ));
    }
    let distinct: BTreeSet<&String> = out.iter().collect();
    if distinct.len() != out.len() {
        return Err(Error::bad_request(
            "field 'nodes': a node is listed twice (host and port count as a node)",
        ));
    }
    Ok(out)
}

fn check_host(field: &str, host: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "field '{field}': expected a host name or address, got '{}'",
            host.escape_default()
        )))
    }
}

/// A role's ACL rules, checked.
pub(crate) fn rules(settings: &Map<String, Value>) -> Result<Vec<String>, Error> {
    let statements: Vec<&str> = settings
        .get("creation_statements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    for s in statements {
        if s.trim_start().starts_with('[') {
            let list: Vec<String> = serde_json::from_str(s).map_err(|e| {
                Error::bad_request(format!(
                    "field 'creation_statements': expected a JSON list of ACL rules such as \
                     [\"~*\", \"+@read\"] ({e})"
                ))
            })?;
            out.extend(list);
        } else {
            out.extend(s.split_whitespace().map(str::to_owned));
        }
    }
    if out.is_empty() {
        out = DEFAULT_RULES.map(String::from).to_vec();
    }
    for rule in &out {
        let lower = rule.to_ascii_lowercase();
        if rule.is_empty() || rule.chars().any(char::is_whitespace) {
            return Err(Error::bad_request(format!(
                "field 'creation_statements': rule '{}' is empty or holds white space",
                rule.escape_default()
            )));
        }
        if IDENTITY_RULES.contains(&lower.as_str()) || rule.starts_with(['>', '<', '#', '!']) {
            return Err(Error::bad_request(format!(
                "field 'creation_statements': rule '{}' sets the user's password or state, \
                 which mayfly controls; give only key, channel and command rules",
                if rule.starts_with(['>', '<', '#', '!']) {
                    &rule[..1]
                } else {
                    rule
                }
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("creation_statements".into(), v);
        m
    }

    #[test]
    fn rules_take_both_forms_and_refuse_identity_rules() {
        assert_eq!(rules(&Map::new()).unwrap(), ["~*", "+@read", "+ping"]);
        assert_eq!(
            rules(&settings(json!(["[\"~cache:*\", \"+get\"]"]))).unwrap(),
            ["~cache:*", "+get"]
        );
        assert_eq!(
            rules(&settings(json!(["~a:* +set", "+get"]))).unwrap(),
            ["~a:*", "+set", "+get"]
        );
        for bad in [">secret", "nopass", "ON", "reset", "#abc"] {
            let e = rules(&settings(json!([bad]))).unwrap_err().to_string();
            assert!(e.contains("mayfly controls"), "{bad}: {e}");
            assert!(
                !e.contains("secret"),
                "the rule's password is not echoed: {e}"
            );
        }
        assert!(rules(&settings(json!(["[\"~*\""]))).is_err());
    }
}
