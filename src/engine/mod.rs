//! The engine of one mount: routes each request to its handler over the mount's storage.

mod openapi;
pub(crate) mod sweep;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::contract::backend::Backends;
use crate::contract::connection_config;
use crate::contract::error::Error;
use crate::contract::host::Host;
use crate::contract::request::{Operation, Request, Response};
use crate::contract::storage::Storage;
use crate::contract::template;
use crate::mount::account::{Account, Counted, RequestKind};
use crate::mount::node::NodeRole;
use crate::mount::scheduler::Scheduler;
use crate::mount::{CrashHook, HoldSweep, MountCore, Targets};
use crate::paths::router::{PathDef, Router};
use crate::paths::{
    approvals, config, creds, hold, inventory, leases, metrics, operator, policies, roles,
    rotate_root, static_roles, tasks,
};

/// The largest request body mayfly accepts. The host allows 32 MiB; nothing mayfly takes comes
/// near 1 MiB, so anything larger is refused before it is parsed further.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const ROOT_HELP: &str = "\
mayfly issues credentials that live only as long as the task they serve: database users, cloud
sessions and API keys, each recorded in a durable ledger and revoked at its deadline even when the
host's lease manager fails.";

/// What the host tells a mount about itself when it sets it up.
#[derive(Default)]
pub struct MountOptions {
    /// The mount's backend UUID, from which its mark comes (`template::mark_of`).
    pub backend_uuid: String,
    /// Called at each step of issuance (for crash tests).
    pub crash_hook: Option<CrashHook>,
}

pub struct Engine {
    core: Arc<MountCore>,
    router: Router,
    version: String,
}

impl Engine {
    /// An engine without a backend UUID: its principals carry the legacy mark
    /// ([`template::LEGACY_MARK`]). Mounts are made with [`Engine::for_mount`].
    pub fn new(
        storage: Arc<dyn Storage>,
        backends: Backends,
        host: Arc<dyn Host>,
        version: impl Into<String>,
    ) -> Self {
        Engine::for_mount(storage, backends, host, version, MountOptions::default())
    }

    pub fn for_mount(
        storage: Arc<dyn Storage>,
        backends: Backends,
        host: Arc<dyn Host>,
        version: impl Into<String>,
        options: MountOptions,
    ) -> Self {
        let router = Router {
            paths: paths(&backends),
        };
        let account = Arc::new(Account::default());
        let hold = HoldSweep::default();
        Engine {
            core: Arc::new(MountCore {
                storage: Arc::new(Counted::new(storage, account.clone(), hold.changed.clone())),
                account,
                backends,
                host,
                targets: Targets::default(),
                scheduler: Scheduler::default(),
                node: Default::default(),
                crash_hook: options.crash_hook,
                mark: template::mark_of(&options.backend_uuid),
                cache: Default::default(),
                root_rotation: Default::default(),
                static_rotation: Default::default(),
                approval_writes: Default::default(),
                hold,
                static_writes: Default::default(),
            }),
            router,
            version: version.into(),
        }
    }

    /// Starts the mount as `role` decides (once storage is usable: at the host's Initialize).
    /// The active node runs the scheduler; a standby only serves reads. Called once per mount:
    /// the host builds the mount again when the node's role changes.
    pub fn start(&self, role: NodeRole) {
        self.core.node.set_role(role);
        if role == NodeRole::Active {
            self.core
                .node
                .spawn(crate::engine::sweep::run(self.core.clone()));
            self.core
                .node
                .spawn(crate::jobs::hold::run(self.core.clone()));
        }
    }

    /// Stops the mount (at Cleanup): the scheduler and everything it started, and requests
    /// still running, which end with an error the host forwards. Returns once all of it has
    /// stopped, so no call to a target outlives it; what was cut short is in the ledger and
    /// is picked up by the next process that acts.
    pub async fn stop(&self) {
        self.core.node.stop().await;
    }

    /// The role the mount was started with.
    pub fn role(&self) -> NodeRole {
        self.core.node.role()
    }

    /// Storage prefixes the host should seal-wrap: connection configs hold target passwords.
    pub fn seal_wrap_storage() -> Vec<String> {
        vec![
            connection_config::PREFIX.to_owned(),
            crate::jobs::static_rotation::PREFIX.to_owned(),
        ]
    }

