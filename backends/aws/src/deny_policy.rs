//! The inline policy that revokes STS sessions: AWS cannot end a session early, but a Deny on
//! the role (or user) the session belongs to stops every call it makes.
//!
//! Sessions are matched by `aws:userid`, which is `ROLE_ID:SESSION_NAME` for an assumed role
//! and `ACCOUNT:NAME` for a federated user, so `*:NAME` names exactly one session of mayfly's
//! (each name carries its credential id). Sessions are grouped into one statement per hour in
//! which they expire (Sid `MayflyUntil<unix time>`), which lets any later edit drop statements
//! whose sessions have all expired, even if mayfly lost track of them. Statements that are not
//! mayfly's are kept as they are.
//!
//! IAM bounds a holder's inline policies (10,240 characters in all for a role, 2,048 for a
//! user): a few hundred names for a role, about fifty for a user. When the names no longer fit,
//! [`DenyPolicy::fit`] folds them into windows: one statement denies every session of the
//! mount (`aws:userid` `*:<mount mark>*`) issued between two times (`aws:TokenIssueTime`),
//! drawn so that no live session of the mount was issued within it. Only when even the windows
//! do not fit does a window span live sessions: those are reported, and the mount revokes
//! them, so nothing revoked ever works again and the ledger says which live ones stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_sts::primitives::{DateTime, DateTimeFormat};
use serde_json::{Value, json};

/// The inline policy's name on the role or user.
pub const POLICY_NAME: &str = "mayfly-revoked-sessions";
const SID_PREFIX: &str = "MayflyUntil";
const WINDOW_SID_PREFIX: &str = "MayflyWindow";
const GROUP_SECS: u64 = 3600;
const ISSUE_TIME: &str = "aws:TokenIssueTime";
/// How far mayfly's clock and AWS's may disagree.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// An interval of issue times, inclusive, in unix seconds of AWS's clock.
pub type Span = (u64, u64);

/// Every session of one mount (its names begin with `mark`) issued within `from..=to` is
/// denied until `until`. `from` 0 means since ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub mark: String,
    pub from: u64,
    pub to: u64,
    pub until: u64,
}

