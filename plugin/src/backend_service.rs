//! `pb.Backend`: the eight calls the host makes on every mount. The process is multiplexed: one
//! process serves every mount of the catalog entry, so all per-mount state is keyed by the
//! `multiplex_id` the host puts in each call's metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mayfly::{Backends, Engine, RequestKind};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::convert;
use crate::host::{HostStorage, HostSystem};
use crate::proto::pb;
use crate::transport;

/// How long Setup waits for the broker's announcement, or keeps knocking. go-plugin itself
/// waits 5 s.
const BROKER_WAIT: Duration = Duration::from_secs(10);

struct Mount {
    engine: Engine,
    storage: Arc<HostStorage>,
    system: HostSystem,
}

pub struct BackendService {
    mounts: Mutex<HashMap<String, Arc<Mount>>>,
    broker: Broker,
    tls: Arc<rustls::ClientConfig>,
    backends: Backends,
    /// Signalled on the first Setup, so the start-up watchdog can stand down.
    pub setup_seen: Arc<Notify>,
}

impl BackendService {
    pub fn new(broker: Broker, tls: Arc<rustls::ClientConfig>, backends: Backends) -> Self {
        BackendService {
            mounts: Mutex::default(),
            broker,
            tls,
            backends,
            setup_seen: Arc::new(Notify::new()),
        }
    }

    fn mount<T>(&self, req: &Request<T>) -> Result<Arc<Mount>, Status> {
        let id = multiplex_id(req);
        self.mounts
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                Status::failed_precondition(format!("no mount was set up for multiplex id '{id}'"))
            })
    }
}

fn multiplex_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("multiplex_id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tonic::async_trait]
impl pb::backend_server::Backend for BackendService {
    async fn setup(
        &self,
        request: Request<pb::SetupArgs>,
    ) -> Result<Response<pb::SetupReply>, Status> {
        self.setup_seen.notify_one();
        let id = multiplex_id(&request);
        let args = request.into_inner();
        let fail = |err: String| {
            tracing::error!(broker_id = args.broker_id, error = %err, "setup failed");
            Ok(Response::new(pb::SetupReply { err }))
        };
        let connect = match self.broker.connect(args.broker_id, BROKER_WAIT).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let channel = match transport::dial(connect, self.tls.clone()).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        // Setup must not touch storage: the host refuses writes now and, during the
        // registration probe, every callback fails.
        let storage = Arc::new(HostStorage::new(channel.clone()));
        let system = HostSystem::new(channel);
        let mount = Mount {
            engine: Engine::for_mount(
                storage.clone(),
                self.backends.clone(),
                Arc::new(system.clone()),
                crate::reported_version(),
                mayfly::MountOptions {
                    backend_uuid: args.backend_uuid.clone(),
                    crash_hook: crate::lifecycle::crash_hook(),
                },
            ),
            storage,
            system,
        };
        self.mounts
            .lock()
            .unwrap()
            .insert(id.clone(), Arc::new(mount));
        tracing::info!(broker_id = args.broker_id, multiplex_id = %id,
            backend_uuid = %args.backend_uuid, "setup complete");
        Ok(Response::new(pb::SetupReply::default()))
    }

    async fn initialize(
        &self,
        request: Request<pb::InitializeArgs>,
    ) -> Result<Response<pb::InitializeReply>, Status> {
        let mount = self.mount(&request)?;
        // Storage is usable from here on. On the active node the scheduler picks up the ledger
        // where the last process left it; a standby only serves reads.
        // Asked here, once: the host builds the mount again whenever the node's role changes.
        let (role, replication_state) = match mount.system.replication_state().await {
            Ok(state) => (mayfly::NodeRole::from_replication_state(state), state),
            Err(e) => {
                // Acting is the safe default: on a node that does not lead every write fails,
                // and mayfly acts on a target only after a write has succeeded.
                tracing::warn!(error = %e.message(),
                    "the host did not say whether this node is a standby; acting as the active node");
                (mayfly::NodeRole::Active, -1)
            }
        };
        mount.engine.start(role);
        // Informational only: an Initialize error would not roll the mount back anyway, so
        // problems are logged, and configuration is validated on each request instead.
        let transactional = mount.storage.is_transactional().await;
        match mount.system.facts().await {
            Ok(f) => {
                tracing::info!(host_version = %f.version, node_role = role.name(), replication_state,
                default_lease_ttl_s = f.default_lease_ttl.as_secs(), max_lease_ttl_s = f.max_lease_ttl.as_secs(),
                storage_transactional = transactional, "initialized")
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "initialized, but the host's SystemView did not answer")
            }
        }
        Ok(Response::new(pb::InitializeReply::default()))
    }

    async fn handle_request(
        &self,
        request: Request<pb::HandleRequestArgs>,
    ) -> Result<Response<pb::HandleRequestReply>, Status> {
        let mount = self.mount(&request)?;
        let Some(req) = request.into_inner().request else {
            return Ok(Response::new(convert::reply(Err(
                mayfly::Error::bad_request("empty request"),
            ))));
        };
        // Decoding and encoding are timed for the mount's account (`metrics`).
        let started = Instant::now();
        let (result, kind, decoding) = match convert::request(req) {
            Ok(req) => {
                let (kind, decoding) = (Engine::kind_of(&req), started.elapsed());
                (mount.engine.handle(req).await, kind, decoding)
            }
            Err(e) => (Err(e), RequestKind::Other, started.elapsed()),
        };
        if let Err(mayfly::Error::Internal(msg)) = &result {
            tracing::error!(error = %msg, "request failed inside mayfly");
        }
        let encoding = Instant::now();
        let reply = convert::reply(result);
        mount.engine.add_codec(kind, decoding + encoding.elapsed());
        Ok(Response::new(reply))
    }

    async fn handle_existence_check(
        &self,
        _request: Request<pb::HandleExistenceCheckArgs>,
    ) -> Result<Response<pb::HandleExistenceCheckReply>, Status> {
        // "No existence check" keeps every write an update, which is all mayfly distinguishes.
        Ok(Response::new(pb::HandleExistenceCheckReply::default()))
    }

    async fn special_paths(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::SpecialPathsReply>, Status> {
        Ok(Response::new(pb::SpecialPathsReply {
            paths: Some(pb::Paths {
                seal_wrap_storage: Engine::seal_wrap_storage(),
                root: Engine::sudo_paths(),
                ..Default::default()
            }),
        }))
    }

    async fn cleanup(&self, request: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        // The host may send Cleanup twice; the second finds nothing to remove.
        let id = multiplex_id(&request);
        let removed = self.mounts.lock().unwrap().remove(&id);
        if let Some(mount) = removed {
            // Returns once the scheduler and every call to a target of this mount have
            // stopped: the node may be losing its leadership, and must not act after this.
            mount.engine.stop().await;
            tracing::info!(multiplex_id = %id, "mount cleaned up");
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn invalidate_key(
        &self,
        request: Request<pb::InvalidateKeyArgs>,
    ) -> Result<Response<pb::Empty>, Status> {
        // Roles and connections are cached: any change the host reports empties the cache.
        if let Ok(mount) = self.mount(&request) {
            mount.engine.invalidate();
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn r#type(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::TypeReply>, Status> {
        // 1 = logical (a secrets engine).
        Ok(Response::new(pb::TypeReply { r#type: 1 }))
    }
}
