//! The `aws` kind's settings: the connection (keys, region, endpoints) and the roles
//! (credential type and what each type takes), checked offline.

use std::sync::Arc;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::{Backend, Error, Target};
use serde_json::{Map, Value};

use crate::clients::{DEFAULT_MAX_RETRIES, DEFAULT_REGION};
use crate::duration::AWS_MIN_SECS;
use crate::settings::{RoleSettings, valid_session_name};
use crate::target::{AwsTarget, revocation_view};

pub struct Aws;

/// Session names carry the mount's mark, the role and 16 characters of the credential id, so
/// that CloudTrail and a deny statement name exactly one credential; at most 32 characters, a
/// federated user's limit.
const DEFAULT_TEMPLATE: &str =
    r#"{{ printf "%s%s-%s" .Mark (.RoleName | truncate 5) (.CredentialID | truncate 16) }}"#;

#[async_trait]
impl Backend for Aws {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn default_username_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn target_makes_secret(&self) -> bool {
        true
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "access_key",
                FieldType::String,
                "The access key id mayfly calls AWS with. With secret_key; leave both out to \
                 use the ambient credential chain (environment, profile, instance role).",
            ),
            FieldDef::new(
                "secret_key",
                FieldType::String,
                "The secret access key of access_key.",
            )
            .secret(),
            FieldDef::new("region", FieldType::String, "The AWS region.")
                .default(FieldValue::String(DEFAULT_REGION.into())),
            FieldDef::new(
                "sts_endpoint",
                FieldType::String,
                "The STS endpoint URL; empty uses the region's.",
            ),
            FieldDef::new(
                "iam_endpoint",
                FieldType::String,
                "The IAM endpoint URL; empty uses AWS's.",
            ),
            FieldDef::new(
                "max_retries",
                FieldType::Int,
                "Retries of a failed AWS call (0 to 10).",
            )
            .default(FieldValue::Int(DEFAULT_MAX_RETRIES)),
            FieldDef::new(
                "min_session_duration",
                FieldType::Duration,
                "The shortest session the STS endpoint issues: 900 seconds at AWS. Lower it \
                 only for an STS-compatible service that issues shorter sessions.",
            )
            .default(FieldValue::Int(AWS_MIN_SECS as i64)),
        ]
    }

    /// AWS signs its calls and never sends the secret key; still, a region or endpoint of
    /// someone else's would receive signed calls and answer them with its own keys.
    fn reach(&self, config: &ConnectionConfig) -> mayfly::Reach {
        ["region", "sts_endpoint", "iam_endpoint"]
            .into_iter()
            .fold(mayfly::Reach::default(), |r, f| r.with_setting(config, f))
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        let key = config
            .setting_str("access_key")
            .is_some_and(|k| !k.is_empty());
        let secret = config.secret("secret_key").is_some_and(|s| !s.is_empty());
        if key != secret {
            return Err(Error::bad_request(
                "fields 'access_key' and 'secret_key' go together: give both, or neither to \
                 use the ambient credential chain",
            ));
        }
        for field in ["sts_endpoint", "iam_endpoint"] {
            if let Some(url) = config.setting_str(field).filter(|u| !u.is_empty())
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(Error::bad_request(format!(
                    "field '{field}': expected an http:// or https:// URL, got '{}'",
                    url.escape_default()
                )));
            }
        }
        let region = config.setting_str("region").unwrap_or(DEFAULT_REGION);
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::bad_request(format!(
                "field 'region': expected a region such as us-east-1, got '{}'",
                region.escape_default()
            )));
        }
        if let Some(n) = config.setting_i64("max_retries")
            && !(0..=10).contains(&n)
        {
            return Err(Error::bad_request(format!(
                "field 'max_retries': expected an integer from 0 to 10, got {n}"
            )));
        }
        if let Some(n) = config.setting_i64("min_session_duration")
            && !(1..=AWS_MIN_SECS as i64).contains(&n)
        {
            return Err(Error::bad_request(format!(
                "field 'min_session_duration': expected 1 to {AWS_MIN_SECS} seconds, got {n}"
            )));
        }
        Ok(())
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        AwsTarget::new(config)
            .await
            .verify()
            .await
            .map_err(|e| Error::bad_request(format!("cannot use AWS: {e}")))
    }

    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        Ok(Arc::new(AwsTarget::new(config).await))
    }

    fn role_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "credential_type",
                FieldType::String,
                "assumed_role (sts:AssumeRole), federation_token (sts:GetFederationToken) or \
                 session_token (sts:GetSessionToken).",
            ),
            FieldDef::new(
                "role_arns",
                FieldType::StringList,
                "assumed_role: the ARN of the role to assume (exactly one).",
            ),
            FieldDef::new(
                "session_policy",
                FieldType::String,
                "assumed_role: an inline session policy (JSON) that narrows the role.",
            ),
            FieldDef::new(
                "policy_document",
                FieldType::String,
                "federation_token: the inline policy (JSON) of the federated user.",
            ),
            FieldDef::new(
                "policy_arns",
                FieldType::StringList,
                "Managed policy ARNs passed as session policies.",
            ),
            FieldDef::new(
                "session_tags",
                FieldType::StringMap,
                "Session tags beyond mayfly's own (mayfly-credential-id, mayfly-task-id, \
                 mayfly-entity-id, mayfly-requester).",
            ),
            FieldDef::new(
                "external_id",
                FieldType::String,
                "assumed_role: the external id the role's trust policy asks for.",
            ),
            FieldDef::new(
                "source_identity",
                FieldType::String,
                "assumed_role: the source identity set on the session.",
            ),
        ]
    }

    fn validate_role(&self, settings: &Map<String, Value>, sample_name: &str) -> Result<(), Error> {
        let role = RoleSettings::parse(settings)?;
        let max = role.credential_type.max_name_len();
        if sample_name.len() > max {
            return Err(Error::bad_request(format!(
                "field 'username_template': {} session names are at most {max} characters, \
                 and this template makes {} ('{sample_name}')",
                role.credential_type.name(),
                sample_name.len()
            )));
        }
        Ok(())
    }

    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        if !(2..=64).contains(&name.len()) || !valid_session_name(name) {
            return Err(Error::bad_request(format!(
                "an STS session name must be 2 to 64 letters, digits or _+=,.@- characters, \
                 got '{}'",
                name.escape_default()
            )));
        }
        Ok(())
    }

    fn describe_role(&self, settings: &Map<String, Value>) -> Map<String, Value> {
        RoleSettings::parse(settings)
            .map(|r| revocation_view(&r))
            .unwrap_or_default()
    }
}
