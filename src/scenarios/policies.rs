//! Cedar policies deciding issuance, renewal and tasks, and policies/simulate.

use serde_json::{Value, json};

use crate::Error;
use crate::contract::request::{LeaseInfo, Operation, Request, Requester, Response};
use crate::testkit::{self, who};

struct Mount(testkit::Mount);

impl std::ops::Deref for Mount {
    type Target = testkit::Mount;
    fn deref(&self) -> &testkit::Mount {
        &self.0
    }
}

impl Mount {
    async fn new() -> Mount {
        let m = Mount(testkit::Mount::with_groups(&[("e-ops", "ops")]).await);
        for role in ["a", "b"] {
            m.admin(
                &format!("roles/{role}"),
                json!({"db_name": "db", "max_ttl": "2h", "labels": {"env": role}}),
            )
            .await
            .unwrap();
        }
        m
    }

    async fn policy(&self, name: &str, text: &str) -> Response {
        self.update(
            &format!("policies/{name}"),
            json!({ "policy": text }),
            &who("e-admin", "127.0.0.1"),
        )
        .await
        .unwrap()
    }

    /// Issues from `role` as `as_` with `body`, and asks simulate the same question: the
    /// two must agree. Returns the live result.
    async fn issue(&self, role: &str, body: Value, as_: &Requester) -> Result<Response, Error> {
        let live = self
            .update(&format!("creds/{role}"), body.clone(), as_)
            .await;
        let mut question = json!({"action": "issue", "role": role, "entity_id": as_.entity_id,
                                  "source_address": as_.remote_addr});
        for (k, v) in body.as_object().unwrap() {
            question[k] = v.clone();
        }
        let sim = self
            .update("policies/simulate", question, as_)
            .await
            .unwrap();
        let sim = sim.data.unwrap();
        let expected = if live.is_ok() { "allow" } else { "deny" };
        assert_eq!(
            sim["decision"], expected,
            "simulate disagrees: {sim:?} vs {live:?}"
        );
        if let Ok(r) = &live {
            assert_eq!(sim["ttl"], json!(r.lease.as_ref().unwrap().ttl), "{sim:?}");
        }
        live
    }
}