/// What the mount's ledger says of its sessions, for [`DenyPolicy::fit`].
#[derive(Debug, Default)]
pub struct Sessions {
    /// Session name → when it was issued, for every session the ledger knows.
    pub issued: HashMap<String, Span>,
    /// The mount's sessions that must keep working (credential id, when issued): no window
    /// may cover one unless it is reported.
    pub live: Vec<(String, Span)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DenyPolicy {
    /// Expiry (end of its hour) → session names denied until then.
    groups: BTreeMap<u64, BTreeSet<String>>,
    windows: Vec<Window>,
    /// Statements that are not mayfly's, kept verbatim.
    others: Vec<Value>,
}

impl DenyPolicy {
    /// Reads a stored document. IAM returns documents URL-encoded; both forms are taken.
    pub fn parse(document: &str) -> Result<DenyPolicy, String> {
        let text = decode(document)?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("the policy document is not JSON: {e}"))?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(one @ Value::Object(_)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let mut out = DenyPolicy::default();
        for st in statements {
            if let Some(w) = parse_window(&st) {
                out.windows.push(w);
                continue;
            }
            let until = st
                .get("Sid")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix(SID_PREFIX))
                .and_then(|t| t.parse::<u64>().ok());
            let names = st
                .pointer("/Condition/StringLike/aws:userid")
                .map(|v| match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                });
            match (until, names) {
                (Some(until), Some(names)) => {
                    let set = out.groups.entry(until).or_default();
                    set.extend(
                        names
                            .iter()
                            .filter_map(|n| n.strip_prefix("*:"))
                            .map(str::to_owned),
                    );
                }
                _ => out.others.push(st),
            }
        }
        Ok(out)
    }

    /// Denies session `name` until `expires` (unix seconds).
    pub fn deny(&mut self, name: &str, expires: u64) {
        let until = expires.div_ceil(GROUP_SECS) * GROUP_SECS;
        self.groups
            .entry(until)
            .or_default()
            .insert(name.to_owned());
    }

    /// Lifts the denial of each of `names`. Windows end only with their own time.
    pub fn lift(&mut self, names: &[String]) {
        for set in self.groups.values_mut() {
            for n in names {
                set.remove(n);
            }
        }
        self.groups.retain(|_, set| !set.is_empty());
    }

    /// Drops the statements whose sessions have all expired by `now`.
    pub fn drop_expired(&mut self, now: u64) {
        self.groups.retain(|until, _| *until > now);
        self.windows.retain(|w| w.until > now);
    }

    /// Whether a session named `name`, issued at `issued`, is denied.
    #[cfg(test)]
    pub fn denies(&self, name: &str, issued: u64) -> bool {
        self.groups.values().any(|s| s.contains(name))
            || self
                .windows
                .iter()
                .any(|w| name.starts_with(&w.mark) && (w.from..=w.to).contains(&issued))
    }

    /// The document's size as IAM counts it (white space aside); 0 when there is none.
    pub fn size(&self) -> usize {
        self.render().map_or(0, |d| size_of(&d))
    }

    /// Makes the document fit in `budget` characters, folding the names of the mount whose
    /// sessions begin with `mark` into windows: first only windows that cover no live session
    /// of `sessions`, then, if those are still too many, windows over live sessions too.
    /// Returns the live sessions' credential ids that a window now covers; `Err` when even one
    /// window for the whole mount leaves the document too large (other statements fill it).
    pub fn fit(
        &mut self,
        budget: usize,
        mark: &str,
        sessions: &Sessions,
        now: u64,
    ) -> Result<Vec<String>, String> {
        let mut covered_live = BTreeSet::new();
        if self.size() <= budget {
            return Ok(Vec::new());
        }
        let mut live: Vec<&(String, Span)> = sessions.live.iter().collect();
        live.sort_by_key(|(_, span)| *span);
        let blocked = |from: u64, to: u64| -> Vec<String> {
            live.iter()
                .filter(|(_, (lo, hi))| *lo <= to && *hi >= from)
                .map(|(id, _)| id.clone())
                .collect()
        };

        // 1. Windows between live sessions, the ones that save most first.
        let mut gaps: BTreeMap<Option<u64>, (Span, u64, Vec<String>)> = BTreeMap::new();
        for (until, names) in &self.groups {
            for name in names {
                let Some(&(lo, hi)) = sessions.issued.get(name) else {
                    continue;
                };
                if !name.starts_with(mark) || !blocked(lo, hi).is_empty() {
                    continue;
                }
                // Sessions in one gap between live ones share the end of the live session
                // before them.
                let left = live.iter().map(|(_, (_, h))| *h).filter(|h| *h < lo).max();
                let gap = gaps.entry(left).or_insert(((lo, hi), *until, Vec::new()));
                gap.0 = (gap.0.0.min(lo), gap.0.1.max(hi));
                gap.1 = gap.1.max(*until);
                gap.2.push(name.clone());
            }
        }
        let mut gaps: Vec<(Span, u64, Vec<String>)> = gaps.into_values().collect();
        gaps.sort_by_key(|(_, _, names)| {
            std::cmp::Reverse(names.iter().map(|n| n.len()).sum::<usize>())
        });
        for ((from, to), until, names) in gaps {
            if self.size() <= budget {
                return Ok(Vec::new());
            }
            self.lift(&names);
            self.add_window(mark, from, to, until, &blocked);
        }
        if self.size() <= budget {
            return Ok(Vec::new());
        }

        // 2. Join neighbouring windows across the fewest live sessions.
        loop {
            let mine: Vec<usize> = self.windows_of(mark);
            if self.size() <= budget || mine.len() < 2 {
                break;
            }
            let (i, j, over) = mine
                .windows(2)
                .map(|p| {
                    let (a, b) = (&self.windows[p[0]], &self.windows[p[1]]);
                    (p[0], p[1], blocked(a.from, b.to))
                })
                .min_by_key(|(_, _, over)| over.len())
                .expect("two windows at least");
            let b = self.windows.remove(j);
            let a = &mut self.windows[i];
            a.to = a.to.max(b.to);
            a.until = a.until.max(b.until);
            covered_live.extend(over);
            let (from, to) = (a.from, a.to);
            self.lift_within(mark, from, to, sessions);
        }
        if self.size() <= budget {
            return Ok(covered_live.into_iter().collect());
        }

        // 3. One window for every session of the mount issued until now.
        let mut until = now;
        for (u, names) in &self.groups {
            if names.iter().any(|n| n.starts_with(mark)) {
                until = until.max(*u);
            }
        }
        for w in &self.windows {
            if w.mark == mark {
                until = until.max(w.until);
            }
        }
        for set in self.groups.values_mut() {
            set.retain(|n| !n.starts_with(mark));
        }
        self.groups.retain(|_, set| !set.is_empty());
        self.windows.retain(|w| w.mark != mark);
        // Issued before now in mayfly's clock, or a little after in AWS's.
        let to = now + CLOCK_SKEW_SECS;
        self.windows.push(Window {
            mark: mark.to_owned(),
            from: 0,
            to,
            until,
        });
        covered_live.extend(blocked(0, to));
        if self.size() <= budget {
            Ok(covered_live.into_iter().collect())
        } else {
            Err(format!(
                "the policy holds {} characters of statements that are not this mount's, \
                 leaving no room within IAM's limit",
                self.size()
            ))
        }
    }

    /// The indices of `mark`'s windows, in time order.
    fn windows_of(&mut self, mark: &str) -> Vec<usize> {
        self.windows
            .sort_by(|a, b| (&a.mark, a.from).cmp(&(&b.mark, b.from)));
        (0..self.windows.len())
            .filter(|i| self.windows[*i].mark == mark)
            .collect()
    }

    /// Adds a window, joined with one of the same mount it overlaps or touches when nothing
    /// live lies between them.
    fn add_window(
        &mut self,
        mark: &str,
        from: u64,
        to: u64,
        until: u64,
        blocked: &dyn Fn(u64, u64) -> Vec<String>,
    ) {
        for w in self.windows.iter_mut().filter(|w| w.mark == mark) {
            let (lo, hi) = (w.from.min(from), w.to.max(to));
            if blocked(lo, hi).is_empty() {
                w.from = lo;
                w.to = hi;
                w.until = w.until.max(until);
                return;
            }
        }
        self.windows.push(Window {
            mark: mark.to_owned(),
            from,
            to,
            until,
        });
    }

    /// Drops the names of `mark`'s sessions known to be issued within `from..=to`: a window
    /// covers them now.
    fn lift_within(&mut self, mark: &str, from: u64, to: u64, sessions: &Sessions) {
        for set in self.groups.values_mut() {
            set.retain(|n| {
                !(n.starts_with(mark)
                    && sessions
                        .issued
                        .get(n)
                        .is_some_and(|(lo, hi)| *lo >= from && *hi <= to))
            });
        }
        self.groups.retain(|_, set| !set.is_empty());
    }

    /// The document to store, or `None` when nothing is left (the policy is then deleted).
    pub fn render(&self) -> Option<String> {
        if self.groups.is_empty() && self.windows.is_empty() && self.others.is_empty() {
            return None;
        }
        let mut statements = self.others.clone();
        for (until, names) in &self.groups {
            let ids: Vec<String> = names.iter().map(|n| format!("*:{n}")).collect();
            statements.push(json!({
                "Sid": format!("{SID_PREFIX}{until}"),
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringLike": {"aws:userid": ids}},
            }));
        }
        for (i, w) in self.windows.iter().enumerate() {
            let mut condition = json!({
                "StringLike": {"aws:userid": format!("*:{}*", w.mark)},
                "DateLessThanEquals": {ISSUE_TIME: iso(w.to)},
            });
            if w.from > 0 {
                condition["DateGreaterThanEquals"] = json!({ISSUE_TIME: iso(w.from)});
            }
            statements.push(json!({
                "Sid": format!("{WINDOW_SID_PREFIX}{}N{i}", w.until),
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": condition,
            }));
        }
        Some(json!({"Version": "2012-10-17", "Statement": statements}).to_string())
    }
}

