//! Static roles end to end: existing accounts on private PostgreSQL, MariaDB and Redis servers
//! (which check passwords) taken over by mayfly through a real OpenBao, and rotated on a
//! period, on a cron schedule and on demand, while an application keeps using them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mayfly_integration::creds::now;
use mayfly_integration::{Bao, PrivateMariaDb, PrivatePostgres, PrivateRedis, wait_until};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Connection `db` on a private PostgreSQL cluster, for every role.
fn configure_postgres(bao: &Bao, pg: &PrivatePostgres) {
    let (status, body) = bao.put("mayfly/config/db", pg.connection("postgres"));
    assert_eq!(status, 204, "{body}");
}

fn write_role(bao: &Bao, name: &str, body: Value) {
    let (status, body) = bao.put(&format!("mayfly/static-roles/{name}"), body);
    assert_eq!(status, 204, "{body}\n{}", bao.log());
}

fn role(bao: &Bao, name: &str) -> Value {
    let (status, body) = bao.get(&format!("mayfly/static-roles/{name}"));
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// (username, password, ttl) from static-creds.
fn static_creds(bao: &Bao, name: &str) -> (String, String, u64) {
    let (status, body) = bao.get(&format!("mayfly/static-creds/{name}"));
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    (
        d["username"].as_str().unwrap().to_owned(),
        d["password"].as_str().unwrap().to_owned(),
        d["ttl"].as_u64().unwrap(),
    )
}

fn rotate(bao: &Bao, name: &str) {
    let (status, body) = bao.put(&format!("mayfly/rotate-role/{name}"), json!({}));
    assert_eq!(status, 204, "{body}");
}

/// What the application saw.
#[derive(Default)]
struct Tally {
    queries: AtomicUsize,
    /// Logins the database refused (a stale password).
    failed_logins: AtomicUsize,
    /// Queries that failed even after the application re-read static-creds.
    failed_queries: AtomicUsize,
    /// Every password the application was handed.
    passwords: std::sync::Mutex<Vec<String>>,
}

/// An application with a connection pool on account(s) of static role `role`: four workers
/// run queries, connections live 150 ms (so logins are frequent), and a refused login makes it
/// re-read static-creds and retry. With `refresh_every`, it also re-reads on that period, as
/// Vault Agent re-renders a template.
fn run_app(
    bao: &Bao,
    pg: &PrivatePostgres,
    role: &str,
    refresh_every: Option<Duration>,
    stop: &AtomicBool,
) -> Tally {
    let tally = Tally::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = |(user, password): (String, String)| {
        tally.passwords.lock().unwrap().push(password.clone());
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(pg.port)
            .database("postgres")
            .username(&user)
            .password(&password)
    };
    let read = || {
        let (u, p, _) = static_creds(bao, role);
        (u, p)
    };
    runtime.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .max_lifetime(Duration::from_millis(150))
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options(read()));
        let refresher = async {
            let Some(every) = refresh_every else {
                return;
            };
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(every).await;
                pool.set_connect_options(options(read()));
            }
        };
        let worker = || async {
            while !stop.load(Ordering::SeqCst) {
                let mut ok = false;
                for _ in 0..3 {
                    match sqlx::query_scalar::<_, i32>("SELECT 1")
                        .fetch_one(&pool)
                        .await
                    {
                        Ok(_) => {
                            ok = true;
                            break;
                        }
                        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => {
                            tally.failed_logins.fetch_add(1, Ordering::SeqCst);
                            pool.set_connect_options(options(read()));
                        }
                        Err(e) => panic!("the application failed otherwise: {e}"),
                    }
                }
                tally.queries.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    tally.failed_queries.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::join!(refresher, worker(), worker(), worker(), worker());
        pool.close().await;
    });
    tally
}

/// Rotates `role` `n` times, `gap` apart, while the application runs; returns its tally.
fn rotations_under_load(
    bao: &Bao,
    pg: &PrivatePostgres,
    role: &str,
    n: usize,
    gap: Duration,
    refresh_every: Option<Duration>,
) -> Tally {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let app = s.spawn(|| run_app(bao, pg, role, refresh_every, &stop));
        std::thread::sleep(Duration::from_millis(500));
        let before = role_rotation(bao, role);
        for _ in 0..n {
            std::thread::sleep(gap);
            rotate(bao, role);
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let tally = app.join().unwrap();
        assert!(role_rotation(bao, role) > before);
        tally
    })
}

fn role_rotation(bao: &Bao, name: &str) -> u64 {
    role(bao, name)["last_rotation"].as_u64().unwrap_or(0)
}

