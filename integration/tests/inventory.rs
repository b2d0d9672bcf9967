//! `inventory/NAME`: every principal on a connection's target, classed by who manages it, read
//! through a real OpenBao against a private PostgreSQL and the machine's Redis.

use mayfly_integration::creds::{inventory_entry, issue};
use mayfly_integration::postgres::CREATE;
use mayfly_integration::{Bao, PrivatePostgres};
use serde_json::json;

#[test]
fn a_postgres_inventory_classes_every_login_role_by_who_manages_it() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    pg.connect(&bao, "db");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "default_ttl": "10m", "creation_statements": CREATE}),
    );
    assert!(status == 200 || status == 204, "{status} {body}");
    // A standing account with power, one a static role rotates, and a leftover of another
    // mount (its mark is not this mount's).
    pg.admin("CREATE ROLE reporting LOGIN CREATEROLE PASSWORD 'standing-pw'");
    pg.admin("CREATE TABLE ledger_copy (id int)");
    pg.admin("GRANT SELECT, INSERT ON ledger_copy TO reporting");
    pg.admin("CREATE ROLE auditors");
    pg.admin("GRANT auditors TO reporting");
    pg.admin("CREATE ROLE app_owner LOGIN PASSWORD 'owner-start-pw'");
    pg.admin("CREATE ROLE \"mf-0a0b0c-app-x\" LOGIN");
    let (status, body) = bao.put(
        "mayfly/static-roles/owner",
        json!({"db_name": "db", "username": "app_owner", "rotation_period": "1h"}),
    );
    assert!(status == 200 || status == 204, "{status} {body}");
    let cred = issue(&bao, "mayfly/creds/app");
    // This mount's mark with no record: an orphan.
    let mark = cred.user.split("app").next().unwrap().to_owned();
    let orphan = format!("{mark}app-left-over");
    pg.admin(&format!("CREATE ROLE \"{orphan}\" LOGIN"));

    let (status, body) = bao.get("mayfly/inventory/db");
    assert_eq!(status, 200, "{body}");
    let class = |name: &str| inventory_entry(&body, name)["class"].clone();
    assert_eq!(class("mayfly_admin"), "connection", "{body}");
    assert_eq!(class("app_owner"), "static", "{body}");
    assert_eq!(
        inventory_entry(&body, "app_owner")["static_roles"],
        json!(["owner"])
    );
    assert_eq!(class(&cred.user), "dynamic", "{body}");
    assert_eq!(class(&orphan), "orphan", "{body}");
    assert_eq!(class("mf-0a0b0c-app-x"), "other_mount", "{body}");
    assert_eq!(class("reporting"), "unmanaged", "{body}");
    // What the target says of each one's power.
    let reporting = &inventory_entry(&body, "reporting")["power"];
    assert_eq!(reporting["create_role"], true, "{body}");
    assert_eq!(reporting["superuser"], false, "{body}");
    assert_eq!(reporting["table_grants"], 2, "{body}");
    assert_eq!(
        inventory_entry(&body, "mayfly_admin")["power"]["superuser"],
        true
    );
    assert_eq!(reporting["member_of"], json!(["auditors"]), "{body}");
    // Only login roles are principals: a group is not one.
    let names: Vec<&str> = body["data"]["principals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"auditors"),
        "a group role listed: {names:?}"
    );
    let counts = &body["data"]["counts"];
    assert_eq!(counts["dynamic"], 1, "{body}");
    assert_eq!(counts["unmanaged"], 1, "{body}");

    // Nothing secret: no password, no hash of one.
    let text = body.to_string();
    for secret in [cred.password.as_str(), "standing-pw", "SCRAM-SHA-256"] {
        assert!(!text.contains(secret), "{secret} in the inventory: {text}");
    }
    // Once revoked, the credential's role is gone and no longer listed.
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    let (_, body) = bao.get("mayfly/inventory/db");
    assert!(!body.to_string().contains(&cred.user), "{body}");

    // sudo, like the operator's other tools; an unknown connection is named.
    let (status, body) = bao.put(
        "auth/token/create",
        json!({"policies": ["default"], "no_parent": true}),
    );
    assert_eq!(status, 200, "{body}");
    let stranger = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, _) = bao.request_as(&stranger, "GET", "mayfly/inventory/db", None);
    assert_eq!(status, 403);
    let (status, body) = bao.get("mayfly/inventory/nope");
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("no connection 'nope'"), "{body}");
}
