//! The `rabbitmq` and `http` kinds end to end: a real OpenBao loads mayfly, which mints users
//! through the machine's RabbitMQ management API (preset, and declared by hand) and child
//! tokens of a second OpenBao, revokes them by lease, by expiry and by orphan scan, and keeps
//! every secret out of logs, errors and the ledger.

use mayfly_integration::creds::{Cred, inventory_entry, is_marked, issue, ledger_record, mark_of};
use mayfly_integration::http_fixtures::{Answer, Proxy, Stub};
use mayfly_integration::rabbitmq::{self, Amqp, MANAGEMENT, management, user_exists};
use mayfly_integration::{Bao, wait_until};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "Rabb1t-admin-pw-for-mayfly";

/// The RabbitMQ tests share the machine's broker, where users are global: one at a time, so
/// that one test's orphan purge never takes another's live user.
static BROKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn broker() -> std::sync::MutexGuard<'static, ()> {
    BROKER.lock().unwrap_or_else(|e| e.into_inner())
}

/// A RabbitMQ administrator of this test's own (guest's password is its name, which no test
/// could look for in a log).
fn rabbit_admin(name: &str) -> String {
    let user = format!("mayfly-admin-{name}");
    let (status, body) = management(
        "PUT",
        &format!("/api/users/{user}"),
        Some(&json!({"password": ADMIN_PASSWORD, "tags": "administrator"})),
    );
    assert!(status == 201 || status == 204, "{status} {body}");
    user
}

fn write(bao: &Bao, path: &str, body: Value) {
    let (status, resp) = bao.put(path, body);
    assert!(status == 200 || status == 204, "{path}: {status} {resp}");
}

fn revoke(bao: &Bao, cred: &Cred) {
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
}

/// Asserts that none of `secrets` is in the server's log (which holds mayfly's too).
fn assert_not_logged(bao: &Bao, secrets: &[&str]) {
    let log = bao.log();
    for s in secrets {
        assert!(!log.contains(s), "a secret is in the log");
    }
}

#[test]
fn rabbitmq_users_log_in_and_revocation_ends_their_connections() {
    let _broker = broker();
    let admin = rabbit_admin("preset");
    let bao = Bao::with_mayfly();
    write(
        &bao,
        "mayfly/config/rmq",
        json!({"plugin_name": "rabbitmq", "connection_uri": MANAGEMENT, "username": admin,
               "password": ADMIN_PASSWORD, "allowed_roles": "*"}),
    );
    let (_, config) = bao.get("mayfly/config/rmq");
    assert!(!config.to_string().contains(ADMIN_PASSWORD), "{config}");
    // OpenBao's rabbitmq engine's role format: tags and vhosts as JSON text.
    write(
        &bao,
        "mayfly/roles/amqp",
        json!({"db_name": "rmq", "tags": "management",
               "vhosts": "{\"/\": {\"configure\": \".*\", \"write\": \".*\", \"read\": \".*\"}}",
               "default_ttl": 120}),
    );

    let cred = issue(&bao, "mayfly/creds/amqp");
    assert!(is_marked(&cred.user, "amqp-"), "{}", cred.user);
    assert!(user_exists(&cred.user));
    let (_, user) = management("GET", &format!("/api/users/{}", cred.user), None);
    assert_eq!(user["tags"], json!(["management"]), "{user}");
    let mut conn = Amqp::login(&cred.user, &cred.password).expect("the issued user logs in");
    assert!(Amqp::login(&cred.user, "wrong").is_err());
    let record = ledger_record(&bao, &cred.user);
    assert!(!record.to_string().contains(&cred.password), "{record}");

    // The inventory tells mayfly's admin, the credential and the broker's standing `guest`
    // apart, with their tags.
    let (status, inventory) = bao.get("mayfly/inventory/rmq");
    assert_eq!(status, 200, "{inventory}");
    let of = |name: &str| inventory_entry(&inventory, name);
    assert_eq!(of(&admin)["class"], "connection", "{inventory}");
    assert_eq!(of(&cred.user)["class"], "dynamic", "{inventory}");
    assert_eq!(of(&cred.user)["power"]["tags"], json!(["management"]));
    assert_eq!(of("guest")["class"], "unmanaged", "{inventory}");
    assert_eq!(of("guest")["power"]["administrator"], true, "{inventory}");
    assert!(!inventory.to_string().contains(&cred.password));
    assert!(!inventory.to_string().contains("password_hash"));

    revoke(&bao, &cred);
    assert!(!user_exists(&cred.user), "the user outlived revoke");
    assert!(
        conn.closed_within(15.0),
        "the open connection outlived revoke"
    );
    assert!(Amqp::login(&cred.user, &cred.password).is_err());

    // Expiry alone, with no revoke call from anyone.
    let short = issue(&bao, "mayfly/creds/amqp?ttl=3s");
    let mut conn = Amqp::login(&short.user, &short.password).expect("login");
    assert!(
        conn.closed_within(30.0),
        "the connection outlived the lease"
    );
    assert!(!user_exists(&short.user));
    assert!(wait_until(
        10.0,
        || ledger_record(&bao, &short.user)["state"] == "revoked"
    ));

    assert_not_logged(&bao, &[ADMIN_PASSWORD, &cred.password, &short.password]);
    management("DELETE", &format!("/api/users/{admin}"), None);
}

