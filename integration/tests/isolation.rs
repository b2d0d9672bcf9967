//! Revocation as operators of a real estate run it: a target that stops answering holds back
//! only its own credentials; admins that are not superuser still drop their users; a
//! connection is not deleted from under its credentials; a fixed role ends stuck revocations.

use std::time::{Duration, Instant};

use mayfly_integration::creds::{Cred, issue, ledger_record, now};
use mayfly_integration::http_fixtures::{Answer, BlackHole, Proxy, Stub};
use mayfly_integration::{Bao, PrivateMariaDb, PrivatePostgres, wait_until};
use serde_json::{Value, json};

/// OpenBao's documented PostgreSQL role statements.
const PG_CREATE: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; \
                         GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";";

fn write(bao: &Bao, path: &str, body: Value) {
    let (status, reply) = bao.put(path, body);
    assert!(status == 200 || status == 204, "{path}: {status} {reply}");
}

/// A key service: POST makes a key, DELETE removes it.
fn keys(method: &str, path: &str, _: &str) -> Answer {
    match method {
        "POST" => (
            200,
            "application/json",
            json!({"secret": format!("s-{}", path.rsplit('/').next().unwrap_or(""))}).to_string(),
        ),
        "DELETE" => (204, "application/json", String::new()),
        _ => (404, "text/plain", "no".into()),
    }
}

/// Connection `svc` to the key service behind `proxy`, and its role `keys`.
fn key_service(bao: &Bao, proxy: &Proxy) {
    write(
        bao,
        "mayfly/config/svc",
        json!({"plugin_name": "http", "base_url": proxy.url(), "allowed_roles": "*"}),
    );
    write(
        bao,
        "mayfly/roles/keys",
        json!({"db_name": "svc",
               "create": {"method": "POST", "path": "/keys/{{.Name}}", "secret_pointer": "/secret"},
               "revoke": {"method": "DELETE", "path": "/keys/{{.Name}}"}}),
    );
}