#[test]
fn an_application_pool_keeps_working_through_50_rotations() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    configure_postgres(&bao, &pg);
    pg.admin(
        "CREATE ROLE app_single LOGIN PASSWORD 'legacy-single'; \
         CREATE ROLE app_blue LOGIN PASSWORD 'legacy-blue'; \
         CREATE ROLE app_green LOGIN PASSWORD 'legacy-green';",
    );

    // Single account: a login may fail right after a rotation; re-reading fixes it.
    write_role(
        &bao,
        "single",
        json!({"db_name": "db", "username": "app_single", "manual_rotation": true}),
    );
    assert!(
        pg.psql_as("app_single", "legacy-single", "SELECT 1")
            .is_err(),
        "taking over replaced the legacy password"
    );
    let tally = rotations_under_load(&bao, &pg, "single", 50, Duration::from_millis(400), None);
    let queries = tally.queries.load(Ordering::SeqCst);
    let failed_logins = tally.failed_logins.load(Ordering::SeqCst);
    println!("single account: {queries} queries, {failed_logins} refused logins");
    assert_eq!(tally.failed_queries.load(Ordering::SeqCst), 0);
    assert!(queries > 200, "{queries}");
    let (_, password, _) = static_creds(&bao, "single");
    assert_eq!(
        pg.psql_as("app_single", &password, "SELECT 1"),
        Ok("1".into())
    );

    // Dual accounts: the previous password works through its grace period, so an
    // application that re-reads regularly never sees a refused login.
    write_role(
        &bao,
        "dual",
        json!({"db_name": "db", "username": "app_blue", "dual_account_username": "app_green",
               "rotation_period": "1h", "grace_period": "10m"}),
    );
    let tally = rotations_under_load(
        &bao,
        &pg,
        "dual",
        50,
        Duration::from_millis(800),
        Some(Duration::from_millis(150)),
    );
    let queries = tally.queries.load(Ordering::SeqCst);
    println!("dual accounts: {queries} queries, 0 refused logins expected");
    assert_eq!(tally.failed_logins.load(Ordering::SeqCst), 0);
    assert_eq!(tally.failed_queries.load(Ordering::SeqCst), 0);
    let passwords = tally.passwords.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<&String> = passwords.iter().collect();
    assert!(distinct.len() >= 50, "{} passwords seen", distinct.len());

    // Both accounts took turns; the current one and the previous one both log in.
    let (user, password, _) = static_creds(&bao, "dual");
    let view = role(&bao, "dual");
    let previous = view["previous_username"].as_str().unwrap().to_owned();
    assert_ne!(user, previous);
    assert_eq!(pg.psql_as(&user, &password, "SELECT 1"), Ok("1".into()));

    let log = bao.log();
    assert!(log.contains("audit_action=static_rotate"), "audit events");
    for p in distinct.iter().copied().chain([&password]) {
        assert!(!log.contains(p.as_str()), "a password in the log");
    }
}

