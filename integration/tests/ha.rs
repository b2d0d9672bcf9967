//! mayfly in a 3-node OpenBao raft cluster on loopback, as production runs it: standbys serve
//! reads and forward everything else, never touch a target, and never revoke on their own;
//! the active node does it all, and a failover keeps every deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use mayfly_integration::cluster::{Cluster, Options};
use mayfly_integration::creds::{Cred, now};
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
use serde_json::{Value, json};

const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'";

/// Connection `db` on `pg` (as its superuser) and role `app` (TTL `ttl` seconds, renewable to
/// 10 minutes), written through node `via`.
fn configure(cluster: &Cluster, via: usize, pg: &PrivatePostgres, ttl: u64) {
    let node = &cluster.nodes[via];
    let (status, body) = node.put("mayfly/config/db", pg.connection("postgres"));
    assert_eq!(status, 204, "{body}\n{}", cluster.logs());
    let (status, body) = node.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "default_ttl": ttl, "max_ttl": "10m",
               "creation_statements": [CREATE]}),
    );
    assert_eq!(status, 204, "{body}");
}

/// Issues a credential of `path` through `node`.
fn issue(node: &Bao, path: &str) -> Cred {
    let (status, body) = node.get(path);
    assert_eq!(status, 200, "{body}");
    Cred::from_response(body)
}

