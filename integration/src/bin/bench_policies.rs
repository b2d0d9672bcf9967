//! Benchmarks issuance with 100 Cedar policies in scope against issuance with none, in the same
//! OpenBao, the same PostgreSQL and the same run: rounds alternate between the two (and which
//! goes first), and the medians are compared. Run it with `scripts/bench policies`.
//!
//! Each run follows a warm-up of one request per client, so the figures are the steady state
//! (the policies are compiled once after a write; the benchmark writes them before each run).
//! The requester is a userpass login with an identity entity in a group, so the decision
//! includes the identity lookup; every policy is in scope of the benchmarked role, so Cedar
//! evaluates all 100 on each issuance, and exactly one permit is satisfied.

use mayfly_integration::bao::ROOT_TOKEN;
use mayfly_integration::load::{self, Run};
use mayfly_integration::postgres::{SUPERUSER, SUPERUSER_PASSWORD};
use mayfly_integration::{Bao, PrivatePostgres};
use serde_json::json;

const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";
const POLICIES: usize = 100;

/// Policy `i` of the hundred: forbids and permits that are evaluated and not satisfied, and
/// (the last) the one permit that is.
fn policy(i: usize) -> String {
    match i {
        _ if i == POLICIES - 1 => "permit(principal in Mayfly::Group::\"deployers\", \
             action == Mayfly::Action::\"issue\", resource) when { context has source_ip && \
             context.source_ip.isInRange(ip(\"127.0.0.0/8\")) };"
            .to_owned(),
        i if i % 3 == 0 => format!(
            "forbid(principal, action, resource) when {{ context.headers.hasTag(\"x-deny-{i}\") }};"
        ),
        i if i % 3 == 1 => format!(
            "permit(principal in Mayfly::Group::\"team-{i}\", action, resource) when \
             {{ context.utc_hour >= 0 && resource.hasTag(\"team\") }};"
        ),
        i => format!(
            "permit(principal, action == Mayfly::Action::\"issue\", resource) when \
             {{ context has task && context.task.hasTag(\"ticket-{i}\") }};"
        ),
    }
}

fn main() {
    let n: usize = arg("BENCH_ISSUE_COUNT", 400);
    let rounds: usize = arg("BENCH_ROUNDS", 5);
    let clients: usize = arg("BENCH_CLIENTS", 8);
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();
    let (status, body) = bao.put(
        "mayfly/config/pg",
        json!({"plugin_name": "postgresql-database-plugin",
               "connection_url": pg.template_url(), "username": SUPERUSER,
               "password": SUPERUSER_PASSWORD, "allowed_roles": "*",
               "max_open_connections": 8}),
    );
    assert!(status < 300, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "pg", "creation_statements": CREATE, "default_ttl": 3600}),
    );
    assert!(status < 300, "{body}");
    let (token, entity) = bao.agent_login("bench");
    let (status, body) = bao.put(
        "identity/group",
        json!({"name": "deployers", "member_entity_ids": [entity]}),
    );
    assert!(status < 300, "{body}");

    println!(
        "# issuance: no policies vs {POLICIES} Cedar policies in scope, same OpenBao and PostgreSQL"
    );
    println!(
        "# {n} credentials per run, {clients} clients, {rounds} rounds alternating; plugin: {}",
        std::env::var("MAYFLY_PLUGIN_BIN").unwrap_or_else(|_| "debug build".into())
    );
    // Each run with the plugin's CPU milliseconds per credential.
    let mut none: Vec<(Run, f64)> = Vec::new();
    let mut hundred: Vec<(Run, f64)> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_policies in order {
            set_policies(&bao, with_policies);
            // Not measured: the first requests after a write compile the policies (once).
            load::issue_many(&bao, &token, "mayfly/creds/app", clients, clients);
            let plugin = *bao.plugin_pids().first().expect("the plugin runs");
            let cpu_before = load::cpu_seconds(plugin);
            let run = load::issue_many(&bao, &token, "mayfly/creds/app", n, clients);
            let cpu_ms = (load::cpu_seconds(plugin) - cpu_before) * 1000.0 / n as f64;
            let label = if with_policies {
                "100 policies"
            } else {
                "no policies"
            };
            println!(
                "round {round}  {label:<13} {:7.1}/s  p50 {:6.1} ms  p99 {:6.1} ms  \
                 plugin CPU {cpu_ms:.3} ms/credential",
                run.rate, run.p50_ms, run.p99_ms
            );
            let runs = if with_policies {
                &mut hundred
            } else {
                &mut none
            };
            runs.push((run, cpu_ms));
            let (status, body) = bao.put("mayfly/revoke/role/app", json!({}));
            assert!(status < 300, "{body}");
        }
    }
    let med = |runs: &[(Run, f64)], f: fn(&(Run, f64)) -> f64| {
        load::median(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let (r0, r1) = (med(&none, |r| r.0.rate), med(&hundred, |r| r.0.rate));
    let (p0, p1) = (med(&none, |r| r.0.p99_ms), med(&hundred, |r| r.0.p99_ms));
    let (c0, c1) = (med(&none, |r| r.1), med(&hundred, |r| r.1));
    println!("median no policies   {r0:7.1}/s  p99 {p0:6.1} ms  plugin CPU {c0:.3} ms/credential");
    println!("median 100 policies  {r1:7.1}/s  p99 {p1:6.1} ms  plugin CPU {c1:.3} ms/credential");
    println!(
        "ratio  100 policies / none: throughput x{:.3} ({:+.1}%), p99 x{:.3}, plugin CPU \
         {:+.3} ms/credential",
        r1 / r0,
        (r1 / r0 - 1.0) * 100.0,
        p1 / p0,
        c1 - c0
    );
}

/// Writes the hundred policies, or deletes them all.
fn set_policies(bao: &Bao, on: bool) {
    for i in 0..POLICIES {
        let path = format!("mayfly/policies/bench-{i:03}");
        let (status, body) = if on {
            bao.put(&path, json!({ "policy": policy(i) }))
        } else {
            bao.request_as(ROOT_TOKEN, "DELETE", &path, None)
        };
        assert!(status < 300, "{path}: {body}");
    }
}

fn arg(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
