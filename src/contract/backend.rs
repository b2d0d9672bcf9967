//! What a target kind implements. The core owns every lifecycle decision (names, deadlines,
//! the ledger, retries, batching); a backend only knows how to talk to its target.
//!
//! A [`Backend`] describes a kind: the connection and role settings it accepts and their offline
//! validation. [`Backend::connect`] gives a [`Target`]: a live handle (a connection pool) on
//! which principals are created, renewed and revoked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::contract::connection_config::ConnectionConfig;
use crate::contract::error::Error;
use crate::contract::fields::FieldDef;

/// A principal to create. `settings` are the role's kind-specific settings (statements…).
pub struct NewPrincipal<'a> {
    pub name: &'a str,
    /// The password mayfly made; empty for kinds whose target makes the secret
    /// ([`Backend::target_makes_secret`]).
    pub password: &'a SecretString,
    /// Unix seconds: the target should refuse the principal after this, where it can.
    pub expires: u64,
    pub settings: &'a Map<String, Value>,
    /// The name has so many random characters (`template::UNGUESSABLE`) that no one else has
    /// it: a target that would look the name up before creating it need not.
    pub unguessable: bool,
    /// What the credential is for, for targets that can label a principal (STS session tags).
    pub origin: &'a Origin<'a>,
}

/// Who asked for a credential and for what, as a target may record it beside the principal.
pub struct Origin<'a> {
    pub cred_id: &'a str,
    /// Empty without a task.
    pub task_id: &'a str,
    /// The requesting entity's id; empty for a token without an entity.
    pub entity_id: &'a str,
    pub display_name: &'a str,
    /// The role the credential is issued for.
    pub role_name: &'a str,
}

/// What the target made besides the principal.
#[derive(Default)]
pub struct Created {
    /// Fields for the client that the target made (access keys, session tokens): secret,
    /// returned once and never stored. Empty for kinds that take mayfly's password.
    pub data: Map<String, Value>,
    /// Unix seconds: when the target itself ends the principal (an STS session's expiry),
    /// which may differ from the deadline asked. `None` where the target keeps it until
    /// revoked. A lease never outlives it.
    pub target_expires: Option<u64>,
    /// Unix seconds in the target's clock: when the target says the principal began (an STS
    /// session's issue time), where that is what the target's own rules match on.
    pub target_issued: Option<u64>,
    /// What the target changed from the request (a duration raised or clamped), for the
    /// response's warnings.
    pub warnings: Vec<String>,
    /// The target's own id of the principal where it is not the name (an API key's id, which
    /// the service chose): recorded, and what revocation and renewal address. Never secret.
    pub target_id: Option<String>,
    /// The target made the credential's secret (an API key, in `data`) although the kind takes
    /// mayfly's password for other roles: the password was not used and is not returned.
    pub secret_from_target: bool,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&String> = self.data.keys().collect();
        f.debug_struct("Created")
            .field("data", &format_args!("<redacted: {fields:?}>"))
            .field("target_expires", &self.target_expires)
            .field("target_issued", &self.target_issued)
            .field("warnings", &self.warnings)
            .field("target_id", &self.target_id)
            .field("secret_from_target", &self.secret_from_target)
            .finish()
    }
}

/// A principal mayfly issued, as revocation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// [`Created::target_expires`], when it was recorded.
    pub target_expires: Option<u64>,
    /// [`Created::target_id`], when it was recorded; `None` for a principal addressed by its
    /// name, and for one whose creation was cut off before its id was known.
    pub target_id: Option<String>,
}

impl Principal {
    /// A principal known only by its name.
    pub fn named(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            target_expires: None,
            target_id: None,
        }
    }
}

/// The names of `principals`.
pub fn names(principals: &[Principal]) -> Vec<String> {
    principals.iter().map(|p| p.name.clone()).collect()
}

/// How a batch revocation went. Principals already gone count as revoked: revocation is
/// idempotent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// How many principals existed and were removed.
    pub removed: usize,
    /// The principals that were already gone (dropped by hand, or revoked before a crash).
    pub already_gone: Vec<String>,
    /// Principals the target cannot delete (STS sessions), stopped by a guard left on the
    /// target (a deny statement) that [`Target::clean_up`] removes at the time given, once
    /// the principal has ended on its own.
    pub guarded: Vec<(String, u64)>,
    /// Principals the target could not stop before their own end (no permission to write the
    /// guard), with why: revocation degraded to expiry.
    pub degraded: Vec<(String, String)>,
    /// Principals removed with something left undone that the ledger should say (open
    /// sessions the connection's user may not end), with what.
    pub caveats: Vec<(String, String)>,
    /// Live credentials whose principals the guard had to stop too (the guard's room on the
    /// target ran out, and only a coarser guard fits), by [`Known::id`], with why: the mount
    /// revokes them, so that the ledger says what the target now does.
    pub collateral: Vec<(String, String)>,
}