/// Found with an HTTP service that stopped answering: PostgreSQL users of the same mount with
/// an 8 s TTL were still there 20 s past their deadline.
#[test]
fn a_black_holed_service_holds_back_only_its_own_revocations() {
    let pg = PrivatePostgres::start();
    let stub = Stub::start(keys);
    let mut proxy = Proxy::start(&format!("127.0.0.1:{}", stub.port));
    let bao = Bao::with_mayfly();
    key_service(&bao, &proxy);
    let keys: Vec<Value> = (0..24)
        .map(|_| {
            let (status, body) = bao.get("mayfly/creds/keys?ttl=2s");
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect();
    // The service stops answering: it accepts connections and never replies.
    proxy.down();
    let _hole = BlackHole::start(proxy.port);

    write(&bao, "mayfly/config/db", pg.connection("postgres"));
    write(
        &bao,
        "mayfly/roles/app",
        json!({"db_name": "db", "creation_statements": PG_CREATE}),
    );
    // The keys are due now, and their revocations hang.
    std::thread::sleep(Duration::from_secs(3));
    let users: Vec<(Cred, u64)> = (0..8)
        .map(|_| {
            let c = issue(&bao, "mayfly/creds/app?ttl=8s");
            let deadline = now() + c.lease_duration;
            (c, deadline)
        })
        .collect();
    let mut late: Vec<(String, i64)> = Vec::new();
    let started = Instant::now();
    let mut pending: Vec<&(Cred, u64)> = users.iter().collect();
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(40) {
        pending.retain(|(c, deadline)| {
            if pg.roles_like(&c.user).is_empty() {
                late.push((c.user.clone(), now() as i64 - *deadline as i64));
                false
            } else {
                true
            }
        });
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        pending.is_empty(),
        "users outlived their deadline: {late:?}"
    );
    let worst = late.iter().map(|(_, l)| *l).max().unwrap();
    assert!(
        worst <= 5,
        "PostgreSQL users gone up to {worst}s late: {late:?}"
    );
    // The service's keys are still failing, each on record.
    let (_, failing) = bao.list("mayfly/revocations/");
    let names: Vec<&str> = keys
        .iter()
        .map(|k| k["data"]["username"].as_str().unwrap())
        .collect();
    let record = ledger_record(&bao, names[0]);
    assert_ne!(record["state"], "revoked", "{record}");
    assert_eq!(
        failing["data"]["connections"]["svc"]["backlog"], 24,
        "{failing}"
    );
}

/// Revokes `cred` through the host while a session of it is open that the connection's admin
/// may not end: the user must be `gone` within 10 s all the same, and its record say so.
fn revoke_with_a_session_left(bao: &Bao, cred: &Cred, gone: impl Fn() -> bool) {
    let (status, body) = bao.put("sys/leases/revoke", json!({"lease_id": cred.lease_id}));
    assert_eq!(status, 204, "{body}");
    assert!(
        wait_until(10.0, gone),
        "the user was not dropped: {}",
        ledger_record(bao, &cred.user)
    );
    let record = ledger_record(bao, &cred.user);
    assert_eq!(record["state"], "revoked", "{record}");
    assert!(
        record["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("open sessions could not be ended")),
        "{record}"
    );
}

/// The admin of OpenBao's own PostgreSQL documentation: CREATEROLE, not superuser, owning the
/// database. mayfly's revocation failed with "permission denied to reassign objects" forever.
#[test]
fn an_admin_that_is_not_superuser_drops_its_postgresql_users() {
    let pg = PrivatePostgres::start();
    pg.admin("CREATE ROLE vault_admin WITH LOGIN PASSWORD 'vault-admin-pw' CREATEROLE");
    pg.admin("CREATE DATABASE appdb OWNER vault_admin");
    pg.psql()
        .run_in(
            "appdb",
            "vault_admin",
            "vault-admin-pw",
            "CREATE TABLE items (id int)",
        )
        .unwrap();
    let bao = Bao::with_mayfly();
    write(
        &bao,
        "mayfly/config/db",
        json!({"plugin_name": "postgresql-database-plugin",
               "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/appdb", pg.port),
               "username": "vault_admin", "password": "vault-admin-pw", "allowed_roles": "*"}),
    );
    write(
        &bao,
        "mayfly/roles/app",
        json!({"db_name": "db", "creation_statements": PG_CREATE, "default_ttl": "1h"}),
    );
    let cred = issue(&bao, "mayfly/creds/app");
    pg.psql()
        .run_in(
            "appdb",
            &cred.user,
            &cred.password,
            "SELECT count(*) FROM items",
        )
        .unwrap();
    // A session of the user stays open: this admin may not end it.
    let mut session = pg.open_session(&cred.user, &cred.password, 20);
    std::thread::sleep(Duration::from_secs(1));
    revoke_with_a_session_left(&bao, &cred, || pg.roles_like(&cred.user).is_empty());
    let _ = session.kill();
    let _ = session.wait();
}

/// MariaDB with an admin that lacks SUPER and CONNECTION ADMIN, as managed services give.
#[test]
fn an_admin_without_super_drops_its_mariadb_users() {
    let db = PrivateMariaDb::start();
    db.root(
        "CREATE USER 'limited'@'%' IDENTIFIED BY 'limited-pw'; \
         GRANT CREATE USER, PROCESS ON *.* TO 'limited'@'%'; \
         GRANT SELECT ON mysql.* TO 'limited'@'%'; \
         GRANT SELECT ON app.* TO 'limited'@'%' WITH GRANT OPTION;",
    );
    let bao = Bao::with_mayfly();
    write(
        &bao,
        "mayfly/config/db",
        json!({"plugin_name": "mysql-database-plugin",
               "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{})/", db.port),
               "username": "limited", "password": "limited-pw", "allowed_roles": "*"}),
    );
    write(
        &bao,
        "mayfly/roles/app",
        json!({"db_name": "db", "default_ttl": "1h",
               "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; \
                                       GRANT SELECT ON app.* TO '{{name}}'@'%';"}),
    );
    let cred = issue(&bao, "mayfly/creds/app");
    let mut session = db.open_session(&cred.user, &cred.password, 20);
    assert!(wait_until(5.0, || db.root(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{}'",
        cred.user
    )) == "1"));
    revoke_with_a_session_left(&bao, &cred, || db.users_like(&cred.user).is_empty());
    let _ = session.kill();
    let _ = session.wait();
}

/// Found by deleting a connection with credentials live: 204, then their revocations failed
/// forever, and the connection's sessions stayed open on the database.
#[test]
fn a_connection_with_credentials_is_not_deleted_and_a_deleted_one_closes_its_sessions() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    write(&bao, "mayfly/config/db", pg.connection("postgres"));
    write(
        &bao,
        "mayfly/roles/app",
        json!({"db_name": "db", "creation_statements": PG_CREATE}),
    );
    let creds: Vec<Cred> = (0..3).map(|_| issue(&bao, "mayfly/creds/app")).collect();
    let (status, body) = bao.delete("mayfly/config/db");
    assert_eq!(status, 409, "{body}");
    let error = body["errors"][0].as_str().unwrap_or_default();
    assert!(
        error.contains("has 3 credential(s)") && error.contains("revoke/config/db"),
        "{body}"
    );
    // Nor may it be pointed at another server while they live.
    let mut moved = pg.connection("postgres");
    moved["connection_url"] = json!(pg.template_url().replace("/postgres", "/template1"));
    let (status, body) = bao.put("mayfly/config/db", moved);
    assert_eq!(status, 409, "{body}");

    let (status, body) = bao.put("mayfly/revoke/config/db", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["revoked"], 3, "{body}");
    for c in &creds {
        assert!(pg.roles_like(&c.user).is_empty());
    }
    let sessions = || {
        pg.admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mayfly'")
            .trim()
            .to_owned()
    };
    assert_ne!(sessions(), "0", "mayfly holds no session to delete");
    let (status, body) = bao.delete("mayfly/config/db");
    assert_eq!(status, 204, "{body}");
    assert!(
        wait_until(5.0, || sessions() == "0"),
        "the deleted connection's sessions are still open"
    );
}

