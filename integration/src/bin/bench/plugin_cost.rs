//! `ceiling`, `footprint` and `scale`: what running as an external plugin costs, whatever
//! the engine does.

use std::time::{Duration, Instant};

use mayfly_integration::load::{self};
use mayfly_integration::{Bao, wait_until};
use serde_json::json;

use crate::measure::{Measured, measure, median_of, warmed_role};
use crate::report::{Report, f1};
use crate::targets::{Engine, Target, put};

/// Reads of the role, and the built-in engine's issuances, per run in [`ceiling`].
const CEILING_READS: usize = 5000;
const CEILING_ISSUES: usize = 1000;

/// `ceiling`: what OpenBao's round trip to an external plugin costs, apart from any target.
/// Each engine's role is read at 8 clients: mayfly answers from its plugin process (a gRPC
/// request from the server, two storage reads back), the built-in Redis engine from inside the
/// server. The built-in engine's Redis issuance runs beside them. An issuance through mayfly
/// is such a request and more (storage writes, a lease, the target's work), so mayfly's read
/// rate bounds what it can issue on any target, on this machine.
pub fn ceiling(rounds: usize, report: &mut Report) {
    let target = Target::start("redis");
    let bao = Bao::with_mayfly();
    target.configure(&bao);
    let role = "ceil";
    for engine in [Engine::Mayfly, Engine::Builtin] {
        warmed_role(&bao, &target, engine, role);
    }
    target.drop_principals();
    let clients = 8;
    // mayfly's reads, the built-in engine's reads, the built-in engine's issuance.
    let mut runs: [Vec<Measured>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        for engine in Engine::order(round) {
            let roles = target.path(engine, "roles", role);
            let m = measure(&bao, || {
                load::issue_many(&bao, bao.root_token(), &roles, CEILING_READS, clients)
            });
            eprintln!(
                "ceiling round={round} {:<8} role reads {:7.1}/s p99 {:5.1} ms cpu {:.2} ms/read \
                 ({:.2} in mayfly; machine {:.2})",
                engine.label(),
                m.run.rate,
                m.run.p99_ms,
                m.cpu_ms_per_cred,
                m.plugin_cpu_ms_per_cred,
                m.machine_cpu_ms_per_cred
            );
            runs[engine as usize].push(m);
        }
        let creds = target.creds_path(Engine::Builtin, role);
        let m = measure(&bao, || {
            load::issue_many(&bao, bao.root_token(), &creds, CEILING_ISSUES, clients)
        });
        target.drop_principals();
        eprintln!(
            "ceiling round={round} built-in issuance {:7.1}/s cpu {:.2} ms/cred (machine {:.2})",
            m.run.rate, m.cpu_ms_per_cred, m.machine_cpu_ms_per_cred
        );
        runs[2].push(m);
    }
    target.clean(&bao);
    let row = |what: &str, r: &[Measured]| {
        vec![
            what.to_owned(),
            f1(median_of(r, |x| x.run.rate)),
            f1(median_of(r, |x| x.run.p99_ms)),
            format!("{:.2}", median_of(r, |x| x.cpu_ms_per_cred)),
            format!("{:.2}", median_of(r, |x| x.machine_cpu_ms_per_cred)),
        ]
    };
    let [mayfly_reads, builtin_reads, builtin_issuance] = &runs;
    let issued = median_of(builtin_issuance, |x| x.run.rate);
    report.table(
        "Ceiling of an external plugin",
        &format!(
            "Redis, {clients} clients, {CEILING_READS} role reads or {CEILING_ISSUES} issuances per run. \
             mayfly's role read is a round trip from the server to its plugin process with two \
             storage reads back; every issuance through mayfly is that and more. x1.5 of the \
             built-in Redis issuance here is {:.0}/s; mayfly's reads reach {:.0}/s.",
            1.5 * issued,
            median_of(mayfly_reads, |x| x.run.rate)
        ),
        &[
            "requests",
            "per s",
            "p99 ms",
            "CPU ms per request",
            "machine CPU ms per request",
        ],
        &[
            row("mayfly: read roles/NAME (external plugin)", mayfly_reads),
            row(
                "built-in Redis: read roles/NAME (in the server)",
                builtin_reads,
            ),
            row("built-in Redis: issue creds/NAME", builtin_issuance),
        ],
    );
}

