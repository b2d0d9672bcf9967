//! Step-up approval end to end: a real OpenBao loads mayfly; a requester and approvers log in
//! with userpass (identity entities, one approver through an identity group) and call it over
//! HTTP; a private PostgreSQL that checks passwords is the target.

use mayfly_integration::creds::Cred;
use mayfly_integration::postgres::CREATE;
use mayfly_integration::{Bao, PrivatePostgres};
use serde_json::{Value, json};

fn ok(status: u16, body: &Value) {
    assert!(status == 200 || status == 204, "{status} {body}");
}

struct People {
    alice: String,
    bob: String,
    carol: String,
    dave: String,
    bob_entity: String,
    carol_entity: String,
}

/// A mount on `pg` with JSON logs; alice requests, bob approves by entity, carol through the
/// `oncall` group, dave only has the same mayfly policy.
fn setup(pg: &PrivatePostgres) -> (Bao, People) {
    let bao = Bao::start_with(&["-log-format=json"]);
    bao.register();
    bao.enable("mayfly");
    pg.connect(&bao, "db");
    let (alice, _) = bao.agent_login("alice");
    let (bob, bob_entity) = bao.agent_login("bob");
    let (carol, carol_entity) = bao.agent_login("carol");
    let (dave, _) = bao.agent_login("dave");
    let (status, body) = bao.put(
        "identity/group",
        json!({"name": "oncall", "member_entity_ids": [carol_entity]}),
    );
    ok(status, &body);
    (
        bao,
        People {
            alice,
            bob,
            carol,
            dave,
            bob_entity,
            carol_entity,
        },
    )
}

fn role(bao: &Bao, name: &str, body: Value) {
    let mut body = body;
    body["db_name"] = json!("db");
    body["creation_statements"] = json!(CREATE);
    let (status, resp) = bao.put(&format!("mayfly/roles/{name}"), body);
    ok(status, &resp);
}

fn ask(bao: &Bao, token: &str, body: Value) -> String {
    let (status, body) = bao.request_as(token, "PUT", "mayfly/approvals/request", Some(&body));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "pending", "{body}");
    body["data"]["approval_id"].as_str().unwrap().to_owned()
}

fn decide(bao: &Bao, token: &str, id: &str, how: &str) -> (u16, Value) {
    bao.request_as(
        token,
        "PUT",
        &format!("mayfly/approvals/{id}/{how}"),
        Some(&json!({"comment": "looked at the incident"})),
    )
}

fn collect(bao: &Bao, token: &str, role: &str, id: &str) -> (u16, Value) {
    bao.request_as(
        token,
        "PUT",
        &format!("mayfly/creds/{role}"),
        Some(&json!({"approval_id": id})),
    )
}

fn refused(status: u16, body: &Value, words: &str) {
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains(words), "'{words}' not in {body}");
}