/// The http kind with RabbitMQ's API declared by hand, through a proxy that can go down.
fn hand_role() -> Value {
    json!({
        "db_name": "byhand",
        "default_ttl": 120,
        "create": {"method": "PUT", "path": "/api/users/{{ .Name }}",
                   "body": {"password": "{{ .Password }}", "tags": ""}},
        "post_create": [{"method": "PUT", "path": "/api/permissions/%2F/{{ .Name }}",
                         "body": {"configure": ".*", "write": ".*", "read": ".*"}}],
        "revoke": {"method": "DELETE", "path": "/api/users/{{ .KeyID }}"},
        "list": {"method": "GET", "path": "/api/users", "name_pointer": "/name"}
    })
}

#[test]
fn http_kind_drives_rabbitmq_by_hand_through_an_outage_and_an_orphan() {
    let _broker = broker();
    let admin = rabbit_admin("byhand");
    let mut proxy = Proxy::start("127.0.0.1:15672");
    let bao = Bao::with_mayfly();
    write(
        &bao,
        "mayfly/config/byhand",
        json!({"plugin_name": "http", "base_url": proxy.url(), "auth_type": "basic",
               "username": admin, "password": ADMIN_PASSWORD,
               "verify_path": "/api/whoami", "allowed_roles": "*"}),
    );
    // A wrong admin password is refused when the connection is written, without echoing it.
    let (status, body) = bao.put(
        "mayfly/config/wrong",
        json!({"plugin_name": "http", "base_url": proxy.url(), "auth_type": "basic",
               "username": admin, "password": "not-the-Password-1",
               "verify_path": "/api/whoami", "allowed_roles": "*"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("401"), "{body}");
    assert!(!body.to_string().contains("not-the-Password-1"), "{body}");
    write(&bao, "mayfly/roles/hand", hand_role());

    let cred = issue(&bao, "mayfly/creds/hand");
    let conn = Amqp::login(&cred.user, &cred.password).expect("login with the permissions");
    revoke(&bao, &cred);
    assert!(!user_exists(&cred.user));
    drop(conn);

    let short = issue(&bao, "mayfly/creds/hand?ttl=2s");
    assert!(wait_until(20.0, || !user_exists(&short.user)), "expiry");

    // Down when revocation is due: retried until the service returns, then revoked.
    let late = issue(&bao, "mayfly/creds/hand?ttl=2s");
    proxy.down();
    assert!(wait_until(20.0, || {
        let r = ledger_record(&bao, &late.user);
        // The attempt is on record as it begins; its error once it has failed.
        r["state"] == "revoking" && !r["last_error"].is_null()
    }));
    let r = ledger_record(&bao, &late.user);
    assert!(
        r["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot connect"),
        "{r}"
    );
    assert!(user_exists(&late.user), "nothing could have removed it yet");
    proxy.up();
    assert!(
        wait_until(45.0, || !user_exists(&late.user)),
        "not revoked once the service returned"
    );
    assert!(wait_until(
        10.0,
        || ledger_record(&bao, &late.user)["state"] == "revoked"
    ));

    // An orphan: a marked user no record knows (a crash between create and record).
    let orphan = format!("{}hand-orphan0001", mark_of(&bao, "mayfly", "byhand"));
    rabbitmq::create_user(&orphan, "orphan-pw");
    let (status, body) = bao.get("mayfly/orphans/byhand");
    assert_eq!(status, 200, "{body}");
    // Users other runs left on the shared broker carry their own mounts' marks: not ours.
    let orphans = body["data"]["orphans"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(orphans, vec![json!(orphan)], "{body}");
    // The role's list call inventories the service: the orphan as this mount's, `guest` as a
    // standing account.
    let (status, inventory) = bao.get("mayfly/inventory/byhand");
    assert_eq!(status, 200, "{inventory}");
    let class = |name: &str| inventory_entry(&inventory, name)["class"].clone();
    assert_eq!(class(&orphan), "orphan", "{inventory}");
    assert_eq!(class("guest"), "unmanaged", "{inventory}");
    let ours = [&cred.user, &short.user, &late.user];
    assert!(
        !orphans.iter().any(|o| ours.iter().any(|u| o == *u)),
        "a user of this connection's own ledger was taken for an orphan: {body}"
    );
    let (status, body) = bao.put("mayfly/orphans/byhand", json!({"purge": true}));
    assert_eq!(status, 200, "{body}");
    assert!(!user_exists(&orphan), "{body}");

    assert_not_logged(&bao, &[ADMIN_PASSWORD, &cred.password, &late.password]);
    management("DELETE", &format!("/api/users/{admin}"), None);
}

/// A second OpenBao's token API as an API-key service: child tokens as keys, addressed by
/// accessor, named in their metadata.
fn token_role() -> Value {
    json!({
        "db_name": "tokens",
        "default_ttl": 120,
        "create": {"method": "POST", "path": "/v1/auth/token/create",
                   "body": {"display_name": "{{.Name}}", "ttl": "{{.TTLSeconds}}",
                            "policies": ["default"], "no_parent": true,
                            "meta": {"mayfly_name": "{{.Name}}", "task": "{{.TaskID}}"}},
                   "secret_pointer": "/auth/client_token",
                   "key_id_pointer": "/auth/accessor",
                   "expiry_pointer": "/auth/lease_duration", "expiry_format": "seconds"},
        "revoke": {"method": "POST", "path": "/v1/auth/token/revoke-accessor",
                   "body": {"accessor": "{{.KeyID}}"}},
        "renew": {"method": "POST", "path": "/v1/auth/token/renew-accessor",
                  "body": {"accessor": "{{.KeyID}}", "increment": "{{.TTLSeconds}}"}},
        "list": {"method": "LIST", "path": "/v1/auth/token/accessors",
                 "items_pointer": "/data/keys",
                 "lookup": {"method": "POST", "path": "/v1/auth/token/lookup-accessor",
                            "body": {"accessor": "{{.KeyID}}"}},
                 "lookup_name_pointer": "/data/meta/mayfly_name"}
    })
}

/// Whether `token` works on `service`.
fn token_works(service: &Bao, token: &str) -> bool {
    service
        .request_as(token, "GET", "auth/token/lookup-self", None)
        .0
        == 200
}

#[test]
fn http_kind_mints_and_revokes_tokens_of_a_second_openbao() {
    let service = Bao::start();
    let bao = Bao::with_mayfly();
    // An admin token of the service's own: both servers' root tokens share the harness's id,
    // which the dev server prints in its log.
    let admin = "svc-Admin-token-for-mayfly";
    let (status, body) = service.put(
        "auth/token/create",
        json!({"id": admin, "policies": ["root"], "ttl": "1h"}),
    );
    assert_eq!(status, 200, "{body}");
    write(
        &bao,
        "mayfly/config/tokens",
        json!({"plugin_name": "http", "base_url": service.addr, "auth_type": "header",
               "auth_header": "X-Vault-Token", "token": admin,
               "verify_path": "/v1/auth/token/lookup-self", "allowed_roles": "*"}),
    );
    write(&bao, "mayfly/roles/tok", token_role());

    let (status, body) = bao.get("mayfly/creds/tok");
    assert_eq!(status, 200, "{body}");
    let key = body["data"]["api_key"].as_str().unwrap().to_owned();
    let accessor = body["data"]["key_id"].as_str().unwrap().to_owned();
    let name = body["data"]["username"].as_str().unwrap().to_owned();
    assert!(body["data"].get("password").is_none(), "{body}");
    let lease = body["lease_id"].as_str().unwrap().to_owned();
    assert!(token_works(&service, &key));
    let record = ledger_record(&bao, &name);
    assert_eq!(record["target_id"], json!(accessor), "{record}");
    assert!(!record.to_string().contains(&key), "{record}");

    // Renewal moves the token's own TTL.
    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": lease, "increment": 600}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, looked) = service.put("auth/token/lookup-accessor", json!({"accessor": accessor}));
    assert!(looked["data"]["ttl"].as_u64().unwrap() > 500, "{looked}");

    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": lease, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(!token_works(&service, &key), "the token outlived revoke");

    // Expiry: the token ends at OpenBao on its own, and mayfly's record with it.
    let (_, short) = bao.get("mayfly/creds/tok?ttl=3s");
    let short_key = short["data"]["api_key"].as_str().unwrap().to_owned();
    let short_name = short["data"]["username"].as_str().unwrap().to_owned();
    assert!(wait_until(20.0, || !token_works(&service, &short_key)));
    assert!(wait_until(
        20.0,
        || ledger_record(&bao, &short_name)["state"] == "revoked"
    ));

    // An orphan: a token carrying the mark that no record knows, found through the lookups.
    let orphan_name = format!("{}tok-orphan0001", mark_of(&bao, "mayfly", "tokens"));
    let (status, made) = service.put(
        "auth/token/create",
        json!({"policies": ["default"], "no_parent": true, "ttl": "1h",
               "meta": {"mayfly_name": orphan_name}}),
    );
    assert_eq!(status, 200, "{made}");
    let orphan = made["auth"]["client_token"].as_str().unwrap().to_owned();
    let (_, found) = bao.get("mayfly/orphans/tokens");
    assert_eq!(found["data"]["orphans"], json!([orphan_name]), "{found}");
    let (status, purged) = bao.put("mayfly/orphans/tokens", json!({"purge": true}));
    assert_eq!(status, 200, "{purged}");
    assert!(!token_works(&service, &orphan), "{purged}");

    assert_not_logged(&bao, &[admin, &key, &short_key]);
}

/// The stub's answers: the path's first segment says how to misbehave.
fn misbehave(method: &str, path: &str, body: &str) -> Answer {
    match (method, path.split('/').nth(1).unwrap_or("")) {
        ("POST", "html") => (
            200,
            "text/html",
            "<html><body>Login page</body></html>".into(),
        ),
        ("POST", "nokey") => (200, "application/json", r#"{"id": "k-1"}"#.into()),
        // An error that echoes the request, password and all.
        ("POST", "fail") => (
            500,
            "application/json",
            json!({"error": format!("rejected {body}")}).to_string(),
        ),
        ("DELETE", _) => (204, "application/json", String::new()),
        ("GET", _) => (200, "application/json", "[]".into()),
        _ => (404, "text/plain", "no".into()),
    }
}

#[test]
fn malformed_answers_are_clear_errors_and_leave_nothing_active() {
    let stub = Stub::start(misbehave);
    let bao = Bao::with_mayfly();
    write(
        &bao,
        "mayfly/config/stub",
        json!({"plugin_name": "http", "base_url": stub.url(), "auth_type": "bearer",
               "token": "stub-Admin-token-123", "allowed_roles": "*"}),
    );
    let role = |create: Value| {
        json!({"db_name": "stub", "create": create,
               "revoke": {"method": "DELETE", "path": "/keys/{{.KeyID}}"},
               "list": {"method": "GET", "path": "/keys", "name_pointer": "/name"}})
    };
    write(
        &bao,
        "mayfly/roles/html",
        role(json!({"method": "POST", "path": "/html/{{.Name}}",
        "secret_pointer": "/secret"})),
    );
    write(
        &bao,
        "mayfly/roles/nokey",
        role(json!({"method": "POST", "path": "/nokey/{{.Name}}",
        "secret_pointer": "/secret"})),
    );
    write(
        &bao,
        "mayfly/roles/fail",
        role(json!({"method": "POST", "path": "/fail/{{.Name}}",
        "body": {"name": "{{.Name}}", "password": "{{.Password}}"}})),
    );

    for (role, says, undone) in [
        ("html", "not with JSON (content type 'text/html')", true),
        ("nokey", "there is no secret (a string) at '/secret'", true),
        ("fail", "answered 500", false),
    ] {
        let (status, body) = bao.get(&format!("mayfly/creds/{role}"));
        assert_eq!(status, 502, "{role}: {body}");
        let text = body.to_string();
        assert!(text.contains(says), "{role}: {text}");
        assert!(!text.contains("stub-Admin-token-123"), "{text}");
        if role == "fail" {
            assert!(
                text.contains("<redacted>"),
                "the echoed password is removed: {text}"
            );
        }
        let name_of = |line: &String| line.rsplit('/').next().unwrap_or_default().to_owned();
        let created = stub
            .seen()
            .iter()
            .rev()
            .find(|l| l.starts_with("POST "))
            .map(name_of)
            .unwrap();
        if undone {
            assert!(
                wait_until(5.0, || stub
                    .seen()
                    .contains(&format!("DELETE /keys/{created}"))),
                "{role}: what the service made was not taken back: {:?}",
                stub.seen()
            );
        }
        assert!(
            wait_until(20.0, || {
                let r = ledger_record(&bao, &created);
                r["state"] == "revoked"
            }),
            "{role}: {}",
            ledger_record(&bao, &created)
        );
    }
    assert_not_logged(&bao, &["stub-Admin-token-123"]);
}