pub fn footprint(report: &mut Report) {
    let samples = 5;
    let mut enable_ms = Vec::new();
    let mut builtin_enable_ms = Vec::new();
    let mut respawns = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..samples {
        let bao = Bao::start();
        bao.register();
        // Cold start: the first mount spawns the process, which hands shake, runs Setup and
        // Initialize before the mount call answers.
        let t = Instant::now();
        put(&bao, "sys/mounts/mayfly", json!({"type": "mayfly"}));
        enable_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        put(&bao, "sys/mounts/db", json!({"type": "database"}));
        builtin_enable_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        idle_rss.push(settled_rss_mib(&bao));
        respawns.push(respawn_ms(&bao));
    }
    let m = |v: &[f64]| f1(load::median(v));
    report.table(
        "Footprint",
        &format!("Medians of {samples} fresh servers."),
        &["measure", "mayfly", "built-in database engine"],
        &[
            vec![
                "mount enable (process start, handshake, Setup, Initialize), ms".into(),
                m(&enable_ms),
                format!("{} (in-process)", m(&builtin_enable_ms)),
            ],
            vec![
                "first request after a SIGKILL (respawn + Setup + request), ms".into(),
                m(&respawns),
                "n/a".into(),
            ],
            vec![
                "idle RSS, one mount, MiB".into(),
                m(&idle_rss),
                "n/a (inside the server)".into(),
            ],
        ],
    );
}

/// SIGKILLs the plugin, waits until the host has seen it die, and times the first request
/// after it that is served (the host respawns the process, runs Setup and Initialize, then
/// the request). The host may fail the first request with a 500 ("connection refused" on the
/// dead process's socket) and respawn on the next: such failures count in the time.
fn respawn_ms(bao: &Bao) -> f64 {
    let pid = bao.plugin_pids()[0];
    bao.kill_plugins();
    let noticed = |l: &str| l.contains("plugin process exited") && l.contains(&pid.to_string());
    assert!(wait_until(10.0, || bao.log().lines().any(noticed)));
    let t = Instant::now();
    let mut failed = 0;
    loop {
        let (status, body) = bao.list("mayfly/roles/");
        if status == 200 || status == 404 {
            break;
        }
        failed += 1;
        assert!(failed < 20, "{status} {body}");
        eprintln!("respawn: request {failed} after the kill failed: {status} {body}");
    }
    t.elapsed().as_secs_f64() * 1000.0
}

/// The plugin's RSS in MiB once it has been idle for 3 s (its scheduler has loaded the due
/// index's near buckets by then).
fn settled_rss_mib(bao: &Bao) -> f64 {
    std::thread::sleep(Duration::from_secs(3));
    load::rss_kib(bao.plugin_pids()[0]) as f64 / 1024.0
}

/// A dev server with the raw storage endpoint on and mayfly mounted at `mayfly/`.
pub fn raw_server() -> Bao {
    let dir = mayfly_integration::scratch_dir("bench-raw");
    let config = dir.join("raw.hcl");
    std::fs::write(&config, "raw_storage_endpoint = true\n").unwrap();
    let flag = format!("-config={}", config.display());
    let bao = Bao::start_with(&[flag.as_str()]);
    bao.register();
    bao.enable("mayfly");
    bao
}

