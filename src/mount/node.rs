//! The node a mount runs on, and the work it has in flight.
//!
//! In a raft cluster every node runs the plugin, but only the active node acts: the scheduler,
//! task deadlines, rotations and every call to a target run there. A standby serves reads from
//! its copy of storage and answers anything else with an error the host forwards to the active
//! node ([`Error::Forward`]), before any side effect. The host tears a mount down and builds
//! it again on every change of role (Cleanup, then Setup and Initialize), so the role is
//! decided once, when the mount starts.
//!
//! Cleanup stops the mount: the background work (the scheduler and what it started) is
//! aborted and requests still running are cancelled, and it returns only once all of it has
//! stopped, so no target call of the mount outlives it. What was cut short is in the ledger
//! and is picked up by whichever node acts next.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::contract::error::Error;
use crate::contract::request::Operation;

/// What this node's mount may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Acts: issues, revokes, rotates; runs the scheduler.
    Active,
    /// Serves reads; forwards everything else to the active node.
    Standby,
}

impl NodeRole {
    /// The role the host's replication state says: a standby when the performance-standby
    /// bit (`1 << 14`, as OpenBao's own database engine tests it) is set. Whole values are
    /// never compared: OpenBao reports 8224 on an active node, 24576 on a standby that serves
    /// reads and 12288 on a single node or dev server, and other bits may join them.
    pub fn from_replication_state(state: i32) -> NodeRole {
        const PERFORMANCE_STANDBY: i32 = 1 << 14;
        if state & PERFORMANCE_STANDBY != 0 {
            NodeRole::Standby
        } else {
            NodeRole::Active
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Active => "active",
            NodeRole::Standby => "standby",
        }
    }
}

/// The mount's role and its work in flight.
pub struct Node {
    standby: AtomicBool,
    /// Turns true when the mount stops; running requests are cancelled by it.
    stop: watch::Sender<bool>,
    /// The scheduler's loop and the tasks it started; `None` once stopped.
    background: Mutex<Option<JoinSet<()>>>,
    /// Requests being handled, and a signal when the last one ends.
    requests: AtomicUsize,
    idle: Notify,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            standby: AtomicBool::new(false),
            stop: watch::channel(false).0,
            background: Mutex::new(Some(JoinSet::new())),
            requests: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

impl Node {
    pub fn set_role(&self, role: NodeRole) {
        self.standby
            .store(role == NodeRole::Standby, Ordering::SeqCst);
    }

    pub fn role(&self) -> NodeRole {
        if self.standby.load(Ordering::SeqCst) {
            NodeRole::Standby
        } else {
            NodeRole::Active
        }
    }

    /// Whether the mount has been stopped (Cleanup).
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// The error for a request (`op` on `path`) this node may not act on, if it may not: it is
    /// a standby, or the mount is stopping.
    pub fn refuse(&self, op: Operation, path: &str) -> Option<Error> {
        let why = if self.stopped() {
            "mayfly's mount is stopping on this node"
        } else if self.role() == NodeRole::Standby {
            "this node is a standby and mayfly acts only on the active node"
        } else {
            return None;
        };
        Some(Error::Forward(format!("{why} ({} {path})", op.name())))
    }

    /// Runs `work` in the background until it ends or the mount stops.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut background = self.background.lock().unwrap();
        let Some(set) = background.as_mut() else {
            return;
        };
        // Reap what has finished, so a long-lived mount does not keep every task's result.
        while set.try_join_next().is_some() {}
        set.spawn(work);
    }

    /// Runs a request (`op` on `path`): cancelled, with [`Error::Forward`], if the mount stops
    /// meanwhile.
    pub async fn request<T>(
        &self,
        op: Operation,
        path: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let _done = RequestDone(self);
        let mut stop = self.stop.subscribe();
        if *stop.borrow_and_update() {
            return Err(self.refuse(op, path).expect("stopped"));
        }
        tokio::select! {
            result = work => result,
            _ = stop.changed() => Err(Error::Forward(format!(
                "mayfly's mount stopped on this node while the request ran ({} {path})",
                op.name()
            ))),
        }
    }

