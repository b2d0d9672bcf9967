//! `roles/NAME`: dynamic roles. A role names its connection (`db_name`, as in OpenBao), its
//! TTLs, how principal names and passwords are made, and kind-specific settings (statements for
//! SQL kinds) that the connection's backend validates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::backend::{Backend, Backends};
use crate::contract::connection_config;
use crate::contract::connection_config::ConnectionConfig;
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::storage::{self, Kv};
use crate::contract::template;
use crate::model::cidr::Cidr;

pub const PREFIX: &str = "roles/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// The connection (`config/NAME`) this role issues on.
    pub db_name: String,
    /// Seconds; 0 means the mount's default.
    pub default_ttl: u64,
    /// Seconds; 0 means the mount's maximum.
    pub max_ttl: u64,
    /// Empty means the kind's default ([`Backend::default_username_template`]).
    pub username_template: String,
    /// A host password policy; empty means mayfly's CSPRNG default.
    pub password_policy: String,
    /// Kind-specific settings (statements…), never secret.
    pub settings: Map<String, Value>,
    /// Issuance needs a `task_id`.
    #[serde(default)]
    pub require_task: bool,
    /// Credentials may be drawn under a task bound to its owner by anyone who may read this
    /// role's `creds/` path, not only by the task's owner.
    #[serde(default)]
    pub allow_other_task_owners: bool,
    /// When not empty, only these entities may issue.
    #[serde(default)]
    pub bound_entity_ids: Vec<String>,
    /// When not empty, only members of one of these identity groups may issue.
    #[serde(default)]
    pub bound_group_names: Vec<String>,
    /// When not empty, only requests from these networks may issue.
    #[serde(default)]
    pub bound_cidrs: Vec<String>,
    /// Operator-set key-value pairs; policies read them as the role's tags.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many approvers must approve a request (`approvals/request`) before its credential
    /// can be collected; 0 issues without approval.
    #[serde(default)]
    pub approvals_required: u32,
    /// The entities that may approve.
    #[serde(default)]
    pub approver_entity_ids: Vec<String>,
    /// Members of these identity groups (directly or through a parent) may approve.
    #[serde(default)]
    pub approver_group_names: Vec<String>,
    /// Seconds from the final approval within which the credential can be collected.
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl: u64,
}

/// `approval_ttl` when a role does not set it: 15 minutes.
pub const DEFAULT_APPROVAL_TTL: u64 = 900;

fn default_approval_ttl() -> u64 {
    DEFAULT_APPROVAL_TTL
}

impl Role {
    /// The template names are made with: the role's own, its connection's, or its kind's
    /// default.
    pub fn username_template<'a>(
        &'a self,
        backend: &'a dyn Backend,
        connection: &'a ConnectionConfig,
    ) -> &'a str {
        if !self.username_template.is_empty() {
            return &self.username_template;
        }
        connection
            .setting_str(connection_config::USERNAME_TEMPLATE)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| backend.default_username_template())
    }

    /// The host's password policy passwords are made with: the role's own (or its
    /// `credential_config`'s), or its connection's; empty for the host's default.
    pub fn password_policy<'a>(&'a self, connection: &'a ConnectionConfig) -> &'a str {
        if !self.password_policy.is_empty() {
            return &self.password_policy;
        }
        if let Some(p) = crate::contract::credential_type::password_policy(&self.settings) {
            return p;
        }
        connection
            .setting_str(connection_config::PASSWORD_POLICY)
            .unwrap_or_default()
    }

    pub fn view(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("db_name".into(), json!(self.db_name));
        out.insert("default_ttl".into(), json!(self.default_ttl));
        out.insert("max_ttl".into(), json!(self.max_ttl));
        out.insert("username_template".into(), json!(self.username_template));
        out.insert("password_policy".into(), json!(self.password_policy));
        out.insert("require_task".into(), json!(self.require_task));
        out.insert(
            "allow_other_task_owners".into(),
            json!(self.allow_other_task_owners),
        );
        out.insert("bound_entity_ids".into(), json!(self.bound_entity_ids));
        out.insert("bound_group_names".into(), json!(self.bound_group_names));
        out.insert("bound_cidrs".into(), json!(self.bound_cidrs));
        out.insert("labels".into(), json!(self.labels));
        out.insert("approvals_required".into(), json!(self.approvals_required));
        out.insert(
            "approver_entity_ids".into(),
            json!(self.approver_entity_ids),
        );
        out.insert(
            "approver_group_names".into(),
            json!(self.approver_group_names),
        );
        out.insert("approval_ttl".into(), json!(self.approval_ttl));
        for (k, v) in &self.settings {
            out.insert(k.clone(), v.clone());
        }
        out
    }
}

