//! A role's AWS settings, read once from the stored JSON and checked: the one place that knows
//! which field each credential type takes.

use std::collections::BTreeMap;

use mayfly::Error;
use serde_json::{Map, Value};

/// What STS call issues a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialType {
    AssumedRole,
    FederationToken,
    SessionToken,
}

impl CredentialType {
    pub const ALL: [CredentialType; 3] = [
        CredentialType::AssumedRole,
        CredentialType::FederationToken,
        CredentialType::SessionToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CredentialType::AssumedRole => "assumed_role",
            CredentialType::FederationToken => "federation_token",
            CredentialType::SessionToken => "session_token",
        }
    }

    /// The longest session AWS issues of this type, in seconds.
    pub fn max_duration(self) -> u64 {
        match self {
            CredentialType::AssumedRole => 12 * 3600,
            CredentialType::FederationToken | CredentialType::SessionToken => 36 * 3600,
        }
    }

    /// The longest session name AWS takes (RoleSessionName 64, federated user Name 32).
    pub fn max_name_len(self) -> usize {
        match self {
            CredentialType::FederationToken => 32,
            _ => 64,
        }
    }
}

/// A role's settings, by credential type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSettings {
    pub credential_type: CredentialType,
    /// assumed_role: the role assumed (exactly one).
    pub role_arn: Option<String>,
    /// The inline session policy (assumed_role's `session_policy`, federation_token's
    /// `policy_document`).
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub session_tags: BTreeMap<String, String>,
    pub external_id: Option<String>,
    pub source_identity: Option<String>,
}

fn str_field<'a>(s: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    s.get(name)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

fn list_field(s: &Map<String, Value>, name: &str) -> Vec<String> {
    s.get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The fields each type takes; any other AWS field set on the role is refused by name.
fn applies(t: CredentialType, field: &str) -> bool {
    match field {
        "credential_type" | "policy_arns" => true,
        "role_arns" | "session_policy" | "external_id" | "source_identity" => {
            t == CredentialType::AssumedRole
        }
        "policy_document" => t == CredentialType::FederationToken,
        "session_tags" => t != CredentialType::SessionToken,
        _ => true,
    }
}

pub const ROLE_FIELDS: [&str; 8] = [
    "credential_type",
    "role_arns",
    "session_policy",
    "policy_document",
    "policy_arns",
    "session_tags",
    "external_id",
    "source_identity",
];

impl RoleSettings {
    /// Reads and checks the settings. Errors name the field at fault.
    pub fn parse(s: &Map<String, Value>) -> Result<RoleSettings, Error> {
        let type_name = str_field(s, "credential_type").ok_or_else(|| {
            Error::bad_request(
                "field 'credential_type' is required: one of assumed_role, federation_token, \
                 session_token",
            )
        })?;
        let credential_type = CredentialType::ALL
            .into_iter()
            .find(|t| t.name() == type_name)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "field 'credential_type': expected assumed_role, federation_token or \
                     session_token, got '{}'",
                    type_name.escape_default()
                ))
            })?;
        for field in ROLE_FIELDS {
            let set = s.get(field).is_some_and(|v| match v {
                Value::String(x) => !x.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::Null => false,
                _ => true,
            });
            if set && !applies(credential_type, field) {
                return Err(Error::bad_request(format!(
                    "field '{field}' does not apply to credential_type '{}'",
                    credential_type.name()
                )));
            }
        }

        let role_arns = list_field(s, "role_arns");
        let role_arn = match (credential_type, role_arns.as_slice()) {
            (CredentialType::AssumedRole, [one]) => {
                check_arn("role_arns", one, ":role/")?;
                Some(one.clone())
            }
            (CredentialType::AssumedRole, []) => {
                return Err(Error::bad_request(
                    "field 'role_arns' is required for credential_type 'assumed_role': the ARN \
                     of the IAM role to assume",
                ));
            }
            (CredentialType::AssumedRole, _) => {
                return Err(Error::bad_request(
                    "field 'role_arns': expected exactly one role ARN (a role per ARN keeps \
                     each credential's role, and its revocation, unambiguous)",
                ));
            }
            _ => None,
        };
        let policy_field = match credential_type {
            CredentialType::AssumedRole => "session_policy",
            _ => "policy_document",
        };
        let policy = str_field(s, policy_field).map(str::to_owned);
        if let Some(p) = &policy {
            let parsed: Value = serde_json::from_str(p).map_err(|e| {
                Error::bad_request(format!(
                    "field '{policy_field}': expected an IAM policy document in JSON: {e}"
                ))
            })?;
            if !parsed.is_object() {
                return Err(Error::bad_request(format!(
                    "field '{policy_field}': expected a JSON object (an IAM policy document)"
                )));
            }
        }
        let policy_arns = list_field(s, "policy_arns");
        for arn in &policy_arns {
            check_arn("policy_arns", arn, ":policy/")?;
        }
        let session_tags: BTreeMap<String, String> = s
            .get("session_tags")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        for (k, v) in &session_tags {
            if k.to_ascii_lowercase().starts_with("mayfly-") {
                return Err(Error::bad_request(format!(
                    "field 'session_tags': key '{k}' is reserved: mayfly sets the mayfly-* tags"
                )));
            }
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                return Err(Error::bad_request(format!(
                    "field 'session_tags': key '{k}' must be 1 to 128 characters and its value \
                     at most 256"
                )));
            }
        }
        let external_id = str_field(s, "external_id").map(str::to_owned);
        if let Some(e) = &external_id
            && !(2..=1224).contains(&e.len())
        {
            return Err(Error::bad_request(
                "field 'external_id': expected 2 to 1224 characters",
            ));
        }
        let source_identity = str_field(s, "source_identity").map(str::to_owned);
        if let Some(id) = &source_identity
            && !(2..=64).contains(&id.len())
        {
            return Err(Error::bad_request(
                "field 'source_identity': expected 2 to 64 characters",
            ));
        }
        Ok(RoleSettings {
            credential_type,
            role_arn,
            policy,
            policy_arns,
            session_tags,
            external_id,
            source_identity,
        })
    }

    /// The name of the assumed role (the last part of its ARN's path).
    pub fn role_name(&self) -> Option<&str> {
        self.role_arn
            .as_deref()
            .and_then(|a| a.rsplit_once('/'))
            .map(|(_, name)| name)
    }
}

