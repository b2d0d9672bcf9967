//! What every scenario measures with: a load run with the server's and the plugin's CPU
//! time around it, and medians over rounds.

use std::time::Duration;

use mayfly_integration::Bao;
use mayfly_integration::load::{self, Run};

use crate::targets::{Engine, Target};

/// One measured run and what it cost in CPU.
pub struct Measured {
    pub run: Run,
    /// The server's and mayfly's processes' together.
    pub cpu_ms_per_cred: f64,
    /// Mayfly's processes' share of it.
    pub plugin_cpu_ms_per_cred: f64,
    /// This driver's own CPU per credential: it shares the machine with what it measures.
    pub driver_cpu_ms_per_cred: f64,
    /// The whole machine's busy CPU per credential: the server, mayfly, the target's server,
    /// the driver and anything else. On two cores, 2,000 ms per second of the run means the
    /// machine was the limit.
    pub machine_cpu_ms_per_cred: f64,
}

/// CPU seconds of the server and of its mayfly processes.
pub fn cpu_now(bao: &Bao) -> (f64, f64) {
    let plugin = bao
        .plugin_pids()
        .iter()
        .map(|&p| load::cpu_seconds(p))
        .sum::<f64>();
    (load::cpu_seconds(bao.pid()), plugin)
}

/// The pause before each measured run, so that work the previous run left behind (mayfly's
/// delayed Redis ACL saves, either engine's lease bookkeeping) does not land in the next.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Runs `load` after the settle pause and measures what it cost.
pub fn measure(bao: &Bao, load: impl FnOnce() -> Run) -> Measured {
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
pub fn warmed_role(bao: &Bao, target: &Target, engine: Engine, role: &str) {
    target.role(bao, engine, role, 3600);
    load::issue_many(
        bao,
        bao.root_token(),
        &target.creds_path(engine, role),
        20,
        4,
    );
}

pub fn median_of(runs: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    load::median(&runs.iter().map(f).collect::<Vec<_>>())
}
