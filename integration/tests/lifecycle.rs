//! The credential lifecycle end to end: a real OpenBao loads mayfly, which issues, renews and
//! revokes users in a private PostgreSQL that checks passwords.

use std::time::{Duration, Instant};

use mayfly_integration::creds::{Cred, is_marked, issue, ledger_record, now};
use mayfly_integration::postgres::{SUPERUSER, SUPERUSER_PASSWORD};
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
use serde_json::{Value, json};

/// A connection `db` to the private cluster, a group role, and role `app` from `role`.
fn configure(bao: &Bao, pg: &PrivatePostgres, role: Value) {
    let (status, body) = bao.put(
        "mayfly/config/db",
        pg.connection("postgresql-database-plugin"),
    );
    assert_eq!(status, 204, "{body}");
    pg.admin(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_readers') \
         THEN CREATE ROLE app_readers NOLOGIN; END IF; END $$",
    );
    let (status, body) = bao.put("mayfly/roles/app", role);
    assert!(status == 200 || status == 204, "{status} {body}");
}

/// A private cluster and a server with mayfly mounted, connection `db` and role `app` from
/// `role` (see [`configure`]).
fn mounted(role: Value) -> (PrivatePostgres, Bao) {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    configure(&bao, &pg, role);
    (pg, bao)
}

fn valid_until(pg: &PrivatePostgres, user: &str) -> u64 {
    pg.admin(&format!(
        "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"
    ))
    .parse()
    .unwrap()
}

#[test]
fn issue_login_renew_revoke_ends_sessions_and_leaks_no_secret() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    // A role written as OpenBao's documentation writes it.
    configure(
        &bao,
        &pg,
        json!({"db_name": "db", "default_ttl": 60, "max_ttl": "1h",
               "creation_statements": [
                   "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                   "GRANT app_readers TO \"{{name}}\";",
                   // Slower than sqlx's 1 s slow-statement alert, which would log the SQL.
                   "SELECT pg_sleep(1.2);"]}),
    );
    let issued_at = now();
    let cred = issue(&bao, "mayfly/creds/app");
    assert!(is_marked(&cred.user, "app-"), "{}", cred.user);
    assert_eq!(cred.lease_duration, 60);
    assert_eq!(
        pg.psql_as(&cred.user, &cred.password, "SELECT current_user")
            .unwrap(),
        cred.user
    );
    assert!(
        pg.psql_as(&cred.user, "wrong-password", "SELECT 1")
            .unwrap_err()
            .contains("password authentication failed")
    );
    let first_expiry = valid_until(&pg, &cred.user);
    assert!((issued_at + 58..=issued_at + 62).contains(&first_expiry));
    let record = ledger_record(&bao, &cred.user);
    assert_eq!(record["state"], "active");
    assert_eq!(record["requester"]["display_name"], "token");

    let mut session = pg.open_session(&cred.user, &cred.password, 300);
    let open = wait_until(10.0, || {
        pg.admin(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
            cred.user
        )) == "1"
    });
    assert!(open, "the user's session did not open");

    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": cred.lease_id, "increment": 600}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lease_duration"], 600);
    assert!(valid_until(&pg, &cred.user) >= first_expiry + 530);
    let record = ledger_record(&bao, &cred.user);
    assert!(record["deadline"].as_u64().unwrap() >= issued_at + 600);

    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(
        pg.roles_like(&cred.user).is_empty(),
        "the user outlived revoke"
    );
    let ended = wait_until(10.0, || matches!(session.try_wait(), Ok(Some(_))));
    assert!(ended, "the open session survived revocation");
    assert!(!session.wait().unwrap().success());
    assert!(pg.psql_as(&cred.user, &cred.password, "SELECT 1").is_err());
    let record = ledger_record(&bao, &cred.user);
    assert_eq!(record["state"], "revoked");
    assert_eq!(record["revocation_attempts"], 1);
    assert_eq!(record["lease_id"], cred.lease_id.as_str());

    // Nothing secret in the plugin's log (the server log carries it), the ledger or errors.
    let (_, bad) = bao.get("mayfly/creds/app?ttl=soon");
    let (_, leases) = bao.list("mayfly/leases/");
    let scanned = format!("{}{record}{leases}{bad}", bao.log());
    for secret in [cred.password.as_str(), SUPERUSER_PASSWORD] {
        assert!(!scanned.contains(secret), "a password leaked");
    }
    assert!(
        bao.log().contains("audit_action=revoke"),
        "the log shows the lifecycle"
    );
}

