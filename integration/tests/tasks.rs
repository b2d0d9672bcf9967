//! Tasks, identity binding, the operator's tools and the audit trail end to end: a real OpenBao
//! loads mayfly, real tokens (root and userpass logins with identity entities and groups) call
//! it over HTTP, and private PostgreSQL clusters that check passwords are the targets.

use std::collections::BTreeMap;

use mayfly_integration::creds::{Cred, mark_of};
use mayfly_integration::postgres::SUPERUSER_PASSWORD;
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
use serde_json::{Value, json};

const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

/// A mount with JSON logs, so the audit events can be read back field by field.
fn bao() -> Bao {
    let bao = Bao::start_with(&["-log-format=json"]);
    bao.register();
    bao.enable("mayfly");
    bao
}

fn ok(status: u16, body: &Value) {
    assert!(status == 200 || status == 204, "{status} {body}");
}

fn connect(bao: &Bao, name: &str, pg: &PrivatePostgres) {
    let (status, body) = bao.put(
        &format!("mayfly/config/{name}"),
        pg.connection("postgresql-database-plugin"),
    );
    ok(status, &body);
}

fn role(bao: &Bao, name: &str, body: Value) {
    let mut body = body;
    body["creation_statements"] = json!(CREATE);
    let (status, resp) = bao.put(&format!("mayfly/roles/{name}"), body);
    ok(status, &resp);
}

fn issue_as(bao: &Bao, token: &str, role: &str, body: Value) -> (u16, Value) {
    bao.request_as(token, "PUT", &format!("mayfly/creds/{role}"), Some(&body))
}

fn issue(bao: &Bao, role: &str, body: Value) -> Cred {
    let (status, body) = bao.put(&format!("mayfly/creds/{role}"), body);
    assert_eq!(status, 200, "{body}");
    Cred::from_response(body)
}

/// The ledger id of the credential whose principal is `user`.
fn cred_id(bao: &Bao, user: &str) -> String {
    let (_, list) = bao.list("mayfly/leases/");
    list["data"]["key_info"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| v["principal"] == user)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| panic!("no ledger record for {user}: {list}"))
}

fn field<'a>(e: &'a Value, name: &str) -> &'a str {
    e[name].as_str().unwrap_or("")
}

