//! A mount on the nodes of a raft cluster: only the active node acts; standbys forward and revoke
//! nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Engine;
use crate::contract::error::Error;
use crate::contract::request::Operation;
use crate::contract::request::{LeaseInfo, Request, Response};
use crate::contract::storage::InMemoryStorage;
use crate::mount::node::*;
use crate::testkit;
use crate::testkit::FixedHost;
use crate::testkit::{Fake, NodeStorage};

/// A mount's engine on one node of a cluster whose nodes share `storage`.
fn node(storage: &NodeStorage, fake: &Arc<Fake>, role: NodeRole) -> Engine {
    let engine = testkit::engine(storage.clone(), fake, FixedHost::default());
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
    // A hold policy that ends every credential: a standby must not act on it either.
    let ends_all = json!({"policy": "forbid(principal, action == Mayfly::Action::\"hold\", \
        resource);", "updated_at": 0});
    crate::contract::storage::put_json(&shared, "policies/ends-all", &ends_all)
        .await
        .unwrap();
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
        (
            Operation::Update,
            "policies/p",
            json!({"policy": "permit(principal, action, resource);"}),
        ),
        (
            Operation::Update,
            "policies/simulate",
            json!({"action": "hold", "role": "app"}),
        ),
        (
            Operation::Update,
            "config/hold",
            json!({"hold_interval": "1s"}),
        ),
        // The last pass is the active node's.
        (Operation::Read, "config/hold", json!({})),
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
