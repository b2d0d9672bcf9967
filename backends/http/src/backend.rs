//! The `http` kind's settings: the connection (base URL, TLS, admin credential, timeouts) and
//! the roles (the calls), checked offline.

use std::sync::Arc;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::{Backend, Error, ExpiryEnforcement, Target};
use serde_json::{Map, Value};

use crate::client::{Client, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_SECS};
use crate::spec::RoleSpec;
use crate::target::{HttpTarget, Preset};

pub struct Http;

/// Names carry the mount's mark and the credential id, so that the orphan scan finds a key whose
/// creation was cut off, and the service's own logs name the credential.
pub const DEFAULT_TEMPLATE: &str =
    r#"{{ printf "%s%s-%s" .Mark (.RoleName | truncate 16) .CredentialID | lowercase }}"#;

/// Where an HTTP connection sends its credential: the URL in `url_field`, and the CA it trusts;
/// checked strictly unless `insecure_skip_verify`.
pub fn client_reach(config: &ConnectionConfig, url_field: &str) -> mayfly::Reach {
    let insecure = config
        .settings
        .get("insecure_skip_verify")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    mayfly::Reach {
        server_check: if insecure { 0 } else { 1 },
        ..Default::default()
    }
    .with_setting(config, url_field)
    .with_setting(config, "tls_ca")
}

/// The connection fields every HTTP service takes (the `rabbitmq` preset too).
pub fn client_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "tls_ca",
            FieldType::String,
            "PEM certificates of the CAs the service's certificate is checked against; empty \
             uses the system's.",
        ),
        FieldDef::new(
            "tls_certificate",
            FieldType::String,
            "PEM client certificate, for services that ask for one.",
        ),
        FieldDef::new(
            "private_key",
            FieldType::String,
            "PEM private key of tls_certificate.",
        )
        .secret(),
        FieldDef::new(
            "insecure_skip_verify",
            FieldType::Bool,
            "Accept any server certificate. Only for a test service whose CA cannot be given.",
        )
        .default(FieldValue::Bool(false)),
        FieldDef::new(
            "timeout",
            FieldType::Duration,
            "The longest one call may take, answer included.",
        )
        .default(FieldValue::Duration(DEFAULT_TIMEOUT_SECS as u64)),
        FieldDef::new(
            "max_retries",
            FieldType::Int,
            "Retries of a call that failed on its way (0 to 10), with a growing pause. A call \
             that creates is retried only when it never reached the service.",
        )
        .default(FieldValue::Int(DEFAULT_MAX_RETRIES)),
    ]
}

pub fn check_base_url(field: &str, url: Option<&str>) -> Result<(), Error> {
    let url = url.unwrap_or_default();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !url.contains(['?', '#']) => Ok(()),
        _ => Err(Error::bad_request(format!(
            "field '{field}': expected an http:// or https:// URL without query, such as \
             https://api.example.com/admin, got '{}'",
            url.escape_default()
        ))),
    }
}

/// The checks of [`client_fields`] and the admin credential, without contacting the service.
pub fn validate_client_fields(config: &ConnectionConfig) -> Result<(), Error> {
    if let Some(n) = config.setting_i64("max_retries")
        && !(0..=10).contains(&n)
    {
        return Err(Error::bad_request(format!(
            "field 'max_retries': expected an integer from 0 to 10, got {n}"
        )));
    }
    if let Some(t) = config.setting_i64("timeout")
        && !(1..=300).contains(&t)
    {
        return Err(Error::bad_request(format!(
            "field 'timeout': expected 1 second to 5 minutes, got {t}s"
        )));
    }
    Client::new(config).map(|_| ())
}

/// A key name as services take it in a URL path and a JSON string: printable ASCII without
/// spaces, at most 128 characters.
pub fn check_key_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::bad_request(format!(
            "a key name must be 1 to 128 printable ASCII characters without spaces, got '{}'",
            name.escape_default()
        )));
    }
    Ok(())
}

#[async_trait]
impl Backend for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn default_username_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn expiry_enforcement(&self) -> ExpiryEnforcement {
        ExpiryEnforcement::SchedulerOnly
    }

    fn lists_by_role(&self) -> bool {
        true
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        let mut fields = vec![
            FieldDef::new(
                "base_url",
                FieldType::String,
                "The service's admin API, e.g. https://api.example.com/admin; each call's path \
                 is appended to it.",
            ),
            FieldDef::new(
                "auth_type",
                FieldType::String,
                "How mayfly authenticates: none, bearer (token), basic (username, password) or \
                 header (auth_header: token).",
            )
            .default(FieldValue::String("none".into())),
            FieldDef::new(
                "token",
                FieldType::String,
                "The bearer token, or the value of auth_header.",
            )
            .secret(),
            FieldDef::new(
                "auth_header",
                FieldType::String,
                "The header that carries token with auth_type header, e.g. X-Vault-Token.",
            ),
            FieldDef::new("username", FieldType::String, "The user of basic auth."),
            FieldDef::new("password", FieldType::String, "The password of basic auth.").secret(),
            FieldDef::new(
                "verify_path",
                FieldType::String,
                "A path that answers 2xx to mayfly's credential, checked when the connection \
                 is written; empty only checks that base_url answers.",
            ),
        ];
        fields.extend(client_fields());
        fields
    }

    fn reach(&self, config: &ConnectionConfig) -> mayfly::Reach {
        client_reach(config, "base_url")
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        check_base_url("base_url", config.setting_str("base_url"))?;
        if let Some(p) = config.setting_str("verify_path").filter(|p| !p.is_empty())
            && !p.starts_with('/')
        {
            return Err(Error::bad_request(format!(
                "field 'verify_path': expected a path starting with '/', got '{}'",
                p.escape_default()
            )));
        }
        validate_client_fields(config)
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        HttpTarget::new(config, Preset::Declared)?
            .verify(config.setting_str("verify_path").unwrap_or_default())
            .await
            .map_err(|e| Error::bad_request(format!("cannot use the service: {e}")))
    }

    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        Ok(Arc::new(HttpTarget::new(config, Preset::Declared)?))
    }

    fn role_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "create",
                FieldType::Json,
                "The call that creates a key: method, path, headers, body, and the JSON \
                 pointers secret_pointer, key_id_pointer, expiry_pointer (with expiry_format \
                 unix, rfc3339 or seconds).",
            ),
            FieldDef::new(
                "post_create",
                FieldType::Json,
                "Calls made after create, in order (permissions); if one fails, the key is \
                 revoked.",
            ),
            FieldDef::new(
                "revoke",
                FieldType::Json,
                "The call that deletes a key, addressed by {{ .KeyID }}; 404 and 410 mean it is \
                 already gone.",
            ),
            FieldDef::new(
                "renew",
                FieldType::Json,
                "The call that moves a key's expiry on the service, if it has one.",
            ),
            FieldDef::new(
                "list",
                FieldType::Json,
                "The call that lists keys, for the orphan scan: items_pointer, name_pointer, \
                 id_pointer, or lookup with lookup_name_pointer.",
            ),
        ]
    }

    fn validate_role(&self, settings: &Map<String, Value>, _: &str) -> Result<(), Error> {
        RoleSpec::parse(settings).map(|_| ())
    }

    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        check_key_name(name)
    }
}
