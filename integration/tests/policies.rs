//! Cedar policies end to end: a real OpenBao (listening on 127.0.0.1 and ::1) loads mayfly,
//! real tokens (root, and userpass logins with identity entities and a group) issue, renew and
//! open tasks over HTTP against a private PostgreSQL, and each policy allows and denies as
//! written. Every live decision is asked of `policies/simulate` too, which must agree.

use mayfly_integration::bao::ROOT_TOKEN as ROOT;
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
use serde_json::{Value, json};

const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

/// How a request reaches OpenBao.
#[derive(Clone, Copy)]
enum Via {
    V4,
    V6,
}

struct Mount {
    bao: Bao,
    _pg: PrivatePostgres,
}

impl Mount {
    fn start() -> Mount {
        let pg = PrivatePostgres::start();
        let bao = Bao::start_dual_stack(&["-log-format=json"]);
        bao.register();
        bao.enable("mayfly");
        let (status, body) = bao.put(
            "sys/mounts/mayfly/tune",
            json!({"passthrough_request_headers": ["X-Pipeline"]}),
        );
        assert!(status < 300, "{body}");
        let (status, body) = bao.put(
            "mayfly/config/db",
            pg.connection("postgresql-database-plugin"),
        );
        assert!(status < 300, "{body}");
        for role in ["tasked", "local", "grouped", "hours", "open"] {
            let (status, body) = bao.put(
                &format!("mayfly/roles/{role}"),
                json!({"db_name": "db", "creation_statements": CREATE, "default_ttl": "10m",
                       "labels": {"team": "payments"}}),
            );
            assert!(status < 300, "{body}");
        }
        Mount { bao, _pg: pg }
    }

    fn policy(&self, name: &str, text: &str) {
        let (status, body) = self.bao.put(
            &format!("mayfly/policies/{name}"),
            json!({ "policy": text }),
        );
        assert_eq!(status, 200, "{name}: {body}");
    }

    fn send(&self, token: &str, via: Via, path: &str, body: &Value) -> (u16, Value) {
        match via {
            Via::V4 => self.bao.request_as(token, "PUT", path, Some(body)),
            Via::V6 => self.bao.request_v6(token, "PUT", path, Some(body)),
        }
    }

    /// Issues from `role` as `token` and expects `status`; a denial must name `policy`. Asks
    /// simulate the same question from the same client first: it must give the same answer.
    fn expect(&self, token: &str, via: Via, role: &str, body: Value, status: u16, policy: &str) {
        let mut question = json!({"action": "issue", "role": role});
        for (k, v) in body.as_object().unwrap() {
            question[k] = v.clone();
        }
        let (s, sim) = self.send(token, via, "mayfly/policies/simulate", &question);
        assert_eq!(s, 200, "{sim}");
        let decision = if status == 200 { "allow" } else { "deny" };
        assert_eq!(
            sim["data"]["decision"], decision,
            "simulate for {role}: {sim}"
        );

        let (s, resp) = self.send(token, via, &format!("mayfly/creds/{role}"), &body);
        assert_eq!(s, status, "{role}: {resp}");
        if status == 403 {
            let text = resp.to_string();
            assert!(text.contains(policy), "{role}: {text}");
            assert!(
                !text.contains("permit("),
                "a denial never shows policy text: {text}"
            );
        } else {
            assert_eq!(sim["data"]["ttl"], resp["lease_duration"], "{sim} {resp}");
        }
    }
}

