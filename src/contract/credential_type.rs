//! OpenBao's `credential_type` and `credential_config` on database roles. mayfly's database
//! roles issue passwords, so `password` is their one type, and the `password_policy` of its
//! config is the role's password policy. Kinds whose target makes the secret (AWS) have a
//! `credential_type` of their own and do not take these.

use serde_json::{Map, Value};

use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType};

pub const CREDENTIAL_TYPE: &str = "credential_type";
pub const CREDENTIAL_CONFIG: &str = "credential_config";
const PASSWORD: &str = "password";
const POLICY: &str = "password_policy";

/// The two fields, for the role fields of kinds that issue passwords.
pub fn fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            CREDENTIAL_TYPE,
            FieldType::String,
            "OpenBao's credential type: 'password', the one this kind issues.",
        ),
        FieldDef::new(
            CREDENTIAL_CONFIG,
            FieldType::StringMap,
            "OpenBao's credential settings: for 'password', 'password_policy' (a host password \
             policy, as the role's own password_policy).",
        ),
    ]
}

/// Checks the two fields in a role's `settings` for kind `kind`.
pub fn check(kind: &str, settings: &Map<String, Value>) -> Result<(), Error> {
    if let Some(t) = settings.get(CREDENTIAL_TYPE).and_then(Value::as_str)
        && t != PASSWORD
    {
        return Err(Error::bad_request(format!(
            "field '{CREDENTIAL_TYPE}': roles of kind '{kind}' issue passwords; expected \
             '{PASSWORD}', got '{t}'"
        )));
    }
    if let Some(config) = settings.get(CREDENTIAL_CONFIG).and_then(Value::as_object)
        && let Some(key) = config.keys().find(|k| *k != POLICY)
    {
        return Err(Error::bad_request(format!(
            "field '{CREDENTIAL_CONFIG}': '{key}' is not a setting of password credentials; \
             the one setting is '{POLICY}'"
        )));
    }
    Ok(())
}

/// The password policy `credential_config` names in a role's `settings`, if any.
pub fn password_policy(settings: &Map<String, Value>) -> Option<&str> {
    settings
        .get(CREDENTIAL_CONFIG)?
        .get(POLICY)?
        .as_str()
        .filter(|p| !p.is_empty())
}
