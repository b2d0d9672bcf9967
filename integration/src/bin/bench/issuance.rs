//! `issue` and `sustained`: issuance rates, latencies and CPU per credential.

use mayfly_integration::Bao;
use mayfly_integration::load::{self};
use serde_json::Value;

use crate::measure::{Measured, measure, median_of, warmed_role};
use crate::report::{Report, f1, ratio};
use crate::targets::{Engine, Target};
use crate::{Settings, cores, targets};

pub fn issuance(s: &Settings, report: &mut Report) {
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for (storage, name) in s
        .storages
        .iter()
        .flat_map(|st| s.targets.iter().map(move |t| (st, t)))
    {
        let target = Target::start(name);
        let bao = server(storage);
        target.configure(&bao);
        let role = "iss";
        for engine in [Engine::Mayfly, Engine::Builtin] {
            warmed_role(&bao, &target, engine, role);
        }
        eprintln!(
            "{name}: warm-up's {} principals dropped",
            target.drop_principals()
        );
        for &clients in &s.clients {
            let n = s.issue_n.max(clients * 20);
            let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
            let mut latencies = Vec::new();
            let mut round_trips = RoundTrips::default();
            for round in 0..s.rounds {
                for engine in Engine::order(round) {
                    let path = target.creds_path(engine, role);
                    let before = (engine == Engine::Mayfly).then(|| metrics(&bao));
                    let m = measure(&bao, || {
                        load::issue_many(&bao, bao.root_token(), &path, n, clients)
                    });
                    if let Some(before) = before {
                        round_trips.add(&before, &metrics(&bao));
                    }
                    let dropped = target.drop_principals();
                    eprintln!(
                        "issue {storage} {name} clients={clients} round={round} {:<8} {:7.1}/s p50 {:6.1} \
                         p99 {:6.1} ms cpu {:.2} ms/cred ({:.2} in mayfly; driver {:.2}; \
                         machine {:.2}); {dropped} dropped",
                        engine.label(),
                        m.run.rate,
                        m.run.p50_ms,
                        m.run.p99_ms,
                        m.cpu_ms_per_cred,
                        m.plugin_cpu_ms_per_cred,
                        m.driver_cpu_ms_per_cred,
                        m.machine_cpu_ms_per_cred
                    );
                    raw.push(format!(
                        "{storage},{name},{clients},{round},{},{:.2},{:.2},{:.2},{:.3},{:.3},{:.3}",
                        engine.label(),
                        m.run.rate,
                        m.run.p50_ms,
                        m.run.p99_ms,
                        m.cpu_ms_per_cred,
                        m.plugin_cpu_ms_per_cred,
                        m.machine_cpu_ms_per_cred
                    ));
                    latencies.extend(
                        m.run
                            .latencies_ms
                            .iter()
                            .map(|l| format!("{},{round},{l:.3}", engine.label())),
                    );
                    runs[engine as usize].push(m);
                }
            }
            report.csv(
                &format!("latency-{storage}-{name}-{clients}.csv"),
                "engine,round,ms",
                latencies,
            );
            let [m, b] = &runs;
            let rate = |r: &[Measured]| median_of(r, |x| x.run.rate);
            let p50 = |r: &[Measured]| median_of(r, |x| x.run.p50_ms);
            let p99 = |r: &[Measured]| median_of(r, |x| x.run.p99_ms);
            let cpu = |r: &[Measured]| median_of(r, |x| x.cpu_ms_per_cred);
            let machine = |r: &[Measured]| median_of(r, |x| x.machine_cpu_ms_per_cred);
            rows.push(vec![
                storage.clone(),
                name.clone(),
                clients.to_string(),
                f1(rate(m)),
                f1(rate(b)),
                format!("**{}**", ratio(rate(m), rate(b))),
                f1(p50(m)),
                f1(p50(b)),
                f1(p99(m)),
                f1(p99(b)),
                format!("{:.2}", cpu(m)),
                format!("{:.2}", cpu(b)),
                format!("{:.2}", machine(m)),
                format!("{:.2}", machine(b)),
                round_trips.view(),
            ]);
        }
        target.clean(&bao);
    }
    report.csv(
        "issuance-rounds.csv",
        "storage,target,clients,round,engine,rate,p50_ms,p99_ms,cpu_ms_per_cred,mayfly_cpu_ms_per_cred,\
         machine_cpu_ms_per_cred",
        raw,
    );
    report.table(
        "Issuance",
        &format!(
            "{} credentials per run (at least 20 per client), TTL 1 h, each run on a target holding \
             none of the previous runs' users. Storage: dev is OpenBao's dev server (in \
             memory), raft its integrated storage on disk, which syncs every write. CPU is the server's plus \
             mayfly's processes', per credential, for either engine (the built-in engines run \
             inside the server). Machine CPU is every process's, the target's server and this \
             driver included: at its limit, {} cores make {} ms of it per second. Both \
             engines' SQL connections have max_open_connections={}; their PostgreSQL \
             connections have password_authentication={}{}.",
            s.issue_n,
            cores(),
            cores() * 1000,
            targets::max_open_connections(),
            targets::pg_password_authentication(),
            targets::pg_scram_iterations().map_or(String::new(), |n| format!(
                ", except mayfly's: scram-sha-256 with scram_iterations={n} (a setting the \
                 built-in engine lacks; the server runs the verifier's rounds once per user)"
            ))
        ),
        &[
            "storage",
            "target",
            "clients",
            "mayfly creds/s",
            "built-in creds/s",
            "throughput ratio",
            "mayfly p50 ms",
            "built-in p50 ms",
            "mayfly p99 ms",
            "built-in p99 ms",
            "mayfly CPU ms/cred",
            "built-in CPU ms/cred",
            "mayfly machine CPU ms/cred",
            "built-in machine CPU ms/cred",
            "mayfly storage round trips per cred (background)",
        ],
        &rows,
    );
}

