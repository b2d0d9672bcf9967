//! `metrics`: the mount's account of where its time goes, read through a real OpenBao after
//! real issuances, a renewal and a revocation against a private PostgreSQL.

use mayfly_integration::creds::issue;
use mayfly_integration::{Bao, PrivatePostgres};
use serde_json::{Value, json};

#[test]
fn metrics_account_each_phase_and_round_trip_and_show_no_secret_nor_name() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put(
        "mayfly/config/db",
        pg.connection("postgresql-database-plugin"),
    );
    assert_eq!(status, 204, "{body}");
    // A default_ttl past the intent's grace period: the activation indexes the deadline.
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "default_ttl": "10m", "max_ttl": "1h",
               "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"}),
    );
    assert!(status == 200 || status == 204, "{status} {body}");

    let creds: Vec<_> = (0..3).map(|_| issue(&bao, "mayfly/creds/app")).collect();
    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": creds[0].lease_id, "increment": 900}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": creds[1].lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");

    let (status, body) = bao.get("mayfly/metrics");
    assert_eq!(status, 200, "{body}");
    let m = &body["data"];
    let issue = &m["requests"]["issue"];
    assert_eq!(issue["count"], 3, "{m}");
    for phase in [
        "lookups",
        "policy",
        "name_check",
        "password",
        "intent",
        "create",
        "activation",
        "finish",
    ] {
        assert!(issue["phases_us"][phase].as_u64().is_some(), "{phase}: {m}");
    }
    let phases: u64 = issue["phases_us"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let engine = issue["engine_us"].as_u64().unwrap();
    assert!(
        phases <= engine,
        "phases {phases} µs > engine {engine} µs: {m}"
    );
    assert!(issue["codec_us"].as_u64().unwrap() > 0, "{m}");
    // The write-ahead intent and the activation: four writes per issuance at most, each a
    // round trip to the host.
    let count = |v: &Value, call: &str| v["storage"][call]["count"].as_u64().unwrap_or(0);
    let puts = count(issue, "put");
    assert!((3..=12).contains(&puts), "{puts} puts for 3 issuances: {m}");

    let renew = &m["requests"]["renew"];
    assert_eq!(renew["count"], 1, "{m}");
    for phase in ["lookups", "policy", "target", "ledger"] {
        assert!(renew["phases_us"][phase].as_u64().is_some(), "{phase}: {m}");
    }
    assert!(
        count(renew, "get") >= 1,
        "the renewal reads its record: {m}"
    );
    assert_eq!(m["requests"]["revoke"]["count"], 1, "{m}");
    // The revocation's writes are the sweep's batch's, outside the request.
    assert!(count(&m["background"], "put") >= 1, "{m}");

    let text = body.to_string();
    for c in &creds {
        assert!(!text.contains(&c.user), "a name in metrics: {text}");
        assert!(!text.contains(&c.password), "a password in metrics: {text}");
    }

    // sudo, like the operator's other tools: a token with the default policy is refused.
    let (status, body) = bao.put(
        "auth/token/create",
        json!({"policies": ["default"], "no_parent": true}),
    );
    assert_eq!(status, 200, "{body}");
    let stranger = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, _) = bao.request_as(&stranger, "GET", "mayfly/metrics", None);
    assert_eq!(status, 403);
}
