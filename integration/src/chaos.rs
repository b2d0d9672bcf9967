//! The chaos suite: a steady issuance load with short TTLs and tasks (and, now and then, a
//! credential that outlives the ledger's 90 s intent grace) runs while faults hit every
//! layer at random moments (the plugin SIGKILLed, OpenBao SIGKILLed and restarted, PostgreSQL
//! stopped and started, the plugin reloaded). Then the load stops, everything is left to expire,
//! and the target is scanned: a principal carrying mayfly's mark that outlives its deadline by
//! more than one backoff interval is a survivor, and there must be none.
//!
//! A sampler reads `pg_roles` twice a second throughout, so the report also says how late the
//! latest revocation came, measured from the later of the deadline and the end of the last fault
//! (nothing can be revoked while the target, the server or the plugin is down).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::postgres::{SUPERUSER, SUPERUSER_PASSWORD};
use crate::{Bao, PrivatePostgres, wait_until};

/// What a scan waits past a deadline or a retry: the sampler's period and a scheduler pass.
const SLACK_SECS: f64 = 3.0;

/// How long after issuance the ledger looks at a credential's intent (mayfly's
/// `INTENT_GRACE_SECS`). Only a TTL past it gives the intent and the deadline index entries of
/// their own: an issuance writes the second, then removes the first, and a fault in between
/// leaves the scheduler a stale entry to drop.
const INTENT_GRACE_SECS: u64 = 90;

/// What a run does; [`Settings::from_env`] reads `CHAOS_CYCLES`, `CHAOS_SEED`, `CHAOS_CLIENTS`,
/// `CHAOS_LONG_TTL`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Faults injected, one per cycle.
    pub cycles: usize,
    pub seed: u64,
    /// Concurrent load clients.
    pub clients: usize,
    /// The longest TTL a credential is asked for, in seconds; tasks live as long at most.
    pub max_ttl: u64,
    /// One issuance in [`LONG_ONE_IN`] without a task asks for a TTL from past the intent grace
    /// up to this (0: none do).
    pub long_ttl: u64,
}

/// How rare a long-lived credential is among issuances without a task.
pub const LONG_ONE_IN: u32 = 20;

impl Settings {
    pub fn from_env(default_cycles: usize) -> Settings {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = var("CHAOS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
        Settings {
            cycles: var("CHAOS_CYCLES").map_or(default_cycles, |v| v as usize),
            seed,
            clients: var("CHAOS_CLIENTS").map_or(3, |v| v as usize),
            max_ttl: 12,
            long_ttl: {
                let long = var("CHAOS_LONG_TTL").unwrap_or(120);
                assert!(
                    long == 0 || long > INTENT_GRACE_SECS,
                    "CHAOS_LONG_TTL must be 0 (none) or more than {INTENT_GRACE_SECS} s"
                );
                long
            },
        }
    }

    /// The longest a credential may live.
    fn longest_ttl(&self) -> u64 {
        self.max_ttl.max(self.long_ttl)
    }
}

/// The faults, one of which each cycle injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL every mayfly process; the host respawns it on the next request.
    KillPlugin,
    /// SIGKILL OpenBao alone (the plugin must notice), then start and unseal it again.
    KillServer,
    /// Stop PostgreSQL at once for 1 to 5 s, then start it again.
    StopTarget,
    /// `plugin reload`: the host stops the process cleanly and starts a new one.
    ReloadPlugin,
}

const FAULTS: [Fault; 4] = [
    Fault::KillPlugin,
    Fault::KillServer,
    Fault::StopTarget,
    Fault::ReloadPlugin,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillPlugin => "plugin SIGKILL",
            Fault::KillServer => "OpenBao SIGKILL + restart",
            Fault::StopTarget => "PostgreSQL stop + start",
            Fault::ReloadPlugin => "plugin reload",
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub cycles: usize,
    pub faults: BTreeMap<&'static str, usize>,
    /// Credentials handed out (200 answers to `creds/ROLE`).
    pub issued: usize,
    /// Of those, the ones whose TTL outlived the intent grace.
    pub issued_long: usize,
    /// Requests of the load that failed (most during a fault).
    pub failed_requests: usize,
    pub tasks_created: usize,
    pub tasks_ended: usize,
    pub leases_revoked: usize,
    pub leases_renewed: usize,
    /// Distinct principals with mayfly's mark the sampler saw on the target.
    pub principals_seen: usize,
    /// The latest a principal was still seen, past the later of its deadline and the end of the
    /// last fault before the sighting (seconds).
    pub max_late_secs: f64,
    /// The principal behind `max_late_secs`.
    pub latest: String,
    /// From the end of the faults (or the last deadline, if later) until no principal was left.
    pub settle_secs: f64,
    /// How long the scan waited past the last deadline: the slack, or the next attempt of a
    /// revocation that was failing (one backoff interval), plus the slack.
    pub grace_secs: f64,
    /// Principals still on the target after the grace: must be empty.
    pub survivors: Vec<String>,
    /// Ledger records not `revoked` once everything has expired: must be empty.
    pub live_records: Vec<String>,
    pub elapsed_secs: f64,
}

