//! Continuous authorization end to end: a real OpenBao loads mayfly; users log in with
//! userpass (identity entities, one in an identity group) and draw PostgreSQL logins from a
//! private cluster that checks passwords; policies on the action `hold` then end live
//! credentials by role, by group membership and by a time window, and leave the rest alone.

use std::time::{Duration, Instant};

use mayfly_integration::creds::{Cred, ledger_record, now};
use mayfly_integration::postgres::CREATE;
use mayfly_integration::{Bao, PrivatePostgres, wait_until};
use serde_json::{Value, json};

/// The sweep's interval in this test.
const INTERVAL_SECS: u64 = 2;

fn ok(status: u16, body: &Value) {
    assert!(status == 200 || status == 204, "{status} {body}");
}

fn issue(bao: &Bao, token: &str, role: &str) -> Cred {
    let (status, body) = bao.request_as(token, "GET", &format!("mayfly/creds/{role}"), None);
    assert_eq!(status, 200, "{body}");
    Cred::from_response(body)
}

fn logs_in(pg: &PrivatePostgres, c: &Cred) -> bool {
    pg.psql_as(&c.user, &c.password, "SELECT 1").is_ok()
}

/// Writes policy `name` and returns how many live credentials the write says it ends.
fn policy(bao: &Bao, name: &str, text: &str) -> u64 {
    let (status, body) = bao.put(
        &format!("mayfly/policies/{name}"),
        json!({ "policy": text }),
    );
    assert_eq!(status, 200, "{body}");
    body["data"]["hold_would_end"].as_u64().unwrap()
}

/// Seconds until `c` no longer logs in, waiting at most `secs`.
fn ended_within(pg: &PrivatePostgres, c: &Cred, secs: u64) -> Option<f64> {
    let t = Instant::now();
    wait_until(secs as f64, || !logs_in(pg, c)).then(|| t.elapsed().as_secs_f64())
}

#[test]
fn hold_policies_end_live_credentials_by_role_group_and_time_window() {
    let pg = PrivatePostgres::start();
    let bao = Bao::start_with(&["-log-format=json"]);
    bao.register();
    bao.enable("mayfly");
    pg.connect(&bao, "db");
    let (alice, alice_entity) = bao.agent_login("alice");
    let (bob, _) = bao.agent_login("bob");
    let (status, body) = bao.put(
        "identity/group",
        json!({"name": "oncall", "member_entity_ids": [alice_entity]}),
    );
    ok(status, &body);
    for role in ["app", "report", "ops"] {
        let (status, body) = bao.put(
            &format!("mayfly/roles/{role}"),
            json!({"db_name": "db", "creation_statements": CREATE, "default_ttl": "1h"}),
        );
        ok(status, &body);
    }
    let (status, body) = bao.put(
        "mayfly/config/hold",
        json!({"hold_interval": format!("{INTERVAL_SECS}s")}),
    );
    ok(status, &body);

    let app_alice = issue(&bao, &alice, "app");
    let app_bob = issue(&bao, &bob, "app");
    let report_bob = issue(&bao, &bob, "report");
    let ops_alice = issue(&bao, &alice, "ops");
    let all = [&app_alice, &app_bob, &report_bob, &ops_alice];
    assert!(all.iter().all(|c| logs_in(&pg, c)));

    // A forbid on hold for one role: its credentials end, the others stay.
    let ends = policy(
        &bao,
        "app-off",
        "forbid(principal, action == Mayfly::Action::\"hold\", resource == Mayfly::Role::\"app\");",
    );
    assert_eq!(ends, 2, "the write says what it ends");
    for c in [&app_alice, &app_bob] {
        let took = ended_within(&pg, c, INTERVAL_SECS + 3).expect("ended within the interval");
        eprintln!("hold: {} ended {took:.1}s after the policy write", c.user);
    }
    assert!(logs_in(&pg, &report_bob) && logs_in(&pg, &ops_alice));
    let record = ledger_record(&bao, &app_alice.user);
    assert_eq!(record["state"], "revoked", "{record}");
    assert_eq!(
        record["revoke_reason"], "ended by hold policy: forbidden by app-off",
        "{record}"
    );
    // The host's lease goes with it: renewing is refused.
    let (status, body) = bao.put("sys/leases/renew", json!({"lease_id": app_bob.lease_id}));
    assert!(status >= 400, "{status} {body}");

    // Held only by members of oncall: removing alice from the group ends her credential,
    // though nothing was written to mayfly (OpenBao does not tell plugins of it).
    let ends = policy(
        &bao,
        "ops-oncall",
        "permit(principal in Mayfly::Group::\"oncall\", action == Mayfly::Action::\"hold\", \
         resource == Mayfly::Role::\"ops\");",
    );
    assert_eq!(ends, 0);
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS + 1));
    assert!(logs_in(&pg, &ops_alice), "still in the group");
    let (status, body) = bao.put(
        "identity/group/name/oncall",
        json!({"member_entity_ids": []}),
    );
    ok(status, &body);
    let took = ended_within(&pg, &ops_alice, 2 * INTERVAL_SECS + 3)
        .expect("ended within the interval after leaving the group");
    eprintln!("hold: ended {took:.1}s after the group change");
    let record = ledger_record(&bao, &ops_alice.user);
    assert_eq!(
        record["revoke_reason"],
        "ended by hold policy: no permit policy was satisfied (in scope: ops-oncall)",
        "{record}"
    );

    // A time window: report may be held until `close`, then its credentials end.
    let close = now() + 6;
    let ends = policy(
        &bao,
        "report-window",
        &format!(
            "permit(principal, action == Mayfly::Action::\"hold\", \
             resource == Mayfly::Role::\"report\") when {{ context.unix_time < {close} }};"
        ),
    );
    assert_eq!(ends, 0);
    let (status, sim) = bao.put(
        "mayfly/policies/simulate",
        json!({"action": "hold", "cred_id": ledger_record(&bao, &report_bob.user)["id"],
               "time": close + 1}),
    );
    assert_eq!(status, 200, "{sim}");
    assert_eq!(sim["data"]["decision"], "deny", "{sim}");
    assert!(logs_in(&pg, &report_bob), "the window is open");
    assert!(
        wait_until(
            (close + INTERVAL_SECS + 3).saturating_sub(now()) as f64,
            || { !logs_in(&pg, &report_bob) }
        ),
        "ended once the window closed"
    );
    eprintln!(
        "hold: the window's credential ended {}s after it closed",
        now().saturating_sub(close)
    );

    // Each end is an audit event naming the policy; the sweep reports its last pass.
    let events = bao.audit_events();
    let ended: Vec<&Value> = events
        .iter()
        .filter(|e| e["audit_action"] == "hold" && e["outcome"] == "ended")
        .collect();
    assert_eq!(ended.len(), 4, "{ended:?}");
    assert!(
        ended
            .iter()
            .any(|e| e["policy"] == "forbidden by app-off"
                && e["principal"] == app_bob.user.as_str()),
        "{ended:?}"
    );
    let (status, body) = bao.get("mayfly/config/hold");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["hold_interval"], INTERVAL_SECS, "{body}");
    assert!(body["data"]["last_pass"]["at"].as_u64().is_some(), "{body}");
    // Nothing secret in the audit trail or the log.
    for c in all {
        assert!(!bao.log().contains(&c.password));
    }
}
