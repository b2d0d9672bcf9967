//! mayfly in a 3-node OpenBao raft cluster on loopback, as production runs it: standbys serve
//! reads and forward everything else, never touch a target, and never revoke on their own;
//! the active node does it all, and a failover keeps every deadline.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mayfly_integration::bao::Endpoint;
use mayfly_integration::cluster::{Cluster, Options};
use mayfly_integration::creds::{Cred, mark_of, now};
use mayfly_integration::expiry_watch::{self, ExpiryWatch, Seen, lateness, median_and_max};
use mayfly_integration::postgres::{SUPERUSER, SUPERUSER_PASSWORD};
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
use serde_json::{Value, json};

/// One cluster at a time: each test runs three servers with their plugins, and two such
/// clusters at once on a two-core machine would time the machine, not mayfly.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

/// Every credential of `creds` still logs in; `why` and `logs` explain a failure.
fn assert_all_log_in(pg: &PrivatePostgres, creds: &[Cred], why: &str, logs: &str) {
    let dropped: BTreeSet<&str> = creds
        .iter()
        .filter(|c| !logs_in(pg, c))
        .map(|c| c.user.as_str())
        .collect();
    assert!(dropped.is_empty(), "{why}: {dropped:?}\n{logs}");
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
    let _one_cluster = serial();
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
        .map(|_| {
            issue(
                &cluster.nodes[s2],
                &format!("mayfly/creds/app?task_id={task}"),
            )
        })
        .collect();
    let (status, body) = cluster.nodes[s2].delete(&format!("mayfly/tasks/{task}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["revoked"], 3, "{body}");
    for c in &tasked {
        assert!(
            pg.roles_like(&c.user).is_empty(),
            "{} survived its task",
            c.user
        );
        assert_eq!(state_of(&cluster.nodes[active], &c.user), "revoked");
    }

    // Expiry: short credentials issued through a standby are revoked by the active node.
    let short: Vec<Cred> = (0..4)
        .map(|_| issue(&cluster.nodes[s1], "mayfly/creds/app?ttl=3"))
        .collect();
    let expired = wait_until(15.0, || {
        short.iter().all(|c| pg.roles_like(&c.user).is_empty())
    });
    assert!(expired, "short credentials outlived their deadline");
    let done = wait_until(5.0, || {
        short
            .iter()
            .all(|c| state_of(&cluster.nodes[active], &c.user) == "revoked")
    });
    assert!(
        done,
        "the ledger does not have the expired credentials revoked"
    );

    // An orphan purge through a standby: the orphan goes, leased users stay.
    let live = issue(&cluster.nodes[s1], "mayfly/creds/app");
    let orphan = format!("{}hand-orphan", mark_of(&cluster.nodes[s2], "mayfly", "db"));
    pg.admin(&format!("CREATE ROLE \"{orphan}\" LOGIN"));
    let (status, body) = cluster.nodes[s2].put("mayfly/orphans/db", json!({"purge": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["purged"], 1, "{body}");
    assert!(pg.roles_like(&orphan).is_empty());
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
    assert!(
        pg.psql_as("mayfly_root", "root-before-rotation", "SELECT 1")
            .is_err()
    );
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
    assert_eq!(
        pg.psql_as("legacy_app", &password, "SELECT 1"),
        Ok("1".into())
    );

    // Every request above ran once, on the active node: one audit event each.
    let events = cluster.audit_events(active);
    let issued = events
        .iter()
        .filter(|e| e["audit_action"] == "issue")
        .count();
    assert_eq!(
        issued,
        10 + 3 + 4 + 1 + 1,
        "issue events on the active node"
    );

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
    assert_all_log_in(
        &pg,
        &creds,
        "renewed credentials dropped early",
        &cluster.logs(),
    );
    assert_standbys_quiet(&cluster, &[s1, s2]);
}

/// OpenBao's own `database` engine mounted at `database/` beside mayfly, on the same database
/// with the same statement and TTL, for comparison.
fn configure_builtin(node: &Bao, pg: &PrivatePostgres, ttl: u64) {
    let (status, body) = node.put("sys/mounts/database", json!({"type": "database"}));
    assert!(status < 300, "{status} {body}");
    let (status, body) = node.put(
        "database/config/pg",
        json!({"plugin_name": "postgresql-database-plugin",
               "connection_url": pg.template_url(), "username": SUPERUSER,
               "password": SUPERUSER_PASSWORD, "allowed_roles": "*"}),
    );
    assert!(status < 300, "{status} {body}");
    let (status, body) = node.put(
        "database/roles/app",
        json!({"db_name": "pg", "default_ttl": ttl, "max_ttl": "10m",
               "creation_statements": [CREATE]}),
    );
    assert!(status < 300, "{status} {body}");
}

/// One request of the load: which engine, when it was sent and answered, and the user it
/// got with its deadline (moved on by a renewal), if it got one.
#[derive(Debug, Clone)]
struct Attempt {
    engine: &'static str,
    sent: f64,
    answered: f64,
    issued: Option<(String, f64)>,
}

/// A client of the load: round-robin over the nodes (standbys forward), a mayfly credential
/// with a TTL of 5 to 12 s and a built-in one in turn, every third mayfly lease renewed by
/// 10 s, until `stop`.
fn client(seed: usize, nodes: &[Endpoint], log: &Mutex<Vec<Attempt>>, stop: &AtomicBool) {
    let mut turn = seed;
    while !stop.load(Ordering::Relaxed) {
        let node = &nodes[turn % nodes.len()];
        turn += 1;
        let ttl = 5 + turn % 8;
        for (engine, path) in [
            ("mayfly", format!("mayfly/creds/app?ttl={ttl}")),
            ("builtin", "database/creds/app".to_owned()),
        ] {
            let sent = expiry_watch::now();
            let (status, body) = node.request("GET", &path, None);
            let answered = expiry_watch::now();
            // The deadline as the client knows it: the lease's end.
            let deadline = |body: &Value| answered + body["lease_duration"].as_f64().unwrap_or(0.0);
            let mut issued = (status == 200).then(|| {
                let user = body["data"]["username"].as_str().unwrap_or("").to_owned();
                (user, deadline(&body))
            });
            if let Some((_, until)) = issued.as_mut()
                && engine == "mayfly"
                && turn.is_multiple_of(3)
            {
                let renew = json!({"lease_id": body["lease_id"], "increment": 10});
                let (status, renewed) = node.request("PUT", "sys/leases/renew", Some(&renew));
                if status == 200 {
                    *until = deadline(&renewed);
                }
            }
            log.lock().unwrap().push(Attempt {
                engine,
                sent,
                answered,
                issued,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a failover cost one engine: the time from the fault to its first credential served,
/// and the requests that failed in between.
fn failover_cost(log: &[Attempt], engine: &str, fault: f64) -> (f64, usize) {
    let mine = log.iter().filter(|a| a.engine == engine && a.sent >= fault);
    let served = mine
        .clone()
        .filter(|a| a.issued.is_some())
        .map(|a| a.answered)
        .fold(f64::INFINITY, f64::min);
    let failed = mine
        .filter(|a| a.issued.is_none() && a.sent < served)
        .count();
    (served - fault, failed)
}

#[test]
fn failover_under_load_keeps_every_deadline() {
    let _one_cluster = serial();
    let pg = PrivatePostgres::start();
    let mut cluster = Cluster::start(Options::default());
    let first = cluster.active();
    configure(&cluster, first, &pg, 8);
    configure_builtin(&cluster.nodes[first], &pg, 8);
    let watch = ExpiryWatch::start(&pg, &["mf-", "v-"]);
    let nodes: Vec<Endpoint> = cluster
        .nodes
        .iter()
        .map(|n| n.endpoint(Duration::from_secs(20)))
        .collect();
    let log: Mutex<Vec<Attempt>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let mut gaps = Vec::new();
    let (killed, stepped, second, third) = std::thread::scope(|s| {
        // The load stops when this scope ends, also when it ends in a failed assertion.
        let _stop_load = StopOnDrop(&stop);
        for seed in 0..2 {
            let (nodes, log, stop) = (&nodes, &log, &stop);
            s.spawn(move || client(seed, nodes, log, stop));
        }
        std::thread::sleep(Duration::from_secs(8));

        // The active node dies (SIGKILL, its plugin left to notice on its own).
        let killed = expiry_watch::now();
        cluster.nodes[first].kill();
        let second = cluster
            .wait_for_active(Some(first), Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no new active node; logs:\n{}", cluster.logs()));
        gaps.push((killed, expiry_watch::now()));
        cluster.nodes[first].start_again();
        std::thread::sleep(Duration::from_secs(8));

        // The next one steps down.
        let stepped = expiry_watch::now();
        let third = cluster.step_down();
        gaps.push((stepped, expiry_watch::now()));
        assert_ne!(third, second);
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        (killed, stepped, second, third)
    });

    // Every deadline passes; every user must be gone within 10 s of it.
    let last = watch
        .seen()
        .values()
        .map(|s| s.deadline)
        .fold(0.0, f64::max);
    // Both engines' users are waited for (up to 30 s past the last deadline), so that the
    // built-in engine's lateness is measured too.
    wait_until((last - expiry_watch::now()).max(0.0) + 30.0, || {
        watch.seen().values().all(|s| s.gone_at.is_some())
    });
    let seen = watch.seen();
    let log = log.into_inner().unwrap();
    let mut report = Vec::new();
    for engine in ["mayfly", "builtin"] {
        let issued: Vec<(&String, f64)> = log
            .iter()
            .filter(|a| a.engine == engine)
            .filter_map(|a| a.issued.as_ref().map(|(u, d)| (u, *d)))
            .collect();
        let survivors: Vec<&String> = issued
            .iter()
            .filter(|(u, _)| seen.get(*u).is_none_or(|s| s.gone_at.is_none()))
            .map(|(u, _)| *u)
            .collect();
        // Lateness against the lease's end as the client saw it.
        let late = |(user, deadline): &(&String, f64)| {
            let gone_at = seen.get(*user)?.gone_at;
            lateness(
                &Seen {
                    deadline: *deadline,
                    gone_at,
                },
                &gaps,
            )
        };
        let mut all: Vec<f64> = issued.iter().filter_map(late).collect();
        let in_gap = |(_, d): &&(&String, f64)| gaps.iter().any(|(a, b)| (*a..=*b).contains(d));
        let mut across: Vec<f64> = issued.iter().filter(in_gap).filter_map(late).collect();
        let (p50, max) = median_and_max(&mut all);
        let (gap_p50, gap_max) = median_and_max(&mut across);
        let (kill_served, kill_failed) = failover_cost(&log, engine, killed);
        let (step_served, step_failed) = failover_cost(&log, engine, stepped);
        report.push(format!(
            "{engine}: {} issued, {} left; revocation lateness p50 {p50:.1} s, max {max:.1} s; \
             of the {} whose deadline fell in a failover (counted from the election): p50 \
             {gap_p50:.1} s, max {gap_max:.1} s; SIGKILL: first credential after \
             {kill_served:.1} s, {kill_failed} requests failed; step-down: first credential \
             after {step_served:.1} s, {step_failed} requests failed",
            issued.len(),
            survivors.len(),
            across.len(),
        ));
        if engine == "mayfly" {
            assert!(
                survivors.is_empty(),
                "users outlived their deadline: {survivors:?}"
            );
            assert!(max <= 10.0, "a user was dropped {max:.1} s late");
        }
    }
    eprintln!(
        "failover under load (gaps {gaps:?}):\n{}",
        report.join("\n")
    );
    // Each change of role rebuilt the mount (Cleanup, then Setup and Initialize), which read
    // the node's new role: the last node to take over last started as the active node, and the
    // one that stepped down as a standby.
    let last_role = |i: usize| cluster.initialized_roles(i).last().cloned();
    assert_eq!(last_role(third), Some(("active".to_owned(), 8224)));
    assert_eq!(last_role(second), Some(("standby".to_owned(), 24576)));
    for i in 0..cluster.nodes.len() {
        let refused = cluster.readonly_failures(i);
        assert!(refused.is_empty(), "node {i}: {refused:?}");
    }
}

#[test]
fn a_node_deposed_without_stepping_down_revokes_nothing_renewed_meanwhile() {
    let _one_cluster = serial();
    let pg = PrivatePostgres::start();
    // Standbys load no mounts here: the new active node's mayfly starts cold on promotion.
    let cluster = Cluster::start(Options {
        disable_standby_reads: true,
    });
    let old = cluster.active();
    configure(&cluster, old, &pg, 40);
    for i in cluster.standbys() {
        let pids = cluster.nodes[i].plugin_pids();
        assert!(pids.is_empty(), "standby {i} started mayfly: {pids:?}");
    }
    let creds: Vec<Cred> = (0..10)
        .map(|_| issue(&cluster.nodes[old], "mayfly/creds/app"))
        .collect();
    let issued = now();

    // The active server freezes (a stalled machine); its mayfly runs on and wakes at the
    // credentials' first deadlines with a copy of the ledger the others have moved past.
    cluster.nodes[old].pause();
    let new = cluster
        .wait_for_active(Some(old), Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no new active node; logs:\n{}", cluster.logs()));
    for c in &creds {
        let renew = json!({"lease_id": c.lease_id, "increment": 300});
        let served = wait_until(15.0, || {
            cluster.nodes[new].put("sys/leases/renew", renew.clone()).0 == 200
        });
        assert!(served, "the new active node did not renew {}", c.lease_id);
    }
    assert!(now() < issued + 40, "the renewals came after the deadlines");
    std::thread::sleep(Duration::from_secs((issued + 43).saturating_sub(now())));

    // Thawed: it finds it lost its leadership and steps down; until then it still reads
    // itself as active, and its writes fail.
    cluster.nodes[old].resume();
    let stepped_down = wait_until(30.0, || matches!(cluster.nodes[old].health(), 429 | 473));
    assert!(stepped_down, "{}", cluster.nodes[old].log());
    std::thread::sleep(Duration::from_secs(5));
    let why = "the deposed node revoked renewed credentials";
    assert_all_log_in(&pg, &creds, why, &cluster.nodes[old].log());
    for c in &creds {
        assert_eq!(state_of(&cluster.nodes[new], &c.user), "active");
    }
    let log = cluster.nodes[old].log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("could not record that revocations begin"))
        .collect();
    eprintln!(
        "the deposed node's mayfly tried to revoke and was refused the write {} times{}",
        refused.len(),
        refused
            .first()
            .map_or(String::new(), |l| format!(", as: {l}"))
    );
}

#[test]
fn an_upgrade_node_by_node_loses_nothing_and_revokes_nothing_early() {
    let _one_cluster = serial();
    let pg = PrivatePostgres::start();
    let cluster = Cluster::start(Options::default());
    let active = cluster.active();
    let standbys = cluster.standbys();
    configure(&cluster, active, &pg, 60);
    let live: Vec<Cred> = (0..6)
        .map(|_| issue(&cluster.nodes[active], "mayfly/creds/app"))
        .collect();
    for c in &live[..3] {
        let renew = json!({"lease_id": c.lease_id, "increment": 300});
        assert_eq!(cluster.nodes[active].put("sys/leases/renew", renew).0, 200);
    }

    // The new version's binary is placed on every node first (the catalog, and its SHA-256,
    // are shared), registered under its version, and the mount switched to it.
    const NEXT: &str = "v0.99.0";
    for node in &cluster.nodes {
        node.install_plugin("mayfly-next");
    }
    let leader = &cluster.nodes[active];
    let (status, body) = leader.put(
        "sys/plugins/catalog/secret/mayfly",
        json!({"sha256": leader.sha256(), "command": "mayfly-next", "version": NEXT,
               "env": [format!("MAYFLY_PLUGIN_VERSION={NEXT}")]}),
    );
    assert!(status < 300, "register: {status} {body}");
    let (status, body) = leader.put("sys/mounts/mayfly/tune", json!({"plugin_version": NEXT}));
    assert!(status < 300, "tune: {status} {body}");

    // One node at a time, the active node first: a reload acts on the node that receives it.
    let reload = |i: usize| {
        let (status, body) =
            cluster.nodes[i].put("sys/plugins/reload/backend", json!({"mounts": ["mayfly/"]}));
        assert!(status < 300, "reload on node {i}: {status} {body}");
        let next = wait_until(30.0, || {
            !cluster.nodes[i].plugin_pids_of("mayfly-next").is_empty()
        });
        assert!(
            next,
            "node {i} does not run the new version\n{}",
            cluster.nodes[i].log()
        );
    };
    reload(active);
    let old_left = wait_until(10.0, || cluster.nodes[active].plugin_pids().is_empty());
    assert!(old_left, "the active node still runs the old version");

    // The mixed window: the active node runs the new version, the standbys the old one.
    let mixed = standbys
        .iter()
        .filter(|i| !cluster.nodes[**i].plugin_pids().is_empty())
        .count();
    eprintln!("standbys still on the old version after the active node's reload: {mixed}");
    let short: Vec<Cred> = (0..4)
        .map(|i| issue(&cluster.nodes[standbys[i % 2]], "mayfly/creds/app?ttl=4"))
        .collect();
    for c in &live[3..] {
        let renew = json!({"lease_id": c.lease_id, "increment": 300});
        let (status, body) = cluster.nodes[standbys[0]].put("sys/leases/renew", renew);
        assert_eq!(status, 200, "{body}");
    }
    let expired = wait_until(15.0, || {
        short.iter().all(|c| pg.roles_like(&c.user).is_empty())
    });
    assert!(
        expired,
        "credentials issued in the mixed window outlived their deadline"
    );

    for &i in &standbys {
        reload(i);
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let gone = wait_until(10.0, || node.plugin_pids().is_empty());
        assert!(gone, "node {i} still runs the old version");
    }
    // Through it all, and once it is done, every live credential still works.
    std::thread::sleep(Duration::from_secs(3));
    assert_all_log_in(&pg, &live, "lost in the upgrade", &cluster.logs());
    let (status, body) = cluster.nodes[standbys[1]].get("mayfly/creds/app");
    assert_eq!(status, 200, "{body}");
    let (_, mounts) = leader.get("sys/mounts");
    assert_eq!(mounts["data"]["mayfly/"]["running_plugin_version"], NEXT);
    assert_standbys_quiet(&cluster, &standbys);
}