impl Report {
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "chaos seed={} cycles={} faults=[{}] issued={} (long-lived {}) failed_requests={} \
             tasks={}/{} ended \
             revoked_early={} renewed={} principals_seen={} max_late={:.1}s ({}) settle={:.1}s \
             grace={:.1}s survivors={} live_records={} elapsed={:.0}s",
            self.seed,
            self.cycles,
            faults.join(", "),
            self.issued,
            self.issued_long,
            self.failed_requests,
            self.tasks_created,
            self.tasks_ended,
            self.leases_revoked,
            self.leases_renewed,
            self.principals_seen,
            self.max_late_secs,
            self.latest,
            self.settle_secs,
            self.grace_secs,
            self.survivors.len(),
            self.live_records.len(),
            self.elapsed_secs,
        )
    }
}

/// Seconds since the Unix epoch, fractional.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// When faults were under way: (start, end) in Unix seconds; an open fault has no end yet.
#[derive(Default)]
struct Faults(Mutex<Vec<(f64, Option<f64>)>>);

impl Faults {
    fn begin(&self) -> usize {
        let mut f = self.0.lock().unwrap();
        f.push((now(), None));
        f.len() - 1
    }

    fn end(&self, i: usize) {
        self.0.lock().unwrap()[i].1 = Some(now());
    }

    /// The time revocation could resume from, as seen at `t`: the end of the last fault that
    /// ended before `t`, or `None` while a fault is under way.
    fn clear_since(&self, t: f64) -> Option<f64> {
        let f = self.0.lock().unwrap();
        let mut since = 0.0_f64;
        for &(start, end) in f.iter().filter(|(start, _)| *start <= t) {
            match end {
                None => return None,
                Some(e) if e > t => return None,
                Some(e) => since = since.max(e.max(start)),
            }
        }
        Some(since)
    }
}

/// What the sampler knows of one principal.
struct Seen {
    deadline: f64,
    late: f64,
}

#[derive(Default)]
struct Sampler {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Sampler {
    /// The principals with mayfly's mark and their `VALID UNTIL` (mayfly always sets it to the
    /// deadline, and moves it on renew); `None` while PostgreSQL is down.
    fn read(pg: &PrivatePostgres) -> Option<Vec<(String, f64)>> {
        let out = pg
            .psql_as(
                SUPERUSER,
                SUPERUSER_PASSWORD,
                "SELECT rolname || ' ' || coalesce(extract(epoch FROM rolvaliduntil), 0) \
                 FROM pg_roles WHERE starts_with(rolname, 'mf-')",
            )
            .ok()?;
        Some(
            out.lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(name, until)| (name.to_owned(), until.parse().unwrap_or(0.0)))
                .collect(),
        )
    }

    fn sample(&self, pg: &PrivatePostgres, faults: &Faults) -> Option<usize> {
        let t = now();
        let roles = Self::read(pg)?;
        let clear = faults.clear_since(t);
        let mut seen = self.seen.lock().unwrap();
        for (name, deadline) in &roles {
            let entry = seen.entry(name.clone()).or_insert(Seen {
                deadline: *deadline,
                late: f64::MIN,
            });
            entry.deadline = *deadline;
            if let Some(since) = clear {
                entry.late = entry.late.max(t - entry.deadline.max(since));
            }
        }
        Some(roles.len())
    }
}

/// Counters of the load.
#[derive(Default)]
struct Load {
    issued: AtomicUsize,
    issued_long: AtomicUsize,
    failed: AtomicUsize,
    tasks_created: AtomicUsize,
    tasks_ended: AtomicUsize,
    revoked: AtomicUsize,
    renewed: AtomicUsize,
}

