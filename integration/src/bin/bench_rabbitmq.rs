//! Benchmarks issuance of RabbitMQ users: mayfly's `rabbitmq` kind against OpenBao's built-in
//! `rabbitmq` engine, in the same OpenBao against the same broker, with the same tags and vhost
//! permissions, in alternating rounds (the engine that goes first alternates). Figures are the
//! medians over the rounds. Run it with `scripts/bench rabbitmq`.

use mayfly_integration::bao::ROOT_TOKEN;
use mayfly_integration::rabbitmq::{MANAGEMENT, management};
use mayfly_integration::{Bao, load};
use serde_json::json;

const ADMIN: &str = "mayfly-bench-admin";
const ADMIN_PASSWORD: &str = "bench-Admin-pw-1";
const VHOSTS: &str = r#"{"/": {"configure": ".*", "write": ".*", "read": ".*"}}"#;

fn main() {
    let n: usize = arg("BENCH_ISSUE_COUNT", 300);
    let rounds: usize = arg("BENCH_ROUNDS", 3);
    let (status, body) = management(
        "PUT",
        &format!("/api/users/{ADMIN}"),
        Some(&json!({"password": ADMIN_PASSWORD, "tags": "administrator"})),
    );
    assert!(status < 300, "{body}");
    let bao = Bao::with_mayfly();
    let (ok, out) = bao.cli(&["secrets", "enable", "rabbitmq"]);
    assert!(ok, "{out}");
    put(
        &bao,
        "mayfly/config/rmq",
        json!({"plugin_name": "rabbitmq", "connection_uri": MANAGEMENT, "username": ADMIN,
               "password": ADMIN_PASSWORD, "allowed_roles": "*"}),
    );
    put(
        &bao,
        "rabbitmq/config/connection",
        json!({"connection_uri": MANAGEMENT, "username": ADMIN, "password": ADMIN_PASSWORD}),
    );
    put(
        &bao,
        "mayfly/roles/amqp",
        json!({"db_name": "rmq", "tags": "management", "vhosts": VHOSTS, "default_ttl": 3600}),
    );
    put(
        &bao,
        "rabbitmq/roles/amqp",
        json!({"tags": "management", "vhosts": VHOSTS}),
    );
    println!(
        "# rabbitmq users: mayfly vs OpenBao's built-in rabbitmq engine, same OpenBao, same broker"
    );
    println!(
        "# {n} users per run, {rounds} alternating rounds, tags + one vhost's permissions; plugin: {}",
        std::env::var("MAYFLY_PLUGIN_BIN").unwrap_or_else(|_| "debug build".into())
    );
    let engines = [
        ("mayfly", "mayfly/creds/amqp"),
        ("built-in", "rabbitmq/creds/amqp"),
    ];
    for clients in [1, 8] {
        let mut runs: [Vec<load::Run>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (label, path) = engines[i];
                let run = load::issue_many(&bao, ROOT_TOKEN, path, n, clients);
                println!(
                    "round {round} {label:<9} clients={clients} {:7.1}/s  p50 {:6.1} ms  p99 {:6.1} ms",
                    run.rate, run.p50_ms, run.p99_ms
                );
                runs[i].push(run);
                // Not measured: every user goes before the next run.
                let mount = path.split('/').next().unwrap();
                let (status, body) = bao.put(
                    &format!("sys/leases/revoke-prefix/{mount}/creds/amqp"),
                    json!({"sync": true}),
                );
                assert!(status < 300, "{body}");
            }
        }
        let med = |i: usize, f: fn(&load::Run) -> f64| {
            load::median(&runs[i].iter().map(f).collect::<Vec<_>>())
        };
        let (mr, mp) = (med(0, |r| r.rate), med(0, |r| r.p99_ms));
        let (br, bp) = (med(1, |r| r.rate), med(1, |r| r.p99_ms));
        println!("median clients={clients} mayfly   {mr:7.1}/s  p99 {mp:6.1} ms");
        println!("median clients={clients} built-in {br:7.1}/s  p99 {bp:6.1} ms");
        println!(
            "ratio  clients={clients}: mayfly/built-in throughput x{:.2}, p99 built-in/mayfly x{:.2}",
            mr / br,
            bp / mp
        );
    }
    management("DELETE", &format!("/api/users/{ADMIN}"), None);
}

fn put(bao: &Bao, path: &str, body: serde_json::Value) {
    let (status, resp) = bao.put(path, body);
    assert!(status < 300, "{path}: {resp}");
}

fn arg(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
