//! Removing secrets from text that leaves the engine (error messages from targets, mostly).
//! A target's driver may echo what it was given; every such message passes through here.

const REDACTED: &str = "<redacted>";

/// Secrets shorter than this many bytes are replaced only where they stand as a word of their
/// own. Replaced everywhere, a short one (a password `x`) takes every such letter out of the
/// message (`database "db_none<redacted>istent"`), and it can be echoed only as a word of its
/// own anyway; a longer one found inside other text is the secret itself.
const WHOLE_WORD_BELOW: usize = 8;

/// Replaces each non-empty secret (and its percent-encoded form, as it would appear inside a
/// URL) with `<redacted>`: everywhere, or for a short secret where it stands as a word.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let encoded = percent_encode(secret);
        for form in [*secret, encoded.as_str()] {
            out = if form.len() >= WHOLE_WORD_BELOW {
                out.replace(form, REDACTED)
            } else {
                replace_words(&out, form)
            };
        }
    }
    out
}

/// `text` with each occurrence of `word` that no letter, digit or `_` touches replaced.
fn replace_words(text: &str, word: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in text.match_indices(word) {
        if at < rest {
            continue;
        }
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            continue;
        }
        out.push_str(&text[rest..at]);
        out.push_str(REDACTED);
        rest = at + word.len();
    }
    out.push_str(&text[rest..]);
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

/// `%XX` sequences decoded (as a URL's userinfo is read), the rest kept; `+` stays `+`.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_undoes_percent_encoding() {
        for s in ["p@ss:w/rd+1", "plain", "üñí"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("a+b%2"), "a+b%2");
    }

    #[test]
    fn removes_plain_and_url_encoded_secrets() {
        let msg = "login failed for s3cr/t@x in postgres://u:s3cr%2Ft%40x@h";
        let out = redact(msg, &["s3cr/t@x", ""]);
        assert!(!out.contains("s3cr"), "{out}");
        assert_eq!(out.matches("<redacted>").count(), 2);
    }

    /// Found with a connection password `x`: every letter x of an error became `<redacted>`.
    #[test]
    fn a_short_secret_is_redacted_only_where_it_stands_alone() {
        let msg = r#"database "db_nonexistent" does not exist; login x failed, url u:x@h (x)"#;
        let out = redact(msg, &["x"]);
        assert_eq!(
            out,
            r#"database "db_nonexistent" does not exist; login <redacted> failed, url u:<redacted>@h (<redacted>)"#
        );
        // Its encoded form too, and a long secret wherever it is.
        assert_eq!(redact("p=a%2Fb;", &["a/b"]), "p=<redacted>;");
        assert_eq!(
            redact("xxhunter2hunter2xx", &["hunter2hunter2"]),
            "xx<redacted>xx"
        );
    }
}
