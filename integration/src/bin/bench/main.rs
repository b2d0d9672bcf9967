//! Benchmarks mayfly against OpenBao's built-in engines side by side: one OpenBao with both
//! mounted against the same targets, the same statements, the same client load, in alternating
//! rounds (the engine that goes first alternates), reporting medians and ratios. Run it with
//! `scripts/bench`; it writes `report.md` and CSV files to `BENCH_OUT`.
//!
//! Scenarios (`BENCH_SCENARIOS`, comma-separated; default all):
//! - `issue`: creds/s, p50 and p99 at 1, 8 and 32 clients on PostgreSQL, MariaDB, Redis and
//!   RabbitMQ, and CPU per credential;
//! - `expiry`: 2,000 and 10,000 credentials expiring together on PostgreSQL: the seconds from the
//!   last expiry until none is left, and the live-user curve;
//! - `during`: issuance while 2,000 credentials (the first expiry count) expire;
//! - `sustained`: issuance held for `BENCH_SUSTAINED_SECS` (120) at 8 clients on PostgreSQL:
//!   whether the rate holds as users and ledger records pile up, in 10 s windows;
//! - `ceiling`: reads of a role at 8 clients on mayfly's mount and on the built-in Redis
//!   engine's, beside the built-in engine's Redis issuance: what OpenBao's round trip to any
//!   external plugin costs, and so the most any external engine can issue;
//! - `footprint`: the plugin's cold start, respawn, idle RSS;
//! - `scale`: `BENCH_SCALE_RECORDS` (1,000,000) ledger records written straight into the
//!   mount's storage: the plugin's restart to serving, its RSS, and the memory per record.

mod report;
mod targets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mayfly_integration::bao::ROOT_TOKEN;
use mayfly_integration::load::{self, Run};
use mayfly_integration::{Bao, wait_until};
use serde_json::json;

use report::{Report, f1, ratio};
use targets::{Engine, Target, put};

