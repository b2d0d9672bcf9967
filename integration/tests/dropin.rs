//! mayfly as a drop-in for OpenBao's `database` engine, end to end against a real OpenBao and
//! real targets: the paths and fields that engine's users and client libraries (hvac's
//! `secrets.database`) rely on.

use std::collections::BTreeSet;

use mayfly_integration::creds::issue;
use mayfly_integration::{Bao, PrivatePostgres, PrivateRedis, wait_until};
use serde_json::{Value, json};

/// The backend pids of `user`'s sessions.
fn sessions_of(pg: &PrivatePostgres, user: &str) -> BTreeSet<String> {
    pg.admin(&format!(
        "SELECT pid FROM pg_stat_activity WHERE usename = '{user}'"
    ))
    .lines()
    .map(str::to_owned)
    .filter(|l| !l.is_empty())
    .collect()
}

/// A PostgreSQL connection `db` as `pool_admin`, a superuser of its own whose sessions the
/// test can tell from its own.
fn pool_admin_connection(pg: &PrivatePostgres, bao: &Bao) {
    pg.admin("CREATE ROLE pool_admin SUPERUSER LOGIN PASSWORD 'pool-admin-pw-1'");
    let mut body = pg.connection("postgresql-database-plugin");
    body["username"] = json!("pool_admin");
    body["password"] = json!("pool-admin-pw-1");
    let (status, out) = bao.put("mayfly/config/db", body);
    assert_eq!(status, 204, "{out}");
    let (status, out) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "default_ttl": "1h", "creation_statements":
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"}),
    );
    assert!(status == 200 || status == 204, "{out}");
}

#[test]
fn reset_closes_the_connections_sessions_reopens_them_and_verifies_the_target() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    pool_admin_connection(&pg, &bao);
    let before = issue(&bao, "mayfly/creds/app");
    assert!(
        pg.psql_as(&before.user, &before.password, "SELECT 1")
            .is_ok()
    );
    let old = sessions_of(&pg, "pool_admin");
    assert!(!old.is_empty(), "issuance opened the pool");

    // hvac's reset_connection: POST {mount}/reset/{name}.
    let (status, body) = bao.put("mayfly/reset/db", json!({}));
    assert_eq!(status, 204, "{body}");
    assert!(
        wait_until(5.0, || sessions_of(&pg, "pool_admin").is_disjoint(&old)),
        "the old pool's sessions are still open: {:?}",
        sessions_of(&pg, "pool_admin")
    );
    let after = issue(&bao, "mayfly/creds/app");
    assert!(pg.psql_as(&after.user, &after.password, "SELECT 1").is_ok());

    // The account's password changed by hand: the reset says the target refuses it.
    pg.admin("ALTER ROLE pool_admin PASSWORD 'changed-by-hand'");
    let (status, body) = bao.put("mayfly/reset/db", json!({}));
    assert!(status >= 400, "{status} {body}");
    let error = body.to_string();
    assert!(error.contains("pool_admin"), "{error}");
    assert!(!error.contains("changed-by-hand") && !error.contains("pool-admin-pw-1"));
    let (status, body) = bao.put("mayfly/reset/nowhere", json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("connection 'nowhere' does not exist"),
        "{body}"
    );
}

#[test]
fn static_creds_carry_vaults_last_vault_rotation() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    pool_admin_connection(&pg, &bao);
    pg.admin("CREATE ROLE legacy_app LOGIN PASSWORD 'legacy-start-pw'");
    let (status, body) = bao.put(
        "mayfly/static-roles/legacy",
        json!({"db_name": "db", "username": "legacy_app", "rotation_period": "1h"}),
    );
    assert!(status == 200 || status == 204, "{body}");
    let (status, creds) = bao.get("mayfly/static-creds/legacy");
    assert_eq!(status, 200, "{creds}");
    let d = &creds["data"];
    let at = d["last_rotation"].as_u64().expect("last_rotation");
    let text = d["last_vault_rotation"]
        .as_str()
        .expect("last_vault_rotation");
    assert_eq!(mayfly_integration::unix_of_rfc3339(text), at, "{text}");
    let (_, role) = bao.get("mayfly/static-roles/legacy");
    assert_eq!(role["data"]["last_vault_rotation"], Value::from(text));
}