pub fn common_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "db_name",
            FieldType::String,
            "The connection (config/NAME) this role issues credentials on. Required when creating.",
        ),
        FieldDef::new(
            "default_ttl",
            FieldType::Duration,
            "The lease TTL when the request gives none; 0 uses the mount's default.",
        ),
        FieldDef::new(
            "max_ttl",
            FieldType::Duration,
            "The longest a credential of this role may live, renewals included; 0 uses the \
             mount's maximum.",
        ),
        FieldDef::new(
            "username_template",
            FieldType::String,
            "How principal names are made, in OpenBao's template syntax (.RoleName, \
             .DisplayName, random, truncate, printf, …). The default starts every name with \
             the mount's mark (.Mark, such as 'mf-3fa2c1-'), which mayfly looks for to find \
             this mount's principals on a target. A template must make a new name for each \
             credential (random, uuid or .CredentialID that truncate keeps).",
        ),
        FieldDef::new(
            "password_policy",
            FieldType::String,
            "A host password policy (sys/policies/password) for generated passwords; without \
             it mayfly uses 32 random letters and digits.",
        ),
        FieldDef::new(
            "require_task",
            FieldType::Bool,
            "Refuse issuance without a task_id (tasks/).",
        ),
        FieldDef::new(
            "allow_other_task_owners",
            FieldType::Bool,
            "Let requesters draw credentials under a task bound to another owner.",
        ),
        FieldDef::new(
            "bound_entity_ids",
            FieldType::StringList,
            "Only these identity entities may issue; empty allows any.",
        ),
        FieldDef::new(
            "bound_group_names",
            FieldType::StringList,
            "Only members of one of these identity groups may issue; empty allows any.",
        ),
        FieldDef::new(
            "bound_cidrs",
            FieldType::StringList,
            "Only requests whose remote address is in one of these CIDR blocks may issue; \
             empty allows any.",
        ),
        FieldDef::new(
            "labels",
            FieldType::StringMap,
            "Key-value pairs describing the role (team, environment…). Policies read them as \
             the role's tags: resource.getTag(\"env\").",
        ),
        FieldDef::new(
            "approvals_required",
            FieldType::Int,
            "How many approvers must approve a request (approvals/request) before its \
             credential can be read from creds/ROLE with approval_id; 0 (the default) issues \
             without approval.",
        ),
        FieldDef::new(
            "approver_entity_ids",
            FieldType::StringList,
            "Identity entities that may approve requests for this role.",
        ),
        FieldDef::new(
            "approver_group_names",
            FieldType::StringList,
            "Identity groups whose members (direct or through a parent group) may approve \
             requests for this role.",
        ),
        FieldDef::new(
            "approval_ttl",
            FieldType::Duration,
            "How long an approved request can be collected, counted from the final approval. \
             Defaults to 15m.",
        ),
    ]
}

/// Every role field any kind accepts.
pub fn all_fields(backends: &Backends) -> Vec<FieldDef> {
    let mut out = common_fields();
    for b in backends.iter() {
        for f in b.role_fields() {
            if !out.iter().any(|o| o.name == f.name) {
                out.push(f);
            }
        }
    }
    out
}

pub(crate) fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

pub async fn load(kv: &dyn Kv, name: &str) -> Result<Option<Role>, Error> {
    Ok(storage::get_json(kv, &key(name)).await?)
}