/// Writes active ledger records `from..to` of role `app` on connection `db` straight into
/// the storage of `bao`'s `mayfly/` mount (a [`raw_server`]), each with its due-index entry, as
/// issuance would have left them; deadlines spread evenly over 30 days from 2 h on. Record
/// `i` was requested by `entities[i % len]` (by a token without an entity when empty).
/// Returns the seconds it took.
pub fn write_ledger(bao: &Bao, from: usize, to: usize, entities: &[String]) -> f64 {
    let (_, mounts) = bao.get("sys/mounts");
    let uuid = mounts["data"]["mayfly/"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let prefix = format!("sys/raw/logical/{uuid}/ledger");
    let now = mayfly_integration::creds::now();
    let (first, span) = (now + 7200, 30 * 86400 - 7200);
    let next = std::sync::atomic::AtomicUsize::new(from);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= to {
                        break;
                    }
                    let id = format!("scale{i:015}");
                    let deadline = first + (i as u64 * span as u64) / to as u64;
                    let entity = match entities {
                        [] => "",
                        _ => entities[i % entities.len()].as_str(),
                    };
                    let record = json!({
                    "id": id, "role": "app", "connection": "db",
                    "principal": format!("mf-app-scale-{i:015}"), "state": "active",
                    "created_at": now, "deadline": deadline, "max_deadline": deadline,
                    "default_ttl": 3600, "due": deadline,
                    "requester": {"entity_id": entity, "token_accessor": "acc",
                                  "display_name": "bench", "remote_addr": "127.0.0.1"},
                    "settings": {}});
                    let bucket = deadline / 60;
                    put(
                        bao,
                        &format!("{prefix}/due/{bucket:012}/{deadline:012}_{id}"),
                        json!({"value": ""}),
                    );
                    put(
                        bao,
                        &format!("{prefix}/creds/{id}"),
                        json!({"value": record.to_string()}),
                    );
                    if (i + 1).is_multiple_of(100_000) {
                        eprintln!(
                            "ledger: {} records written in {:.0}s",
                            i + 1,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// `count` active ledger records, deadlines spread evenly over the next 30 days (from 2 h
/// on), written with the due-index entry each through the server's raw storage endpoint, as
/// issuance would have left them; then the plugin is restarted.
pub fn scale(count: usize, report: &mut Report) {
    let bao = raw_server();
    let empty_respawn = load::median(&(0..3).map(|_| respawn_ms(&bao)).collect::<Vec<_>>());
    let empty_rss = settled_rss_mib(&bao);
    let written_in = write_ledger(&bao, 0, count, &[]);
    let respawns: Vec<f64> = (0..3).map(|_| respawn_ms(&bao)).collect();
    let full_rss = settled_rss_mib(&bao);
    let t = Instant::now();
    let (status, body) = bao.get(&format!("mayfly/leases/scale{:015}", count / 2));
    assert_eq!(status, 200, "{body}");
    let lookup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let per_record = (full_rss - empty_rss).max(0.0) * 1024.0 * 1024.0 / count as f64;
    eprintln!(
        "scale {count}: respawn {:.0} ms (empty {empty_respawn:.0}), RSS {full_rss:.1} MiB \
         (empty {empty_rss:.1}), {per_record:.2} B/record",
        load::median(&respawns)
    );
    report.table(
        "Scale",
        &format!(
            "{count} active ledger records (deadlines over 30 days) written straight into the \
             mount's storage through the raw endpoint of a dev server ({written_in:.0} s), then \
             the plugin SIGKILLed and the first request timed (median of 3)."
        ),
        &["measure", "empty ledger", &format!("{count} records")],
        &[
            vec![
                "restart to serving (respawn, Setup, first request), ms".into(),
                f1(empty_respawn),
                f1(load::median(&respawns)),
            ],
            vec![
                "plugin RSS after restart, MiB".into(),
                f1(empty_rss),
                f1(full_rss),
            ],
            vec![
                "memory per record, bytes".into(),
                "".into(),
                format!("{per_record:.2}"),
            ],
            vec![
                "one record read (`leases/ID`), ms".into(),
                "".into(),
                f1(lookup_ms),
            ],
        ],
    );
}