struct Settings {
    scenarios: Vec<String>,
    targets: Vec<String>,
    rounds: usize,
    /// Credentials per issuance run (at least 20 per client).
    issue_n: usize,
    clients: Vec<usize>,
    expire_counts: Vec<usize>,
    sustained_secs: usize,
    scale_records: usize,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let nums = |name: &str, default: &str| -> Vec<usize> {
            list(name, default)
                .iter()
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|_| panic!("{name}: not a number: {s}"))
                })
                .collect()
        };
        Settings {
            scenarios: list(
                "BENCH_SCENARIOS",
                "issue,expiry,during,sustained,ceiling,footprint,scale",
            ),
            targets: list("BENCH_TARGETS", "postgres,mariadb,redis,rabbitmq"),
            rounds: nums("BENCH_ROUNDS", "3")[0],
            issue_n: nums("BENCH_ISSUE_COUNT", "1000")[0],
            clients: nums("BENCH_CLIENTS", "1,8,32"),
            expire_counts: nums("BENCH_EXPIRE_COUNTS", "2000,10000"),
            sustained_secs: nums("BENCH_SUSTAINED_SECS", "120")[0],
            scale_records: nums("BENCH_SCALE_RECORDS", "1000000")[0],
            out: PathBuf::from(
                std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench-report".into()),
            ),
        }
    }

    fn has(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

fn main() {
    let s = Settings::from_env();
    let plugin = std::env::var("MAYFLY_PLUGIN_BIN").unwrap_or_else(|_| "debug build".into());
    let mut report = Report::new(
        &s.out,
        &format!(
            "# mayfly vs OpenBao's built-in engines\n\nOne OpenBao 2.7.2 with both engines \
             mounted, the same targets and statements, {} alternating rounds, medians. \
             Plugin: `{plugin}`. Machine: {} cores.",
            s.rounds,
            cores()
        ),
    );
    if s.has("issue") {
        issuance(&s, &mut report);
    }
    if s.has("expiry") {
        expiry(&s, &mut report);
    }
    if s.has("during") {
        during(s.expire_counts[0], &mut report);
    }
    if s.has("sustained") {
        sustained(s.sustained_secs, &mut report);
    }
    if s.has("ceiling") {
        ceiling(s.rounds, &mut report);
    }
    if s.has("footprint") {
        footprint(&mut report);
    }
    if s.has("scale") {
        scale(s.scale_records, &mut report);
    }
    report.print();
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// One measured run and what it cost in CPU.
struct Measured {
    run: Run,
    /// The server's and mayfly's processes' together.
    cpu_ms_per_cred: f64,
    /// Mayfly's processes' share of it.
    plugin_cpu_ms_per_cred: f64,
    /// This driver's own CPU per credential: it shares the machine with what it measures.
    driver_cpu_ms_per_cred: f64,
    /// The whole machine's busy CPU per credential: the server, mayfly, the target's server,
    /// the driver and anything else. On two cores, 2,000 ms per second of the run means the
    /// machine was the limit.
    machine_cpu_ms_per_cred: f64,
}

/// CPU seconds of the server and of its mayfly processes.
fn cpu_now(bao: &Bao) -> (f64, f64) {
    let plugin = bao
        .plugin_pids()
        .iter()
        .map(|&p| load::cpu_seconds(p))
        .sum::<f64>();
    (load::cpu_seconds(bao.pid()), plugin)
}

/// The pause before each measured run, so that work the previous run left behind (mayfly's
/// delayed Redis ACL saves, either engine's lease bookkeeping) does not land in the next.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs `load` after the settle pause and measures what it cost.
fn measure(bao: &Bao, load: impl FnOnce() -> Run) -> Measured {
    std::thread::sleep(SETTLE);
    let before = cpu_now(bao);
    let driver_before = load::cpu_seconds(std::process::id() as i32);
    let machine_before = load::machine_cpu_seconds();
    let run = load();
    let machine_after = load::machine_cpu_seconds();
    let driver_after = load::cpu_seconds(std::process::id() as i32);
    let after = cpu_now(bao);
    let n = run.latencies_ms.len().max(1);
    let per_cred = |secs: f64| secs * 1000.0 / n as f64;
    Measured {
        run,
        cpu_ms_per_cred: per_cred(after.0 - before.0 + after.1 - before.1),
        plugin_cpu_ms_per_cred: per_cred(after.1 - before.1),
        driver_cpu_ms_per_cred: per_cred(driver_after - driver_before),
        machine_cpu_ms_per_cred: per_cred(machine_after - machine_before),
    }
}

/// Writes `role` (TTL 1 h) on `engine`'s mount and issues 20 of it, unmeasured, to warm up
/// pools and caches.
fn warmed_role(bao: &Bao, target: &Target, engine: Engine, role: &str) {
    target.role(bao, engine, role, 3600);
    load::issue_many(bao, ROOT_TOKEN, &target.creds_path(engine, role), 20, 4);
}

fn median_of(runs: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    load::median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn issuance(s: &Settings, report: &mut Report) {
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for name in &s.targets {
        let target = Target::start(name);
        let bao = Bao::with_mayfly();
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
            for round in 0..s.rounds {
                for engine in Engine::order(round) {
                    let path = target.creds_path(engine, role);
                    let m = measure(&bao, || {
                        load::issue_many(&bao, ROOT_TOKEN, &path, n, clients)
                    });
                    let dropped = target.drop_principals();
                    eprintln!(
                        "issue {name} clients={clients} round={round} {:<8} {:7.1}/s p50 {:6.1} \
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
                        "{name},{clients},{round},{},{:.2},{:.2},{:.2},{:.3},{:.3},{:.3}",
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
                &format!("latency-{name}-{clients}.csv"),
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
            ]);
        }
        target.clean(&bao);
    }
    report.csv(
        "issuance-rounds.csv",
        "target,clients,round,engine,rate,p50_ms,p99_ms,cpu_ms_per_cred,mayfly_cpu_ms_per_cred,\
         machine_cpu_ms_per_cred",
        raw,
    );
    report.table(
        "Issuance",
        &format!(
            "{} credentials per run (at least 20 per client), TTL 1 h, each run on a target holding \
             none of the previous runs' users. CPU is the server's plus \
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
        ],
        &rows,
    );
}

/// What one mass expiry showed.
struct Expiry {
    /// Seconds the issuance took (the spread of the deadlines).
    window: f64,
    /// From the last deadline until no user was left.
    gone_after: f64,
    /// (seconds relative to the last deadline, live users).
    curve: Vec<(f64, usize)>,
}

/// Issues `count` credentials of `role` (default TTL `ttl`) at 32 clients; returns the moment
/// the last of them expires and how long issuing took.
fn issue_expiring(
    bao: &Bao,
    target: &Target,
    engine: Engine,
    role: &str,
    count: usize,
    ttl: u64,
) -> (Instant, f64) {
    target.role(bao, engine, role, ttl);
    let start = Instant::now();
    load::issue_many(bao, ROOT_TOKEN, &target.creds_path(engine, role), count, 32);
    let window = start.elapsed().as_secs_f64();
    assert!(
        window < ttl as f64,
        "{}: issuing {count} took {window:.0}s, longer than the TTL {ttl}s",
        engine.label()
    );
    (Instant::now() + Duration::from_secs(ttl), window)
}

/// Samples the live users of `role` every 250 ms until none is left (20 minutes at most).
fn watch_expiry(target: &Target, engine: Engine, role: &str, last: Instant) -> Expiry {
    let mut curve = Vec::new();
    let rel = |t: Instant| {
        if t >= last {
            t.duration_since(last).as_secs_f64()
        } else {
            -last.duration_since(t).as_secs_f64()
        }
    };
    loop {
        let now = Instant::now();
        let live = target.live(engine, role);
        curve.push((rel(now), live));
        if live == 0 && now > last {
            return Expiry {
                window: 0.0,
                gone_after: rel(now),
                curve,
            };
        }
        assert!(
            rel(now) < 1200.0,
            "{}: {live} users still there 20 minutes after expiry",
            engine.label()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A TTL long enough to issue `count` at 40/s or faster before the first expires.
fn expiry_ttl(count: usize) -> u64 {
    count as u64 / 40 + 30
}

fn expiry(s: &Settings, report: &mut Report) {
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for &count in &s.expire_counts {
        let target = Target::start("postgres");
        let bao = Bao::with_mayfly();
        target.configure(&bao);
        let mut gone = [0.0; 2];
        for engine in [Engine::Mayfly, Engine::Builtin] {
            let role = format!("e{count}");
            let (last, window) =
                issue_expiring(&bao, &target, engine, &role, count, expiry_ttl(count));
            assert_eq!(target.live(engine, &role), count);
            // Sample from 10 s before the first deadline: the curve shows the whole fall.
            let first = last - Duration::from_secs_f64(window);
            let watch_from = first.checked_sub(Duration::from_secs(10)).unwrap_or(first);
            while Instant::now() < watch_from {
                std::thread::sleep(Duration::from_millis(100));
            }
            let e = Expiry {
                window,
                ..watch_expiry(&target, engine, &role, last)
            };
            eprintln!(
                "expiry {count} {:<8} issued over {:.1}s, gone {:.1}s after the last deadline",
                engine.label(),
                e.window,
                e.gone_after
            );
            curves.extend(
                e.curve
                    .iter()
                    .map(|(t, n)| format!("{count},{},{t:.2},{n}", engine.label())),
            );
            gone[engine as usize] = e.gone_after;
            rows.push(vec![
                count.to_string(),
                engine.label().into(),
                f1(e.window),
                f1(e.gone_after),
            ]);
        }
        let n = rows.len();
        rows[n - 2].push(String::new());
        rows[n - 1].push(format!(
            "**mayfly {} faster**",
            ratio(gone[1], gone[0].max(0.25))
        ));
    }
    report.csv(
        "expiry-curve.csv",
        "count,engine,t_after_last_deadline,live",
        curves,
    );
    report.table(
        "Mass expiry",
        "PostgreSQL; each engine's default revocation; credentials issued at 32 clients with the \
         role's TTL, so their deadlines spread over the issuance window. The time is from the \
         last deadline until `pg_roles` holds none of them (sampled every 250 ms).",
        &[
            "credentials",
            "engine",
            "issued over s",
            "all gone s after last deadline",
            "ratio",
        ],
        &rows,
    );
}

/// Issuance while `count` credentials (the first of `BENCH_EXPIRE_COUNTS`) expire.
fn during(count: usize, report: &mut Report) {
    let target = Target::start("postgres");
    let bao = Bao::with_mayfly();
    target.configure(&bao);
    let mut rows = Vec::new();
    let mut rates = [0.0; 2];
    for engine in [Engine::Mayfly, Engine::Builtin] {
        warmed_role(&bao, &target, engine, "live");
        let (last, window) =
            issue_expiring(&bao, &target, engine, "bulk", count, expiry_ttl(count));
        let first = last - Duration::from_secs_f64(window);
        while Instant::now() < first {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Issue from the first deadline until 5 s after the last.
        let run = load::issue_for(
            &bao,
            ROOT_TOKEN,
            &target.creds_path(engine, "live"),
            8,
            window + 5.0,
        );
        let left = target.live(engine, "bulk");
        let done = wait_until(1200.0, || target.live(engine, "bulk") == 0);
        assert!(done, "{}: expired users left", engine.label());
        eprintln!(
            "during {:<8} {:7.1}/s p99 {:6.1} ms ({left} of {count} still there when it ended)",
            engine.label(),
            run.rate,
            run.p99_ms
        );
        rates[engine as usize] = run.rate;
        rows.push(vec![
            engine.label().into(),
            f1(run.rate),
            f1(run.p50_ms),
            f1(run.p99_ms),
            left.to_string(),
        ]);
    }
    rows[1].push(format!("**{}**", ratio(rates[0], rates[1])));
    rows[0].push(String::new());
    report.table(
        "Issuance during a mass expiry",
        &format!(
            "{count} credentials expire (PostgreSQL); 8 clients issue on another role from the \
             first deadline until 5 s after the last."
        ),
        &[
            "engine",
            "creds/s",
            "p50 ms",
            "p99 ms",
            "expired users still there at the end",
            "mayfly/built-in",
        ],
        &rows,
    );
}

/// The width of the windows a sustained run's rate is measured in.
const WINDOW_SECS: usize = 10;

/// Issuance held for `secs` seconds at 8 clients on PostgreSQL, twice per engine (each engine
/// first once), TTL 1 h so that nothing expires meanwhile. A burst of 1,000 cannot show work
/// that grows with what a run leaves behind (users on the target, records in the ledger, leases
/// in the server) or that is deferred past the burst; minutes of it can.
fn sustained(secs: usize, report: &mut Report) {
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
                load::issue_for(&bao, ROOT_TOKEN, &path, 8, secs as f64)
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

/// Reads of the role, and the built-in engine's issuances, per run in [`ceiling`].
const CEILING_READS: usize = 5000;
const CEILING_ISSUES: usize = 1000;

/// `ceiling`: what OpenBao's round trip to an external plugin costs, apart from any target.
/// Each engine's role is read at 8 clients: mayfly answers from its plugin process (a gRPC
/// request from the server, two storage reads back), the built-in Redis engine from inside the
/// server. The built-in engine's Redis issuance runs beside them. An issuance through mayfly
/// is such a request and more (storage writes, a lease, the target's work), so mayfly's read
/// rate bounds what it can issue on any target, on this machine.
fn ceiling(rounds: usize, report: &mut Report) {
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
                load::issue_many(&bao, ROOT_TOKEN, &roles, CEILING_READS, clients)
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
            load::issue_many(&bao, ROOT_TOKEN, &creds, CEILING_ISSUES, clients)
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

fn footprint(report: &mut Report) {
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

/// `count` active ledger records, deadlines spread evenly over the next 30 days (from 2 h
/// on), written with the due-index entry each through the server's raw storage endpoint, as
/// issuance would have left them; then the plugin is restarted.
fn scale(count: usize, report: &mut Report) {
    let dir = mayfly_integration::scratch_dir("bench-raw");
    let config = dir.join("raw.hcl");
    std::fs::write(&config, "raw_storage_endpoint = true\n").unwrap();
    let flag = format!("-config={}", config.display());
    let bao = Bao::start_with(&[flag.as_str()]);
    bao.register();
    bao.enable("mayfly");
    let empty_respawn = load::median(&(0..3).map(|_| respawn_ms(&bao)).collect::<Vec<_>>());
    let empty_rss = settled_rss_mib(&bao);
    let (_, mounts) = bao.get("sys/mounts");
    let uuid = mounts["data"]["mayfly/"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let prefix = format!("sys/raw/logical/{uuid}/ledger");
    let now = mayfly_integration::creds::now();
    let (first, span) = (now + 7200, 30 * 86400 - 7200);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let id = format!("scale{i:015}");
                    let deadline = first + (i as u64 * span as u64) / count as u64;
                    let record = json!({
                    "id": id, "role": "app", "connection": "db",
                    "principal": format!("mf-app-scale-{i:015}"), "state": "active",
                    "created_at": now, "deadline": deadline, "max_deadline": deadline,
                    "default_ttl": 3600, "due": deadline,
                    "requester": {"entity_id": "", "token_accessor": "acc", "display_name": "bench",
                                  "remote_addr": "127.0.0.1"},
                    "settings": {}});
                    let bucket = deadline / 60;
                    put(
                        &bao,
                        &format!("{prefix}/due/{bucket:012}/{deadline:012}_{id}"),
                        json!({"value": ""}),
                    );
                    put(
                        &bao,
                        &format!("{prefix}/creds/{id}"),
                        json!({"value": record.to_string()}),
                    );
                    if (i + 1).is_multiple_of(100_000) {
                        eprintln!(
                            "scale: {} records written in {:.0}s",
                            i + 1,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let written_in = started.elapsed().as_secs_f64();
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