pub async fn list(kv: &dyn Kv) -> Result<Vec<String>, Error> {
    Ok(kv.list(PREFIX).await?)
}

/// The connection of a role and its backend, or a 400 that says what is missing.
pub async fn connection<'b>(
    kv: &dyn Kv,
    backends: &'b Backends,
    db_name: &str,
) -> Result<(ConnectionConfig, &'b dyn Backend), Error> {
    let config = connection_config::load(kv, db_name).await?.ok_or_else(|| {
        Error::bad_request(format!(
            "field 'db_name': no connection named '{db_name}' (configure config/{db_name} first)"
        ))
    })?;
    let backend = backends.for_connection(db_name, &config)?;
    Ok((config, backend.as_ref()))
}

/// A name `template` makes for role `role_name` of the mount marked `mark`, for the checks
/// that follow; a template that makes the same name twice is refused: issuance would then fail
/// on the account the first credential made.
pub fn sample_name(template: &str, role_name: &str, mark: &str) -> Result<String, Error> {
    let inputs = template::Inputs {
        role_name,
        display_name: "token",
        // As long as real ones, so that length limits are checked with the real lengths.
        credential_id: "abcdefghij0123456789",
        task_id: "abcdefghij0123456789",
        mark,
        sources: template::Sources::Live,
    };
    let sample = template::render(template, &inputs)?;
    if !template::unique_per_credential(template, &inputs)? {
        return Err(Error::bad_request(format!(
            "field 'username_template': it makes the same name (such as '{sample}') for every \
             credential of one role and requester, so the second issuance would find the first \
             one's account; add {{{{random N}}}}, {{{{uuid}}}} or {{{{.CredentialID}}}} where \
             truncate keeps it"
        )));
    }
    Ok(sample)
}