/// One credential of the mount as its ledger knows it, for a target whose guards must fit in
/// bounded room and so cover several principals at once ([`Inventory`]).
#[derive(Clone, Debug)]
pub struct Known {
    /// The credential's id.
    pub id: String,
    pub name: String,
    /// When issuance began (the intent was written), in mayfly's clock.
    pub created_at: u64,
    /// [`Created::target_issued`], when it was recorded.
    pub target_issued: Option<u64>,
    /// [`Created::target_expires`], when it was recorded.
    pub target_expires: Option<u64>,
    /// Not yet revoked: issued, being issued, or with its revocation still to succeed.
    pub live: bool,
}

/// What the mount's ledger knows of its credentials, asked by a target only when it needs
/// it (a full scan of the ledger): a guard that covers many principals must never cover a
/// live one the target cannot see.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// The beginning of every name the mount's default templates make
    /// (`template::mark_of`).
    fn mark(&self) -> &str;

    async fn credentials(&self) -> Result<Vec<Known>, Error>;
}

/// A principal as the target lists it for `inventory/NAME`: its name, whether it is the
/// connection's own account, and what the target says of its power. Nothing secret: no
/// password, no password hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub name: String,
    /// The account the connection logs in as (mayfly's admin on the target).
    pub own: bool,
    /// Facts of the kind: PostgreSQL's `superuser`, `create_role` and grant counts, MySQL's
    /// global privileges, Redis's ACL rules, RabbitMQ's tags, IAM access keys and their ages.
    pub power: Map<String, Value>,
}

#[async_trait]
pub trait Target: Send + Sync {
    /// Whether the target has a principal named `name` (created with a role's `settings`),
    /// asked before a create: issuance records that the name was free, which is what lets it
    /// drop that name later if the create is cut off. A kind whose principals are not accounts
    /// (STS sessions) answers `false`.
    async fn exists(&self, name: &str, settings: &Map<String, Value>) -> Result<bool, Error>;