#[test]
fn rotates_on_schedule_and_a_failing_rotation_stops_at_its_bound() {
    let pg = PrivatePostgres::start();
    let mut bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    configure_postgres(&bao, &pg);
    pg.admin("CREATE ROLE report LOGIN PASSWORD 'legacy-report'");

    write_role(
        &bao,
        "report",
        json!({"db_name": "db", "username": "report", "rotation_period": "5s",
               "max_rotation_attempts": 3}),
    );
    let (user, first, ttl) = static_creds(&bao, "report");
    assert_eq!(user, "report");
    assert!((1..=5).contains(&ttl), "{ttl}");
    assert_eq!(pg.psql_as("report", &first, "SELECT 1"), Ok("1".into()));
    assert!(pg.psql_as("report", "legacy-report", "SELECT 1").is_err());

    // On schedule: two rotations in a little over two periods, each to a fresh password.
    let started = Instant::now();
    let mut seen = vec![first.clone()];
    assert!(
        wait_until(20.0, || {
            let (_, p, _) = static_creds(&bao, "report");
            if !seen.contains(&p) {
                seen.push(p);
            }
            seen.len() >= 3
        }),
        "no scheduled rotation: {}",
        role(&bao, "report")
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(pg.psql_as("report", &first, "SELECT 1").is_err());

    // The plugin restarted with the host: the schedule goes on from the ledger's due index.
    bao.restart(&[]);
    let before = role_rotation(&bao, "report");
    assert!(
        wait_until(20.0, || role_rotation(&bao, "report") > before),
        "no rotation after a restart"
    );

    // A statement that fails: the transaction rolls back, the old password stays current
    // and working, and after max_rotation_attempts mayfly stops retrying.
    write_role(
        &bao,
        "report",
        json!({"rotation_period": "1h", "rotation_statements": [
            "ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'",
            "SELECT 1/0"]}),
    );
    let (_, good, _) = static_creds(&bao, "report");
    let (status, body) = bao.put("mayfly/rotate-role/report", json!({}));
    assert_eq!(status, 502, "{body}");
    let error = body.to_string();
    assert!(error.contains("division by zero"), "{error}");
    assert!(
        wait_until(40.0, || role(&bao, "report")["rotation_attempts"] == 3),
        "{}",
        role(&bao, "report")
    );
    let view = role(&bao, "report");
    assert_eq!(
        view["next_attempt"],
        Value::Null,
        "no attempt past the bound"
    );
    assert!(
        view["last_error"]
            .as_str()
            .unwrap()
            .contains("division by zero")
    );
    assert!(view["failing_since"].as_u64().unwrap() <= now());
    assert!(view["next_rotation"].as_u64().unwrap() > now() + 3000);
    assert_eq!(static_creds(&bao, "report").1, good);
    assert_eq!(pg.psql_as("report", &good, "SELECT 1"), Ok("1".into()));
    let failures = bao
        .log()
        .lines()
        .filter(|l| l.contains("audit_action=static_rotate") && l.contains("outcome=failed"))
        .count();
    assert_eq!(failures, 3, "one audit event per attempt");

    // Killed after the server took a new password, before mayfly recorded it: the pending
    // password is settled by asking the server, and static-creds serves the one that works.
    pg.admin("CREATE ROLE crashy LOGIN PASSWORD 'legacy-crashy'");
    write_role(
        &bao,
        "crashy",
        json!({"db_name": "db", "username": "crashy", "manual_rotation": true}),
    );
    let (_, before_crash, _) = static_creds(&bao, "crashy");
    bao.restart(&[("MAYFLY_TEST_CRASH_AT", "static_changed")]);
    let (status, body) = bao.put("mayfly/rotate-role/crashy", json!({}));
    // Either the crash reaches the client (500), or OpenBao saw the plugin die first and
    // retried the request once on a new process, whose attempt settles the pending password
    // before it would change anything, and succeeds (204). Both must end as below, with
    // the settling logged.
    assert!(
        status == 500 || status == 204,
        "the crash did not happen: {status} {body}"
    );
    assert!(pg.psql_as("crashy", &before_crash, "SELECT 1").is_err());
    bao.restart(&[]);
    let mut settled = String::new();
    assert!(
        wait_until(60.0, || {
            settled = static_creds(&bao, "crashy").1;
            settled != before_crash && pg.psql_as("crashy", &settled, "SELECT 1").is_ok()
        }),
        "the rotation stopped midway was not settled: {}",
        role(&bao, "crashy")
    );
    assert!(
        bao.log()
            .contains("a rotation stopped midway had changed the password")
    );

    // Nothing secret anywhere but the seal-wrapped passwords of static-state/.
    seen.push(settled);
    let (_, leases) = bao.list("mayfly/leases/");
    let scanned = format!("{}{leases}{view}{error}", bao.log());
    for p in seen.iter().chain([&good]) {
        assert!(!scanned.contains(p.as_str()), "a password leaked");
    }
    for (key, value) in bao.raw_mount_storage("mayfly") {
        if value.contains(&good) {
            assert!(key.contains("/static-state/"), "a password stored at {key}");
        }
    }
}

#[test]
fn mysql_accounts_are_taken_over_and_rotate_on_a_cron_schedule() {
    let db = PrivateMariaDb::start();
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put("mayfly/config/db", db.connection("mysql"));
    assert_eq!(status, 204, "{body}");
    db.root(
        "CREATE USER 'legacy'@'%' IDENTIFIED BY 'legacy-Pass1'; \
         CREATE USER 'legacy'@'localhost' IDENTIFIED BY 'legacy-Pass1'; \
         GRANT SELECT ON app.* TO 'legacy'@'%'; \
         CREATE USER 'batch'@'%' IDENTIFIED BY 'batch-Pass1';",
    );

    write_role(
        &bao,
        "legacy",
        json!({"db_name": "db", "username": "legacy", "rotation_schedule": "* * * * *",
               "rotation_window": "1h"}),
    );
    let (user, password, ttl) = static_creds(&bao, "legacy");
    assert_eq!(user, "legacy");
    assert!(ttl <= 60, "{ttl}");
    assert_eq!(
        role(&bao, "legacy")["next_rotation"].as_u64().unwrap() % 60,
        0
    );
    assert_eq!(
        db.sql_as("legacy", &password, "SELECT COUNT(*) FROM app.items"),
        Ok("2".into())
    );
    assert!(db.sql_as("legacy", "legacy-Pass1", "SELECT 1").is_err());

    // Rotation statements run once per account host, with {{host}}.
    write_role(
        &bao,
        "batch",
        json!({"db_name": "db", "username": "batch", "manual_rotation": true,
               "rotation_statements": "ALTER USER '{{name}}'@'{{host}}' IDENTIFIED BY '{{password}}'"}),
    );
    let (_, batch, _) = static_creds(&bao, "batch");
    assert_eq!(db.sql_as("batch", &batch, "SELECT 1"), Ok("1".into()));
    assert!(db.sql_as("batch", "batch-Pass1", "SELECT 1").is_err());

    // An account that does not exist is refused, and nothing is kept.
    let (status, body) = bao.put(
        "mayfly/static-roles/ghost",
        json!({"db_name": "db", "username": "ghost", "manual_rotation": true}),
    );
    assert_eq!(status, 502, "{body}");
    assert!(
        body.to_string().contains("user 'ghost' does not exist"),
        "{body}"
    );
    let (_, list) = bao.list("mayfly/static-roles/");
    assert_eq!(list["data"]["keys"], json!(["batch", "legacy"]));

    // The cron schedule fires at the next whole minute.
    assert!(
        wait_until(75.0, || static_creds(&bao, "legacy").1 != password),
        "no rotation at the scheduled minute: {}",
        role(&bao, "legacy")
    );
    let at = role(&bao, "legacy")["last_rotation"].as_u64().unwrap();
    assert!(at % 60 < 10, "rotated {}s past the minute", at % 60);
    let (_, rotated, _) = static_creds(&bao, "legacy");
    assert_eq!(db.sql_as("legacy", &rotated, "SELECT 1"), Ok("1".into()));
    assert!(db.sql_as("legacy", &password, "SELECT 1").is_err());
    let log = bao.log();
    for p in [&password, &rotated, &batch] {
        assert!(!log.contains(p.as_str()), "a password in the log");
    }
}

#[test]
fn redis_dual_accounts_retire_the_previous_password_after_the_grace_period() {
    let redis = PrivateRedis::start();
    redis
        .cli(&[
            "ACL",
            "SETUSER",
            "mayfly",
            "on",
            ">root-Pass1",
            "~*",
            "&*",
            "+@all",
        ])
        .unwrap();
    for user in ["cache_a", "cache_b"] {
        redis
            .cli(&[
                "ACL",
                "SETUSER",
                user,
                "on",
                ">legacy-cache",
                "~*",
                "+@read",
                "+ping",
            ])
            .unwrap();
    }
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put(
        "mayfly/config/cache",
        json!({"plugin_name": "redis", "host": "127.0.0.1", "port": redis.port,
               "username": "mayfly", "password": "root-Pass1", "allowed_roles": "*"}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/static-roles/cache",
        json!({"db_name": "cache", "username": "cache_a", "manual_rotation": true,
               "rotation_statements": "ALTER"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("does not apply"), "{body}");

    write_role(
        &bao,
        "cache",
        json!({"db_name": "cache", "username": "cache_a", "dual_account_username": "cache_b",
               "rotation_period": "1h", "grace_period": "3s"}),
    );
    let login = |user: &str, password: &str| redis.cli_as(Some((user, password)), &["PING"]);
    let (user, a, _) = static_creds(&bao, "cache");
    assert_eq!(user, "cache_a");
    assert_eq!(login("cache_a", &a), Ok("PONG".into()));
    assert!(login("cache_a", "legacy-cache").is_err());
    // Taking over retires the second account's legacy password after the grace period.
    assert_eq!(login("cache_b", "legacy-cache"), Ok("PONG".into()));
    assert!(wait_until(15.0, || login("cache_b", "legacy-cache").is_err()));

    rotate(&bao, "cache");
    let (user, b, _) = static_creds(&bao, "cache");
    assert_eq!(user, "cache_b");
    assert_eq!(login("cache_b", &b), Ok("PONG".into()));
    assert_eq!(
        login("cache_a", &a),
        Ok("PONG".into()),
        "the previous password works during the grace period"
    );
    let retired = Instant::now();
    assert!(wait_until(15.0, || login("cache_a", &a).is_err()));
    assert!(retired.elapsed() >= Duration::from_secs(1));
    assert_eq!(role(&bao, "cache")["previous_username"], Value::Null);
    assert_eq!(login("cache_b", &b), Ok("PONG".into()));
    let log = bao.log();
    assert!(
        !log.contains(&a) && !log.contains(&b),
        "a password in the log"
    );
}
