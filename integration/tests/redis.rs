//! The `redis` kind end to end: a real OpenBao loads mayfly, which manages ACL users on two
//! private Redis servers at once.

use std::time::{Duration, Instant};

use mayfly_integration::bao::ROOT_TOKEN;
use mayfly_integration::creds::{inventory_entry, issue, ledger_record, mark_of};
use mayfly_integration::{Bao, PrivateRedis, load, wait_until};
use serde_json::{Value, json};

const ADMIN: &str = "mayfly_admin";
const ADMIN_PASSWORD: &str = "adm1n-Pa55word-for-redis";

/// Two nodes, each with an admin user, connection `kv` on both, and role `app` from `role`.
fn setup(role: Value) -> (Bao, PrivateRedis, PrivateRedis) {
    let (a, b) = (PrivateRedis::start(), PrivateRedis::start());
    for node in [&a, &b] {
        node.cli(&[
            "ACL",
            "SETUSER",
            ADMIN,
            "on",
            &format!(">{ADMIN_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
        .unwrap();
        node.cli(&["ACL", "SAVE"]).unwrap();
    }
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put(
        "mayfly/config/kv",
        json!({"plugin_name": "redis-database-plugin", "host": "127.0.0.1", "port": a.port,
               "nodes": [format!("127.0.0.1:{}", b.port)],
               "username": ADMIN, "password": ADMIN_PASSWORD, "allowed_roles": "*"}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put("mayfly/roles/app", role);
    assert!(status == 200 || status == 204, "{status} {body}");
    (bao, a, b)
}

fn connections_of(node: &PrivateRedis, user: &str) -> usize {
    node.cli(&["CLIENT", "LIST"])
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().any(|f| f == format!("user={user}")))
        .count()
}

#[test]
fn users_exist_on_both_nodes_obey_their_rules_and_leave_both() {
    let (bao, a, b) = setup(json!({"db_name": "kv", "default_ttl": 60}));
    let (_, role) = bao.get("mayfly/roles/app");
    assert_eq!(
        role["data"]["expiry_enforcement"], "scheduler_only",
        "{role}"
    );
    a.cli(&["SET", "app:1", "one"]).unwrap();

    let cred = issue(&bao, "mayfly/creds/app");
    let login = Some((cred.user.as_str(), cred.password.as_str()));
    for node in [&a, &b] {
        assert_eq!(node.users_like(&cred.user), vec![cred.user.clone()]);
        assert!(node.cli_as(login, &["PING"]).is_ok());
        let denied = node.cli_as(login, &["SET", "app:1", "x"]).unwrap_err();
        assert!(
            denied.contains("NOPERM"),
            "the default is read-only: {denied}"
        );
    }
    assert_eq!(a.cli_as(login, &["GET", "app:1"]), Ok("one".into()));
    assert!(
        a.cli_as(Some((&cred.user, "wrong")), &["PING"])
            .unwrap_err()
            .contains("WRONGPASS")
    );

    let (status, body) = bao.put(
        "sys/leases/renew",
        json!({"lease_id": cred.lease_id, "increment": 600}),
    );
    assert_eq!(status, 200, "{body}");

    // An open connection of the user (redis-cli waiting on its stdin) is closed on revoke.
    let mut held = std::process::Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &a.port.to_string(),
            "--user",
            &cred.user,
        ])
        .arg("--no-auth-warning")
        .env("REDISCLI_AUTH", &cred.password)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(10.0, || connections_of(&a, &cred.user) == 1));
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    for node in [&a, &b] {
        assert!(
            node.users_like(&cred.user).is_empty(),
            "the user outlived revoke"
        );
        assert_eq!(connections_of(node, &cred.user), 0, "a connection survived");
        assert!(node.cli_as(login, &["PING"]).is_err());
    }
    let _ = held.kill();
    let _ = held.wait();

    // A role with its own rules, in OpenBao's JSON form.
    let (status, body) = bao.put(
        "mayfly/roles/writer",
        json!({"db_name": "kv", "creation_statements": "[\"~app:*\", \"+@all\", \"-flushall\"]"}),
    );
    assert!(status == 200 || status == 204, "{body}");
    let writer = issue(&bao, "mayfly/creds/writer");
    let login = Some((writer.user.as_str(), writer.password.as_str()));
    assert!(b.cli_as(login, &["SET", "app:2", "two"]).is_ok());
    assert!(b.cli_as(login, &["SET", "other", "x"]).is_err());

    // A rule that would set the password or state is refused, without echoing it.
    let (status, body) = bao.put(
        "mayfly/roles/bad",
        json!({"db_name": "kv", "creation_statements": ["~* +@all >hunter2"]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");

    // Deleted by hand on both nodes: revocation succeeds at once.
    for node in [&a, &b] {
        node.cli(&["ACL", "DELUSER", &writer.user]).unwrap();
    }
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": writer.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    let record = ledger_record(&bao, &writer.user);
    assert_eq!(record["state"], "revoked");
    assert_eq!(record["revocation_attempts"], 1);

    // Orphans are found on any node and purged from all.
    let orphan = format!("{}orphan", mark_of(&bao, "mayfly", "kv"));
    b.cli(&["ACL", "SETUSER", &orphan, "on", ">x"]).unwrap();
    let (status, body) = bao.put("mayfly/orphans/kv", json!({"purge": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["orphans"], json!([orphan]), "{body}");
    assert!(b.users_like(&orphan).is_empty());

    let (_, leases) = bao.list("mayfly/leases/");
    let scanned = format!("{}{leases}", bao.log());
    for secret in [
        cred.password.as_str(),
        writer.password.as_str(),
        ADMIN_PASSWORD,
    ] {
        assert!(!scanned.contains(secret), "a password leaked");
    }
}

/// The `ACL SAVE` calls node `node` has served.
fn acl_saves(node: &PrivateRedis) -> u64 {
    let stats = node.cli(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_acl|save:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Users created together share one `ACL SAVE` per node: each save rewrites the node's whole
/// ACL file, and the node serves nothing else while it writes.
#[test]
fn creations_together_share_one_acl_save() {
    let (bao, a, b) = setup(json!({"db_name": "kv", "default_ttl": 600}));
    let before = [acl_saves(&a), acl_saves(&b)];
    load::issue_many(&bao, ROOT_TOKEN, "mayfly/creds/app", 12, 4);
    let mark = mark_of(&bao, "mayfly", "kv");
    let users = a.users_like(&format!("{mark}app-"));
    assert_eq!(users.len(), 12, "{users:?}");
    assert!(
        wait_until(5.0, || users
            .iter()
            .all(|u| a.acl_file().contains(u) && b.acl_file().contains(u))),
        "the new users never reached both ACL files"
    );
    // Long enough for any save still to come to have run.
    std::thread::sleep(Duration::from_secs(1));
    for (node, before) in [(&a, before[0]), (&b, before[1])] {
        let saves = acl_saves(node) - before;
        assert!((1..=2).contains(&saves), "{saves} saves for 12 creations");
    }
}

/// Found by the benchmark: 500 ms of issuance at 1,000/s shared one save, which paused the node
/// for 70 ms, and every issuance meanwhile waited (p99 90 ms against the built-in engine's 9).
/// A burst is saved in batches of 16, each a short pause.
#[test]
fn a_burst_of_creations_is_saved_in_short_batches() {
    let (bao, a, b) = setup(json!({"db_name": "kv", "default_ttl": 600}));
    let before = [acl_saves(&a), acl_saves(&b)];
    load::issue_many(&bao, ROOT_TOKEN, "mayfly/creds/app", 64, 4);
    // Long enough for the delayed save to have run.
    std::thread::sleep(Duration::from_secs(1));
    for (node, before) in [(&a, before[0]), (&b, before[1])] {
        let saves = acl_saves(node) - before;
        assert!(
            (3..=9).contains(&saves),
            "{saves} saves for 64 creations: {}",
            bao.log()
                .lines()
                .filter(|l| l.contains("ACL file saved"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let mark = mark_of(&bao, "mayfly", "kv");
    let users = a.users_like(&format!("{mark}app-"));
    assert_eq!(users.len(), 64);
    assert!(
        users
            .iter()
            .all(|u| a.acl_file().contains(u) && b.acl_file().contains(u))
    );
}

#[test]
fn a_node_down_at_expiry_is_cleaned_when_it_returns() {
    let (bao, a, b) = setup(json!({"db_name": "kv", "default_ttl": 3}));
    let start = Instant::now();
    let quick = issue(&bao, "mayfly/creds/app");
    assert!(wait_until(8.0, || {
        a.users_like(&quick.user).is_empty() && b.users_like(&quick.user).is_empty()
    }));
    assert!(start.elapsed().as_secs() >= 2, "removed early");

    // Node b crashes while the credential is live and is down when it expires; it comes
    // back with the user (its ACL file has it) and is cleaned by the scheduler's retries.
    let cred = issue(&bao, "mayfly/creds/app?ttl=4");
    // Saved soon after, not before the issuance returns.
    assert!(
        wait_until(5.0, || b.acl_file().contains(&cred.user)),
        "the new user never reached the node's ACL file"
    );
    b.halt();
    let failing = wait_until(30.0, || {
        let r = ledger_record(&bao, &cred.user);
        r["state"] == "revoking"
            && r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&b.port.to_string()))
    });
    assert!(failing, "{}", ledger_record(&bao, &cred.user));
    assert!(
        a.users_like(&cred.user).is_empty(),
        "the node that answered is cleaned at once"
    );
    b.resume();
    assert_eq!(
        b.users_like(&cred.user),
        vec![cred.user.clone()],
        "the node came back with the user from its ACL file"
    );
    let back = Instant::now();
    assert!(
        wait_until(25.0, || b.users_like(&cred.user).is_empty()),
        "the user outlived the outage on the node: {}",
        ledger_record(&bao, &cred.user)
    );
    println!("node cleaned {:?} after it came back", back.elapsed());
    assert!(wait_until(
        10.0,
        || ledger_record(&bao, &cred.user)["state"] == "revoked"
    ));
    // The deletion was saved: another restart does not bring the user back.
    b.halt();
    b.resume();
    assert!(
        b.users_like(&cred.user).is_empty(),
        "the revoked user came back"
    );
}

#[test]
fn rotate_root_changes_the_admin_password_on_every_node() {
    let (bao, a, b) = setup(json!({"db_name": "kv", "default_ttl": 60}));
    let (status, body) = bao.put("mayfly/rotate-root/kv", json!({}));
    assert_eq!(status, 204, "{body}");
    for node in [&a, &b] {
        let refused = node
            .cli_as(Some((ADMIN, ADMIN_PASSWORD)), &["PING"])
            .unwrap_err();
        assert!(refused.contains("WRONGPASS"), "{refused}");
    }
    // The new password was saved in the ACL file: a restarted node still takes it (and mayfly
    // replaces its pooled connections to that node).
    a.halt();
    a.resume();
    assert!(a.cli_as(Some((ADMIN, ADMIN_PASSWORD)), &["PING"]).is_err());
    let cred = issue(&bao, "mayfly/creds/app");
    for node in [&a, &b] {
        assert_eq!(node.users_like(&cred.user), vec![cred.user.clone()]);
    }
    let (status, body) = bao.put(
        "sys/leases/revoke",
        json!({"lease_id": cred.lease_id, "sync": true}),
    );
    assert_eq!(status, 204, "{body}");
    assert!(a.users_like(&cred.user).is_empty() && b.users_like(&cred.user).is_empty());
}

/// `inventory/NAME` on Redis: every ACL user of the nodes, classed, with its rules and never
/// its password hashes.
#[test]
fn an_inventory_lists_acl_users_with_their_rules_and_no_password() {
    let (bao, a, b) = setup(json!({"db_name": "kv", "default_ttl": 60}));
    a.cli(&[
        "ACL",
        "SETUSER",
        "cache_writer",
        "on",
        ">standing-pw",
        "~cache:*",
        "+@write",
    ])
    .unwrap();
    let cred = issue(&bao, "mayfly/creds/app");
    let (status, body) = bao.get("mayfly/inventory/kv");
    assert_eq!(status, 200, "{body}");
    let of = |name: &str| inventory_entry(&body, name);
    assert_eq!(of(ADMIN)["class"], "connection", "{body}");
    assert_eq!(of(ADMIN)["power"]["all_commands"], true, "{body}");
    assert_eq!(of(&cred.user)["class"], "dynamic", "{body}");
    assert_eq!(of(&cred.user)["power"]["nodes"], 2, "{body}");
    let standing = of("cache_writer");
    assert_eq!(standing["class"], "unmanaged", "{body}");
    assert_eq!(standing["power"]["all_keys"], false, "{body}");
    assert_eq!(standing["power"]["nodes"], 1, "on one node of two: {body}");
    assert!(
        standing["power"]["rules"]
            .as_str()
            .unwrap()
            .contains("~cache:*"),
        "{body}"
    );
    // `default` exists on every Redis, enabled without a password unless configured.
    assert_eq!(of("default")["class"], "unmanaged", "{body}");
    let text = body.to_string();
    for secret in [cred.password.as_str(), "standing-pw", ADMIN_PASSWORD] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(!text.contains('#'), "a password hash in {text}");
    drop(b);
}