#[test]
fn a_task_across_two_connections_ends_in_one_call_and_the_audit_trail_matches() {
    let (pg1, pg2) = (PrivatePostgres::start(), PrivatePostgres::start());
    let bao = bao();
    connect(&bao, "db1", &pg1);
    connect(&bao, "db2", &pg2);
    role(&bao, "reader", json!({"db_name": "db1", "max_ttl": "2h"}));
    role(&bao, "writer", json!({"db_name": "db2"}));

    let (status, task) = bao.put(
        "mayfly/tasks",
        json!({"ttl": "10m", "description": "nightly export", "metadata": {"ticket": "OPS-7"}}),
    );
    assert_eq!(status, 200, "{task}");
    let task_id = task["data"]["task_id"].as_str().unwrap().to_owned();
    assert!(
        !task["data"]["owner"]["token_accessor"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // Asking for more than the task has left gets the task's end, and says so.
    let a = issue(&bao, "reader", json!({"task_id": task_id, "ttl": "1h"}));
    assert!((590..=600).contains(&a.lease_duration), "{}", a.body);
    assert_eq!(a.body["data"]["ttl_bound"], "task");
    let warnings = a.body["warnings"].to_string();
    assert!(warnings.contains("time left in its task"), "{warnings}");
    let b = issue(&bao, "writer", json!({"task_id": task_id}));
    assert!(b.lease_duration <= 600, "{}", b.body);
    assert!(pg1.psql_as(&a.user, &a.password, "SELECT 1").is_ok());
    assert!(pg2.psql_as(&b.user, &b.password, "SELECT 1").is_ok());
    let (status, renewed) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": a.lease_id, "increment": 7200}),
    );
    assert_eq!(status, 200, "{renewed}");
    assert!(
        renewed["lease_duration"].as_u64().unwrap() <= 600,
        "{renewed}"
    );

    // Deleting the task revokes both, on both clusters, before it answers.
    let (status, ended) = bao.delete(&format!("mayfly/tasks/{task_id}"));
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["data"]["revoked"], 2, "{ended}");
    assert!(pg1.roles_like("mf-").is_empty() && pg2.roles_like("mf-").is_empty());
    assert!(pg1.psql_as(&a.user, &a.password, "SELECT 1").is_err());
    let (_, read) = bao.get(&format!("mayfly/tasks/{task_id}"));
    assert_eq!(read["data"]["state"], "ended", "{read}");
    let creds = read["data"]["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2);
    assert!(creds.iter().all(|c| c["state"] == "revoked"), "{read}");
    let (status, refused) = bao.put("mayfly/creds/reader", json!({"task_id": task_id}));
    assert_eq!(status, 400, "{refused}");

    // One audit event per operation performed, and nothing else about this task.
    let (id_a, id_b) = (cred_id(&bao, &a.user), cred_id(&bao, &b.user));
    let mut seen: Vec<(String, String, String)> = bao
        .audit_events()
        .iter()
        .filter(|e| field(e, "task_id") == task_id)
        .map(|e| {
            (
                field(e, "audit_action").to_owned(),
                field(e, "outcome").to_owned(),
                field(e, "cred_id").to_owned(),
            )
        })
        .collect();
    seen.sort();
    let t = |a: &str, o: &str, c: &str| (a.to_owned(), o.to_owned(), c.to_owned());
    let mut expected = vec![
        t("task_create", "ok", ""),
        t("issue", "issued", &id_a),
        t("issue", "issued", &id_b),
        t("renew", "renewed", &id_a),
        t("revoke", "revoked", &id_a),
        t("revoke", "revoked", &id_b),
        t("task_end", "ok", ""),
        t("issue", "failed", ""),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    let events = bao.audit_events();
    let revoke = events
        .iter()
        .find(|e| field(e, "audit_action") == "revoke" && field(e, "cred_id") == id_a)
        .unwrap();
    assert_eq!(field(revoke, "detail"), "task ended: deleted");
    assert_eq!(
        field(revoke, "lease_id"),
        "",
        "the host never revoked this lease"
    );
    let issued = events
        .iter()
        .find(|e| field(e, "audit_action") == "issue" && field(e, "cred_id") == id_b)
        .unwrap();
    assert_eq!(field(issued, "role"), "writer");
    assert_eq!(field(issued, "connection"), "db2");
    assert_eq!(field(issued, "remote_addr"), "127.0.0.1");
    // Nothing secret in the whole log.
    let log = bao.log();
    for secret in [a.password.as_str(), b.password.as_str(), SUPERUSER_PASSWORD] {
        assert!(!log.contains(secret), "a password reached the log");
    }
}

#[test]
fn a_task_deadline_revokes_credentials_whose_leases_would_live_longer() {
    let pg = PrivatePostgres::start();
    let bao = bao();
    connect(&bao, "db", &pg);
    role(&bao, "app", json!({"db_name": "db"}));

    // The lease is an hour long; the task is then cut short.
    let (status, _) = bao.put("mayfly/tasks/migration", json!({"ttl": "1h"}));
    assert_eq!(status, 200);
    let long = issue(&bao, "app", json!({"task_id": "migration", "ttl": "1h"}));
    assert!(long.lease_duration > 3500);
    let (status, body) = bao.put("mayfly/tasks/migration", json!({"ttl": 3}));
    assert_eq!(status, 200, "{body}");
    let gone = wait_until(8.0, || pg.roles_like(&long.user).is_empty());
    assert!(gone, "the task's end did not revoke its credential");
    let (_, lease) = bao.put("sys/leases/lookup", json!({"lease_id": long.lease_id}));
    assert!(
        lease["data"]["ttl"].as_u64().is_some_and(|t| t > 3000),
        "the host's lease should still run: {lease}"
    );
    let (_, task) = bao.get("mayfly/tasks/migration");
    assert_eq!(task["data"]["end_reason"], "deadline reached", "{task}");

    // A short task caps its credentials' leases, and ends them with it.
    let (_, task) = bao.put("mayfly/tasks", json!({"ttl": 4}));
    let short_task = task["data"]["task_id"].as_str().unwrap().to_owned();
    let short = issue(&bao, "app", json!({"task_id": short_task, "ttl": "1h"}));
    assert!(short.lease_duration <= 4, "{}", short.body);
    assert!(wait_until(9.0, || pg.roles_like(&short.user).is_empty()));
    let (_, read) = bao.get(&format!("mayfly/tasks/{short_task}"));
    assert_eq!(read["data"]["state"], "ended", "{read}");
}

#[test]
fn bindings_refuse_the_wrong_entity_network_group_and_task_owner() {
    let pg = PrivatePostgres::start();
    let bao = bao();
    connect(&bao, "db", &pg);
    let (alice, alice_entity) = bao.agent_login("alice");
    let (bob, _) = bao.agent_login("bob");
    let (status, body) = bao.put(
        "identity/group",
        json!({"name": "deployers", "member_entity_ids": [alice_entity]}),
    );
    ok(status, &body);

    role(
        &bao,
        "by-entity",
        json!({"db_name": "db", "bound_entity_ids": alice_entity}),
    );
    role(
        &bao,
        "by-group",
        json!({"db_name": "db", "bound_group_names": "deployers"}),
    );
    role(
        &bao,
        "elsewhere",
        json!({"db_name": "db", "bound_cidrs": "10.0.0.0/8"}),
    );
    role(
        &bao,
        "loopback",
        json!({"db_name": "db", "bound_cidrs": "127.0.0.0/8,::1"}),
    );
    role(
        &bao,
        "tasked",
        json!({"db_name": "db", "require_task": true}),
    );

    let refusals = [
        (&bob, "by-entity", json!({}), "bound_entity_ids"),
        (&bob, "by-group", json!({}), "bound_group_names"),
        (&alice, "elsewhere", json!({}), "bound_cidrs"),
    ];
    for (token, role, body, binding) in &refusals {
        let (status, resp) = issue_as(&bao, token, role, body.clone());
        assert_eq!(status, 403, "{role}: {resp}");
        assert!(resp.to_string().contains(binding), "{role}: {resp}");
    }
    for role in ["by-entity", "by-group", "loopback"] {
        let (status, resp) = issue_as(&bao, &alice, role, json!({}));
        assert_eq!(status, 200, "{role}: {resp}");
    }

    // A task is bound to the entity that opened it.
    let (status, resp) = issue_as(&bao, &alice, "tasked", json!({}));
    assert_eq!(status, 400, "{resp}");
    let (status, task) = bao.request_as(
        &alice,
        "PUT",
        "mayfly/tasks/alice-job",
        Some(&json!({"ttl": "5m"})),
    );
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["data"]["owner"]["entity_id"], alice_entity.as_str());
    let (status, resp) = issue_as(&bao, &bob, "tasked", json!({"task_id": "alice-job"}));
    assert_eq!(status, 403, "{resp}");
    assert!(resp.to_string().contains("bound to its owner"), "{resp}");
    let (status, resp) = issue_as(&bao, &alice, "tasked", json!({"task_id": "alice-job"}));
    assert_eq!(status, 200, "{resp}");
    let (_, lease) = bao.list("mayfly/leases/");
    let recorded = lease["data"]["key_info"].as_object().unwrap().len();
    assert_eq!(recorded, 4, "refused requests left no record: {lease}");

    // The operator's tools need sudo, which the agents' policy does not give.
    let (status, _) = bao.request_as(&alice, "PUT", "mayfly/revoke/all", Some(&json!({})));
    assert_eq!(status, 403);
    let (status, _) = bao.request_as(&alice, "GET", "mayfly/orphans/db", None);
    assert_eq!(status, 403);
    let (status, resp) = bao.put("mayfly/revoke/all", json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["data"]["revoked"], 4, "{resp}");
    assert!(pg.roles_like("mf-").is_empty());

    // Each refusal was logged as a denied issuance naming its binding, with the entity.
    let denied: Vec<Value> = bao
        .audit_events()
        .into_iter()
        .filter(|e| field(e, "audit_action") == "issue" && field(e, "outcome") == "denied")
        .collect();
    assert_eq!(denied.len(), 4, "{denied:?}");
    assert!(denied.iter().all(|e| !field(e, "entity_id").is_empty()));
    let issued = bao
        .audit_events()
        .iter()
        .filter(|e| field(e, "audit_action") == "issue" && field(e, "outcome") == "issued")
        .count();
    assert_eq!(issued, 4);
}

#[test]
fn operators_revoke_in_bulk_see_failures_and_purge_orphans_counted_on_the_target() {
    let pg = PrivatePostgres::start();
    let bao = bao();
    connect(&bao, "db", &pg);
    role(&bao, "alpha", json!({"db_name": "db"}));
    role(&bao, "beta", json!({"db_name": "db"}));
    let alphas: Vec<Cred> = (0..3).map(|_| issue(&bao, "alpha", json!({}))).collect();
    let betas: Vec<Cred> = (0..2).map(|_| issue(&bao, "beta", json!({}))).collect();
    let mark = mark_of(&bao, "mayfly", "db");
    let (alpha, beta) = (format!("{mark}alpha-"), format!("{mark}beta-"));
    assert_eq!(pg.roles_like(&alpha).len(), 3);

    let (status, r) = bao.put("mayfly/revoke/role/alpha", json!({}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["data"]["revoked"].clone(), r["data"]["failed"].clone()),
        (json!(3), json!(0))
    );
    assert!(pg.roles_like(&alpha).is_empty());
    assert!(
        pg.psql_as(&alphas[0].user, &alphas[0].password, "SELECT 1")
            .is_err()
    );
    assert_eq!(pg.roles_like(&beta).len(), 2);

    // One dropped by hand is reported as already gone.
    pg.admin(&format!("DROP ROLE \"{}\"", betas[0].user));
    let (_, r) = bao.put("mayfly/revoke/all", json!({}));
    assert_eq!(r["data"]["revoked"], 1, "{r}");
    assert_eq!(r["data"]["already_gone"], 1, "{r}");
    assert!(pg.roles_like("mf-").is_empty());
    let c = issue(&bao, "beta", json!({}));
    let (_, r) = bao.put("mayfly/revoke/config/db", json!({}));
    assert_eq!(r["data"]["revoked"], 1, "{r}");
    assert!(pg.roles_like(&c.user).is_empty());

    // While the database is down, revocations fail, are listed, and succeed once it is back.
    let down = issue(&bao, "alpha", json!({}));
    pg.halt();
    let (_, r) = bao.put("mayfly/revoke/role/alpha", json!({}));
    assert_eq!(r["data"]["failed"], 1, "{r}");
    let (status, list) = bao.list("mayfly/revocations/");
    assert_eq!(status, 200, "{list}");
    let id = cred_id(&bao, &down.user);
    let info = &list["data"]["key_info"][&id];
    assert_eq!(info["attempts"], 1, "{list}");
    assert!(!info["last_error"].as_str().unwrap().is_empty(), "{list}");
    assert!(info["failing_since"].as_u64().is_some(), "{list}");
    pg.resume();
    let cleared = wait_until(15.0, || pg.roles_like(&down.user).is_empty());
    assert!(cleared, "the failed revocation was not retried");
    let empty = wait_until(5.0, || {
        let (status, list) = bao.list("mayfly/revocations/");
        status == 404
            || list["data"]["keys"]
                .as_array()
                .is_some_and(|k| k.is_empty())
    });
    assert!(empty, "a revoked credential is still listed as failing");

    // 100 principals with the mark and no record: all found, all dropped, no leased one touched.
    let orphan = format!("{mark}orphan-");
    pg.admin(&format!(
        "DO $$ BEGIN FOR i IN 1..100 LOOP \
         EXECUTE format('CREATE ROLE %I LOGIN', '{orphan}' || i); END LOOP; END $$"
    ));
    pg.admin("CREATE ROLE not_mayfly LOGIN");
    let leased: Vec<Cred> = (0..3).map(|_| issue(&bao, "beta", json!({}))).collect();
    let (status, scan) = bao.get("mayfly/orphans/db");
    assert_eq!(status, 200, "{scan}");
    assert_eq!(scan["data"]["count"], 100, "{scan}");
    let found: Vec<&str> = scan["data"]["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(found.iter().all(|o| o.starts_with(&orphan)), "{found:?}");
    let (_, dry) = bao.put("mayfly/orphans/db", json!({}));
    assert_eq!(dry["data"]["dry_run"], true);
    assert_eq!(pg.roles_like(&orphan).len(), 100, "a dry run drops nothing");
    let (status, purge) = bao.put("mayfly/orphans/db", json!({"purge": true}));
    assert_eq!(status, 200, "{purge}");
    assert_eq!(purge["data"]["purged"], 100, "{purge}");
    assert!(pg.roles_like(&orphan).is_empty());
    assert_eq!(pg.roles_like("not_mayfly").len(), 1);
    for c in &leased {
        assert!(
            pg.psql_as(&c.user, &c.password, "SELECT 1").is_ok(),
            "{} was touched",
            c.user
        );
    }

    // Each operator call is one audit event, with its scope and counts.
    let calls: BTreeMap<String, usize> = bao
        .audit_events()
        .iter()
        .filter(|e| field(e, "audit_action").starts_with("o"))
        .fold(BTreeMap::new(), |mut m, e| {
            *m.entry(field(e, "audit_action").to_owned()).or_default() += 1;
            m
        });
    let expected: BTreeMap<String, usize> = [
        ("operator_revoke".to_owned(), 4),
        // Two by the test, one to learn the mount's mark.
        ("orphan_scan".to_owned(), 3),
        ("orphan_purge".to_owned(), 1),
    ]
    .into();
    assert_eq!(calls, expected);
}

#[test]
fn a_task_bound_to_its_owner_is_theirs_alone_whatever_another_token_tries() {
    let pg = PrivatePostgres::start();
    let bao = bao();
    connect(&bao, "db", &pg);
    role(&bao, "app", json!({"db_name": "db"}));
    let (alice, alice_entity) = bao.agent_login("alice");
    let (bob, _) = bao.agent_login("bob");
    let as_ = |token: &str, method: &str, path: &str, body: Option<Value>| {
        bao.request_as(token, method, path, body.as_ref())
    };
    let (status, task) = as_(
        &alice,
        "PUT",
        "mayfly/tasks/alice-job",
        Some(json!({"ttl": "10m"})),
    );
    assert_eq!(status, 200, "{task}");
    let (status, resp) = issue_as(&bao, &alice, "app", json!({"task_id": "alice-job"}));
    assert_eq!(status, 200, "{resp}");
    let alices = Cred::from_response(resp);

    // Another ordinary token can neither read it, unbind it, draw on it nor end it.
    let tries = [
        ("GET", None, "read"),
        ("PUT", Some(json!({"bound_to_owner": false})), "change"),
        ("PUT", Some(json!({"ttl": "1s"})), "change"),
        ("DELETE", None, "end"),
    ];
    for (method, body, doing) in tries {
        let (status, resp) = as_(&bob, method, "mayfly/tasks/alice-job", body);
        assert_eq!(status, 403, "{method}: {resp}");
        let text = resp.to_string();
        assert!(
            text.contains(&format!("only its owner may {doing} it")),
            "{text}"
        );
        assert!(text.contains(&alice_entity), "{text}");
    }
    let (status, resp) = issue_as(&bao, &bob, "app", json!({"task_id": "alice-job"}));
    assert_eq!(status, 403, "{resp}");
    assert_eq!(
        pg.psql_as(&alices.user, &alices.password, "SELECT 1"),
        Ok("1".into()),
        "the owner's credential survived"
    );
    let (_, listed) = as_(&bob, "GET", "mayfly/tasks/?list=true", None);
    assert!(!listed.to_string().contains("alice-job"), "{listed}");
    let (status, listed) = bao.list("mayfly/revoke/task/");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"]["keys"], json!(["alice-job"]));
    // The operator's list is a sudo path.
    let (status, _) = as_(&bob, "GET", "mayfly/revoke/task/?list=true", None);
    assert_eq!(status, 403);

    // Its owner reads and ends it.
    let (status, read) = as_(&alice, "GET", "mayfly/tasks/alice-job", None);
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["data"]["bound_to_owner"], true);
    let (status, ended) = as_(&alice, "DELETE", "mayfly/tasks/alice-job", None);
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["data"]["revoked"], 1);
    assert!(pg.roles_like(&alices.user).is_empty());
}
