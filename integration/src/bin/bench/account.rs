//! `account`: where one issuance, renewal and revocation spends its time, phase by phase, from
//! mayfly's own account (`metrics`) read before and after, beside what the client saw of both
//! engines. One client, so that each request has the machine to itself.

use std::time::Instant;

use mayfly_integration::Bao;
use serde_json::{Value, json};

use crate::issuance::{metrics, server};
use crate::measure::warmed_role;
use crate::report::{Report, f1};
use crate::targets::{Engine, Target};

/// The kinds of request accounted, as `metrics` names them.
const KINDS: [&str; 3] = ["issue", "renew", "revoke"];
/// Phases in the order the request's code passes them; `metrics` lists them by name.
const PHASE_ORDER: [&str; 11] = [
    "lookups",
    "policy",
    "name_check",
    "password",
    "intent",
    "create",
    "activation",
    "finish",
    "target",
    "ledger",
    "batch",
];

/// The client's mean latency in ms of each kind, for one engine.
struct Seen {
    mean_ms: [f64; 3],
}

/// Issues `n`, renews each, then revokes each (waiting for the revocation), one at a time.
fn run(bao: &Bao, target: &Target, engine: Engine, n: usize) -> Seen {
    let creds = target.creds_path(engine, "acct");
    let mut leases = Vec::with_capacity(n);
    let mut total = [0.0; 3];
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = bao.get(&creds);
        total[0] += t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(status, 200, "{body}");
        leases.push(body["lease_id"].as_str().unwrap().to_owned());
    }
    for lease in &leases {
        let t = Instant::now();
        let (status, body) = bao.put(
            "sys/leases/renew",
            json!({"lease_id": lease, "increment": 3000}),
        );
        total[1] += t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(status, 200, "{body}");
    }
    for lease in &leases {
        let t = Instant::now();
        let (status, body) = bao.put(
            "sys/leases/revoke",
            json!({"lease_id": lease, "sync": true}),
        );
        total[2] += t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(status, 204, "{body}");
    }
    Seen {
        mean_ms: total.map(|t| t / n as f64),
    }
}

/// The storage calls a `storage` object of `metrics` lists (those made at least once).
fn calls_in(storage: &Value) -> Vec<String> {
    storage
        .as_object()
        .map(|calls| calls.keys().cloned().collect())
        .unwrap_or_default()
}

/// `after - before` of the number at `path` in two reads of `metrics`.
fn delta(before: &Value, after: &Value, path: &[&str]) -> f64 {
    let at = |v: &Value| path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0);
    at(after) - at(before)
}

pub fn account(n: usize, storages: &[String], report: &mut Report) {
    for storage in storages {
        account_on(storage, n, report);
    }
}

fn account_on(storage: &str, n: usize, report: &mut Report) {
    let target = Target::start("postgres");
    let bao = server(storage);
    target.configure(&bao);
    for engine in [Engine::Mayfly, Engine::Builtin] {
        warmed_role(&bao, &target, engine, "acct");
    }
    let builtin = run(&bao, &target, Engine::Builtin, n);
    let before = metrics(&bao);
    let mayfly = run(&bao, &target, Engine::Mayfly, n);
    let after = metrics(&bao);
    target.drop_principals();

    let mut rows = Vec::new();
    let mut phases = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let count = delta(&before, &after, &["requests", kind, "count"]).max(1.0);
        let ms = |path: &[&str]| delta(&before, &after, path) / count / 1000.0;
        let engine_ms = ms(&["requests", kind, "engine_us"]);
        let codec_ms = ms(&["requests", kind, "codec_us"]);
        let storage: Vec<String> = calls_in(&after["requests"][kind]["storage"])
            .iter()
            .filter_map(|call| {
                let calls = delta(
                    &before,
                    &after,
                    &["requests", kind, "storage", call, "count"],
                );
                let us = delta(&before, &after, &["requests", kind, "storage", call, "us"]);
                (calls > 0.0).then(|| {
                    format!(
                        "{} {call} ({:.0} µs each)",
                        f1(calls / count),
                        us / calls.max(1.0)
                    )
                })
            })
            .collect();
        let background: f64 = calls_in(&after["background"]["storage"])
            .iter()
            .map(|call| delta(&before, &after, &["background", "storage", call, "count"]))
            .sum();
        rows.push(vec![
            kind.to_string(),
            format!("{:.2}", mayfly.mean_ms[i]),
            format!("{:.2}", builtin.mean_ms[i]),
            format!("{:.2}", engine_ms),
            format!("{:.3}", codec_ms),
            format!("{:.2}", mayfly.mean_ms[i] - engine_ms - codec_ms),
            if storage.is_empty() {
                "none".into()
            } else {
                storage.join(", ")
            },
            if i == 0 {
                f1(background / (3.0 * n as f64))
            } else {
                String::new()
            },
        ]);
        if let Some(p) = after["requests"][kind]["phases_us"].as_object() {
            let mut names: Vec<&String> = p.keys().collect();
            names.sort_by_key(|n| {
                PHASE_ORDER
                    .iter()
                    .position(|o| o == n)
                    .unwrap_or(usize::MAX)
            });
            for phase in names {
                let phase_ms = ms(&["requests", kind, "phases_us", phase]);
                phases.push(vec![
                    kind.to_string(),
                    phase.clone(),
                    format!("{phase_ms:.3}"),
                ]);
            }
        }
    }
    report.table(
        &format!("Where a request's time goes ({storage} storage)"),
        &format!(
            "PostgreSQL, OpenBao's {storage} storage, one client, {n} issuances, then a renewal of each, then a revocation of \
             each (`sys/leases/revoke`, sync), on each engine; means in ms. mayfly's own account \
             (`metrics`, read before and after) splits its share: the engine (routing to \
             reply), the plugin's decoding and encoding, and the rest, which is the client, \
             HTTP, the server's token and lease work and the gRPC round trip to the plugin. \
             Storage calls are the host round trips a request waited for; background calls \
             (the sweep's revocation batches, index clean-up off the request's path) are per \
             request of all three kinds."
        ),
        &[
            "request",
            "mayfly ms",
            "built-in ms",
            "mayfly engine ms",
            "decode+encode ms",
            "host and transport ms",
            "storage round trips per request",
            "background storage calls per request",
        ],
        &rows,
    );
    report.table(
        &format!("Phases of mayfly's requests ({storage} storage)"),
        "Means in ms per request, in order of the request's code: an issuance's lookups (role, \
         connection, bindings, task), policy, name check on the target, password, the \
         write-ahead intent, the create on the target, the activation, and the reply; a \
         renewal's lookups, policy, target and ledger write; a revocation's wait for its batch.",
        &["request", "phase", "ms"],
        &phases,
    );
}
