//! Continuous authorization: live credentials decided again against the policies on `hold`,
//! ended by a satisfied forbid or a closed permit, and nothing else.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::contract::host::now;
use crate::contract::request::{LeaseInfo, Operation, Request, Requester};
use crate::testkit::{self, who};

/// A credential as issued: its ledger id and its principal.
struct Issued {
    id: String,
    name: String,
    /// The lease's internal data, for a renewal.
    internal: serde_json::Map<String, Value>,
}

struct Mount(testkit::Mount);

impl std::ops::Deref for Mount {
    type Target = testkit::Mount;
    fn deref(&self) -> &testkit::Mount {
        &self.0
    }
}

impl Mount {
    /// Roles `a` and `b` on one connection; the sweep every second.
    async fn new() -> Mount {
        let m = Mount(testkit::Mount::with_groups(&[("e-ops", "ops")]).await);
        for role in ["a", "b"] {
            m.admin(
                &format!("roles/{role}"),
                json!({"db_name": "db", "default_ttl": "1h", "labels": {"tier": role}}),
            )
            .await
            .unwrap();
        }
        m.admin("config/hold", json!({"hold_interval": "1s"}))
            .await
            .unwrap();
        m
    }

    async fn issue(&self, role: &str, as_: &Requester) -> Issued {
        self.issue_with(role, json!({}), as_).await
    }

    async fn issue_with(&self, role: &str, body: Value, as_: &Requester) -> Issued {
        let r = self
            .call(Operation::Update, &format!("creds/{role}"), body, as_)
            .await
            .unwrap();
        let internal = r.lease.as_ref().unwrap().internal_data.clone();
        Issued {
            id: internal["cred_id"].as_str().unwrap().to_owned(),
            name: r.data.unwrap()["username"].as_str().unwrap().to_owned(),
            internal,
        }
    }

    /// Writes policy `name` and returns how many live credentials the write says it ends.
    async fn policy(&self, name: &str, text: &str) -> u64 {
        let r = self
            .admin(&format!("policies/{name}"), json!({ "policy": text }))
            .await
            .unwrap();
        r.data.unwrap()["hold_would_end"].as_u64().unwrap()
    }

    async fn lease(&self, id: &str) -> Value {
        let r = self
            .call(
                Operation::Read,
                &format!("leases/{id}"),
                json!({}),
                &who("e-admin", "127.0.0.1"),
            )
            .await
            .unwrap();
        Value::Object(r.data.unwrap())
    }