#[test]
fn each_policy_allows_and_denies_as_written_and_simulate_agrees() {
    let m = Mount::start();
    let bao = &m.bao;
    let (alice, alice_entity) = bao.agent_login("alice");
    let (bob, _) = bao.agent_login("bob");
    let (status, body) = bao.put(
        "identity/group",
        json!({"name": "deployers", "member_entity_ids": [alice_entity]}),
    );
    assert!(status < 300, "{body}");

    // An invalid policy is refused with its location; nothing is stored.
    let (status, body) = bao.put(
        "mayfly/policies/broken",
        json!({"policy": "permit(principal, action, resource)\nwhen { context.utc_hour >= };"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("line 2, column"), "{body}");
    let (status, body) = bao.put(
        "mayfly/policies/broken",
        json!({"policy": "permit(principal, action, resource) when { principal.age > 3 };"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("does not validate"), "{body}");
    assert_eq!(bao.get("mayfly/policies/broken").0, 404);

    // Task creation: a permit that caps tasks at 20 minutes.
    m.policy(
        "task-cap",
        "@max_ttl(\"20m\")\npermit(principal, action == Mayfly::Action::\"create_task\", resource);",
    );
    let (status, task) = bao.request_as(&alice, "PUT", "mayfly/tasks", Some(&json!({"ttl": "1h"})));
    assert_eq!(status, 200, "{task}");
    let created = task["data"]["created_at"].as_u64().unwrap();
    assert_eq!(
        task["data"]["deadline"].as_u64().unwrap() - created,
        1200,
        "{task}"
    );
    assert!(task["warnings"].to_string().contains("@max_ttl"), "{task}");
    let task_id = task["data"]["task_id"].as_str().unwrap().to_owned();

    // Only within a task opened less than ten minutes ago.
    m.policy(
        "fresh-task",
        "permit(principal, action == Mayfly::Action::\"issue\", resource == Mayfly::Role::\"tasked\")\n\
         when { context has task && context.task.age_seconds < 600 };",
    );
    m.expect(
        &alice,
        Via::V4,
        "tasked",
        json!({"task_id": task_id}),
        200,
        "",
    );
    m.expect(&alice, Via::V4, "tasked", json!({}), 403, "fresh-task");
    let (_, sim) = bao.request_as(
        &alice,
        "PUT",
        "mayfly/policies/simulate",
        Some(
            &json!({"action": "issue", "role": "tasked", "task_id": task_id,
                     "time": created + 660}),
        ),
    );
    assert_eq!(sim["data"]["decision"], "deny", "eleven minutes on: {sim}");
    // The same rule with a three-second window, lived through.
    m.policy(
        "fresh-task",
        "permit(principal, action == Mayfly::Action::\"issue\", resource == Mayfly::Role::\"tasked\")\n\
         when { context has task && context.task.age_seconds < 3 };",
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    m.expect(
        &alice,
        Via::V4,
        "tasked",
        json!({"task_id": task_id}),
        403,
        "fresh-task",
    );

    // Only from 127.0.0.0/8: the same token is refused through the ::1 listener.
    m.policy(
        "loopback-v4",
        "permit(principal, action, resource == Mayfly::Role::\"local\") when {\n  \
         context has source_ip && context.source_ip.isInRange(ip(\"127.0.0.0/8\")) };",
    );
    m.expect(&alice, Via::V4, "local", json!({}), 200, "");
    m.expect(&alice, Via::V6, "local", json!({}), 403, "loopback-v4");

    // Only for members of a group: not bob, not a root token (no entity at all).
    m.policy(
        "deployers",
        "permit(principal in Mayfly::Group::\"deployers\", action, resource == Mayfly::Role::\"grouped\")\n\
         when { resource.hasTag(\"team\") && resource.getTag(\"team\") == \"payments\" };",
    );
    m.expect(&alice, Via::V4, "grouped", json!({}), 200, "");
    m.expect(&bob, Via::V4, "grouped", json!({}), 403, "deployers");
    m.expect(ROOT, Via::V4, "grouped", json!({}), 403, "deployers");

    // Only during given hours (UTC): this hour and the next, then three hours away.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = (now / 3600) % 24;
    let hours = |a: u64, b: u64| {
        format!(
            "permit(principal, action, resource == Mayfly::Role::\"hours\") when {{ \
             context.utc_hour == {} || context.utc_hour == {} }};",
            a % 24,
            b % 24
        )
    };
    m.policy("office-hours", &hours(hour, hour + 1));
    m.expect(&bob, Via::V4, "hours", json!({}), 200, "");
    m.policy("office-hours", &hours(hour + 3, hour + 4));
    m.expect(&bob, Via::V4, "hours", json!({}), 403, "office-hours");

    // A role no policy covers is decided as before; a passed-through header can forbid.
    m.expect(&bob, Via::V4, "open", json!({}), 200, "");
    m.policy(
        "pipeline",
        "permit(principal, action == Mayfly::Action::\"issue\", resource == Mayfly::Role::\"open\");\n\
         forbid(principal, action, resource) when {\n  context.headers.hasTag(\"x-pipeline\") && \
         context.headers.getTag(\"x-pipeline\") == \"untrusted\" };",
    );
    let (status, body) = bao.request_with_headers(
        &bob,
        "PUT",
        "mayfly/creds/open",
        Some(&json!({})),
        &[("X-Pipeline", "untrusted")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains("forbidden by pipeline#2"),
        "{body}"
    );
    let (status, body) = bao.request_with_headers(
        &bob,
        "PUT",
        "mayfly/creds/open",
        Some(&json!({})),
        &[("X-Pipeline", "release")],
    );
    assert_eq!(status, 200, "{body}");
    let bobs_lease = body["lease_id"].as_str().unwrap().to_owned();

    // Renewal is decided for the entity the credential was issued to, whoever renews it.
    let (status, body) = bao.request_as(&alice, "PUT", "mayfly/creds/grouped", Some(&json!({})));
    assert_eq!(status, 200, "{body}");
    let alices_lease = body["lease_id"].as_str().unwrap().to_owned();
    m.policy(
        "renew-deployers",
        "permit(principal in Mayfly::Group::\"deployers\", action == Mayfly::Action::\"renew\", resource);",
    );
    let renew = |lease: &str| {
        bao.put(
            "sys/leases/renew",
            json!({"lease_id": lease, "increment": 900}),
        )
    };
    let (status, body) = renew(&alices_lease);
    assert_eq!(status, 200, "{body}");
    let (status, body) = renew(&bobs_lease);
    assert!(status >= 400, "{body}");
    assert!(body.to_string().contains("renew-deployers"), "{body}");

    // Each decision was logged, in the request's own audit event, with the ids of the
    // policies that made it.
    let decided = wait_until(5.0, || {
        let events = bao.audit_events();
        let has =
            |action: &str, outcome: &str, policy: &dyn Fn(&str) -> bool, who: (&str, &str)| {
                events.iter().any(|e| {
                    e["audit_action"] == action
                        && e["outcome"] == outcome
                        && e["policy"].as_str().is_some_and(policy)
                        && (who.1.is_empty() || e[who.0] == who.1)
                })
            };
        has(
            "issue",
            "denied",
            &|p| p == "no permit policy was satisfied (in scope: loopback-v4)",
            ("remote_addr", "::1"),
        ) && has(
            "issue",
            "issued",
            &|p| p == "permitted by deployers",
            ("entity_id", &alice_entity),
        ) && has(
            "renew",
            "denied",
            &|p| p.starts_with("no permit policy was satisfied") && p.contains("renew-deployers"),
            ("", ""),
        ) && has(
            "task_create",
            "ok",
            &|p| p == "permitted by task-cap",
            ("entity_id", &alice_entity),
        ) && has("issue", "issued", &|p| p.is_empty(), ("role", "open"))
    });
    assert!(
        decided,
        "policy decisions missing from the audit trail:\n{}",
        bao.log()
    );
}