#[test]
fn scram_verifiers_keep_the_password_out_of_the_servers_logs() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    pg.admin("ALTER SYSTEM SET log_statement = 'ddl'");
    pg.admin("SELECT pg_reload_conf()");
    let mut connection = pg.connection("postgresql-database-plugin");
    connection["password_authentication"] = json!("md5");
    let (status, body) = bao.put("mayfly/config/db", connection.clone());
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("field 'password_authentication': expected 'password' or 'scram-sha-256'"),
        "{body}"
    );
    connection["password_authentication"] = json!("scram-sha-256");
    configure(
        &bao,
        &pg,
        json!({"db_name": "db", "default_ttl": 60, "creation_statements":
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' IN ROLE app_readers;"}),
    );
    let (status, body) = bao.put("mayfly/config/db", connection.clone());
    assert_eq!(status, 204, "{body}");

    let cred = issue(&bao, "mayfly/creds/app");
    assert_eq!(
        pg.psql_as(&cred.user, &cred.password, "SELECT current_user")
            .unwrap(),
        cred.user
    );
    let stored = pg.admin(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'",
        cred.user
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    let log = pg.server_log();
    assert!(log.contains(&cred.user), "the server did not log the DDL");
    assert!(log.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "{log}");
    assert!(
        !log.contains(&cred.password),
        "the password reached the server's log"
    );
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(pg.roles_like(&cred.user).is_empty());

    // Fewer rounds: the server stores them as sent, and logins still work.
    for (auth, rounds, error) in [
        (
            "password",
            1,
            "field 'scram_iterations': applies only with password_authentication 'scram-sha-256'",
        ),
        (
            "scram-sha-256",
            0,
            "field 'scram_iterations': expected an integer from 1 to 1000000, got 0",
        ),
    ] {
        let mut bad = connection.clone();
        bad["password_authentication"] = json!(auth);
        bad["scram_iterations"] = json!(rounds);
        let (status, body) = bao.put("mayfly/config/db", bad);
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(error), "{body}");
    }
    connection["scram_iterations"] = json!(16);
    let (status, body) = bao.put("mayfly/config/db", connection);
    assert_eq!(status, 204, "{body}");
    let cred = issue(&bao, "mayfly/creds/app");
    let stored = pg.admin(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'",
        cred.user
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$16:"), "{stored}");
    assert_eq!(
        pg.psql_as(&cred.user, &cred.password, "SELECT current_user")
            .unwrap(),
        cred.user
    );
    assert!(
        pg.psql_as(&cred.user, "not-the-password", "SELECT 1")
            .is_err()
    );
}

#[test]
fn expiry_alone_drops_the_user_and_a_forced_revoke_cannot_save_it() {
    let (pg, bao) = mounted(
        json!({"db_name": "db", "member_of": ["app_readers"], "default_ttl": 3, "max_ttl": 600}),
    );

    // Expiry alone.
    let start = Instant::now();
    let cred = issue(&bao, "mayfly/creds/app");
    assert_eq!(cred.lease_duration, 3);
    pg.psql_as(&cred.user, &cred.password, "SELECT 1").unwrap();
    let member = pg.admin(&format!(
        "SELECT pg_has_role('{}', 'app_readers', 'MEMBER')",
        cred.user
    ));
    assert_eq!(member, "t", "grants come by group membership");
    assert!(wait_until(8.0, || pg.roles_like(&cred.user).is_empty()));
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "dropped before its deadline"
    );

    // A forced revoke while the database is down: the host drops its lease whatever the
    // plugin says; mayfly's ledger still drops the user by its deadline.
    let cred = issue(&bao, "mayfly/creds/app?ttl=40");
    let deadline = now() + 40;
    pg.halt();
    let (status, body) = bao.put("sys/leases/revoke-force/mayfly/creds/app", json!({}));
    assert_eq!(status, 204, "{body}");
    let (status, _) = bao.put("sys/leases/lookup", json!({"lease_id": cred.lease_id}));
    assert_eq!(status, 400, "the host still has the lease");
    let record = ledger_record(&bao, &cred.user);
    assert_eq!(record["state"], "revoking", "{record}");
    assert!(
        record["last_error"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{record}"
    );
    pg.resume();
    assert!(wait_until(30.0, || pg.roles_like(&cred.user).is_empty()));
    assert!(now() <= deadline, "dropped after its deadline");
    assert_eq!(ledger_record(&bao, &cred.user)["state"], "revoked");
}

/// OpenBao's `default` policy grants `sys/leases/renew` to every token, and the host hands the
/// renewal's reply to whoever renewed: a renewal must carry no secret.
#[test]
fn a_token_with_only_the_default_policy_renews_a_lease_and_gets_no_secret() {
    let (pg, bao) = mounted(json!({"db_name": "db", "member_of": "app_readers"}));
    let cred = issue(&bao, "mayfly/creds/app");
    let (status, body) = bao.put(
        "auth/token/create",
        json!({"policies": ["default"], "no_parent": true}),
    );
    assert_eq!(status, 200, "{body}");
    let stranger = body["auth"]["client_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body) = bao.request_as(
            &stranger,
            "PUT",
            "sys/leases/renew",
            Some(&json!({"lease_id": cred.lease_id, "increment": 120})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"], Value::Null, "{body}");
        assert!(!body.to_string().contains(&cred.password), "{body}");
    }
    // The renewed lease still works and revokes by what the host keeps of it.
    assert_eq!(
        pg.psql_as(&cred.user, &cred.password, "SELECT 1"),
        Ok("1".into())
    );
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(pg.roles_like(&cred.user).is_empty());
}

#[test]
fn a_user_dropped_by_hand_is_revoked_on_the_first_attempt() {
    let (pg, bao) = mounted(json!({"db_name": "db", "member_of": "app_readers"}));
    let cred = issue(&bao, "mayfly/creds/app");
    pg.admin(&format!("DROP ROLE \"{}\"", cred.user));
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    let record = ledger_record(&bao, &cred.user);
    assert_eq!(record["state"], "revoked");
    assert_eq!(record["revocation_attempts"], 1);
    assert_eq!(record["last_error"], Value::Null);
}

/// mayfly tests a pooled connection again before use only when it has been idle for a second
/// (it is always tested when it comes back to the pool): a server restarted since then has
/// closed it, and the test finds that, so the next issuance gets a new connection instead of
/// failing on the dead one.
#[test]
fn issuance_after_a_server_restart_uses_new_connections() {
    let (pg, bao) = mounted(json!({"db_name": "db", "member_of": "app_readers"}));
    let before = issue(&bao, "mayfly/creds/app");
    let issued_at = Instant::now();
    pg.halt();
    pg.resume();
    // A connection idle for less than the retest interval is used as it is.
    if let Some(left) = Duration::from_millis(1500).checked_sub(issued_at.elapsed()) {
        std::thread::sleep(left);
    }
    for _ in 0..3 {
        let (status, body) = bao.get("mayfly/creds/app");
        assert_eq!(
            status,
            200,
            "issuance after a restart: {body}\n{}",
            bao.log()
        );
        let cred = Cred::from_response(body);
        assert_eq!(
            pg.psql_as(&cred.user, &cred.password, "SELECT 1")
                .as_deref(),
            Ok("1")
        );
    }
    assert_eq!(pg.roles_like(&before.user).len(), 1);
}

#[test]
fn injection_attempts_are_refused_and_create_nothing() {
    let (pg, bao) = mounted(json!({"db_name": "db", "member_of": "app_readers"}));
    let errors = |body: &Value| body["errors"].to_string();
    let cases = [
        (
            "mayfly/roles/evil",
            json!({"db_name": "db", "member_of": "app_readers",
                   "username_template": "x\"; DROP ROLE mayfly_admin; --{{random 4}}"}),
            "username_template",
        ),
        (
            "mayfly/roles/evil",
            json!({"db_name": "db", "member_of": "app_readers\"; DROP TABLE x; --"}),
            "member_of",
        ),
        (
            "mayfly/roles/evil",
            json!({"db_name": "db",
                   "username_template": "mf-{{random 4}}'; DROP ROLE mayfly_admin; --",
                   "creation_statements": "CREATE ROLE \"{{name}}\" LOGIN; \
                       COMMENT ON ROLE \"{{name}}\" IS 'issued as {{name}}'"}),
            "single quote",
        ),
        (
            "mayfly/roles/ev'il",
            json!({"db_name": "db", "member_of": "app_readers"}),
            "path segment",
        ),
        (
            "mayfly/creds/app",
            json!({"ttl": "1h'; DROP ROLE mayfly_admin; --"}),
            "field 'ttl'",
        ),
        (
            "mayfly/creds/app",
            json!({"username": "admin"}),
            "unknown field 'username'",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, reply) = bao.put(path, body.clone());
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(errors(&reply).contains(expected), "{path} {body}: {reply}");
    }
    let (status, _) = bao.get("mayfly/roles/evil");
    assert_eq!(status, 404, "a refused role was saved");
    assert!(
        pg.roles_like("mf-").is_empty(),
        "a refused request created a user"
    );
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'mayfly_admin'"),
        "1"
    );
}

/// With the plugin SIGKILLed at each step of issuance and OpenBao restarted, no user created
/// by mayfly outlives its deadline, and mayfly's storage holds no password.
#[test]
fn a_crash_at_any_step_of_issuance_leaves_no_user_past_its_deadline() {
    let pg = PrivatePostgres::start();
    let mut bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    configure(
        &bao,
        &pg,
        json!({"db_name": "db", "member_of": "app_readers", "default_ttl": 20}),
    );
    for step in ["after_intent", "after_create", "before_reply"] {
        bao.restart(&[("MAYFLY_TEST_CRASH_AT", step)]);
        let issued = now();
        let (status, body) = bao.get("mayfly/creds/app");
        assert_eq!(status, 500, "{step}: the crash did not happen: {body}");
        bao.restart(&[]);
        let users = pg.roles_like("mf-");
        match step {
            "after_intent" => assert!(users.is_empty(), "{step}: {users:?}"),
            // OpenBao may see the plugin die before the request's error arrives and then
            // retries the request once on a new process, which crashes at the same step: one
            // or two users, each recorded in the ledger.
            _ => assert!(
                (1..=2).contains(&users.len()),
                "{step}: the user should exist until its deadline: {users:?}"
            ),
        }
        let all_revoked = || {
            let (_, list) = bao.list("mayfly/leases/");
            list["data"]["key_info"]
                .as_object()
                .is_some_and(|m| m.values().all(|v| v["state"] == "revoked"))
        };
        let done = wait_until(40.0, || pg.roles_like("mf-").is_empty() && all_revoked());
        assert!(
            done,
            "{step}: a user or intent outlived its deadline\n{}",
            bao.log()
        );
        let late = now().saturating_sub(issued + 20);
        assert!(late <= 3, "{step}: revoked {late}s after its deadline");
    }
    // One normal issuance, then look at everything mayfly stored.
    let cred = issue(&bao, "mayfly/creds/app");
    let stored = bao.raw_mount_storage("mayfly");
    assert!(
        stored.iter().any(|(k, _)| k.contains("ledger/creds/")),
        "{stored:?}"
    );
    for (key, value) in &stored {
        assert!(
            !value.contains(&cred.password),
            "the user's password is stored at {key}"
        );
    }
    assert!(!bao.log().contains(&cred.password));
}

/// PostgreSQL down through expiry for longer than the host's own retry window (six attempts
/// over about ten minutes): mayfly keeps retrying, shows the failures, never lets the host
/// mark the lease irrevocable, and drops every user within one backoff of recovery.
/// `MAYFLY_TEST_OUTAGE_SECS` shortens the outage for local runs; CI uses the full 660 s.
#[test]
fn an_outage_longer_than_the_host_retry_window_loses_no_revocation() {
    let outage: u64 = std::env::var("MAYFLY_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(660);
    let (pg, bao) = mounted(json!({"db_name": "db", "member_of": "app_readers", "default_ttl": 5}));
    let users: Vec<String> = (0..3)
        .map(|_| issue(&bao, "mayfly/creds/app").user)
        .collect();
    pg.halt();
    let down_at = Instant::now();
    let failing = wait_until(30.0, || {
        // Each attempt is on record as it begins; its error once it has failed.
        let (_, list) = bao.list("mayfly/leases/?state=revoking");
        let info = list["data"]["key_info"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        info.len() == 3 && info.values().all(|r| !r["last_error"].is_null())
    });
    assert!(failing, "leases/ did not show the failing revocations");
    let record = ledger_record(&bao, &users[0]);
    assert!(
        record["last_error"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{record}"
    );
    while down_at.elapsed() < Duration::from_secs(outage) {
        let (_, count) = bao.get("sys/leases/count?type=irrevocable");
        assert_eq!(
            count["data"]["lease_count"], 0,
            "the host marked a lease irrevocable"
        );
        std::thread::sleep(Duration::from_secs(10));
    }
    let attempts = ledger_record(&bao, &users[0])["revocation_attempts"]
        .as_u64()
        .unwrap();
    if outage >= 600 {
        assert!(attempts > 6, "only {attempts} attempts in {outage}s");
    }
    pg.resume();
    let recovered = Instant::now();
    let gone = wait_until(300.0 + 15.0, || {
        users.iter().all(|u| pg.roles_like(u).is_empty())
    });
    assert!(gone, "users left after recovery\n{}", bao.log());
    eprintln!(
        "outage {outage}s: {attempts} attempts before recovery; all dropped {:.1}s after it",
        recovered.elapsed().as_secs_f64()
    );
    for u in &users {
        assert_eq!(ledger_record(&bao, u)["state"], "revoked");
    }
    let (_, count) = bao.get("sys/leases/count?type=irrevocable");
    assert_eq!(count["data"]["lease_count"], 0);
}

#[test]
fn tls_ca_makes_mayfly_verify_the_server_and_encrypt() {
    let pg = PrivatePostgres::start_tls();
    let bao = Bao::with_mayfly();
    let stranger_dir = mayfly_integration::scratch_dir("ca");
    let stranger = mayfly_integration::postgres::make_certificates(&stranger_dir);
    let config = |ca: &str| {
        json!({"plugin_name": "postgres", "connection_url": pg.template_url(),
               "username": SUPERUSER, "password": SUPERUSER_PASSWORD,
               "allowed_roles": "*", "tls_ca": ca})
    };
    let (status, body) = bao.put("mayfly/config/db", config(&stranger));
    assert_eq!(
        status, 400,
        "a server signed by another CA was accepted: {body}"
    );
    assert!(body.to_string().contains("cannot connect"), "{body}");
    let (status, body) = bao.put("mayfly/config/db", config(pg.tls_ca.as_ref().unwrap()));
    assert_eq!(status, 204, "{body}");
    pg.admin("CREATE ROLE app_readers NOLOGIN");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "member_of": "app_readers"}),
    );
    assert!(status < 300, "{body}");
    let cred = issue(&bao, "mayfly/creds/app");
    pg.psql_as(&cred.user, &cred.password, "SELECT 1").unwrap();
    let encrypted = pg.admin(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'mayfly'",
    );
    assert_eq!(encrypted, "t", "mayfly's connections are not encrypted");
    let _ = std::fs::remove_dir_all(stranger_dir);
}

/// A host password policy, custom renew and revocation statements, and a user that owns
/// objects (so a plain DROP ROLE fails and mayfly reassigns what it owns first).
#[test]
fn password_policy_custom_statements_and_owned_objects() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    let policy = "length = 24\nrule \"charset\" {\n  charset = \"abcdefghijklmnopqrstuvwxyz\"\n}\n";
    let (status, body) = bao.put("sys/policies/password/lower24", json!({"policy": policy}));
    assert!(status < 300, "{body}");
    configure(
        &bao,
        &pg,
        json!({"db_name": "db", "password_policy": "lower24", "default_ttl": 600,
               "creation_statements": [
                   "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                   "GRANT CREATE ON SCHEMA public TO \"{{name}}\";"],
               "renew_statements": "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}'; \
                                    COMMENT ON ROLE \"{{name}}\" IS 'renewed'"}),
    );
    let cred = issue(&bao, "mayfly/creds/app");
    assert_eq!(cred.password.len(), 24);
    assert!(
        cred.password.chars().all(|c| c.is_ascii_lowercase()),
        "policy not applied"
    );
    pg.psql_as(
        &cred.user,
        &cred.password,
        "CREATE TABLE owned_by_user (x int)",
    )
    .unwrap();

    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": cred.lease_id, "increment": 300}),
    );
    assert_eq!(status, 200, "{body}");
    let comment = pg.admin(&format!(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{}'",
        cred.user
    ));
    assert_eq!(comment, "renewed", "renew_statements did not run");

    // Default revocation: the grant and the table make DROP ROLE fail; mayfly reassigns.
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(pg.roles_like(&cred.user).is_empty(), "{}", bao.log());
    assert_eq!(
        pg.admin("SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_user'"),
        SUPERUSER
    );
    assert_eq!(ledger_record(&bao, &cred.user)["state"], "revoked");

    // Custom revocation statements run instead of the default.
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'",
               "revocation_statements": ["ALTER ROLE \"{{name}}\" NOLOGIN",
                                         "COMMENT ON ROLE \"{{name}}\" IS 'retired'"]}),
    );
    assert!(status < 300, "{body}");
    let cred = issue(&bao, "mayfly/creds/app");
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    let kept = pg.admin(&format!(
        "SELECT rolcanlogin::text || ' ' || shobj_description(oid, 'pg_authid') \
         FROM pg_roles WHERE rolname = '{}'",
        cred.user
    ));
    assert_eq!(
        kept, "false retired",
        "revocation_statements did not replace the default"
    );
}

