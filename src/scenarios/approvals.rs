//! Step-up approval: a requester, approvers by entity and by group, and the collection of the
//! credential, once.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::Error;
use crate::contract::request::{Operation, Request, Requester, Response};
use crate::testkit::{self, who};

struct Mount(testkit::Mount);

impl std::ops::Deref for Mount {
    type Target = testkit::Mount;
    fn deref(&self) -> &testkit::Mount {
        &self.0
    }
}

impl Mount {
    /// Role `prod` needs two approvals: from entity `e-bob`, or from members of group `oncall`
    /// (`e-carol`).
    async fn new() -> Mount {
        let m = Mount(testkit::Mount::with_groups(&[("e-carol", "oncall")]).await);
        m.admin(
            "roles/prod",
            json!({"db_name": "db", "approvals_required": 2, "approver_entity_ids": ["e-bob"],
                   "approver_group_names": ["oncall"], "default_ttl": "1h"}),
        )
        .await
        .unwrap();
        m
    }

    async fn ask(&self, as_: &Requester) -> String {
        let r = self
            .update(
                "approvals/request",
                json!({"role": "prod", "reason": "incident", "ttl": "10m"}),
                as_,
            )
            .await
            .unwrap();
        r.data.unwrap()["approval_id"].as_str().unwrap().to_owned()
    }

    async fn decide(&self, id: &str, how: &str, as_: &Requester) -> Result<Response, Error> {
        self.update(&format!("approvals/{id}/{how}"), json!({}), as_)
            .await
    }

    async fn collect(&self, id: &str, as_: &Requester) -> Result<Response, Error> {
        self.update("creds/prod", json!({"approval_id": id}), as_)
            .await
    }
}

fn denied(r: Result<Response, Error>, words: &str) {
    match r {
        Err(Error::PermissionDenied(m)) => assert!(m.contains(words), "'{words}' not in: {m}"),
        other => panic!("expected a 403 with '{words}', got {other:?}"),
    }
}

#[tokio::test]
async fn a_credential_needs_every_approval_and_is_collected_once_by_its_requester() {
    let m = Mount::new().await;
    let (alice, bob, carol, dave) = (
        who("e-alice", "127.0.0.1"),
        who("e-bob", "127.0.0.1"),
        who("e-carol", "127.0.0.1"),
        who("e-dave", "127.0.0.1"),
    );
    denied(
        m.update("creds/prod", json!({}), &alice).await,
        "approvals/request",
    );
    let id = m.ask(&alice).await;
    denied(m.decide(&id, "approve", &alice).await, "your own");
    denied(m.decide(&id, "approve", &dave).await, "may not decide");
    // A token without an entity never approves, even with the accessor of an approver.
    let tokenless = Requester {
        entity_id: String::new(),
        ..bob.clone()
    };
    denied(m.decide(&id, "approve", &tokenless).await, "entity");

    let first = m.decide(&id, "approve", &bob).await.unwrap();
    assert_eq!(first.data.unwrap()["state"], "pending");
    assert!(matches!(
        m.decide(&id, "approve", &bob).await,
        Err(Error::BadRequest(m)) if m.contains("counts once")
    ));
    denied(m.collect(&id, &alice).await, "pending: 1 of 2");
    let second = m.decide(&id, "approve", &carol).await.unwrap();
    assert_eq!(second.data.unwrap()["state"], "approved");
    assert_eq!(
        m.fake.target.count(),
        0,
        "nothing issued before its collection"
    );

    denied(m.collect(&id, &dave).await, "foreign");
    let issued = m
        .update(
            "creds/prod",
            json!({"approval_id": id, "ttl": "2h"}),
            &alice,
        )
        .await
        .unwrap();
    let lease = issued.lease.unwrap();
    assert_eq!(lease.ttl, 600, "no longer than the approval asked");
    assert_eq!(issued.data.unwrap()["ttl_bound"], "approval");
    assert_eq!(m.fake.target.count(), 1);
    denied(m.collect(&id, &alice).await, "is used");
    assert_eq!(m.fake.target.count(), 1);

    let read = m
        .engine
        .handle({
            let mut r = Request::new(Operation::Read, format!("approvals/{id}"));
            r.requester = alice.clone();
            r
        })
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(read["state"], "used");
    assert!(
        read["cred_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{read:?}"
    );
}

#[tokio::test]
async fn a_failed_issuance_gives_its_approval_back() {
    let m = Mount::new().await;
    let (alice, bob, carol) = (
        who("e-alice", "127.0.0.1"),
        who("e-bob", "127.0.0.1"),
        who("e-carol", "127.0.0.1"),
    );
    let id = m.ask(&alice).await;
    m.decide(&id, "approve", &bob).await.unwrap();
    m.decide(&id, "approve", &carol).await.unwrap();
    m.fake.target.down.store(true, Ordering::SeqCst);
    assert!(m.collect(&id, &alice).await.is_err());
    m.fake.target.down.store(false, Ordering::SeqCst);
    m.collect(&id, &alice)
        .await
        .expect("the approval was given back after the failed create");
}