/// OpenBao's documented PostgreSQL example, with every other field its engine takes on
/// `config/` and `roles/`: each is accepted, and those with a meaning for mayfly do what they
/// do in OpenBao.
#[test]
fn every_field_of_openbaos_engine_is_taken_and_honoured_on_postgresql() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    pg.admin("CREATE ROLE bao_root SUPERUSER LOGIN PASSWORD 'bao-root-start-pw'");
    let (status, body) = bao.put(
        "sys/policies/password/hexdigits",
        json!({"policy": "length = 24\nrule \"charset\" {\n  charset = \"abcdef0123456789\"\n  min-chars = 1\n}\n"}),
    );
    assert!(status == 200 || status == 204, "{body}");

    // docs/secrets/databases/postgresql.mdx (OpenBao 2.7), host and mount aside, plus the
    // rest of config/'s fields.
    let (status, body) = bao.put(
        "mayfly/config/my-postgresql-database",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "allowed_roles": "my-role",
            "connection_url": pg.template_url(),
            "username": "bao_root",
            "password": "bao-root-start-pw",
            "password_authentication": "scram-sha-256",
            "max_open_connections": 3,
            "max_idle_connections": 1,
            "max_connection_lifetime": "10m",
            "disable_escaping": false,
            "username_template": "{{ .Mark }}tpl-{{ .RoleName | truncate 7 }}-{{ random 12 | lowercase }}",
            "password_policy": "hexdigits",
            "root_rotation_statements": ["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'; COMMENT ON ROLE \"{{name}}\" IS 'rotated by statements'"],
            "plugin_version": "v2.7.2",
            "verify_connection": true,
        }),
    );
    assert_eq!(status, 200, "{body}");
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("plugin_version"), "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/my-role",
        json!({
            "db_name": "my-postgresql-database",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
            "revocation_statements": "DROP ROLE IF EXISTS \"{{name}}\";",
            "renew_statements": "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';",
            "rollback_statements": "DROP ROLE IF EXISTS \"{{name}}\";",
            "credential_type": "password",
            "default_ttl": "1h",
            "max_ttl": "24h",
        }),
    );
    assert!(status == 200 || status == 204, "{body}");

    // The connection's template and password policy make the role's names and passwords.
    let cred = issue(&bao, "mayfly/creds/my-role");
    assert!(cred.user.contains("tpl-my-role-"), "{}", cred.user);
    assert_eq!(cred.password.len(), 24, "{}", cred.password);
    assert!(
        cred.password
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "not from policy hexdigits: {}",
        cred.password
    );
    assert_eq!(
        pg.psql_as(&cred.user, &cred.password, "SELECT 1"),
        Ok("1".into())
    );
    assert!(
        sessions_of(&pg, "bao_root").len() <= 3,
        "max_open_connections"
    );

    // Fields it does not know, and values it cannot honour, name themselves.
    for (field, value, expect) in [
        (
            "credential_type",
            json!("rsa_private_key"),
            "expected 'password'",
        ),
        ("credential_config", json!({"format": "pkcs8"}), "'format'"),
        ("nonsense_field", json!("x"), "nonsense_field"),
    ] {
        let mut role = json!({"db_name": "my-postgresql-database",
            "creation_statements": "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}';"});
        role[field] = value;
        let (status, body) = bao.put("mayfly/roles/refused", role);
        assert_eq!(status, 400, "{field}: {body}");
        let text = body.to_string();
        assert!(text.contains(field) && text.contains(expect), "{text}");
    }

    // rotate-root runs root_rotation_statements, and the connection works on.
    let (status, body) = bao.put("mayfly/rotate-root/my-postgresql-database", json!({}));
    assert!(status == 200 || status == 204, "{body}");
    assert_eq!(
        pg.admin(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'bao_root'"
        ),
        "rotated by statements"
    );
    assert!(
        pg.psql_as("bao_root", "bao-root-start-pw", "SELECT 1")
            .is_err()
    );
    let after = issue(&bao, "mayfly/creds/my-role");
    assert!(pg.psql_as(&after.user, &after.password, "SELECT 1").is_ok());

    // A connection template that makes one name for every credential is refused.
    let (status, body) = bao.put(
        "mayfly/config/my-postgresql-database",
        json!({"username_template": "fixed-{{ .RoleName }}"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("username_template"), "{body}");
}

/// The redis kind over TLS, with the field names of OpenBao's redis plugin.
#[test]
fn redis_over_tls_issues_users_that_log_in_over_tls_and_refuses_a_wrong_ca() {
    let redis = PrivateRedis::start_tls(false);
    let bao = Bao::with_mayfly();
    let connection = |ca: &str| {
        json!({"plugin_name": "redis-database-plugin", "host": "127.0.0.1",
               "port": redis.port, "tls": true, "ca_cert": ca, "allowed_roles": "*"})
    };
    let (status, body) = bao.put("mayfly/config/cache", connection(redis.ca()));
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/reader",
        json!({"db_name": "cache", "creation_statements": "[\"~*\", \"+@read\", \"+ping\"]"}),
    );
    assert!(status == 200 || status == 204, "{body}");
    let cred = issue(&bao, "mayfly/creds/reader");
    assert_eq!(
        redis.cli_as(Some((&cred.user, &cred.password)), &["PING"]),
        Ok("PONG".into()),
        "the new user logs in over TLS"
    );
    let (status, body) = bao.put("sys/leases/revoke", json!({"lease_id": cred.lease_id}));
    assert_eq!(status, 204, "{body}");
    assert!(redis.users_like(&cred.user).is_empty());

    // A CA that did not sign the server's certificate: refused, saying so.
    let other = mayfly_integration::scratch_dir("other-ca");
    let wrong_ca = mayfly_integration::postgres::make_certificates(&other);
    let (status, body) = bao.put("mayfly/config/wrong", connection(&wrong_ca));
    assert_eq!(status, 400, "{body}");
    let error = body.to_string();
    assert!(
        error.contains("TLS handshake failed") && error.contains("certificate"),
        "{error}"
    );
    // TLS settings without tls=true would send everything in plain text: refused.
    let (status, body) = bao.put(
        "mayfly/config/plain",
        json!({"plugin_name": "redis", "host": "127.0.0.1", "port": redis.port,
               "ca_cert": redis.ca(), "verify_connection": false}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("needs tls=true"), "{body}");
    // The valkey plugin's connection_url: valkeys:// turns TLS on; kept as the fields.
    let (status, body) = bao.put(
        "mayfly/config/by-url",
        json!({"plugin_name": "valkey-database-plugin", "allowed_roles": "*",
               "connection_url": format!("valkeys://default@127.0.0.1:{}", redis.port),
               "ca_cert": redis.ca()}),
    );
    assert_eq!(status, 204, "{body}");
    let (_, read) = bao.get("mayfly/config/by-url");
    let details = &read["data"]["connection_details"];
    assert_eq!(details["tls"], true, "{read}");
    assert_eq!(details["host"], "127.0.0.1", "{read}");
    assert!(details.get("connection_url").is_none(), "{read}");
    let (status, body) = bao.put(
        "mayfly/config/both",
        json!({"plugin_name": "redis", "host": "127.0.0.1",
               "connection_url": format!("valkeys://127.0.0.1:{}", redis.port)}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("not both"), "{body}");
    // insecure_tls takes the server's certificate whatever its CA.
    let mut insecure = connection(&wrong_ca);
    insecure["insecure_tls"] = json!(true);
    let (status, body) = bao.put("mayfly/config/insecure", insecure);
    assert_eq!(status, 204, "{body}");
}

/// A Redis that asks clients for a certificate (`tls-auth-clients yes`): mayfly connects with
/// `tls_certificate` and `private_key`, and without them is refused with a clear error.
#[test]
fn redis_over_tls_with_client_certificates() {
    let redis = PrivateRedis::start_tls(true);
    let (cert, key) = redis.client_certificate();
    let bao = Bao::with_mayfly();
    let mut body = json!({"plugin_name": "redis", "host": "127.0.0.1", "port": redis.port,
                          "tls": true, "ca_cert": redis.ca(), "allowed_roles": "*"});
    let (status, out) = bao.put("mayfly/config/nocert", body.clone());
    assert_eq!(status, 400, "{out}");
    assert!(out.to_string().contains("cannot use Redis"), "{out}");
    body["tls_certificate"] = json!(cert);
    body["private_key"] = json!(key);
    let (status, out) = bao.put("mayfly/config/cache", body);
    assert_eq!(status, 204, "{out}");
    let (_, read) = bao.get("mayfly/config/cache");
    assert!(!read.to_string().contains("PRIVATE KEY"), "{read}");
    let (status, out) = bao.put("mayfly/roles/reader", json!({"db_name": "cache"}));
    assert!(status == 200 || status == 204, "{out}");
    let cred = issue(&bao, "mayfly/creds/reader");
    assert_eq!(
        redis.cli_as(Some((&cred.user, &cred.password)), &["PING"]),
        Ok("PONG".into())
    );
}

/// `rollback_statements` run when mayfly's own create succeeded and the issuance then stopped
/// (here the plugin killed right after the create), never for a credential that was issued.
#[test]
fn rollback_statements_remove_a_user_whose_issuance_stopped_after_its_create() {
    let pg = PrivatePostgres::start();
    pg.admin("CREATE TABLE undo_log (how text, name text); GRANT ALL ON undo_log TO PUBLIC");
    let mut bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    let (status, body) = bao.put(
        "mayfly/config/db",
        pg.connection("postgresql-database-plugin"),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        // A short TTL: an intent left behind is due at its deadline.
        json!({"db_name": "db", "default_ttl": "15s",
               "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
               "revocation_statements": "INSERT INTO undo_log VALUES ('revocation', '{{name}}'); DROP ROLE \"{{name}}\";",
               "rollback_statements": "INSERT INTO undo_log VALUES ('rollback', '{{name}}'); DROP ROLE \"{{name}}\";"}),
    );
    assert!(status == 200 || status == 204, "{body}");
    let log = |how: &str| {
        pg.admin(&format!(
            "SELECT count(*) FROM undo_log WHERE how = '{how}'"
        ))
        .parse::<u32>()
        .unwrap()
    };

    bao.restart(&[("MAYFLY_TEST_CRASH_AT", "after_create")]);
    let (status, body) = bao.get("mayfly/creds/app");
    assert_eq!(status, 500, "the crash did not happen: {body}");
    bao.restart(&[]);
    // OpenBao may retry the request once on a new process, which crashes at the same step.
    let made = pg.roles_like("mf-").len();
    assert!((1..=2).contains(&made), "{made}");
    let undone = wait_until(40.0, || pg.roles_like("mf-").is_empty());
    assert!(undone, "{:?}\n{}", pg.roles_like("mf-"), bao.log());
    assert_eq!(
        log("rollback") as usize,
        made,
        "each stopped issuance rolled back"
    );
    assert_eq!(log("revocation"), 0);

    // An issued credential is revoked with revocation_statements.
    let cred = issue(&bao, "mayfly/creds/app");
    let (status, body) = bao.put("sys/leases/revoke", json!({"lease_id": cred.lease_id}));
    assert_eq!(status, 204, "{body}");
    assert_eq!(log("revocation"), 1);
    assert_eq!(log("rollback") as usize, made);
}

/// Every helper of hvac's `secrets.database` (hvac 2.4.0, the Python client most Vault and
/// OpenBao users script with) works against mayfly: integration/hvac/database_helpers.py.
#[test]
fn every_hvac_database_helper_works() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    pg.admin("CREATE ROLE hvac_root SUPERUSER LOGIN PASSWORD 'hvac-root-start-pw'");
    pg.admin("CREATE ROLE hvac_static LOGIN PASSWORD 'hvac-static-start-pw'");
    let python = std::env::var("MAYFLY_HVAC_PYTHON")
        .expect("MAYFLY_HVAC_PYTHON (scripts/env.sh; scripts/setup installs hvac)");
    let script = mayfly_integration::workspace().join("integration/hvac/database_helpers.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .env("MAYFLY_ADDR", &bao.addr)
        .env("MAYFLY_TOKEN", bao.root_token())
        .env("PG_URL", pg.template_url())
        .env("PG_USER", "hvac_root")
        .env("PG_PASSWORD", "hvac-root-start-pw")
        .env("PG_STATIC_USER", "hvac_static")
        .env("PG_PSQL", pg.psql_binary())
        .env("PG_PORT", pg.port.to_string())
        .output()
        .expect("running the hvac script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        bao.log()
    );
    assert!(
        stdout.contains("all hvac secrets.database helpers work"),
        "{stdout}"
    );
    eprintln!("{stdout}");
}
