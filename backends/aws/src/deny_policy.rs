//! The inline policy that revokes STS sessions: AWS cannot end a session early, but a Deny on
//! the role (or user) the session belongs to stops every call it makes.
//!
//! Sessions are matched by `aws:userid`, which is `ROLE_ID:SESSION_NAME` for an assumed role
//! and `ACCOUNT:NAME` for a federated user, so `*:NAME` names exactly one session of mayfly's
//! (each name carries its credential id). Sessions are grouped into one statement per hour in
//! which they expire (Sid `MayflyUntil<unix time>`), which keeps the document small (inline
//! policies are limited to 10,240 characters per role) and lets any later edit drop statements
//! whose sessions have all expired, even if mayfly lost track of them. Statements that are not
//! mayfly's are kept as they are.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The inline policy's name on the role or user.
pub const POLICY_NAME: &str = "mayfly-revoked-sessions";
const SID_PREFIX: &str = "MayflyUntil";
const GROUP_SECS: u64 = 3600;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DenyPolicy {
    /// Expiry (end of its hour) → session names denied until then.
    groups: BTreeMap<u64, BTreeSet<String>>,
    /// Statements that are not mayfly's, kept verbatim.
    others: Vec<Value>,
}

impl DenyPolicy {
    /// Reads a stored document. IAM returns documents URL-encoded; both forms are taken.
    pub fn parse(document: &str) -> Result<DenyPolicy, String> {
        let text = if document.trim_start().starts_with('{') {
            document.to_owned()
        } else {
            percent_encoding::percent_decode_str(document)
                .decode_utf8()
                .map_err(|e| format!("the policy document is not UTF-8: {e}"))?
                .into_owned()
        };
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("the policy document is not JSON: {e}"))?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(one @ Value::Object(_)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let mut out = DenyPolicy::default();
        for st in statements {
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

    /// Lifts the denial of each of `names`.
    pub fn lift(&mut self, names: &[String]) {
        for set in self.groups.values_mut() {
            for n in names {
                set.remove(n);
            }
        }
        self.groups.retain(|_, set| !set.is_empty());
    }

    /// Drops the groups whose sessions have all expired by `now`.
    pub fn drop_expired(&mut self, now: u64) {
        self.groups.retain(|until, _| *until > now);
    }

    /// Whether `name` is denied.
    #[cfg(test)]
    pub fn denies(&self, name: &str) -> bool {
        self.groups.values().any(|s| s.contains(name))
    }

    /// The document to store, or `None` when nothing is left (the policy is then deleted).
    pub fn render(&self) -> Option<String> {
        if self.groups.is_empty() && self.others.is_empty() {
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
        Some(json!({"Version": "2012-10-17", "Statement": statements}).to_string())
    }
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
        assert!(!back.denies("mf-a") && back.denies("mf-b"));
        back.drop_expired(7200);
        assert!(!back.denies("mf-b") && back.denies("mf-c"));
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
}