/// A server with mayfly mounted on `storage`: `dev` (in memory) or `raft` (on disk).
pub fn server(storage: &str) -> Bao {
    match storage {
        "dev" => Bao::with_mayfly(),
        _ => {
            let bao = Bao::start_persistent();
            bao.register();
            bao.enable("mayfly");
            bao
        }
    }
}

/// `metrics` of mayfly's mount.
pub fn metrics(bao: &Bao) -> Value {
    let (status, body) = bao.get("mayfly/metrics");
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// mayfly's host storage calls during issuance runs, from its `metrics`.
#[derive(Default)]
struct RoundTrips {
    issued: f64,
    in_requests: f64,
    background: f64,
}

impl RoundTrips {
    fn add(&mut self, before: &Value, after: &Value) {
        let sum = |v: &Value| -> f64 {
            v.as_object().map_or(0.0, |calls| {
                calls.values().filter_map(|c| c["count"].as_f64()).sum()
            })
        };
        let issue = |v: &Value| v["requests"]["issue"].clone();
        self.issued += issue(after)["count"].as_f64().unwrap_or(0.0)
            - issue(before)["count"].as_f64().unwrap_or(0.0);
        self.in_requests += sum(&issue(after)["storage"]) - sum(&issue(before)["storage"]);
        self.background +=
            sum(&after["background"]["storage"]) - sum(&before["background"]["storage"]);
    }

    fn view(&self) -> String {
        let per = |x: f64| x / self.issued.max(1.0);
        format!("{:.1} ({:.1})", per(self.in_requests), per(self.background))
    }
}

/// The width of the windows a sustained run's rate is measured in.
const WINDOW_SECS: usize = 10;

/// Issuance held for `secs` seconds at 8 clients on PostgreSQL, twice per engine (each engine
/// first once), TTL 1 h so that nothing expires meanwhile. A burst of 1,000 cannot show work
/// that grows with what a run leaves behind (users on the target, records in the ledger, leases
/// in the server) or that is deferred past the burst; minutes of it can.
pub fn sustained(secs: usize, report: &mut Report) {
    assert!(
        secs >= 3 * WINDOW_SECS,
        "BENCH_SUSTAINED_SECS: at least {} expected, got {secs}",
        3 * WINDOW_SECS
    );
    let target = Target::start("postgres");
    let bao = Bao::with_mayfly();
    target.configure(&bao);
    for engine in [Engine::Mayfly, Engine::Builtin] {
        warmed_role(&bao, &target, engine, "held");
    }
    target.drop_principals();
    let windows = secs / WINDOW_SECS;
    let mut measured: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    let mut curve = Vec::new();
    for round in 0..2 {
        for engine in Engine::order(round) {
            let path = target.creds_path(engine, "held");
            let m = measure(&bao, || {
                load::issue_for(&bao, bao.root_token(), &path, 8, secs as f64)
            });
            let dropped = target.drop_principals();
            let rates: Vec<f64> = (0..windows)
                .map(|w| {
                    let from = (w * WINDOW_SECS) as f64;
                    m.run.rate_between(from, from + WINDOW_SECS as f64)
                })
                .collect();
            eprintln!(
                "sustained round={round} {:<8} {:7.1}/s p99 {:6.1} ms cpu {:.2} ms/cred; \
                 per {WINDOW_SECS} s: {:?}; {dropped} dropped",
                engine.label(),
                m.run.rate,
                m.run.p99_ms,
                m.cpu_ms_per_cred,
                rates.iter().map(|r| r.round()).collect::<Vec<_>>()
            );
            curve.extend(rates.iter().enumerate().map(|(w, r)| {
                format!(
                    "{},{round},{},{r:.1}",
                    engine.label(),
                    (w + 1) * WINDOW_SECS
                )
            }));
            measured[engine as usize].push(m);
        }
    }
    let plugin_rss_mib = bao
        .plugin_pids()
        .iter()
        .map(|&p| load::rss_kib(p))
        .sum::<u64>() as f64
        / 1024.0;
    report.csv("sustained.csv", "engine,round,t_end_s,rate", curve);
    let med = |e: Engine, f: &dyn Fn(&Measured) -> f64| median_of(&measured[e as usize], f);
    let last_from = (windows - 1) * WINDOW_SECS;
    let first_rate = |r: &Measured| r.run.rate_between(0.0, WINDOW_SECS as f64);
    let last_rate = |r: &Measured| {
        r.run
            .rate_between(last_from as f64, (windows * WINDOW_SECS) as f64)
    };
    let mut rows = Vec::new();
    for engine in [Engine::Mayfly, Engine::Builtin] {
        rows.push(vec![
            engine.label().into(),
            format!("{:.0}", med(engine, &|r| r.run.latencies_ms.len() as f64)),
            f1(med(engine, &|r| r.run.rate)),
            f1(med(engine, &first_rate)),
            f1(med(engine, &last_rate)),
            f1(med(engine, &|r| r.run.p99_ms)),
            format!("{:.2}", med(engine, &|r| r.cpu_ms_per_cred)),
        ]);
    }
    let rate = |e: Engine| med(e, &|r| r.run.rate);
    rows[0].push(format!(
        "**{}**",
        ratio(rate(Engine::Mayfly), rate(Engine::Builtin))
    ));
    rows[1].push(String::new());
    report.table(
        "Sustained issuance",
        &format!(
            "PostgreSQL, 8 clients, {secs} s per run, TTL 1 h, each engine twice (each first \
             once), medians; every user is dropped after each run. The first and last columns \
             are the rates of the run's first and last {WINDOW_SECS} s. mayfly's RSS after the \
             four runs: {plugin_rss_mib:.1} MiB (its ledger then holds every credential it \
             issued)."
        ),
        &[
            "engine",
            "issued per run",
            "creds/s",
            "first window /s",
            "last window /s",
            "p99 ms",
            "CPU ms/cred",
            "mayfly/built-in",
        ],
        &rows,
    );
}