    /// Waits up to `secs` for `cred`'s principal to be gone from the target.
    async fn gone_within(&self, cred: &Issued, secs: u64) -> bool {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if !self.fake.target.has(&cred.name) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn last_pass(&self) -> Value {
        let r = self
            .call(
                Operation::Read,
                "config/hold",
                json!({}),
                &who("e-admin", "127.0.0.1"),
            )
            .await
            .unwrap();
        r.data.unwrap()["last_pass"].clone()
    }
}

#[tokio::test]
async fn a_forbid_on_hold_ends_its_roles_credentials_and_no_other() {
    let m = Mount::new().await;
    let (ops, dev) = (who("e-ops", "127.0.0.1"), who("e-dev", "127.0.0.1"));
    let a1 = m.issue("a", &ops).await;
    let a2 = m.issue("a", &dev).await;
    let b1 = m.issue("b", &dev).await;

    // Written for requests (any action): never ends a live credential.
    assert_eq!(
        m.policy(
            "all-actions",
            "forbid(principal, action, resource == Mayfly::Role::\"a\") when { context.ttl > 0 };"
        )
        .await,
        0
    );
    // Not satisfied for anyone: a narrow forbid sweeps nothing by default-deny.
    assert_eq!(m.policy("nobody", "forbid(principal == Mayfly::Identity::\"e-nobody\", action == Mayfly::Action::\"hold\", resource);").await, 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for c in [&a1, &a2, &b1] {
        assert!(m.fake.target.has(&c.name), "{} was ended", c.name);
    }
    let pass = m.last_pass().await;
    assert_eq!(pass["decided"], json!(3), "{pass}");
    assert_eq!(pass["ended"], json!(0), "{pass}");

    // The simulation says the same as the sweep will.
    let text = "forbid(principal, action == Mayfly::Action::\"hold\", resource) when { resource.hasTag(\"tier\") && resource.getTag(\"tier\") == \"a\" };";
    let sim = |id: &str| json!({"action": "hold", "cred_id": id});
    assert_eq!(m.policy("tier-a", text).await, 2);
    for (c, expected) in [(&a1, "deny"), (&b1, "allow")] {
        let r = m
            .admin("policies/simulate", sim(&c.id))
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(r["decision"], json!(expected), "{r:?}");
    }
    assert!(m.gone_within(&a1, 5).await && m.gone_within(&a2, 5).await);
    assert!(m.fake.target.has(&b1.name));
    let lease = m.lease(&a1.id).await;
    assert_eq!(lease["state"], json!("revoked"), "{lease}");
    assert_eq!(
        lease["revoke_reason"],
        json!("ended by hold policy: forbidden by tier-a")
    );
    // Issuance is not a hold: role a still issues once the request policy is gone.
    m.call(
        Operation::Delete,
        "policies/all-actions",
        json!({}),
        &who("e-admin", "127.0.0.1"),
    )
    .await
    .unwrap();
    let a3 = m.issue("a", &dev).await;
    assert!(
        m.gone_within(&a3, 5).await,
        "a new credential of a is ended too"
    );
}

#[tokio::test]
async fn a_permit_on_hold_ends_credentials_once_it_no_longer_holds() {
    let m = Mount::new().await;
    let (ops, dev) = (who("e-ops", "127.0.0.1"), who("e-dev", "127.0.0.1"));
    let by_ops = m.issue("b", &ops).await;
    let by_dev = m.issue("b", &dev).await;
    let other = m.issue("a", &dev).await;
    // Ops may hold role b for good; anyone else until the window closes, 3 s from now.
    let close = now() + 3;
    let text = format!(
        "permit(principal in Mayfly::Group::\"ops\", action == Mayfly::Action::\"hold\", \
         resource == Mayfly::Role::\"b\");\n\
         permit(principal, action == Mayfly::Action::\"hold\", resource == Mayfly::Role::\"b\") \
         when {{ context.unix_time < {close} }};"
    );
    assert_eq!(m.policy("window", &text).await, 0);
    let at = |t: u64| json!({"action": "hold", "cred_id": by_dev.id, "time": t});
    let later = m
        .admin("policies/simulate", at(close + 1))
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(later["decision"], json!("deny"), "{later:?}");
    assert!(
        later["summary"]
            .as_str()
            .unwrap()
            .contains("no permit policy was satisfied"),
        "{later:?}"
    );
    assert!(m.fake.target.has(&by_dev.name));
    assert!(m.gone_within(&by_dev, 8).await, "the window closed");
    assert!(m.fake.target.has(&by_ops.name));
    assert!(m.fake.target.has(&other.name), "role a has no hold policy");
    let lease = m.lease(&by_dev.id).await;
    assert_eq!(
        lease["revoke_reason"],
        json!("ended by hold policy: no permit policy was satisfied (in scope: window, window#2)")
    );
}

#[tokio::test]
async fn a_hold_policy_that_fails_to_evaluate_ends_nothing_and_is_reported() {
    let m = Mount::new().await;
    let dev = who("e-dev", "127.0.0.1");
    let c = m.issue("a", &dev).await;
    // Validation cannot rule out an overflow: evaluating this permit errors.
    let text = "permit(principal, action == Mayfly::Action::\"hold\", resource) when { context.unix_time * 9223372036854775807 > 0 };";
    let r = m
        .admin("policies/needs-task", json!({ "policy": text }))
        .await
        .unwrap();
    assert_eq!(r.data.unwrap()["hold_would_end"], json!(0));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("hold: not decided") && w.contains("needs-task")),
        "{:?}",
        r.warnings
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(m.fake.target.has(&c.name));
    let pass = m.last_pass().await;
    assert_eq!(pass["ended"], json!(0), "{pass}");
    assert!(pass["errors"].to_string().contains("needs-task"), "{pass}");
}

#[tokio::test]
async fn without_hold_policies_the_sweep_decides_nothing() {
    let m = Mount::new().await;
    m.issue("a", &who("e-dev", "127.0.0.1")).await;
    m.policy(
        "issue-only",
        "permit(principal, action == Mayfly::Action::\"issue\", resource);",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pass = m.last_pass().await;
    assert_eq!(pass["decided"], json!(0), "{pass}");
}

#[tokio::test]
async fn a_renewed_credential_is_decided_on_its_new_deadline() {
    let m = Mount::new().await;
    let c = m.issue("a", &who("e-dev", "127.0.0.1")).await;
    let text = "forbid(principal, action == Mayfly::Action::\"hold\", resource) \
                when { context.credential.remaining_seconds > 5400 };";
    assert_eq!(m.policy("long-lived", text).await, 0);
    // Passes have read the credential, with an hour left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut renew = Request::new(Operation::Renew, "creds/a");
    renew.lease = Some(LeaseInfo {
        internal_data: c.internal.clone(),
        lease_id: "mayfly/creds/a/x".into(),
        increment: 7200,
        max_ttl: 86400,
    });
    m.engine.handle(renew).await.unwrap();
    assert!(
        m.gone_within(&c, 5).await,
        "decided on the renewed deadline"
    );
    let lease = m.lease(&c.id).await;
    assert_eq!(
        lease["revoke_reason"],
        json!("ended by hold policy: forbidden by long-lived")
    );
}

#[tokio::test]
async fn a_task_changed_after_a_pass_is_decided_as_it_is_now() {
    let m = Mount::new().await;
    let dev = who("e-dev", "127.0.0.1");
    let task = m
        .call(
            Operation::Update,
            "tasks",
            json!({"ttl": "1h", "metadata": {"ticket": "T-1"}}),
            &dev,
        )
        .await
        .unwrap();
    let task_id = task.data.unwrap()["task_id"].as_str().unwrap().to_owned();
    let c = m.issue_with("a", json!({ "task_id": task_id }), &dev).await;
    let text = "permit(principal, action == Mayfly::Action::\"hold\", resource) \
                when { context has task && context.task.hasTag(\"ticket\") };";
    assert_eq!(m.policy("ticketed", text).await, 0);
    // Passes have read the task, with its ticket.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(m.fake.target.has(&c.name));
    m.call(
        Operation::Update,
        &format!("tasks/{task_id}"),
        json!({"metadata": {"note": "ticket closed"}}),
        &dev,
    )
    .await
    .unwrap();
    assert!(
        m.gone_within(&c, 5).await,
        "decided on the task as it is now"
    );
}

#[tokio::test]
async fn a_stored_policy_that_no_longer_checks_does_not_block_other_writes() {
    let m = Mount::new().await;
    let broken = json!({"policy": "permit(principal, action, resource) when { context.gone };",
                        "updated_at": 0});
    crate::contract::storage::put_json(&m.storage, "policies/broken", &broken)
        .await
        .unwrap();
    let r = m
        .admin(
            "policies/other",
            json!({"policy": "permit(principal, action == Mayfly::Action::\"hold\", resource);"}),
        )
        .await
        .unwrap();
    assert_eq!(r.data.unwrap()["hold_would_end"], Value::Null);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("hold_would_end not counted") && w.contains("broken")),
        "{:?}",
        r.warnings
    );
    // Rewriting the broken one is counted again.
    assert_eq!(
        m.policy("broken", "permit(principal, action, resource);")
            .await,
        0
    );
}