    /// Creates the principal, all or nothing: on error nothing of it is left on the target.
    /// A principal of that name that exists already is never changed nor dropped: the create
    /// fails with [`Error::Conflict`].
    async fn create(&self, principal: &NewPrincipal<'_>) -> Result<Created, Error>;

    /// Moves the principal's target-side expiry to `expires` (unix seconds).
    async fn renew(
        &self,
        principal: &Principal,
        expires: u64,
        settings: &Map<String, Value>,
    ) -> Result<(), Error>;

    /// Revokes every principal in `principals` (all created with `settings`). A principal
    /// that does not exist is a success. An error means the batch as a whole may not have
    /// been revoked.
    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error>;

    /// Gives the handle the mount's [`Inventory`], once, right after [`Backend::connect`].
    /// Kinds whose guards never need it ignore it.
    fn attach_inventory(&self, inventory: Arc<dyn Inventory>) {
        let _ = inventory;
    }

    /// Closes the handle's connections to the target, once the connection was deleted or
    /// changed: they must not hold sessions open on the target (which keep a database from
    /// being dropped, and count against its limits).
    async fn close(&self) {}

    /// Removes the guards that revoking `names` left ([`Revoked::guarded`]), now that those
    /// principals have ended on their own. Removing a guard that is gone is a success.
    async fn clean_up(&self, names: &[String], settings: &Map<String, Value>) -> Result<(), Error> {
        let _ = (names, settings);
        Ok(())
    }

    /// The principals on the target whose name starts with `mark`. `settings` are a role's,
    /// for kinds whose roles say how to list ([`Backend::lists_by_role`]); others ignore them.
    async fn list_marked(
        &self,
        mark: &str,
        settings: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error>;

    /// Every principal on the target, for `inventory/NAME`: login roles, accounts, ACL users,
    /// IAM users. `settings` are as for [`Target::list_marked`]. A kind that cannot list its
    /// principals says so.
    async fn inventory(&self, settings: &Map<String, Value>) -> Result<Vec<Standing>, Error> {
        let _ = settings;
        Err(Error::bad_request(
            "connections of this kind cannot list the principals on their target",
        ))
    }

    /// Changes the password of the connection's own user to `new_password`.
    async fn rotate_root(&self, new_password: &SecretString) -> Result<(), Error>;

    /// Sets the password of `username`, an account mayfly did not create (a static role's),
    /// to `password`: with `statements` (the role's `rotation_statements`) when there are any,
    /// else the kind's own way. An account that does not exist is an error: it is never
    /// created.
    async fn set_password(
        &self,
        username: &str,
        password: &SecretString,
        statements: &[String],
    ) -> Result<(), Error>;

    /// Whether `username` logs in with `password`: `Ok(false)` when the target refuses the
    /// credentials, an error when it cannot be asked.
    async fn check_login(&self, username: &str, password: &SecretString) -> Result<bool, Error>;

    /// Kinds whose target makes the secret (IAM access keys) rotate a static role's account by
    /// keys instead of passwords: a new key of `account`, as (key id, secret).
    async fn create_key(&self, account: &str) -> Result<(String, SecretString), Error> {
        let _ = account;
        Err(Error::Internal("this kind has no access keys".into()))
    }

    /// Deletes key `key_id` of `account`; a key already gone is a success.
    async fn delete_key(&self, account: &str, key_id: &str) -> Result<(), Error> {
        let _ = (account, key_id);
        Err(Error::Internal("this kind has no access keys".into()))
    }

    /// The keys of `account`, oldest first, each with when it was created (unix seconds).
    async fn list_keys(&self, account: &str) -> Result<Vec<(String, u64)>, Error> {
        let _ = account;
        Err(Error::Internal("this kind has no access keys".into()))
    }
}

/// Where a connection sends its secrets and how it checks the server it sends them to. A
/// write that changes the first or lowers the second must carry the connection's secrets
/// again: whoever may write a connection but not read it must not send its stored secrets to
/// a server of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Each setting that says where (or which server certificate is trusted), by field
    /// name, in a form where equal means the same destination.
    pub destination: BTreeMap<String, String>,
    /// How strictly the server is checked; higher is stricter (TLS off, on, verified).
    pub server_check: u8,
}

impl Reach {
    /// Every non-secret setting counts as a destination: for kinds that say nothing finer.
    pub fn every_setting(config: &ConnectionConfig) -> Reach {
        Reach {
            destination: config
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            server_check: 0,
        }
    }

    /// Adds `field`'s setting, when it has one, to the destination.
    pub fn with_setting(mut self, config: &ConnectionConfig, field: &str) -> Reach {
        if let Some(v) = config.settings.get(field).filter(|v| !v.is_null()) {
            self.destination.insert(field.to_owned(), v.to_string());
        }
        self
    }
}

/// Who stops a credential from working at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryEnforcement {
    /// The target itself refuses the principal after its deadline (PostgreSQL's VALID UNTIL),
    /// and mayfly's scheduler removes it.
    TargetAndScheduler,
    /// The target has no per-principal expiry: mayfly's scheduler removing the principal is
    /// the only guarantee.
    SchedulerOnly,
}

