//! What one mount shares between its request handlers and its scheduler: storage, the host,
//! the known kinds, and live handles on the targets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::{Backends, Target};
use crate::connections::{self, ConnectionConfig};
use crate::error::Error;
use crate::host::Host;
use crate::scheduler::Scheduler;
use crate::storage::Storage;

/// Called at named points of issuance (`after_intent`, `after_create`, `before_reply`); the
/// plugin uses it to kill itself there in crash-safety tests. Production builds set none.
pub type CrashHook = Arc<dyn Fn(&'static str) + Send + Sync>;

pub struct MountCore {
    pub storage: Arc<dyn Storage>,
    pub backends: Backends,
    pub host: Arc<dyn Host>,
    pub targets: Targets,
    pub scheduler: Scheduler,
    pub crash_hook: Option<CrashHook>,
}

impl MountCore {
    pub fn crash_point(&self, point: &'static str) {
        if let Some(hook) = &self.crash_hook {
            hook(point);
        }
    }

    /// The live handle on connection `name`, connecting (or reconnecting after a
    /// configuration change) as needed.
    pub async fn target(&self, name: &str) -> Result<Arc<dyn Target>, Error> {
        let config = connections::load(self.storage.as_ref(), name)
            .await?
            .ok_or_else(|| Error::Target(format!("connection '{name}' does not exist")))?;
        self.target_for(name, &config).await
    }

    /// As [`MountCore::target`], for a configuration the caller has just loaded.
    pub async fn target_for(
        &self,
        name: &str,
        config: &ConnectionConfig,
    ) -> Result<Arc<dyn Target>, Error> {
        let fingerprint = config.fingerprint();
        if let Some((f, t)) = self.targets.map.lock().unwrap().get(name)
            && *f == fingerprint
        {
            return Ok(t.clone());
        }
        let backend = self.backends.find(&config.plugin_name).ok_or_else(|| {
            Error::Internal(format!(
                "connection '{name}' is of kind '{}', which this build does not know",
                config.plugin_name
            ))
        })?;
        let target = backend.connect(config).await?;
        self.targets
            .map
            .lock()
            .unwrap()
            .insert(name.to_owned(), (fingerprint, target.clone()));
        Ok(target)
    }
}

/// Live target handles by connection name, with the fingerprint of the configuration each was
/// made from.
#[derive(Default)]
pub struct Targets {
    map: Mutex<HashMap<String, Cached>>,
}

/// A handle and the fingerprint of the configuration it was made from.
type Cached = (u64, Arc<dyn Target>);
