//! mayfly as a drop-in for OpenBao's `database` engine, end to end against a real OpenBao and
//! real targets: the paths and fields that engine's users and client libraries (hvac's
//! `secrets.database`) rely on.

use std::collections::BTreeSet;

use mayfly_integration::creds::issue;
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
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
    assert_eq!(unix_of_rfc3339(text), at, "{text}");
    let (_, role) = bao.get("mayfly/static-roles/legacy");
    assert_eq!(role["data"]["last_vault_rotation"], Value::from(text));
}

/// `YYYY-MM-DDTHH:MM:SSZ` as unix seconds.
fn unix_of_rfc3339(text: &str) -> u64 {
    assert!(text.ends_with('Z') && text.len() == 20, "{text}");
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}
