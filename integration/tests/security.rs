//! What a hostile or careless caller must not achieve, end to end against a real OpenBao and
//! real targets: take over or drop an account by naming it, make one mount purge another's
//! principals, or send a connection's stored password to a server of their own.

use std::net::TcpListener;
use std::time::Duration;

use mayfly_integration::creds::{issue, mark_of};
use mayfly_integration::postgres::{SUPERUSER, SUPERUSER_PASSWORD};
use mayfly_integration::{Bao, PrivateMariaDb, PrivatePostgres, PrivateRedis};
use serde_json::{Value, json};

/// A template with randomness whose every name is one of 36 accounts that exist already.
const COLLIDING: &str = "victim{{ random 1 | lowercase }}";
const VICTIM_PASSWORD: &str = "the-victims-own-password";
/// OpenBao's documented PostgreSQL creation statement.
const PG_CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

fn victims() -> Vec<String> {
    ('a'..='z')
        .chain('0'..='9')
        .map(|c| format!("victim{c}"))
        .collect()
}

/// Issues from role `app` of a role with [`COLLIDING`], expects a 409 that names the taken
/// name, and gives the scheduler time to do what it would with a failed issuance.
fn issue_into_the_victims(bao: &Bao) {
    let (status, body) = bao.get("mayfly/creds/app");
    assert_eq!(status, 409, "{body}");
    let error = body["errors"][0].as_str().unwrap_or_default();
    assert!(
        error.contains("already has a principal named 'victim"),
        "{body}"
    );
    // A failed issuance's undo, or the revocation of its record, would come within this.
    std::thread::sleep(Duration::from_secs(3));
    let (_, leases) = bao.list("mayfly/leases/");
    assert!(leases["data"]["keys"].is_null(), "{leases}");
}

#[test]
fn a_template_that_names_existing_postgresql_roles_takes_over_and_drops_none() {
    let pg = PrivatePostgres::start();
    for v in victims() {
        pg.admin(&format!(
            "CREATE ROLE \"{v}\" LOGIN PASSWORD '{VICTIM_PASSWORD}'"
        ));
    }
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put("mayfly/config/db", pg.connection("postgres"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "username_template": COLLIDING,
               "creation_statements": PG_CREATE}),
    );
    assert!(status == 200 || status == 204, "{body}");
    issue_into_the_victims(&bao);
    for v in victims() {
        pg.psql_as(&v, VICTIM_PASSWORD, "SELECT 1")
            .unwrap_or_else(|e| panic!("{v} no longer logs in with its own password: {e}"));
    }
}

#[test]
fn a_template_that_names_existing_mysql_users_takes_over_and_drops_none() {
    let db = PrivateMariaDb::start();
    for v in victims() {
        db.root(&format!(
            "CREATE USER '{v}'@'%' IDENTIFIED BY '{VICTIM_PASSWORD}'"
        ));
    }
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put("mayfly/config/db", db.connection("mysql"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "username_template": COLLIDING,
               "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';"}),
    );
    assert!(status == 200 || status == 204, "{body}");
    issue_into_the_victims(&bao);
    for v in victims() {
        db.sql_as(&v, VICTIM_PASSWORD, "SELECT 1")
            .unwrap_or_else(|e| panic!("{v} no longer logs in with its own password: {e}"));
    }
}

#[test]
fn a_template_that_names_existing_redis_users_takes_over_and_drops_none() {
    let redis = PrivateRedis::start();
    const ADMIN: (&str, &str) = ("mayfly_admin", "adm1n-Pa55word-for-redis");
    redis
        .cli(&[
            "ACL",
            "SETUSER",
            ADMIN.0,
            "on",
            &format!(">{}", ADMIN.1),
            "~*",
            "&*",
            "+@all",
        ])
        .unwrap();
    for v in victims() {
        let pass = format!(">{VICTIM_PASSWORD}");
        redis
            .cli(&["ACL", "SETUSER", &v, "on", &pass, "~victim:*", "+get"])
            .unwrap();
    }
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put(
        "mayfly/config/kv",
        json!({"plugin_name": "redis", "host": "127.0.0.1", "port": redis.port,
               "username": ADMIN.0, "password": ADMIN.1, "allowed_roles": "*"}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "kv", "username_template": COLLIDING,
               "creation_statements": "~* +@all"}),
    );
    assert!(status == 200 || status == 204, "{body}");
    issue_into_the_victims(&bao);
    for v in victims() {
        let login = Some((v.as_str(), VICTIM_PASSWORD));
        redis
            .cli_as(login, &["GET", "victim:x"])
            .unwrap_or_else(|e| panic!("{v} no longer logs in with its own password: {e}"));
        // Its own rules, not the role's.
        assert!(
            redis.cli_as(login, &["SET", "victim:x", "1"]).is_err(),
            "{v} was given the role's rules"
        );
    }
}