/// Found by fixing a role whose revocation statements were wrong: its failing revocations
/// kept running the statements recorded at issuance.
#[test]
fn fixing_a_roles_statements_ends_its_failing_revocations() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    write(&bao, "mayfly/config/db", pg.connection("postgres"));
    write(
        &bao,
        "mayfly/roles/app",
        json!({"db_name": "db", "creation_statements": PG_CREATE,
               "revocation_statements": "DROP ROLE \"{{name}}-typo\";"}),
    );
    let cred = issue(&bao, "mayfly/creds/app?ttl=2s");
    assert!(wait_until(15.0, || {
        ledger_record(&bao, &cred.user)["revocation_attempts"]
            .as_u64()
            .is_some_and(|a| a >= 1)
    }));
    assert_eq!(pg.roles_like(&cred.user).len(), 1);
    write(
        &bao,
        "mayfly/roles/app",
        json!({"revocation_statements": "DROP ROLE \"{{name}}\";"}),
    );
    let fixed = Instant::now();
    assert!(
        wait_until(15.0, || pg.roles_like(&cred.user).is_empty()),
        "{}",
        ledger_record(&bao, &cred.user)
    );
    let record = ledger_record(&bao, &cred.user);
    assert_eq!(record["state"], "revoked", "{record}");
    assert!(
        record["revoked_with"]
            .as_str()
            .is_some_and(|w| w.contains("changed after issuance")),
        "{record}"
    );
    eprintln!("dropped {:?} after the fix", fixed.elapsed());
}

/// A measurement for the issue note, not a check: how late 2,000 PostgreSQL users that expire
/// together are dropped, alone and beside a black-holed HTTP connection with 1,000 keys due.
/// `cargo test -p mayfly-integration --test isolation -- --ignored --nocapture`
#[test]
#[ignore = "a measurement (several minutes); run it by name"]
fn measure_mass_expiry_lateness_beside_a_black_holed_connection() {
    use mayfly_integration::bao::ROOT_TOKEN;
    use mayfly_integration::expiry_watch::{ExpiryWatch, lateness, median_and_max};
    use mayfly_integration::load;

    for with_hole in [false, true] {
        let pg = PrivatePostgres::start();
        let stub = Stub::start(keys);
        let mut proxy = Proxy::start(&format!("127.0.0.1:{}", stub.port));
        let bao = Bao::with_mayfly();
        key_service(&bao, &proxy);
        let mut _hole = None;
        if with_hole {
            load::issue_many(&bao, ROOT_TOKEN, "mayfly/creds/keys?ttl=20s", 1000, 8);
            proxy.down();
            _hole = Some(BlackHole::start(proxy.port));
        }
        write(&bao, "mayfly/config/db", pg.connection("postgres"));
        write(
            &bao,
            "mayfly/roles/app",
            json!({"db_name": "db", "creation_statements": PG_CREATE}),
        );
        let watch = ExpiryWatch::start(&pg, &["mf-"]);
        let run = load::issue_many(&bao, ROOT_TOKEN, "mayfly/creds/app?ttl=60s", 2000, 8);
        let all_gone = wait_until(240.0, || {
            let seen = watch.seen();
            seen.len() >= 2000 && seen.values().all(|s| s.gone_at.is_some())
        });
        let mut late: Vec<f64> = watch
            .seen()
            .values()
            .filter_map(|s| lateness(s, &[]))
            .collect();
        let (median, max) = median_and_max(&mut late);
        let (_, failing) = bao.list("mayfly/revocations/");
        eprintln!(
            "black hole: {with_hole}; issued {:.0}/s; all gone: {all_gone}; {} users; lateness \
             median {median:.2} s, max {max:.2} s; backlog {}",
            run.rate,
            late.len(),
            failing["data"]["connections"]
        );
    }
}