/// A stored document as text: IAM returns documents URL-encoded; both forms are taken.
pub fn decode(document: &str) -> Result<String, String> {
    if document.trim_start().starts_with('{') {
        return Ok(document.to_owned());
    }
    percent_encoding::percent_decode_str(document)
        .decode_utf8()
        .map(|t| t.into_owned())
        .map_err(|e| format!("the policy document is not UTF-8: {e}"))
}

/// A policy's size as IAM counts it: white space is not counted.
pub fn size_of(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

fn iso(secs: u64) -> String {
    DateTime::from_secs(secs as i64)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default()
}

fn parse_iso(text: &str) -> Option<u64> {
    let t = DateTime::from_str(text, DateTimeFormat::DateTime).ok()?;
    u64::try_from(t.secs()).ok()
}

/// A window statement of mayfly's, or `None`.
fn parse_window(st: &Value) -> Option<Window> {
    let sid = st.get("Sid")?.as_str()?.strip_prefix(WINDOW_SID_PREFIX)?;
    let until = sid.split_once('N')?.0.parse().ok()?;
    let condition = st.get("Condition")?;
    let pattern = condition.pointer("/StringLike/aws:userid")?.as_str()?;
    let mark = pattern.strip_prefix("*:")?.strip_suffix('*')?.to_owned();
    let to = parse_iso(
        condition
            .get("DateLessThanEquals")?
            .get(ISSUE_TIME)?
            .as_str()?,
    )?;
    let from = match condition.get("DateGreaterThanEquals") {
        Some(c) => parse_iso(c.get(ISSUE_TIME)?.as_str()?)?,
        None => 0,
    };
    Some(Window {
        mark,
        from,
        to,
        until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_lift_and_expire() {
        let mut p = DenyPolicy::default();
        assert_eq!(p.render(), None);
        p.deny("mf-a", 7000);
        p.deny("mf-b", 7100);
        p.deny("mf-c", 20000);
        let doc = p.render().unwrap();
        assert!(doc.contains("\"MayflyUntil7200\""), "{doc}");
        assert!(
            doc.contains("\"*:mf-a\"") && doc.contains("\"*:mf-b\""),
            "{doc}"
        );
        let mut back = DenyPolicy::parse(&doc).unwrap();
        assert_eq!(back, p);
        back.lift(&["mf-a".to_owned()]);
        assert!(!back.denies("mf-a", 0) && back.denies("mf-b", 0));
        back.drop_expired(7200);
        assert!(!back.denies("mf-b", 0) && back.denies("mf-c", 0));
        back.lift(&["mf-c".to_owned()]);
        assert_eq!(back.render(), None);
    }

    #[test]
    fn url_encoded_documents_and_foreign_statements() {
        let foreign = r#"{"Version":"2012-10-17","Statement":{"Sid":"Ops","Effect":"Deny","Action":"s3:*","Resource":"*"}}"#;
        let encoded: String =
            percent_encoding::utf8_percent_encode(foreign, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let mut p = DenyPolicy::parse(&encoded).unwrap();
        p.deny("mf-x", 100);
        let doc = p.render().unwrap();
        assert!(doc.contains("\"Ops\"") && doc.contains("*:mf-x"), "{doc}");
        p.lift(&["mf-x".to_owned()]);
        assert!(p.render().unwrap().contains("\"Ops\""));
        assert!(DenyPolicy::parse("not json").is_err());
    }

    const MARK: &str = "mf-0a1b2c-";

    /// A mount's sessions issued one every `step` seconds from t=10,000, each live or revoked
    /// as `live_at` says; the revoked ones denied in `p`.
    struct World {
        p: DenyPolicy,
        sessions: Sessions,
        revoked: Vec<(String, u64)>,
        live: Vec<(String, String, u64)>,
    }

    fn world(n: usize, step: u64, live_at: impl Fn(usize) -> bool) -> World {
        let mut w = World {
            p: DenyPolicy::default(),
            sessions: Sessions::default(),
            revoked: Vec::new(),
            live: Vec::new(),
        };
        for i in 0..n {
            let t = 10_000 + step * i as u64;
            let name = format!("{MARK}app01-{i:016x}");
            w.sessions.issued.insert(name.clone(), (t - 5, t + 5));
            if live_at(i) {
                let id = format!("cred{i}");
                w.sessions.live.push((id.clone(), (t - 5, t + 5)));
                w.live.push((id, name, t));
            } else {
                w.p.deny(&name, t + 3600);
                w.revoked.push((name, t));
            }
        }
        w
    }

    /// What must hold after any fit: it fits, every revoked session is still denied, and a
    /// live session is denied only if it was reported.
    fn check(w: &World, budget: usize, covered: &[String]) {
        assert!(w.p.size() <= budget, "{} > {budget}", w.p.size());
        for (name, t) in &w.revoked {
            assert!(
                w.p.denies(name, *t),
                "{name} issued at {t} is no longer denied"
            );
        }
        for (id, name, t) in &w.live {
            if w.p.denies(name, *t) {
                assert!(
                    covered.contains(id),
                    "live {name} denied without being reported"
                );
            }
        }
        let back = DenyPolicy::parse(&w.p.render().unwrap()).unwrap();
        assert_eq!(back, w.p, "windows survive a round trip");
    }

    #[test]
    fn revoked_sessions_between_live_ones_fold_into_windows_that_spare_the_live() {
        // 400 sessions, 3 live among them: far more names than a role's 10,240 characters.
        let mut w = world(400, 3, |i| i == 100 || i == 250 || i == 251);
        assert!(w.p.size() > ROLE_BUDGET);
        let covered = w.p.fit(ROLE_BUDGET, MARK, &w.sessions, 20_000).unwrap();
        check(&w, ROLE_BUDGET, &covered);
        assert!(covered.is_empty(), "{covered:?}");
        assert!(w.p.windows.len() <= 3, "{:?}", w.p.windows);
        let doc = w.p.render().unwrap();
        assert!(
            doc.contains("aws:TokenIssueTime") && doc.contains(&format!("*:{MARK}*")),
            "{doc}"
        );
    }

    #[test]
    fn when_windows_cannot_fit_they_span_live_sessions_and_report_them() {
        // Every third session live: a user's 2,048 characters hold neither the names nor a
        // window per gap.
        let mut w = world(120, 3, |i| i % 3 == 0);
        let covered = w.p.fit(USER_BUDGET, MARK, &w.sessions, 20_000).unwrap();
        check(&w, USER_BUDGET, &covered);
        assert!(!covered.is_empty());
    }

    #[test]
    fn any_mix_of_live_and_revoked_sessions_fits_safely() {
        let mut seed = 7u64;
        for round in 0..40 {
            let n = 50 + round * 13;
            let live: Vec<bool> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33).is_multiple_of(2 + round as u64 % 7)
                })
                .collect();
            for budget in [USER_BUDGET, ROLE_BUDGET] {
                let mut w = world(n, 1 + round as u64 % 4 * 6, |i| live[i]);
                match w.p.fit(budget, MARK, &w.sessions, 100_000) {
                    Ok(covered) => check(&w, budget, &covered),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
        }
    }

    #[test]
    fn another_mounts_names_and_foreign_statements_are_left_alone() {
        let mut w = world(300, 3, |i| i == 150);
        w.p.deny("mf-ffffff-app01-0000000000000001", 20_000);
        let covered = w.p.fit(ROLE_BUDGET, MARK, &w.sessions, 20_000).unwrap();
        check(&w, ROLE_BUDGET, &covered);
        assert!(w.p.denies("mf-ffffff-app01-0000000000000001", 0));
        assert!(w.p.windows.iter().all(|win| win.mark == MARK));

        // Statements that are not mayfly's leave too little room even for one window.
        let big = "x".repeat(USER_BUDGET);
        let doc = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Ops","Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::{big}"}}]}}"#
        );
        let mut p = DenyPolicy::parse(&doc).unwrap();
        p.deny(&format!("{MARK}app01-1"), 20_000);
        let err = p
            .fit(USER_BUDGET, MARK, &Sessions::default(), 20_000)
            .unwrap_err();
        assert!(err.contains("not this mount's"), "{err}");
    }

    #[test]
    fn names_the_ledger_does_not_know_are_covered_only_by_the_last_resort() {
        // Revoked sessions of the mount the ledger no longer holds: no issue time is known, so
        // only the window over everything issued until now covers them.
        let mut p = DenyPolicy::default();
        for i in 0..80 {
            p.deny(&format!("{MARK}app01-{i:016x}"), 20_000);
        }
        let live = Sessions {
            issued: HashMap::new(),
            live: vec![("cred-live".into(), (19_000, 19_010))],
        };
        let covered = p.fit(USER_BUDGET, MARK, &live, 19_500).unwrap();
        assert_eq!(covered, vec!["cred-live".to_owned()]);
        assert!(p.denies(&format!("{MARK}app01-{:016x}", 3), 1));
        assert!(p.size() <= USER_BUDGET);
    }

    const ROLE_BUDGET: usize = 10_240;
    const USER_BUDGET: usize = 2_048;
}