    /// Stops the mount: aborts the background work, cancels running requests, and returns
    /// once all of them have ended. Idempotent (the host may send Cleanup twice).
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let background = self.background.lock().unwrap().take();
        if let Some(mut set) = background {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        loop {
            let idle = self.idle.notified();
            if self.requests.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Counts a request out when it ends, however it ends.
struct RequestDone<'a>(&'a Node);

impl Drop for RequestDone<'_> {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::contract::request::{LeaseInfo, Request, Response};
    use crate::contract::storage::InMemoryStorage;
    use crate::testkit::FixedHost;
    use crate::testkit::{Fake, NodeStorage};
    use crate::{Backends, Engine};

    /// A mount's engine on one node of a cluster whose nodes share `storage`.
    fn node(storage: &NodeStorage, fake: &Arc<Fake>, role: NodeRole) -> Engine {
        let engine = Engine::new(
            Arc::new(storage.clone()),
            Backends::new(vec![fake.clone()]),
            Arc::new(FixedHost::default()),
            "v0",
        );
        engine.start(role);
        engine
    }

    async fn call(e: &Engine, op: Operation, path: &str, body: Value) -> Result<Response, Error> {
        e.handle(Request::new(op, path).with_data(body)).await
    }

    /// The host's renew or revoke of the lease `issued` answered.
    async fn lease_call(e: &Engine, op: Operation, issued: &Response) -> Result<Response, Error> {
        let mut req = Request::new(op, "creds/app");
        req.lease = Some(LeaseInfo {
            internal_data: issued.lease.as_ref().unwrap().internal_data.clone(),
            lease_id: "mayfly/creds/app/x".into(),
            increment: 60,
            max_ttl: 3600,
        });
        e.handle(req).await
    }

    /// Connection `db` and role `app` written through `e`.
    async fn configure(e: &Engine) {
        let config = json!({"plugin_name": "fake", "url": "fake://x", "allowed_roles": "*"});
        call(e, Operation::Update, "config/db", config)
            .await
            .unwrap();
        let role = json!({"db_name": "db", "default_ttl": "1h", "max_ttl": "2h"});
        call(e, Operation::Update, "roles/app", role).await.unwrap();
    }

    fn username(r: &Response) -> String {
        r.data.as_ref().unwrap()["username"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn a_standby_forwards_all_that_acts_before_any_side_effect_and_never_revokes() {
        let shared = InMemoryStorage::new();
        let fake = Arc::new(Fake::default());
        let active = node(&NodeStorage::over(&shared), &fake, NodeRole::Active);
        configure(&active).await;
        let issued = call(&active, Operation::Read, "creds/app", json!({"ttl": 1}))
            .await
            .unwrap();
        let user = username(&issued);
        // The active node goes away (killed); only the standby runs, with the ledger saying
        // the credential is due in a second.
        active.stop().await;
        let standby_storage = NodeStorage::over(&shared);
        standby_storage.read_only.store(true, Ordering::SeqCst);
        let standby = node(&standby_storage, &fake, NodeRole::Standby);
        assert_eq!(standby.role(), NodeRole::Standby);

        let before = shared.dump();
        let acting = [
            (Operation::Read, "creds/app", json!({})),
            (Operation::Update, "creds/app", json!({})),
            (
                Operation::Update,
                "config/db",
                json!({"allowed_roles": "*"}),
            ),
            (Operation::Delete, "roles/app", json!({})),
            (Operation::Update, "tasks", json!({"ttl": "1h"})),
            (Operation::Update, "revoke/all", json!({})),
            (Operation::Read, "orphans/db", json!({})),
            (Operation::Update, "orphans/db", json!({"purge": true})),
            (Operation::Update, "rotate-root/db", json!({})),
            (Operation::Read, "static-creds/legacy", json!({})),
            (Operation::Update, "rotate-role/legacy", json!({})),
        ];
        for (op, path, body) in acting {
            let err = call(&standby, op, path, body).await.unwrap_err();
            assert!(matches!(err, Error::Forward(_)), "{path}: {err}");
            assert!(
                err.to_string().contains(crate::contract::error::FORWARD),
                "{err}"
            );
        }
        for op in [Operation::Renew, Operation::Revoke] {
            let err = lease_call(&standby, op, &issued).await.unwrap_err();
            assert!(matches!(err, Error::Forward(_)), "{err}");
        }
        // Reads are served from the standby's copy.
        let role = call(&standby, Operation::Read, "roles/app", Value::Null)
            .await
            .unwrap();
        assert_eq!(role.data.unwrap()["default_ttl"], 3600);
        let leases = call(&standby, Operation::List, "leases/", Value::Null)
            .await
            .unwrap();
        assert_eq!(leases.data.unwrap()["keys"].as_array().unwrap().len(), 1);

        // Its deadline passes: the standby neither acts nor writes.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(fake.target.has(&user), "a standby revoked");
        assert_eq!(shared.dump(), before, "a standby wrote");
        assert_eq!(fake.target.revoke_calls.load(Ordering::SeqCst), 0);

        // Promoted: the mount is built again as active and takes the due work up at once.
        standby.stop().await;
        let promoted = node(&NodeStorage::over(&shared), &fake, NodeRole::Active);
        let gone = async {
            while fake.target.has(&user) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the new active node revoked the due credential");
        promoted.stop().await;
    }

    #[tokio::test]
    async fn a_node_whose_writes_fail_touches_no_target() {
        let shared = InMemoryStorage::new();
        let fake = Arc::new(Fake::default());
        let storage = NodeStorage::over(&shared);
        let deposed = node(&storage, &fake, NodeRole::Active);
        configure(&deposed).await;
        let issued = call(&deposed, Operation::Read, "creds/app", json!({"ttl": 1}))
            .await
            .unwrap();
        let other = call(&deposed, Operation::Read, "creds/app", json!({}))
            .await
            .unwrap();
        let (user, other_user) = (username(&issued), username(&other));
        // Leadership is lost without a step-down: the node still reads itself as active, but
        // no write of its succeeds any more.
        storage.deposed.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            fake.target.has(&user),
            "revoked at a deadline it could not record"
        );
        let err = lease_call(&deposed, Operation::Revoke, &other)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("node is not the leader"), "{err}");
        let report = call(&deposed, Operation::Update, "revoke/all", json!({}))
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(
            (report["revoked"].clone(), report["failed"].clone()),
            (json!(0), json!(2))
        );
        assert!(fake.target.has(&user) && fake.target.has(&other_user));
        assert_eq!(fake.target.revoke_calls.load(Ordering::SeqCst), 0);

        // Its writes work again (it leads once more): the due revocation goes ahead.
        storage.deposed.store(false, Ordering::SeqCst);
        let gone = async {
            while fake.target.has(&user) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("revoked once its writes succeed");
        assert!(fake.target.has(&other_user));
        deposed.stop().await;
    }

    #[test]
    fn the_role_is_read_from_the_standby_bit_alone() {
        // As OpenBao 2.7.2 reports them (protocol document §6a).
        assert_eq!(NodeRole::from_replication_state(8224), NodeRole::Active);
        assert_eq!(NodeRole::from_replication_state(12288), NodeRole::Active);
        assert_eq!(NodeRole::from_replication_state(24576), NodeRole::Standby);
        assert_eq!(
            NodeRole::from_replication_state(1 << 14 | 1 << 2),
            NodeRole::Standby
        );
        assert_eq!(NodeRole::from_replication_state(0), NodeRole::Active);
    }

    #[tokio::test]
    async fn stopping_cancels_requests_and_background_work_and_waits_for_them() {
        let node = Arc::new(Node::default());
        let (started_tx, started) = tokio::sync::oneshot::channel();
        node.spawn(async move {
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        started.await.unwrap();
        let request = {
            let node = node.clone();
            tokio::spawn(async move {
                let pending = std::future::pending::<Result<(), Error>>();
                node.request(Operation::Read, "creds/x", pending).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::time::timeout(Duration::from_secs(5), node.stop())
            .await
            .expect("stop returns once everything has stopped");
        let err = request.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Forward(_)), "{err}");
        assert!(
            err.to_string().contains(crate::contract::error::FORWARD),
            "{err}"
        );
        // Nothing runs after the stop, and a second stop is harmless.
        node.spawn(async { panic!("spawned after the stop") });
        let late = node
            .request(Operation::Read, "creds/x", async { Ok(()) })
            .await;
        assert!(matches!(late, Err(Error::Forward(_))));
        node.stop().await;
    }
}
