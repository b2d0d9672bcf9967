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