/// The ledger's records by principal, as node `node` reads them.
fn ledger(node: &Bao) -> Vec<Value> {
    let (_, list) = node.list("mayfly/leases/");
    list["data"]["key_info"]
        .as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

fn state_of(node: &Bao, user: &str) -> String {
    ledger(node)
        .iter()
        .find(|r| r["principal"] == user)
        .map(|r| r["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_else(|| "missing".to_owned())
}

/// Whether `cred` logs in to `pg` with its password.
fn logs_in(pg: &PrivatePostgres, cred: &Cred) -> bool {
    pg.psql_as(&cred.user, &cred.password, "SELECT 1").is_ok()
}

/// No standby wrote or acted: no refused writes, no audit events (a forwarded request leaves
/// its event on the node that executed it).
fn assert_standbys_quiet(cluster: &Cluster, standbys: &[usize]) {
    for &i in standbys {
        let refused = cluster.readonly_failures(i);
        assert!(
            refused.is_empty(),
            "node {i} logged {} refused writes, e.g. {}",
            refused.len(),
            refused[0]
        );
        let events = cluster.audit_events(i);
        assert!(
            events.is_empty(),
            "standby node {i} emitted {} audit events, e.g. {}",
            events.len(),
            events[0]
        );
    }
}

#[test]
fn standbys_serve_reads_forward_the_rest_and_never_act() {
    let pg = PrivatePostgres::start();
    let mut cluster = Cluster::start(Options::default());
    let active = cluster.active();
    let standbys = cluster.standbys();
    assert_eq!(standbys.len(), 2, "{}", cluster.logs());
    let (s1, s2) = (standbys[0], standbys[1]);
    // The role each node's mayfly read from the host at Initialize (protocol document §6a).
    let roles: Vec<_> = (0..3).map(|i| cluster.initialized_roles(i)).collect();
    eprintln!("roles read at Initialize: {roles:?}");
    assert_eq!(roles[active], [("active".to_owned(), 8224)]);
    for i in [s1, s2] {
        assert_eq!(roles[i], [("standby".to_owned(), 24576)]);
    }

    // Written through a standby: forwarded to the active node, readable everywhere.
    configure(&cluster, s1, &pg, 20);
    for i in [active, s1, s2] {
        let ok = wait_until(10.0, || cluster.nodes[i].get("mayfly/roles/app").0 == 200);
        assert!(ok, "node {i} does not serve roles/app");
    }
    // A change made on the active node reaches a standby's cached copy.
    let (status, _) = cluster.nodes[active].put("mayfly/roles/app", json!({"max_ttl": "9m"}));
    assert_eq!(status, 204);
    let seen = wait_until(10.0, || {
        cluster.nodes[s2].get("mayfly/roles/app").1["data"]["max_ttl"] == 540
    });
    assert!(seen, "{}", cluster.nodes[s2].get("mayfly/roles/app").1);

    // Issued through standbys, renewed through a standby.
    let creds: Vec<Cred> = (0..10)
        .map(|i| issue(&cluster.nodes[[s1, s2][i % 2]], "mayfly/creds/app"))
        .collect();
    assert!(creds.iter().all(|c| logs_in(&pg, c)));
    assert!(
        creds
            .iter()
            .all(|c| state_of(&cluster.nodes[active], &c.user) == "active")
    );

    // An operator's revocation sent to a standby is made and recorded by the active node.
    let (status, body) = cluster.nodes[s1].put("mayfly/revoke/role/app", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["revoked"], 10, "{body}");
    for c in &creds {
        assert!(pg.roles_like(&c.user).is_empty(), "{} survived", c.user);
        assert_eq!(state_of(&cluster.nodes[active], &c.user), "revoked");
    }

    // A task created, drawn on and ended through standbys.
    let (status, body) = cluster.nodes[s1].put("mayfly/tasks", json!({"ttl": "5m"}));
    assert_eq!(status, 200, "{body}");
    let task = body["data"]["task_id"].as_str().unwrap().to_owned();
    let tasked: Vec<Cred> = (0..3)
        .map(|_| issue(&cluster.nodes[s2], &format!("mayfly/creds/app?task_id={task}")))
        .collect();
    let (status, body) = cluster.nodes[s2].delete(&format!("mayfly/tasks/{task}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["revoked"], 3, "{body}");
    for c in &tasked {
        assert!(pg.roles_like(&c.user).is_empty(), "{} survived its task", c.user);
        assert_eq!(state_of(&cluster.nodes[active], &c.user), "revoked");
    }

    // Expiry: short credentials issued through a standby are revoked by the active node.
    let short: Vec<Cred> = (0..4)
        .map(|_| issue(&cluster.nodes[s1], "mayfly/creds/app?ttl=3"))
        .collect();
    let expired = wait_until(15.0, || short.iter().all(|c| pg.roles_like(&c.user).is_empty()));
    assert!(expired, "short credentials outlived their deadline");
    let done = wait_until(5.0, || {
        short
            .iter()
            .all(|c| state_of(&cluster.nodes[active], &c.user) == "revoked")
    });
    assert!(done, "the ledger does not have the expired credentials revoked");

    // An orphan purge through a standby: the orphan goes, leased users stay.
    let live = issue(&cluster.nodes[s1], "mayfly/creds/app");
    pg.admin("CREATE ROLE \"mf-hand-orphan\" LOGIN");
    let (status, body) = cluster.nodes[s2].put("mayfly/orphans/db", json!({"purge": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["purged"], 1, "{body}");
    assert!(pg.roles_like("mf-hand-orphan").is_empty());
    assert!(logs_in(&pg, &live));

    // rotate-root through a standby, on a connection of its own admin: the target and the
    // stored connection agree afterwards (the old password fails, issuance works).
    pg.admin("CREATE ROLE mayfly_root LOGIN CREATEROLE PASSWORD 'root-before-rotation'");
    let mut own = pg.connection("postgres");
    own["username"] = json!("mayfly_root");
    own["password"] = json!("root-before-rotation");
    let (status, body) = cluster.nodes[s1].put("mayfly/config/own", own);
    assert_eq!(status, 204, "{body}");
    let (status, body) = cluster.nodes[s1].put(
        "mayfly/roles/own",
        json!({"db_name": "own", "default_ttl": 60, "creation_statements": [CREATE]}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = cluster.nodes[s2].put("mayfly/rotate-root/own", json!({}));
    assert_eq!(status, 204, "{body}");
    assert!(pg.psql_as("mayfly_root", "root-before-rotation", "SELECT 1").is_err());
    assert!(logs_in(&pg, &issue(&cluster.nodes[s1], "mayfly/creds/own")));

    // A static role taken over and rotated through standbys; static-creds read through a
    // standby is the current password.
    pg.admin("CREATE ROLE legacy_app LOGIN PASSWORD 'legacy-before'");
    let (status, body) = cluster.nodes[s2].put(
        "mayfly/static-roles/legacy",
        json!({"db_name": "db", "username": "legacy_app", "rotation_period": "1h"}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = cluster.nodes[s1].put("mayfly/rotate-role/legacy", json!({}));
    assert_eq!(status, 204, "{body}");
    let (status, body) = cluster.nodes[s2].get("mayfly/static-creds/legacy");
    assert_eq!(status, 200, "{body}");
    let password = body["data"]["password"].as_str().unwrap().to_owned();
    assert_eq!(pg.psql_as("legacy_app", &password, "SELECT 1"), Ok("1".into()));

    // Every request above ran once, on the active node: one audit event each.
    let events = cluster.audit_events(active);
    let issued = events.iter().filter(|e| e["audit_action"] == "issue").count();
    assert_eq!(issued, 10 + 3 + 4 + 1 + 1, "issue events on the active node");

    // A stale standby: down while credentials are renewed, back after their first deadlines.
    let creds: Vec<Cred> = (0..10)
        .map(|_| issue(&cluster.nodes[active], "mayfly/creds/app"))
        .collect();
    let issued = now();
    cluster.nodes[s2].stop();
    for c in &creds {
        let (status, body) = cluster.nodes[s1].put(
            "sys/leases/renew",
            json!({"lease_id": c.lease_id, "increment": 300}),
        );
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(Duration::from_secs((issued + 23).saturating_sub(now())));
    cluster.nodes[s2].start_again();
    let served = wait_until(30.0, || cluster.nodes[s2].get("mayfly/roles/app").0 == 200);
    assert!(served, "{}", cluster.nodes[s2].log());
    std::thread::sleep(Duration::from_secs(8));
    let dropped: BTreeSet<&str> = creds
        .iter()
        .filter(|c| !logs_in(&pg, c))
        .map(|c| c.user.as_str())
        .collect();
    assert!(
        dropped.is_empty(),
        "renewed credentials dropped early: {dropped:?}\n{}",
        cluster.logs()
    );
    assert_standbys_quiet(&cluster, &[s1, s2]);
}
