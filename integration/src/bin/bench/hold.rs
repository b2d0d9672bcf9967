//! `hold`: what the continuous-authorization sweep costs at scale. Live ledger records are
//! written straight into the mount's storage, requested by 100 identity entities that are
//! all in one group; hold policies that end none of them are in place, so every pass decides
//! every credential (group lookups, Cedar) and revokes nothing.

use std::time::{Duration, Instant};

use mayfly_integration::Bao;
use mayfly_integration::load;
use serde_json::{Value, json};

use crate::plugin_cost::{raw_server, write_ledger};
use crate::report::{Report, f1};
use crate::targets::put;

/// Requesting entities, all members of group `oncall`.
const ENTITIES: usize = 100;
/// Passes measured at each size.
const PASSES: usize = 3;

const POLICY: &str = "permit(principal in Mayfly::Group::\"oncall\", \
    action == Mayfly::Action::\"hold\", resource == Mayfly::Role::\"app\");\n\
    forbid(principal, action == Mayfly::Action::\"hold\", resource) \
    when { context.credential.remaining_seconds < 60 };";

fn last_pass(bao: &Bao) -> Value {
    let (status, body) = bao.get("mayfly/config/hold");
    assert_eq!(status, 200, "{body}");
    body["data"]["last_pass"].clone()
}

/// The last pass once no other has followed it for a second: the mount is idle.
fn settled_pass(bao: &Bao) -> Value {
    let mut last = last_pass(bao);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = last_pass(bao);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// One pass on an idle mount, asked for by a write of `config/hold`: (the pass as the mount
/// reports it, the plugin's CPU seconds, the server's CPU seconds).
fn one_pass(bao: &Bao) -> (Value, f64, f64) {
    let before = settled_pass(bao)["pass"].as_u64().unwrap_or(0);
    let plugin = bao.plugin_pids()[0];
    let (plugin_cpu, server_cpu) = (load::cpu_seconds(plugin), load::cpu_seconds(bao.pid()));
    let t = Instant::now();
    put(bao, "mayfly/config/hold", json!({"hold_interval": "1h"}));
    let pass = loop {
        std::thread::sleep(Duration::from_millis(50));
        let pass = last_pass(bao);
        if pass["pass"].as_u64().unwrap_or(0) > before {
            break pass;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "no pass: {pass}");
    };
    (
        pass,
        load::cpu_seconds(plugin) - plugin_cpu,
        load::cpu_seconds(bao.pid()) - server_cpu,
    )
}

pub fn hold(counts: &[usize], report: &mut Report) {
    let bao = raw_server();
    put(&bao, "mayfly/config/hold", json!({"hold_interval": "1h"}));
    let mut entities = Vec::new();
    for i in 0..ENTITIES {
        entities.push(bao.agent_login(&format!("holder{i}")).1);
    }
    put(
        &bao,
        "identity/group",
        json!({"name": "oncall", "member_entity_ids": entities}),
    );
    let mut rows = Vec::new();
    let mut written = 0;
    for &count in counts {
        let took = write_ledger(&bao, written, count, &entities);
        eprintln!("hold: {} records written in {took:.0}s", count - written);
        written = count;
        let t = Instant::now();
        let (status, body) = bao.put("mayfly/policies/held", json!({ "policy": POLICY }));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["hold_would_end"], 0, "{body}");
        let write_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut passes = Vec::new();
        for _ in 0..PASSES {
            let (pass, plugin_cpu, server_cpu) = one_pass(&bao);
            assert_eq!(pass["decided"], count, "{pass}");
            assert_eq!(pass["ended"], 0, "{pass}");
            eprintln!(
                "hold {count}: pass {:.0} ms, plugin CPU {:.0} ms, server CPU {:.0} ms \
",
                pass["took_ms"].as_f64().unwrap(),
                plugin_cpu * 1000.0,
                server_cpu * 1000.0
            );
            passes.push((pass["took_ms"].as_f64().unwrap(), plugin_cpu, server_cpu));
        }
        let rss = load::rss_kib(bao.plugin_pids()[0]) as f64 / 1024.0;
        let med = |f: fn(&(f64, f64, f64)) -> f64| {
            load::median(&passes.iter().map(f).collect::<Vec<_>>())
        };
        let pass_ms = med(|p| p.0);
        rows.push(vec![
            count.to_string(),
            f1(pass_ms),
            f1(med(|p| p.1) * 1000.0),
            f1(med(|p| p.2) * 1000.0),
            format!("{:.1}", pass_ms * 1000.0 / count as f64),
            f1(write_ms),
            f1(rss),
        ]);
        // Without a hold policy a pass reads nothing.
        put(
            &bao,
            "mayfly/policies/held",
            json!({"policy": "permit(principal, action == Mayfly::Action::\"issue\", resource);"}),
        );
        let (pass, _, _) = one_pass(&bao);
        assert_eq!(pass["decided"], 0, "{pass}");
    }
    report.table(
        "Hold sweep",
        &format!(
            "Live ledger records written into the mount's storage (dev server), requested by \
             {ENTITIES} identity entities all in group oncall; the hold policies (a group \
             permit and a time forbid) end none, so every pass decides every credential. \
             A pass reads only the records written since the last (none here); the policy \
             write that follows the records' writing decides them all to answer \
             hold_would_end, and so reads each new record once. Median of {PASSES} passes."
        ),
        &[
            "live credentials",
            "pass, ms",
            "plugin CPU per pass, ms",
            "server CPU per pass, ms",
            "µs per credential",
            "policy write (its pass reads every new record), ms",
            "plugin RSS after, MiB",
        ],
        &rows,
    );
}