/// Creates or updates `roles/NAME`; fields left out keep their stored values. Returns the
/// warnings the operator should see.
/// `mark` is the mount's ([`crate::mount::MountCore::mark`]).
pub async fn write(
    kv: &dyn Kv,
    backends: &Backends,
    mark: &str,
    name: &str,
    data: &Map<String, Value>,
) -> Result<Vec<String>, Error> {
    let existing = load(kv, name).await?;
    // Parse against every known field first, so an unknown one is named before anything else.
    Fields::parse(&all_fields(backends), data)?;
    let common_defs = common_fields();
    let is_common = |k: &str| common_defs.iter().any(|f| f.name == k);
    let (common_data, kind_data): (Map<String, Value>, Map<String, Value>) = data
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| is_common(k));
    let common = Fields::parse(&common_defs, &common_data)?;
    let db_name = match (common.str("db_name"), &existing) {
        (Some(n), _) => n.to_owned(),
        (None, Some(e)) => e.db_name.clone(),
        (None, None) => {
            return Err(Error::bad_request(format!(
                "field 'db_name' is required to create role '{name}'"
            )));
        }
    };
    let (config, backend) = connection(kv, backends, &db_name).await?;

    let mut role = existing.unwrap_or(Role {
        db_name: db_name.clone(),
        default_ttl: 0,
        max_ttl: 0,
        username_template: String::new(),
        password_policy: String::new(),
        settings: Map::new(),
        require_task: false,
        allow_other_task_owners: false,
        bound_entity_ids: Vec::new(),
        bound_group_names: Vec::new(),
        bound_cidrs: Vec::new(),
        labels: BTreeMap::new(),
        approvals_required: 0,
        approver_entity_ids: Vec::new(),
        approver_group_names: Vec::new(),
        approval_ttl: DEFAULT_APPROVAL_TTL,
    });
    if role.db_name != db_name {
        // Settings belong to a kind; a role moved to another connection starts them afresh
        // only if the kind changes.
        let old = connection_config::load(kv, &role.db_name).await?;
        if old.is_none_or(|o| o.plugin_name != config.plugin_name) {
            role.settings.clear();
        }
        role.db_name = db_name.clone();
    }
    if let Some(v) = common.duration("default_ttl") {
        role.default_ttl = v;
    }
    if let Some(v) = common.duration("max_ttl") {
        role.max_ttl = v;
    }
    if let Some(v) = common.str("username_template") {
        role.username_template = v.to_owned();
    }
    if let Some(v) = common.str("password_policy") {
        role.password_policy = v.to_owned();
    }
    if let Some(v) = common.bool("require_task") {
        role.require_task = v;
    }
    if let Some(v) = common.bool("allow_other_task_owners") {
        role.allow_other_task_owners = v;
    }
    if let Some(v) = common.list("bound_entity_ids") {
        role.bound_entity_ids = v.to_vec();
    }
    if let Some(v) = common.list("bound_group_names") {
        role.bound_group_names = v.to_vec();
    }
    if let Some(v) = common.map("labels") {
        role.labels = v.clone();
    }
    if let Some(v) = common.list("bound_cidrs") {
        for block in v {
            Cidr::parse(block).map_err(|e| {
                Error::bad_request(format!(
                    "field 'bound_cidrs': expected CIDR blocks such as 10.0.0.0/8: {e}"
                ))
            })?;
        }
        role.bound_cidrs = v.to_vec();
    }
    if let Some(v) = common.int("approvals_required") {
        role.approvals_required = u32::try_from(v).map_err(|_| {
            Error::bad_request(format!(
                "field 'approvals_required': expected a whole number from 0 to {}, got {v}",
                u32::MAX
            ))
        })?;
    }
    if let Some(v) = common.list("approver_entity_ids") {
        role.approver_entity_ids = v.to_vec();
    }
    if let Some(v) = common.list("approver_group_names") {
        role.approver_group_names = v.to_vec();
    }
    if let Some(v) = common.duration("approval_ttl") {
        if v == 0 {
            return Err(Error::bad_request(
                "field 'approval_ttl': expected a duration above zero, such as 15m",
            ));
        }
        role.approval_ttl = v;
    }
    if role.approvals_required > 0
        && role.approver_entity_ids.is_empty()
        && role.approver_group_names.is_empty()
    {
        return Err(Error::bad_request(format!(
            "field 'approvals_required': {} approvals are required but nobody may approve: \
             set approver_entity_ids or approver_group_names",
            role.approvals_required
        )));
    }
    let kind_defs = backend.role_fields();
    let mut warnings = Vec::new();
    for (k, v) in &kind_data {
        let Some(def) = kind_defs.iter().find(|d| d.name == k.as_str()) else {
            return Err(Error::bad_request(format!(
                "field '{k}' does not apply to connections of kind '{}'",
                config.plugin_name
            )));
        };
        if !v.is_null() {
            warnings.extend(def.unused_warning(&config.plugin_name));
        }
        if v.is_null() {
            role.settings.remove(def.name);
        } else {
            role.settings
                .insert(def.name.to_owned(), def.parse(v)?.to_json());
        }
    }

    if role.max_ttl != 0 && role.default_ttl > role.max_ttl {
        return Err(Error::bad_request(format!(
            "field 'default_ttl': {}s is longer than max_ttl {}s",
            role.default_ttl, role.max_ttl
        )));
    }
    let sample = sample_name(role.username_template(backend, &config), name, mark)?;
    backend
        .validate_principal(&sample)
        .map_err(|e| Error::bad_request(format!("field 'username_template': {e}")))?;
    backend.validate_role(&role.settings, &sample)?;

    if !sample.starts_with(mark) {
        warnings.push(format!(
            "username_template makes names such as '{sample}', without this mount's mark \
             '{mark}' (.Mark): mayfly cannot tell these principals from others on the target \
             when it looks for orphans"
        ));
    }
    if !config.allows_role(name) {
        warnings.push(format!(
            "connection '{db_name}' does not list '{name}' in allowed_roles: issuing will be \
             refused until it does"
        ));
    }
    storage::put_json(kv, &key(name), &role).await?;
    Ok(warnings)
}
