//! Removing secrets from text that leaves the engine (error messages from targets, mostly).
//! A target's driver may echo what it was given; every such message passes through here.

/// Replaces every occurrence of each non-empty secret (and its percent-encoded form, as it
/// would appear inside a URL) with `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "<redacted>");
        let encoded = percent_encode(secret);
        if encoded != *secret {
            out = out.replace(&encoded, "<redacted>");
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as a URL's userinfo needs.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_plain_and_url_encoded_secrets() {
        let msg = "login failed for s3cr/t@x in postgres://u:s3cr%2Ft%40x@h";
        let out = redact(msg, &["s3cr/t@x", ""]);
        assert!(!out.contains("s3cr"), "{out}");
        assert_eq!(out.matches("<redacted>").count(), 2);
    }
}