impl Load {
    fn count(&self, ok: bool, what: &AtomicUsize) {
        if ok {
            what.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One client: issues credentials with short TTLs, some under short tasks, and now and then
    /// ends a task, revokes a lease or renews one, until `stop`.
    fn client(&self, bao: &RwLock<Bao>, seed: u64, settings: &Settings, stop: &AtomicBool) {
        let max_ttl = settings.max_ttl;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tasks: Vec<String> = Vec::new();
        let mut leases: Vec<String> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let bao = bao.read().unwrap();
            let roll = rng.random_range(0..100);
            let ttl = rng.random_range(2..=max_ttl);
            match roll {
                0..8 => {
                    let (status, body) = bao.put("mayfly/tasks", json!({"ttl": ttl}));
                    if let Some(id) = body["data"]["task_id"].as_str() {
                        tasks.push(id.to_owned());
                    }
                    self.count(status == 200, &self.tasks_created);
                }
                8..12 if !tasks.is_empty() => {
                    let id = tasks.swap_remove(rng.random_range(0..tasks.len()));
                    let (status, _) = bao.delete(&format!("mayfly/tasks/{id}"));
                    self.count(status == 200, &self.tasks_ended);
                }
                12..18 if !leases.is_empty() => {
                    let id = leases.swap_remove(rng.random_range(0..leases.len()));
                    let (status, _) = bao.put("sys/leases/revoke", json!({"lease_id": id}));
                    self.count(status == 204, &self.revoked);
                }
                18..24 if !leases.is_empty() => {
                    let id = &leases[rng.random_range(0..leases.len())];
                    let (status, _) = bao.put(
                        "sys/leases/renew",
                        json!({"lease_id": id, "increment": ttl}),
                    );
                    self.count(status == 200, &self.renewed);
                }
                _ => {
                    let mut body = json!({"ttl": ttl});
                    let long = if roll < 50 && !tasks.is_empty() {
                        body["task_id"] = json!(tasks[rng.random_range(0..tasks.len())]);
                        false
                    } else if settings.long_ttl > 0 && rng.random_ratio(1, LONG_ONE_IN) {
                        let ttl = rng.random_range(INTENT_GRACE_SECS + 1..=settings.long_ttl);
                        body["ttl"] = json!(ttl);
                        true
                    } else {
                        false
                    };
                    let (status, resp) = bao.put("mayfly/creds/app", body);
                    if let Some(id) = resp["lease_id"].as_str() {
                        leases.push(id.to_owned());
                    }
                    self.count(status == 200, &self.issued);
                    if long && status == 200 {
                        self.issued_long.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Keep the lists short: old entries have expired anyway.
            if leases.len() > 50 {
                leases.drain(..25);
            }
            if tasks.len() > 10 {
                tasks.drain(..5);
            }
            drop(bao);
            std::thread::sleep(Duration::from_millis(rng.random_range(10..60)));
        }
    }
}

/// Waits until the mount answers again after a fault (a request also respawns a dead plugin, as
/// the steady load would).
fn wait_serving(bao: &Bao) {
    let up = wait_until(60.0, || bao.get("mayfly/config/db").0 == 200);
    assert!(
        up,
        "mayfly did not serve again after a fault\n{}",
        bao.log()
    );
}

fn inject(fault: Fault, bao: &RwLock<Bao>, pg: &PrivatePostgres, rng: &mut StdRng) {
    match fault {
        Fault::KillPlugin => {
            bao.read().unwrap().kill_plugins();
        }
        Fault::KillServer => bao.write().unwrap().crash_and_restart(),
        Fault::StopTarget => {
            pg.halt();
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..5000)));
            pg.resume();
        }
        Fault::ReloadPlugin => {
            let status = bao.read().unwrap().reload_plugin();
            assert!(status < 300, "plugin reload answered {status}");
        }
    }
    wait_serving(&bao.read().unwrap());
}

/// One run: OpenBao with raft storage (so a restart keeps the mount), mayfly mounted, a private
/// PostgreSQL, then the load and `settings.cycles` faults, then the scan.
pub fn run(settings: &Settings) -> Report {
    let started = Instant::now();
    let pg = PrivatePostgres::start();
    let bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    pg.admin("CREATE ROLE app_readers NOLOGIN");
    let (status, body) = bao.put("mayfly/config/db", pg.connection("postgres"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = bao.put(
        "mayfly/roles/app",
        json!({"db_name": "db", "member_of": "app_readers", "default_ttl": 5,
               "max_ttl": settings.longest_ttl()}),
    );
    assert!(status < 300, "{body}");
    let (status, body) = bao.put(
        "mayfly/config/tasks",
        json!({"max_task_ttl": settings.max_ttl, "default_task_ttl": 5}),
    );
    assert!(status < 300, "{body}");

    let bao = RwLock::new(bao);
    let (load, sampler, faults) = (Load::default(), Sampler::default(), Faults::default());
    let stop_load = AtomicBool::new(false);
    let stop_sampler = AtomicBool::new(false);
    let mut report = Report {
        seed: settings.seed,
        cycles: settings.cycles,
        ..Report::default()
    };
    let mut rng = StdRng::seed_from_u64(settings.seed);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop_sampler.load(Ordering::Relaxed) {
                sampler.sample(&pg, &faults);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let clients: Vec<_> = (0..settings.clients)
            .map(|i| {
                let (load, bao, stop) = (&load, &bao, &stop_load);
                let seed = settings.seed.wrapping_add(1 + i as u64);
                s.spawn(move || load.client(bao, seed, settings, stop))
            })
            .collect();
        for cycle in 0..settings.cycles {
            std::thread::sleep(Duration::from_millis(rng.random_range(200..2500)));
            let fault = FAULTS[rng.random_range(0..FAULTS.len())];
            let i = faults.begin();
            inject(fault, &bao, &pg, &mut rng);
            faults.end(i);
            *report.faults.entry(fault.name()).or_default() += 1;
            if (cycle + 1).is_multiple_of(10) {
                eprintln!("chaos: {} cycles, {:?}", cycle + 1, report.faults);
            }
        }
        stop_load.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        let healed_at = now();
        // Every deadline is at most the longest TTL away (renewals are capped by the role's
        // max_ttl too). A revocation that failed is tried again after one backoff interval:
        // while a principal is left, the scan waits for the next attempt of the failing
        // revocations (a few times: one that keeps failing leaves a survivor). Each wait has
        // the sampler's period and a scheduler pass on top.
        let bao = bao.read().unwrap();
        let settle_from = healed_at + settings.longest_ttl() as f64;
        let mut scan_at = settle_from + SLACK_SECS;
        let mut settled = None;
        for _ in 0..5 {
            while now() < scan_at {
                if settled.is_none()
                    && now() > settle_from
                    && Sampler::read(&pg).is_some_and(|r| r.is_empty())
                {
                    settled = Some(now());
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            if Sampler::read(&pg).is_some_and(|r| r.is_empty()) {
                break;
            }
            match failing_next_attempt(&bao) {
                Some(t) if t + SLACK_SECS > now() => scan_at = t + SLACK_SECS,
                _ => break,
            }
        }
        report.grace_secs = scan_at - settle_from;
        report.settle_secs = settled.map_or(f64::NAN, |t| (t - settle_from).max(0.0));
        stop_sampler.store(true, Ordering::Relaxed);
    });
    let bao = bao.into_inner().unwrap();
    report.survivors = Sampler::read(&pg)
        .expect("PostgreSQL is up for the scan")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    report.live_records = live_records(&bao);
    report.issued = load.issued.into_inner();
    report.issued_long = load.issued_long.into_inner();
    report.failed_requests = load.failed.into_inner();
    report.tasks_created = load.tasks_created.into_inner();
    report.tasks_ended = load.tasks_ended.into_inner();
    report.leases_revoked = load.revoked.into_inner();
    report.leases_renewed = load.renewed.into_inner();
    let seen = sampler.seen.into_inner().unwrap();
    report.principals_seen = seen.len();
    if let Some((name, s)) = seen.iter().max_by(|a, b| a.1.late.total_cmp(&b.1.late)) {
        report.max_late_secs = s.late.max(0.0);
        report.latest = name.clone();
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    if !report.survivors.is_empty() || !report.live_records.is_empty() {
        eprintln!("chaos: server log:\n{}", bao.log());
    }
    report
}

/// The latest `next_attempt_at` among the revocations now failing, in Unix seconds.
fn failing_next_attempt(bao: &Bao) -> Option<f64> {
    let (_, list) = bao.list("mayfly/revocations/");
    list["data"]["key_info"]
        .as_object()?
        .values()
        .filter_map(|v| v["next_attempt_at"].as_f64())
        .reduce(f64::max)
}

/// Ledger records whose state is not `revoked`, as `id: state`.
fn live_records(bao: &Bao) -> Vec<String> {
    let (status, list) = bao.list("mayfly/leases/");
    assert!(status == 200 || status == 404, "leases/: {status} {list}");
    list["data"]["key_info"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v["state"] != "revoked")
                .map(|(k, v)| format!("{k}: {}", v["state"]))
                .collect()
        })
        .unwrap_or_default()
}