#[test]
fn two_approvals_let_the_requester_collect_once_and_nobody_else() {
    let pg = PrivatePostgres::start();
    let (bao, p) = setup(&pg);
    role(
        &bao,
        "prod",
        json!({"approvals_required": 2, "approver_entity_ids": [p.bob_entity],
               "approver_group_names": ["oncall"], "approval_ttl": "10m", "default_ttl": "1h"}),
    );
    let (_, read) = bao.get("mayfly/roles/prod");
    assert_eq!(read["data"]["approvals_required"], 2, "{read}");
    assert_eq!(read["data"]["approval_ttl"], 600, "{read}");

    // Without approval: a 403 that says where to ask, so no empty secret is rendered.
    let (status, body) = bao.request_as(&p.alice, "GET", "mayfly/creds/prod", None);
    refused(status, &body, "approvals/request");

    let id = ask(
        &bao,
        &p.alice,
        json!({"role": "prod", "reason": "incident 7: read the orders table", "ttl": "5m"}),
    );
    let (status, body) = decide(&bao, &p.alice, &id, "approve");
    refused(status, &body, "your own");
    let (status, body) = decide(&bao, &p.dave, &id, "approve");
    refused(status, &body, "may not decide");

    let (status, body) = decide(&bao, &p.bob, &id, "approve");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "pending", "one of two: {body}");
    let (status, body) = decide(&bao, &p.bob, &id, "approve");
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("counts once"), "{body}");
    let (status, body) = collect(&bao, &p.alice, "prod", &id);
    refused(status, &body, "pending: 1 of 2");

    let (status, body) = decide(&bao, &p.carol, &id, "approve");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "approved", "{body}");

    // Policies see the approval: one that forbids what carol approved refuses the collection,
    // and the approval is given back, not spent.
    let (status, body) = bao.put(
        "mayfly/policies/approved-by",
        json!({"policy": "permit(principal, action, resource);\n\
            forbid(principal, action == Mayfly::Action::\"issue\", resource) \
            when { context has approval && context.approval.approvers.contains(\"CAROL\") \
            && context.approval.reason like \"incident*\" };"
            .replace("CAROL", &p.carol_entity)}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = collect(&bao, &p.alice, "prod", &id);
    refused(status, &body, "denied by policy");
    let (status, body) = bao.delete("mayfly/policies/approved-by");
    assert!(status == 200 || status == 204, "{status} {body}");

    // Only the requester collects it, once, no longer than asked, and it logs in.
    let (status, body) = collect(&bao, &p.dave, "prod", &id);
    refused(status, &body, "foreign");
    let (status, body) = collect(&bao, &p.alice, "prod", &id);
    assert_eq!(status, 200, "{body}");
    let cred = Cred::from_response(body);
    assert!(cred.lease_duration <= 300, "{}", cred.body);
    pg.psql_as(&cred.user, &cred.password, "SELECT 1")
        .expect("the approved credential logs in");
    let (status, body) = collect(&bao, &p.alice, "prod", &id);
    refused(status, &body, "is used");

    // The request as its requester and approvers see it; dave sees nothing.
    let (status, body) = bao.request_as(&p.bob, "GET", &format!("mayfly/approvals/{id}"), None);
    assert_eq!(status, 200, "{body}");
    let a = &body["data"];
    assert_eq!(a["state"], "used", "{body}");
    assert_eq!(a["reason"], "incident 7: read the orders table");
    assert_eq!(a["approvals"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(a["requester"]["display_name"], "userpass-alice", "{body}");
    let (status, _) = bao.request_as(&p.dave, "GET", &format!("mayfly/approvals/{id}"), None);
    assert_eq!(status, 403);
    let (status, body) = bao.request_as(&p.dave, "GET", "mayfly/approvals/?list=true", None);
    assert!(
        status == 404 || body["data"]["keys"].as_array().is_none_or(|k| k.is_empty()),
        "{status} {body}"
    );
    let (status, body) = bao.request_as(&p.alice, "GET", "mayfly/approvals/?list=true", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["keys"], json!([id]), "{body}");

    // Denied.
    let denied = ask(&bao, &p.alice, json!({"role": "prod", "reason": "again"}));
    let (status, body) = decide(&bao, &p.carol, &denied, "deny");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "denied", "{body}");
    let (status, body) = collect(&bao, &p.alice, "prod", &denied);
    refused(status, &body, "is denied");
    let (status, body) = decide(&bao, &p.bob, &denied, "approve");
    assert_eq!(status, 400, "a decided request stays decided: {body}");

    // Approvers list what they may decide, by state.
    let pending = ask(&bao, &p.alice, json!({"role": "prod", "reason": "later"}));
    let (status, body) = bao.request_as(
        &p.bob,
        "GET",
        "mayfly/approvals/?list=true&state=pending",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["keys"], json!([pending]), "{body}");

    // Every step is an audit event.
    let events = bao.audit_events();
    for action in ["approval_request", "approval_approve", "approval_deny"] {
        assert!(
            events.iter().any(|e| e["audit_action"] == action),
            "no {action} event"
        );
    }
    assert!(
        events.iter().any(|e| e["audit_action"] == "issue"
            && e["outcome"] == "issued"
            && e.to_string().contains(&id)),
        "the issuance does not name its approval"
    );
    let log = bao.log();
    assert!(!log.contains(&cred.password), "the password is in the log");
}

#[test]
fn an_approval_expires_and_a_tasks_end_ends_its_requests() {
    let pg = PrivatePostgres::start();
    let (bao, p) = setup(&pg);
    role(
        &bao,
        "brief",
        json!({"approvals_required": 1, "approver_entity_ids": [p.bob_entity],
               "approval_ttl": "2s"}),
    );
    let id = ask(
        &bao,
        &p.alice,
        json!({"role": "brief", "reason": "quick look"}),
    );
    let (status, body) = decide(&bao, &p.bob, &id, "approve");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "approved", "{body}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (status, body) = collect(&bao, &p.alice, "brief", &id);
    refused(status, &body, "is expired");

    // A request under a task ends with the task.
    let (status, body) = bao.request_as(
        &p.alice,
        "PUT",
        "mayfly/tasks",
        Some(&json!({"description": "migration", "ttl": "1h"})),
    );
    assert_eq!(status, 200, "{body}");
    let task = body["data"]["task_id"].as_str().unwrap().to_owned();
    let under = ask(
        &bao,
        &p.alice,
        json!({"role": "brief", "reason": "migration", "task_id": task}),
    );
    let (status, body) = bao.request_as(&p.alice, "DELETE", &format!("mayfly/tasks/{task}"), None);
    assert!(status == 200 || status == 204, "{status} {body}");
    let (status, body) =
        bao.request_as(&p.alice, "GET", &format!("mayfly/approvals/{under}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "ended", "{body}");
    let (status, body) = decide(&bao, &p.bob, &under, "approve");
    assert_eq!(status, 400, "{body}");

    // Bad input is named.
    let (status, body) = bao.request_as(
        &p.alice,
        "PUT",
        "mayfly/approvals/request",
        Some(&json!({"role": "brief"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("'reason'"), "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/nobody",
        json!({"db_name": "db", "approvals_required": 1}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("approver_entity_ids"), "{body}");
}
