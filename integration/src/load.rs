//! Load for the benchmarks: many issuances from concurrent clients, with their latencies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::Bao;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Run {
    /// Issued per second.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Every request's latency in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    /// When each request completed, in seconds from the run's start, sorted.
    pub done_s: Vec<f64>,
}

impl Run {
    fn of(requests: Vec<(f64, f64)>, secs: f64) -> Run {
        let (mut latencies_ms, mut done_s): (Vec<f64>, Vec<f64>) = requests.into_iter().unzip();
        latencies_ms.sort_by(f64::total_cmp);
        done_s.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let n = latencies_ms.len();
            if n == 0 {
                return 0.0;
            }
            latencies_ms[((n as f64 * p) as usize).min(n - 1)]
        };
        Run {
            rate: latencies_ms.len() as f64 / secs.max(1e-9),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            latencies_ms,
            done_s,
        }
    }

    /// Issued per second among the requests that completed from `from` to `to` seconds into
    /// the run.
    pub fn rate_between(&self, from: f64, to: f64) -> f64 {
        let done = self
            .done_s
            .iter()
            .filter(|t| (from..to).contains(*t))
            .count();
        done as f64 / (to - from).max(1e-9)
    }
}

/// Reads `path` `n` times as `token` from `clients` threads; every read must issue (200).
pub fn issue_many(bao: &Bao, token: &str, path: &str, n: usize, clients: usize) -> Run {
    let next = AtomicUsize::new(0);
    issue_while(bao, token, path, clients, || {
        next.fetch_add(1, Ordering::SeqCst) < n
    })
}

/// Reads `path` from `clients` threads for `secs` seconds; every read must issue (200).
pub fn issue_for(bao: &Bao, token: &str, path: &str, clients: usize, secs: f64) -> Run {
    let end = Instant::now() + std::time::Duration::from_secs_f64(secs);
    issue_while(bao, token, path, clients, || Instant::now() < end)
}

fn issue_while(
    bao: &Bao,
    token: &str,
    path: &str,
    clients: usize,
    more: impl Fn() -> bool + Sync,
) -> Run {
    let start = Instant::now();
    let requests: Vec<(f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while more() {
                        let t = Instant::now();
                        let (status, body) = bao.request_as(token, "GET", path, None);
                        assert_eq!(status, 200, "{path}: {body}");
                        let latency_ms = t.elapsed().as_secs_f64() * 1000.0;
                        mine.push((latency_ms, start.elapsed().as_secs_f64()));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    Run::of(requests, start.elapsed().as_secs_f64())
}

/// The median of `values`.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The resident set size of process `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds the whole machine has spent busy so far, every core and process together (the
/// targets' servers, the driver, anything else), from `/proc/stat`: user, nice, system, irq,
/// softirq and steal time.
pub fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy / clock_ticks_per_second()
}

/// The unit of `/proc`'s CPU times.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    per_second.max(1.0)
}

/// CPU seconds (user and system) process `pid` has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own busy work shows in the machine's count and in its own.
    #[test]
    fn cpu_counters_see_a_busy_loop() {
        let (machine, own) = (
            machine_cpu_seconds(),
            cpu_seconds(std::process::id() as i32),
        );
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let machine_spent = machine_cpu_seconds() - machine;
        let own_spent = cpu_seconds(std::process::id() as i32) - own;
        assert!(
            own_spent >= 0.15,
            "own CPU {own_spent} s after a 0.3 s busy loop"
        );
        assert!(
            machine_spent >= 0.15,
            "machine CPU {machine_spent} s after a 0.3 s busy loop"
        );
    }
}
