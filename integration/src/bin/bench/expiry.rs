//! `expiry` and `during`: many credentials expiring together, and issuance meanwhile.

use std::time::{Duration, Instant};

use mayfly_integration::load::{self};
use mayfly_integration::{Bao, wait_until};

use crate::Settings;
use crate::measure::warmed_role;
use crate::report::{Report, f1, ratio};
use crate::targets::{Engine, Target};

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
    load::issue_many(
        bao,
        bao.root_token(),
        &target.creds_path(engine, role),
        count,
        32,
    );
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

pub fn expiry(s: &Settings, report: &mut Report) {
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
pub fn during(count: usize, report: &mut Report) {
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
            bao.root_token(),
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
