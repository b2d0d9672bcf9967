//! The `mysql` kind end to end: a real OpenBao loads mayfly, which manages users in a private
//! MariaDB that checks passwords and can be stopped.

use std::time::{Duration, Instant};

use mayfly_integration::creds::{inventory_entry, is_marked, issue, ledger_record, mark_of, now};
use mayfly_integration::mariadb::{ADMIN, ADMIN_PASSWORD};
use mayfly_integration::{Bao, PrivateMariaDb, wait_until};
use serde_json::{Value, json};

/// OpenBao's documented MySQL creation statements, with a grant on the test database.
const CREATE: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; \
                      GRANT SELECT ON app.* TO '{{name}}'@'%';";

/// Connection `db` on the private server (in OpenBao's DSN form) and role `app` from `role`.
fn configure(bao: &Bao, db: &PrivateMariaDb, role: Value) {
    let (status, body) = bao.put("mayfly/config/db", db.connection("mysql-database-plugin"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put("mayfly/roles/app", role);
    assert!(status == 200 || status == 204, "{status} {body}");
}

fn sessions_of(db: &PrivateMariaDb, user: &str) -> String {
    db.root(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
    ))
}

#[test]
fn issue_login_renew_revoke_end_sessions_and_leak_no_secret() {
    let db = PrivateMariaDb::start();
    let bao = Bao::with_mayfly();
    configure(
        &bao,
        &db,
        json!({"db_name": "db", "default_ttl": 60, "max_ttl": "1h",
               "creation_statements": CREATE}),
    );
    let (_, role) = bao.get("mayfly/roles/app");
    assert_eq!(
        role["data"]["expiry_enforcement"], "scheduler_only",
        "the role read says MySQL has no per-user expiry: {role}"
    );

    let cred = issue(&bao, "mayfly/creds/app");
    assert!(is_marked(&cred.user, "app-"), "{}", cred.user);
    assert!(cred.user.len() <= 32, "MySQL's limit: {}", cred.user);
    assert_eq!(
        db.sql_as(&cred.user, &cred.password, "SELECT COUNT(*) FROM app.items"),
        Ok("2".into())
    );
    let refused = db
        .sql_as(&cred.user, "wrong-password", "SELECT 1")
        .unwrap_err();
    assert!(refused.contains("Access denied"), "{refused}");
    assert!(
        db.sql_as(&cred.user, &cred.password, "CREATE TABLE app.t (i INT)")
            .is_err(),
        "only what the statements granted"
    );

    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": cred.lease_id, "increment": 600}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        ledger_record(&bao, &cred.user)["deadline"]
            .as_u64()
            .unwrap()
            >= now() + 590
    );

    let mut session = db.open_session(&cred.user, &cred.password, 300);
    assert!(wait_until(10.0, || sessions_of(&db, &cred.user) == "1"));
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(
        db.users_like(&cred.user).is_empty(),
        "the user outlived revoke"
    );
    assert!(
        wait_until(10.0, || matches!(session.try_wait(), Ok(Some(_)))),
        "the open session survived revocation"
    );
    assert!(db.sql_as(&cred.user, &cred.password, "SELECT 1").is_err());
    let record = ledger_record(&bao, &cred.user);
    assert_eq!(record["state"], "revoked");
    assert_eq!(record["revocation_attempts"], 1);

    // A user dropped by hand: revocation is a success on the first attempt.
    let gone = issue(&bao, "mayfly/creds/app");
    db.root(&format!("DROP USER '{}'@'%'", gone.user));
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": gone.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    let record = ledger_record(&bao, &gone.user);
    assert_eq!(record["state"], "revoked", "{record}");
    assert_eq!(record["revocation_attempts"], 1);

    // A creation statement that fails after the user exists: nothing is left behind.
    let (status, body) = bao.put(
        "mayfly/roles/broken",
        json!({"db_name": "db", "creation_statements": [
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'",
            "GRANT SELECT ON app.no_such_table TO '{{name}}'@'%'"]}),
    );
    assert!(status == 200 || status == 204, "{body}");
    let (status, body) = bao.get("mayfly/creds/broken");
    assert_eq!(status, 502, "{body}");
    let error = body.to_string();
    assert!(error.contains("creation statement 2"), "{error}");
    assert!(
        db.users_like("mf-broken").is_empty(),
        "a half-created user was left"
    );
    let (_, active) = bao.list("mayfly/leases/?role=broken&state=active");
    assert!(active["data"]["keys"].as_array().is_none_or(Vec::is_empty));

    // Names longer than 32 characters are refused when the role is written.
    let (status, body) = bao.put(
        "mayfly/roles/long",
        json!({"db_name": "db", "creation_statements": CREATE,
               "username_template": "mf-{{.RoleName}}-{{random 40}}"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("1 to 32 characters"), "{body}");

    let (_, leases) = bao.list("mayfly/leases/");
    let scanned = format!("{}{record}{leases}{error}", bao.log());
    for secret in [
        cred.password.as_str(),
        gone.password.as_str(),
        ADMIN_PASSWORD,
    ] {
        assert!(!scanned.contains(secret), "a password leaked");
    }
}

#[test]
fn expiry_survives_an_outage_and_operators_tools_work() {
    let db = PrivateMariaDb::start();
    let bao = Bao::with_mayfly();
    configure(
        &bao,
        &db,
        json!({"db_name": "db", "default_ttl": 3, "max_ttl": 600,
               "creation_statements": CREATE}),
    );

    // Expiry alone.
    let start = Instant::now();
    let cred = issue(&bao, "mayfly/creds/app");
    db.sql_as(&cred.user, &cred.password, "SELECT 1").unwrap();
    assert!(wait_until(8.0, || db.users_like(&cred.user).is_empty()));
    assert!(start.elapsed() >= Duration::from_secs(2), "dropped early");

    // The server down when the credential expires: revoked once it is back.
    let cred = issue(&bao, "mayfly/creds/app?ttl=4");
    db.halt();
    let failing = wait_until(20.0, || {
        let r = ledger_record(&bao, &cred.user);
        r["state"] == "revoking" && r["last_error"].as_str().is_some_and(|e| !e.is_empty())
    });
    assert!(failing, "{}", ledger_record(&bao, &cred.user));
    db.resume();
    let back = Instant::now();
    // The first retries come 5 s then 10 s apart (minus jitter); one interval plus slack.
    assert!(
        wait_until(25.0, || db.users_like(&cred.user).is_empty()),
        "the user outlived the outage: {}",
        ledger_record(&bao, &cred.user)
    );
    println!("revoked {:?} after the server came back", back.elapsed());
    assert!(wait_until(
        10.0,
        || ledger_record(&bao, &cred.user)["state"] == "revoked"
    ));

    // Operator tools: revoke a whole connection, and purge an orphan.
    for _ in 0..3 {
        issue(&bao, "mayfly/creds/app?ttl=300");
    }
    let (status, body) = bao.put("mayfly/revoke/config/db", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["revoked"], 3, "{body}");
    assert!(db.users_like("mf-").is_empty());
    let orphan = format!("{}orphan", mark_of(&bao, "mayfly", "db"));
    db.root(&format!("CREATE USER '{orphan}'@'%' IDENTIFIED BY 'x'"));
    let (status, body) = bao.get("mayfly/orphans/db");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["orphans"], json!([orphan]), "{body}");
    let (status, body) = bao.put("mayfly/orphans/db", json!({"purge": true}));
    assert_eq!(status, 200, "{body}");
    assert!(db.users_like(&orphan).is_empty());
}

#[test]
fn rotate_root_locks_out_the_old_password_and_issuing_goes_on() {
    let db = PrivateMariaDb::start();
    let bao = Bao::with_mayfly();
    configure(
        &bao,
        &db,
        json!({"db_name": "db", "default_ttl": 60, "creation_statements": CREATE}),
    );
    issue(&bao, "mayfly/creds/app");

    let (status, body) = bao.put("mayfly/rotate-root/db", json!({}));
    assert_eq!(status, 204, "{body}");
    let refused = db.sql_as(ADMIN, ADMIN_PASSWORD, "SELECT 1").unwrap_err();
    assert!(refused.contains("Access denied"), "{refused}");
    let cred = issue(&bao, "mayfly/creds/app");
    db.sql_as(&cred.user, &cred.password, "SELECT 1").unwrap();
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(db.users_like(&cred.user).is_empty());

    // Twice in a row: each rotation starts from the password the last one stored.
    let (status, body) = bao.put("mayfly/rotate-root/db", json!({}));
    assert_eq!(status, 204, "{body}");
    issue(&bao, "mayfly/creds/app");

    let (_, config) = bao.get("mayfly/config/db");
    assert!(!config.to_string().contains(ADMIN_PASSWORD));
    assert_eq!(config["data"]["secret_fields_set"], json!(["password"]));

    // A connection without a password to rotate is refused with a reason.
    let (status, body) = bao.put(
        "mayfly/config/nopw",
        json!({"plugin_name": "mysql", "connection_url": format!("tcp(127.0.0.1:{})/", db.port),
               "verify_connection": false}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put("mayfly/rotate-root/nopw", json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("no password to rotate"), "{body}");
}

#[test]
fn a_crash_midway_through_rotate_root_never_loses_the_working_password() {
    let db = PrivateMariaDb::start();
    let mut bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    configure(
        &bao,
        &db,
        json!({"db_name": "db", "default_ttl": 60, "creation_statements": CREATE}),
    );
    // Killed after the pending password is stored, before the server is asked to change:
    // the server still takes the old password, and mayfly goes on with it.
    bao.restart(&[("MAYFLY_TEST_CRASH_AT", "root_pending")]);
    let (status, body) = bao.put("mayfly/rotate-root/db", json!({}));
    assert_eq!(status, 500, "the crash did not happen: {body}");
    bao.restart(&[]);
    issue(&bao, "mayfly/creds/app");
    db.sql_as(ADMIN, ADMIN_PASSWORD, "SELECT 1")
        .expect("the server was never asked to change");

    // Killed after the server changed, before the new password became the stored one: the
    // pending password is adopted on the next use.
    bao.restart(&[("MAYFLY_TEST_CRASH_AT", "root_changed")]);
    let (status, body) = bao.put("mayfly/rotate-root/db", json!({}));
    assert_eq!(status, 500, "the crash did not happen: {body}");
    bao.restart(&[]);
    let cred = issue(&bao, "mayfly/creds/app");
    db.sql_as(&cred.user, &cred.password, "SELECT 1").unwrap();
    assert!(db.sql_as(ADMIN, ADMIN_PASSWORD, "SELECT 1").is_err());
    assert!(
        bao.log()
            .contains("settled a root rotation that stopped midway"),
        "the pending password was settled"
    );
    for (key, value) in bao.raw_mount_storage("mayfly") {
        assert!(!value.contains(&cred.password), "stored at {key}");
    }
}

/// `inventory/NAME` on MariaDB: each user once, with the hosts it logs in from and what each
/// may do; mayfly's admin, a dynamic user and a standing account told apart.
#[test]
fn an_inventory_lists_each_user_with_its_hosts_and_privileges() {
    let db = PrivateMariaDb::start();
    let bao = Bao::with_mayfly();
    configure(
        &bao,
        &db,
        json!({"db_name": "db", "default_ttl": 60, "creation_statements": CREATE}),
    );
    db.root("CREATE USER 'etl'@'localhost' IDENTIFIED BY 'standing-pw'");
    db.root("CREATE USER 'etl'@'10.0.0.%' IDENTIFIED BY 'standing-pw'");
    db.root("GRANT CREATE USER ON *.* TO 'etl'@'10.0.0.%'");
    let cred = issue(&bao, "mayfly/creds/app");
    let (status, body) = bao.get("mayfly/inventory/db");
    assert_eq!(status, 200, "{body}");
    let principals = body["data"]["principals"].as_array().unwrap();
    let of = |name: &str| inventory_entry(&body, name);
    assert_eq!(of(ADMIN)["class"], "connection", "{body}");
    assert_eq!(of(&cred.user)["class"], "dynamic", "{body}");
    let etl = of("etl");
    assert_eq!(etl["class"], "unmanaged", "{body}");
    assert_eq!(
        principals.iter().filter(|p| p["name"] == "etl").count(),
        1,
        "one entry per user: {body}"
    );
    let accounts = etl["power"]["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2, "{body}");
    let remote = accounts.iter().find(|a| a["host"] == "10.0.0.%").unwrap();
    assert_eq!(remote["create_user"], true, "{body}");
    let text = body.to_string();
    for secret in [cred.password.as_str(), "standing-pw", ADMIN_PASSWORD] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}