#[tokio::test]
async fn policies_decide_in_scope_requests_and_leave_the_rest_alone() {
    let m = Mount::new().await;
    let (ops, dev) = (who("e-ops", "127.0.0.1"), who("e-dev", "127.0.0.1"));
    m.issue("b", json!({}), &dev).await.unwrap();

    let written = m
        .policy(
            "ops-only",
            "permit(principal in Mayfly::Group::\"ops\", action, resource == Mayfly::Role::\"b\");",
        )
        .await;
    assert_eq!(written.data.unwrap()["policy_ids"], json!(["ops-only"]));
    // Role a is outside the policy's scope: decided as before.
    m.issue("a", json!({}), &dev).await.unwrap();
    let err = m.issue("b", json!({}), &dev).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    assert!(
        err.to_string()
            .contains("no permit policy was satisfied (in scope: ops-only)"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("permit(principal"),
        "no policy text: {err}"
    );
    m.issue("b", json!({}), &ops).await.unwrap();

    // A forbid wins over the permit; headers and role labels reach the context.
    m.policy(
        "no-prod-header",
        "forbid(principal, action, resource) when { context.headers.hasTag(\"x-env\") && \
         resource.hasTag(\"env\") && context.headers.getTag(\"x-env\") == resource.getTag(\"env\") };",
    )
    .await;
    let mut req = Request::new(Operation::Update, "creds/b");
    req.requester = ops.clone();
    req.headers.insert("x-env".into(), "b".into());
    let err = m.engine.handle(req).await.unwrap_err();
    assert_eq!(err.status(), 403);
    assert!(
        err.to_string().contains("forbidden by no-prod-header"),
        "{err}"
    );

    // A permit's @max_ttl caps the TTL, and the warning says so.
    m.policy(
        "ops-only",
        "@max_ttl(\"10m\")\npermit(principal in Mayfly::Group::\"ops\", action, \
         resource == Mayfly::Role::\"b\");",
    )
    .await;
    let r = m.issue("b", json!({"ttl": "1h"}), &ops).await.unwrap();
    assert_eq!(r.lease.as_ref().unwrap().ttl, 600);
    assert_eq!(r.data.as_ref().unwrap()["ttl_bound"], "policy_max_ttl");
    assert!(r.warnings[0].contains("@max_ttl"), "{:?}", r.warnings);

    // Renewal is decided too, for the entity the credential was issued to.
    m.policy(
        "no-renew",
        "forbid(principal, action == Mayfly::Action::\"renew\", resource);",
    )
    .await;
    let mut renew = Request::new(Operation::Renew, "creds/b");
    renew.lease = Some(LeaseInfo {
        internal_data: r.lease.as_ref().unwrap().internal_data.clone(),
        lease_id: String::new(),
        increment: 60,
        max_ttl: 7200,
    });
    let err = m.engine.handle(renew).await.unwrap_err();
    assert!(err.to_string().contains("forbidden by no-renew"), "{err}");

    // Deleting the policies gives today's behaviour back at once.
    for name in ["ops-only", "no-prod-header", "no-renew"] {
        let mut req = Request::new(Operation::Delete, format!("policies/{name}"));
        req.requester = ops.clone();
        m.engine.handle(req).await.unwrap();
    }
    m.issue("b", json!({}), &dev).await.unwrap();
}

#[tokio::test]
async fn task_creation_is_decided_and_capped_and_simulate_moves_the_clock() {
    let m = Mount::new().await;
    let dev = who("e-dev", "10.1.2.3");
    m.policy(
        "tasks",
        "@max_ttl(\"1h\")\npermit(principal, action == Mayfly::Action::\"create_task\", \
         resource) when { context has source_ip && context.source_ip.isInRange(ip(\"10.0.0.0/8\")) };\n\
         permit(principal, action == Mayfly::Action::\"issue\", resource) when { \
         context has task && context.task.age_seconds < 600 && \
         context.task.owner_entity_id == principal.id };",
    )
    .await;
    let r = m.update("tasks", json!({"ttl": "3h"}), &dev).await.unwrap();
    let task = r.data.unwrap();
    assert_eq!(
        task["deadline"].as_u64().unwrap() - task["created_at"].as_u64().unwrap(),
        3600
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("@max_ttl")),
        "{:?}",
        r.warnings
    );
    let err = m
        .update("tasks", json!({}), &who("e-dev", "192.168.0.1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in scope: tasks"), "{err}");

    let id = task["task_id"].as_str().unwrap();
    m.issue("a", json!({"task_id": id}), &dev).await.unwrap();
    let err = m.issue("a", json!({}), &dev).await.unwrap_err();
    assert_eq!(err.status(), 403);
    // Eleven minutes on, the same task is too old.
    let later = task["created_at"].as_u64().unwrap() + 660;
    let sim = m
        .update(
            "policies/simulate",
            json!({"action": "issue", "role": "a", "task_id": id, "time": later}),
            &dev,
        )
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(sim["decision"], "deny", "{sim:?}");
    let sim = m
        .update(
            "policies/simulate",
            json!({"action": "issue", "role": "a", "task_id": id, "time": later - 120}),
            &dev,
        )
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(sim["decision"], "allow", "{sim:?}");
    assert_eq!(sim["policies"], json!(["tasks#2"]));
}

#[tokio::test]
async fn bad_policies_and_simulations_are_refused_and_store_nothing() {
    let m = Mount::new().await;
    let admin = who("e-admin", "127.0.0.1");
    let before = m.storage.dump().len();
    let cases = [
        (json!({}), "field 'policy' is required"),
        (
            json!({"policy": "permit(principal, action, resource) when { context.utc_hour > };"}),
            "line 1, column",
        ),
        (
            json!({"policy": "permit(principal, action, resource) when { resource.colour == \"red\" };"}),
            "does not validate against the schema",
        ),
    ];
    for (body, expected) in cases {
        let err = m
            .update("policies/p", body.clone(), &admin)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 400, "{body}");
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
    assert_eq!(m.storage.dump().len(), before, "nothing stored");
    for (body, expected) in [
        (
            json!({"action": "delete"}),
            "field 'action': expected issue",
        ),
        (json!({"action": "issue"}), "field 'role' is required"),
        (
            json!({"action": "issue", "role": "a", "time": "noon"}),
            "field 'time'",
        ),
    ] {
        let err = m
            .update("policies/simulate", body.clone(), &admin)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 400, "{body}");
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
    let schema = m
        .engine
        .handle(Request::new(Operation::Read, "policies-schema"))
        .await
        .unwrap()
        .data
        .unwrap();
    assert!(
        schema["schema"]
            .as_str()
            .unwrap()
            .contains("namespace Mayfly")
    );
    assert!(
        schema["schema_json"]["Mayfly"]["actions"]["issue"].is_object(),
        "{schema:?}"
    );
}