/// `arn:aws…:iam::ACCOUNT:role/…` (or `policy/`): enough to catch a pasted name or a typo.
fn check_arn(field: &str, arn: &str, kind: &str) -> Result<(), Error> {
    let ok = arn.starts_with("arn:")
        && arn.split(':').count() >= 6
        && arn.contains(kind)
        && !arn.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "field '{field}': expected an ARN such as arn:aws:iam::123456789012{kind}name, got \
             '{}'",
            arn.escape_default()
        )))
    }
}

/// Whether `name` is a session name AWS takes: `[\w+=,.@-]`.
pub fn valid_session_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RoleSettings, Error> {
        RoleSettings::parse(v.as_object().unwrap())
    }

    #[test]
    fn each_type_takes_its_own_fields() {
        let r = parse(json!({"credential_type": "assumed_role",
            "role_arns": ["arn:aws:iam::123456789012:role/path/app"],
            "session_policy": "{\"Version\":\"2012-10-17\",\"Statement\":[]}",
            "session_tags": {"team": "billing"}, "external_id": "ext-1"}))
        .unwrap();
        assert_eq!(r.role_name(), Some("app"));
        assert!(r.policy.is_some());
        let f = parse(json!({"credential_type": "federation_token",
            "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"]}))
        .unwrap();
        assert_eq!(f.credential_type, CredentialType::FederationToken);
        assert!(parse(json!({"credential_type": "session_token"})).is_ok());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases = [
            (json!({}), "credential_type"),
            (json!({"credential_type": "iam_user"}), "credential_type"),
            (json!({"credential_type": "assumed_role"}), "role_arns"),
            (
                json!({"credential_type": "assumed_role", "role_arns": ["app"]}),
                "role_arns",
            ),
            (
                json!({"credential_type": "assumed_role", "role_arns":
                    ["arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b"]}),
                "role_arns",
            ),
            (
                json!({"credential_type": "session_token", "role_arns": ["arn:aws:iam::1:role/a"]}),
                "role_arns",
            ),
            (
                json!({"credential_type": "federation_token", "policy_document": "{nope"}),
                "policy_document",
            ),
            (
                json!({"credential_type": "federation_token", "session_policy": "{}"}),
                "session_policy",
            ),
            (
                json!({"credential_type": "federation_token", "session_tags": {"mayfly-x": "1"}}),
                "session_tags",
            ),
            (
                json!({"credential_type": "federation_token", "policy_arns": ["ReadOnly"]}),
                "policy_arns",
            ),
            (
                json!({"credential_type": "assumed_role", "role_arns": ["arn:aws:iam::1:role/a"],
                    "external_id": "x"}),
                "external_id",
            ),
        ];
        for (input, field) in cases {
            let e = parse(input.clone()).unwrap_err().to_string();
            assert!(e.contains(&format!("'{field}'")), "{input}: {e}");
        }
    }

    #[test]
    fn session_names() {
        assert!(valid_session_name("mf-app-abc_1+=,.@"));
        assert!(!valid_session_name("mf app"));
        assert!(!valid_session_name("mf/app"));
    }
}
