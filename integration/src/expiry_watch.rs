//! Watches the users of a PostgreSQL server for when each one disappears, against its
//! `VALID UNTIL`: mayfly and OpenBao's own `database` engine both set it to the lease's end
//! and move it on renewal, so it is the deadline the user had when it was dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::PrivatePostgres;
use crate::postgres::{SUPERUSER, SUPERUSER_PASSWORD};

/// How often the server's users are read.
const EVERY: Duration = Duration::from_millis(250);

/// What the watch saw of one user. Times are Unix seconds, fractional.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    /// Its `VALID UNTIL` when last seen.
    pub deadline: f64,
    /// The first look that no longer found it; `None` while it exists.
    pub gone_at: Option<f64>,
}

/// A thread that reads the users whose names start with one of the prefixes, until stopped.
pub struct ExpiryWatch {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Seconds since the Unix epoch, fractional.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl ExpiryWatch {
    pub fn start(pg: &PrivatePostgres, prefixes: &[&str]) -> ExpiryWatch {
        let filter = prefixes
            .iter()
            .map(|p| format!("starts_with(rolname, '{p}')"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT rolname || ' ' || coalesce(extract(epoch FROM rolvaliduntil), 0) \
             FROM pg_roles WHERE {filter}"
        );
        let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let psql = pg.psql();
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = now();
                    // A failed read (the server busy) says nothing: skipped.
                    if let Ok(out) = psql.run_as(SUPERUSER, SUPERUSER_PASSWORD, &sql) {
                        let present: BTreeMap<&str, f64> = out
                            .lines()
                            .filter_map(|l| l.split_once(' '))
                            .map(|(name, until)| (name, until.parse().unwrap_or(0.0)))
                            .collect();
                        let mut seen = seen.lock().unwrap();
                        for (name, deadline) in &present {
                            seen.insert(
                                (*name).to_owned(),
                                Seen {
                                    deadline: *deadline,
                                    gone_at: None,
                                },
                            );
                        }
                        for (name, s) in seen.iter_mut() {
                            if s.gone_at.is_none() && !present.contains_key(name.as_str()) {
                                s.gone_at = Some(at);
                            }
                        }
                    }
                    std::thread::sleep(EVERY);
                }
            })
        };
        ExpiryWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// What was seen so far, by user name.
    pub fn seen(&self) -> BTreeMap<String, Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ExpiryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How late a user was dropped: from its deadline, or, where the deadline fell inside one of
/// the `gaps` (start, end) when nothing could act (a failover), from the gap's end. `None`
/// while it exists.
pub fn lateness(seen: &Seen, gaps: &[(f64, f64)]) -> Option<f64> {
    let gone = seen.gone_at?;
    let from = gaps
        .iter()
        .find(|(start, end)| (*start..=*end).contains(&seen.deadline))
        .map_or(seen.deadline, |(_, end)| *end);
    Some(gone - from)
}

/// (median, maximum) of `values`; (0, 0) when empty.
pub fn median_and_max(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[values.len() - 1])
}