/// The due-index entries of mount `mayfly/` in the host's storage: (due time, credential id).
fn due_entries(bao: &Bao) -> Vec<(u64, String)> {
    bao.raw_mount_storage("mayfly")
        .into_iter()
        .filter(|(key, _)| key.contains("/ledger/due/"))
        .filter_map(|(key, _)| {
            let (due, id) = key.rsplit('/').next()?.split_once('_')?;
            Some((due.parse().ok()?, id.to_owned()))
        })
        .collect()
}

/// The due times at which `id` is indexed.
fn indexed_at(entries: &[(u64, String)], id: &str) -> Vec<u64> {
    entries
        .iter()
        .filter(|(_, e)| e == id)
        .map(|(due, _)| *due)
        .collect()
}

/// A credential that outlives its intent's grace (90 s) is indexed, in the host's own storage,
/// at its deadline as it is issued (a renewed one at its renewed deadline), and nowhere else:
/// the intent's entry goes. Nothing is revoked when the intent's grace runs out.
#[test]
fn long_lived_credentials_are_indexed_at_their_deadlines_in_host_storage() {
    let pg = PrivatePostgres::start();
    let bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    configure(
        &bao,
        &pg,
        json!({"db_name": "db", "member_of": "app_readers", "default_ttl": 100, "max_ttl": 600}),
    );
    let issued_at = now();
    let kept = issue(&bao, "mayfly/creds/app");
    let renewed = issue(&bao, "mayfly/creds/app");
    let id = |c: &Cred| {
        ledger_record(&bao, &c.user)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ids = [id(&kept), id(&renewed)];
    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": renewed.lease_id, "increment": 125}),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = |c: &Cred| ledger_record(&bao, &c.user)["deadline"].as_u64().unwrap();
    let deadlines = [deadline(&kept), deadline(&renewed)];
    assert!(deadlines[1] >= deadlines[0] + 20, "{deadlines:?}");
    let at_deadlines = || {
        let entries = due_entries(&bao);
        ids.iter()
            .zip(deadlines)
            .all(|(id, deadline)| indexed_at(&entries, id) == [deadline])
    };
    assert!(
        wait_until(5.0, at_deadlines),
        "entries not at the deadlines {deadlines:?} only: {:?}",
        due_entries(&bao)
    );

    // Past the intent's grace: the same, and both still work.
    std::thread::sleep(Duration::from_secs((issued_at + 93).saturating_sub(now())));
    assert!(
        at_deadlines(),
        "entries moved at the intent's due time: {:?}",
        due_entries(&bao)
    );
    for c in [&kept, &renewed] {
        assert_eq!(ledger_record(&bao, &c.user)["state"], "active");
        pg.psql_as(&c.user, &c.password, "SELECT 1")
            .expect("revoked before its deadline");
    }

    // Each goes at its own deadline.
    let left = |d: u64| d.saturating_sub(now()) as f64 + 15.0;
    assert!(wait_until(left(deadlines[0]), || pg
        .roles_like(&kept.user)
        .is_empty()));
    assert!(now() >= deadlines[0] - 1, "dropped before its deadline");
    pg.psql_as(&renewed.user, &renewed.password, "SELECT 1")
        .expect("the renewed credential went at its first deadline");
    assert!(wait_until(left(deadlines[1]), || pg
        .roles_like(&renewed.user)
        .is_empty()));
    assert!(
        now() >= deadlines[1] - 1,
        "dropped before its renewed deadline"
    );
    for c in [&kept, &renewed] {
        assert_eq!(ledger_record(&bao, &c.user)["state"], "revoked");
    }
}