/// Found with two mounts on one PostgreSQL: the second one's orphan purge dropped the first
/// one's live credential. The same holds for two clusters sharing a database server.
#[test]
fn two_mounts_on_one_postgresql_never_purge_each_others_principals() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    bao.enable("mayfly2");
    for mount in ["mayfly", "mayfly2"] {
        let (status, body) = bao.put(&format!("{mount}/config/db"), pg.connection("postgres"));
        assert_eq!(status, 204, "{body}");
        let (status, body) = bao.put(
            &format!("{mount}/roles/app"),
            json!({"db_name": "db", "creation_statements": PG_CREATE}),
        );
        assert!(status == 200 || status == 204, "{body}");
    }
    let (first, second) = (
        mark_of(&bao, "mayfly", "db"),
        mark_of(&bao, "mayfly2", "db"),
    );
    assert_ne!(first, second, "two mounts share a mark");
    let live = issue(&bao, "mayfly/creds/app");
    assert!(live.user.starts_with(&first), "{}", live.user);
    // Left by a crash of the second mount, and by a mayfly from before marks were per mount.
    let own_orphan = format!("{second}hand");
    pg.admin(&format!("CREATE ROLE \"{own_orphan}\" LOGIN"));
    pg.admin("CREATE ROLE \"mf-app-token-legacy0001\" LOGIN");

    let (status, scan) = bao.put("mayfly2/orphans/db", json!({"purge": true}));
    assert_eq!(status, 200, "{scan}");
    assert_eq!(scan["data"]["orphans"], json!([own_orphan]), "{scan}");
    assert!(pg.roles_like(&own_orphan).is_empty());
    pg.psql_as(&live.user, &live.password, "SELECT 1")
        .expect("the first mount's credential was dropped by the second mount's purge");
    assert_eq!(pg.roles_like("mf-app-token-legacy0001").len(), 1);
    // Nor does the first mount take the legacy principal for its own.
    let (_, scan) = bao.get("mayfly/orphans/db");
    assert_eq!(scan["data"]["count"], 0, "{scan}");
}

/// Found by a caller allowed to write connections but not to read them: pointing one at a
/// server of theirs made mayfly log in there with the stored password.
#[test]
fn a_connection_pointed_elsewhere_without_its_password_sends_it_nowhere() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put("mayfly/config/db", pg.connection("postgres"));
    assert_eq!(status, 204, "{body}");
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    let elsewhere =
        format!("postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/postgres");

    let refused = |body: Value, why: &str| {
        let (status, reply) = bao.put("mayfly/config/db", body);
        assert_eq!(status, 400, "{reply}");
        let error = reply["errors"][0].as_str().unwrap_or_default().to_owned();
        assert!(
            error.starts_with("field 'password' is required") && error.contains(why),
            "{reply}"
        );
    };
    refused(
        json!({"connection_url": elsewhere}),
        "changes where it connects ('connection_url')",
    );
    refused(
        json!({"connection_url": format!("{}?sslmode=disable", pg.template_url())}),
        "weakens how it checks the server",
    );
    // Neither write reached the trap, and the connection still points where it did.
    assert!(trap.accept().is_err(), "mayfly connected to the new server");
    let (_, read) = bao.get("mayfly/config/db");
    assert_eq!(
        read["data"]["connection_details"]["connection_url"],
        json!(pg.template_url()),
        "{read}"
    );

    // What does not move the connection needs no secret; a writer who knows it may move it.
    let (status, body) = bao.put("mayfly/config/db", json!({"max_open_connections": 2}));
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/config/db",
        json!({"connection_url": elsewhere, "username": SUPERUSER,
               "password": SUPERUSER_PASSWORD, "verify_connection": false}),
    );
    assert_eq!(status, 204, "{body}");
}