    /// Paths that need a token with `sudo` on them: the operator's bulk and emergency tools.
    /// A trailing `*` is a prefix match.
    pub fn sudo_paths() -> Vec<String> {
        [
            "revoke/*",
            "orphans/*",
            "inventory/*",
            "revocations*",
            "metrics",
        ]
        .map(String::from)
        .to_vec()
    }

    pub async fn handle(&self, req: Request) -> Result<Response, Error> {
        match req.operation {
            // Never rewrite the path, never fail a request or the minutely rollback.
            Operation::ResolvePath | Operation::Rollback => return Ok(Response::empty()),
            Operation::Help => return self.help(&req.path),
            _ => {}
        }
        let node = &self.core.node;
        let routed = self.handle_routed(&req);
        let measured = self.core.account.measure(Self::kind_of(&req), routed);
        node.request(req.operation, &req.path, measured).await
    }

    /// What `req` is, for the mount's account (`metrics`).
    pub fn kind_of(req: &Request) -> RequestKind {
        match req.operation {
            Operation::Renew => RequestKind::Renew,
            Operation::Revoke => RequestKind::Revoke,
            Operation::Read | Operation::Update | Operation::Create
                if req.path.starts_with("creds/") =>
            {
                RequestKind::Issue
            }
            _ => RequestKind::Other,
        }
    }

    /// Counts the plugin's decoding of a request of `kind` and encoding of its reply.
    pub fn add_codec(&self, kind: RequestKind, took: std::time::Duration) {
        self.core.account.add_codec(kind, took);
    }

    async fn handle_routed(&self, req: &Request) -> Result<Response, Error> {
        let node = &self.core.node;
        if matches!(req.operation, Operation::Renew | Operation::Revoke) {
            // The host's lease manager runs on the active node only: these never reach a
            // standby, but if one did, the active node must answer it.
            if let Some(refused) = node.refuse(req.operation, &req.path) {
                return Err(refused);
            }
            return match req.operation {
                Operation::Renew => leases::renew(&self.core, req).await,
                _ => leases::revoke(&self.core, req).await,
            };
        }
        if req.body_len > MAX_BODY_BYTES {
            return Err(Error::PayloadTooLarge(format!(
                "request body of {} bytes is larger than the {MAX_BODY_BYTES} bytes mayfly accepts",
                req.body_len
            )));
        }
        let m = self.router.find(&req.path)?;
        let op = req.operation.normalized();
        let Some(handler) = m.def.handler(op) else {
            return Err(Error::UnsupportedOperation);
        };
        // Before anything else: a standby answers only what it can from its copy of storage,
        // and the host replays the rest on the active node.
        if m.def.acts(op)
            && let Some(refused) = node.refuse(op, &req.path)
        {
            return Err(refused);
        }
        handler(m.call(&self.core, req)).await
    }

    /// Storage changed behind the engine's back (the host's InvalidateKey).
    pub fn invalidate(&self) {
        self.core.invalidate();
    }

    fn help(&self, path: &str) -> Result<Response, Error> {
        let mut data = Map::new();
        if path.is_empty() {
            let mut text = format!("{ROOT_HELP}\n\n## PATHS\n\n");
            for p in &self.router.paths {
                text.push_str(&format!("    {}\n        {}\n\n", p.pattern, p.synopsis));
            }
            data.insert("help".into(), Value::String(text));
            data.insert(
                "openapi".into(),
                openapi::document(&self.router.paths, &self.version),
            );
        } else {
            let m = self.router.find(path)?;
            data.insert("help".into(), Value::String(m.def.help()));
        }
        data.insert("see_also".into(), Value::Null);
        Ok(Response::data(data))
    }
}

pub(crate) fn paths(backends: &Backends) -> Vec<PathDef> {
    // First match wins: config/tasks and config/hold come before config/{name}, which would
    // take them.
    [
        tasks::paths(),
        hold::paths(),
        config::paths(backends),
        roles::paths(backends),
        creds::paths(),
        approvals::paths(),
        operator::paths(),
        inventory::paths(),
        rotate_root::paths(),
        static_roles::paths(),
        policies::paths(),
        leases::paths(),
        metrics::paths(),
    ]
    .concat()
}

#[cfg(test)]
impl Engine {
    /// The mount's shared state, for scenarios that drive a job directly.
    pub(crate) fn core(&self) -> Arc<MountCore> {
        self.core.clone()
    }
}