impl ExpiryEnforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryEnforcement::TargetAndScheduler => "target_and_scheduler",
            ExpiryEnforcement::SchedulerOnly => "scheduler_only",
        }
    }
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// The canonical `plugin_name` of this kind, e.g. `postgres`.
    fn kind(&self) -> &'static str;

    /// Other names accepted for `plugin_name`, such as OpenBao's own plugin names, so that
    /// existing configurations carry over unchanged.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// The `username_template` of roles that set none. Kinds with a short name limit make
    /// shorter names.
    fn default_username_template(&self) -> &'static str {
        crate::contract::template::DEFAULT_USERNAME_TEMPLATE
    }

    /// Whether the target refuses a principal after its deadline on its own.
    fn expiry_enforcement(&self) -> ExpiryEnforcement {
        ExpiryEnforcement::TargetAndScheduler
    }

    /// Whether the target makes the credential's secret itself (cloud keys) rather than take
    /// a password from mayfly. Such kinds answer with [`Created::data`].
    fn target_makes_secret(&self) -> bool {
        false
    }

    /// Whether listing the principals on the target depends on the role (each role of the
    /// `http` kind declares its own list call): the orphan scan then lists once per role.
    fn lists_by_role(&self) -> bool {
        false
    }

    /// What a role read says beyond the role's settings: derived facts such as whether its
    /// credentials can be revoked before they expire, and how.
    fn describe_role(&self, settings: &Map<String, Value>) -> Map<String, Value> {
        let _ = settings;
        Map::new()
    }

    /// Whether rotate-root runs a connection's `root_rotation_statements` (SQL kinds); other
    /// kinds keep them with a warning.
    fn runs_root_rotation_statements(&self) -> bool {
        false
    }

    /// The connection fields this kind accepts beyond the common ones.
    fn connection_fields(&self) -> Vec<FieldDef>;

    /// Rewrites settings given in one of the other forms OpenBao takes into mayfly's own (a
    /// DSN of another syntax, credentials written into a URL), before they are checked and
    /// stored. `given` is the write's own data. The default changes nothing.
    fn normalize_connection(
        &self,
        config: &mut ConnectionConfig,
        given: &Map<String, Value>,
    ) -> Result<(), Error> {
        let _ = (config, given);
        Ok(())
    }

    /// Checks the settings without contacting the target. Errors name the field at fault.
    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error>;

    /// Where a connection with these (validated) settings sends its secrets, and how strictly
    /// it checks that server. The default counts every setting as where.
    fn reach(&self, config: &ConnectionConfig) -> Reach {
        Reach::every_setting(config)
    }

    /// Connects to the target once with these settings. The error carries the target's own
    /// message with every secret removed.
    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error>;

    /// A handle on the target for these settings. It may connect lazily: errors then come from
    /// the handle's operations.
    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error>;

    /// The role fields this kind accepts beyond the common ones.
    fn role_fields(&self) -> Vec<FieldDef>;

    /// Checks a role's kind-specific settings without contacting the target. `sample_name` is
    /// a name the role's `username_template` makes, for checking statements with it.
    fn validate_role(&self, settings: &Map<String, Value>, sample_name: &str) -> Result<(), Error>;

    /// Checks a principal name that a role's `username_template` produced, or the name of an
    /// account a static role takes over.
    fn validate_principal(&self, name: &str) -> Result<(), Error>;

    /// Checks a static role's `rotation_statements` for account `username` without contacting
    /// the target. Kinds that take no statements refuse any.
    fn validate_rotation_statements(
        &self,
        statements: &[String],
        username: &str,
    ) -> Result<(), Error> {
        let _ = username;
        if statements.is_empty() {
            Ok(())
        } else {
            Err(Error::bad_request(format!(
                "field 'rotation_statements' does not apply to connections of kind '{}': it \
                 sets passwords its own way",
                self.kind()
            )))
        }
    }
}

/// How long creating (or renewing) a principal on a target may take while its caller waits.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one call to a target may take (a revocation batch, a rotation, a login check)
/// before it counts as the target being unavailable.
pub const TARGET_TIMEOUT: Duration = Duration::from_secs(60);

/// `call` to a target, failed as unavailable (503, and no key-by-key retry of a batch) if it
/// takes longer than `limit`; `what` says what it was asked, for the error.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable(format!(
            "the target did not {what} within {}s",
            limit.as_secs()
        ))),
    }
}

/// The kinds this build of mayfly knows, looked up by canonical name or alias.
#[derive(Clone, Default)]
pub struct Backends {
    list: Vec<Arc<dyn Backend>>,
}

impl Backends {
    pub fn new(list: Vec<Arc<dyn Backend>>) -> Self {
        Backends { list }
    }

    pub fn find(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.list
            .iter()
            .find(|b| b.kind() == name || b.aliases().contains(&name))
    }

    /// The backend of stored connection `name`. A kind this build does not know (a connection
    /// written by another build) is an internal error.
    pub fn for_connection(
        &self,
        name: &str,
        config: &ConnectionConfig,
    ) -> Result<&Arc<dyn Backend>, Error> {
        self.find(&config.plugin_name).ok_or_else(|| {
            Error::Internal(format!(
                "connection '{name}' is of kind '{}', which this build does not know",
                config.plugin_name
            ))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.list.iter()
    }

    /// `postgres (alias: postgresql-database-plugin), …` for error messages and help.
    pub fn describe(&self) -> String {
        if self.list.is_empty() {
            return "none (this build has no target kinds)".into();
        }
        self.list
            .iter()
            .map(|b| match b.aliases() {
                [] => b.kind().to_owned(),
                a => format!("{} (alias: {})", b.kind(), a.join(", ")),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
