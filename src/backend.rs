//! What a target kind implements. The core owns every lifecycle decision; a backend only knows
//! how to talk to its target. This surface is the connection part: the settings a kind
//! accepts, their offline validation, and a live check. Issuing and revoking principals join it
//! with the credential lifecycle.

use std::sync::Arc;

use async_trait::async_trait;

use crate::connections::ConnectionConfig;
use crate::error::Error;
use crate::fields::FieldDef;

#[async_trait]
pub trait Backend: Send + Sync {
    /// The canonical `plugin_name` of this kind, e.g. `postgres`.
    fn kind(&self) -> &'static str;

    /// Other names accepted for `plugin_name`, such as OpenBao's own plugin names, so that
    /// existing configurations carry over unchanged.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// The connection fields this kind accepts beyond the common ones.
    fn connection_fields(&self) -> Vec<FieldDef>;

    /// Checks the settings without contacting the target. Errors name the field at fault.
    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error>;

    /// Connects to the target once with these settings. The error carries the target's own
    /// message with every secret removed.
    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error>;
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
