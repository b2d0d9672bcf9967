//! OpenBao's statement placeholders (`{{name}}`, `{{username}}`, `{{password}}`,
//! `{{expiration}}`, and mayfly's `{{host}}` for MySQL) filled in with the quoting rules of the
//! SQL dialect for the place each stands in.
//!
//! The statement is scanned as the server lexes it, so mayfly knows whether a placeholder sits
//! inside a string literal, a quoted identifier, a dollar-quoted body, a comment, or bare SQL:
//! - inside `'…'`, `"…"` or MySQL's `` `…` `` the value is inserted as is, and a value holding
//!   that quote (or a backslash, or NUL) is an error: it would end the quoting;
//! - bare, a PostgreSQL name becomes a quoted identifier, and everything else a quoted literal
//!   (MySQL writes account names as strings: `'name'@'%'`);
//! - inside `$$…$$` or a comment only plain characters are accepted, since the body's own
//!   quoting is unknown.

use std::fmt;

/// The values a statement may use. `None` values are errors if their placeholder appears.
pub struct Values<'a> {
    pub name: &'a str,
    pub password: Option<&'a str>,
    pub expiration: Option<&'a str>,
    /// MySQL's account host pattern (`%`, `10.0.%`…).
    pub host: Option<&'a str>,
}

/// Whose lexical rules a statement follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Syntax {
    /// `"identifier"`, `'literal'`, `$tag$…$tag$`, `--` and `/* */` comments.
    Postgres,
    /// `` `identifier` ``, `'string'` and `"string"` (both with backslash escapes), `#`,
    /// `-- ` and `/* */` comments; no dollar quoting.
    MySql,
}

/// Why a statement could not be filled. Never holds a value, only which placeholder failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError(pub String);

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identifier,
    Literal,
}

#[derive(Clone, PartialEq, Eq)]
enum Context {
    Bare,
    Single,
    Double,
    Backtick,
    Dollar(String),
    LineComment,
    BlockComment,
}

const PLACEHOLDERS: [(&str, Kind); 5] = [
    ("{{name}}", Kind::Identifier),
    ("{{username}}", Kind::Identifier),
    ("{{password}}", Kind::Literal),
    ("{{expiration}}", Kind::Literal),
    ("{{host}}", Kind::Literal),
];

pub fn render(stmt: &str, v: &Values<'_>, syntax: Syntax) -> Result<String, RenderError> {
    let mut out = String::with_capacity(stmt.len() + 64);
    let mut ctx = Context::Bare;
    let mut i = 0;
    let bytes = stmt.as_bytes();
    while i < stmt.len() {
        let rest = &stmt[i..];
        if let Some((ph, kind)) = PLACEHOLDERS.iter().find(|(p, _)| rest.starts_with(p)) {
            let value = match *ph {
                "{{name}}" | "{{username}}" => Some(v.name),
                "{{password}}" => v.password,
                "{{host}}" => v.host,
                _ => v.expiration,
            }
            .ok_or_else(|| RenderError(format!("{ph} cannot be used in this statement")))?;
            out.push_str(&place(ph, *kind, value, &ctx, syntax)?);
            i += ph.len();
            continue;
        }
        let c = rest.chars().next().expect("not empty");
        let next = bytes.get(i + 1).copied();
        match &ctx {
            Context::Bare => match c {
                '\'' => ctx = Context::Single,
                '"' => ctx = Context::Double,
                '`' if syntax == Syntax::MySql => ctx = Context::Backtick,
                '#' if syntax == Syntax::MySql => ctx = Context::LineComment,
                // MySQL needs whitespace after `--`; treating `--x` as a comment too only
                // makes mayfly stricter about what it inserts there.
                '-' if next == Some(b'-') => ctx = Context::LineComment,
                '/' if next == Some(b'*') => ctx = Context::BlockComment,
                '$' if syntax == Syntax::Postgres => {
                    if let Some(tag) = dollar_tag(rest) {
                        out.push_str(&tag);
                        i += tag.len();
                        ctx = Context::Dollar(tag);
                        continue;
                    }
                }
                _ => {}
            },
            Context::Single if c == '\'' => ctx = Context::Bare,
            Context::Double if c == '"' => ctx = Context::Bare,
            Context::Backtick if c == '`' => ctx = Context::Bare,
            // A backslash escapes the next character in MySQL strings: skip both.
            Context::Single | Context::Double if c == '\\' && syntax == Syntax::MySql => {
                if let Some(escaped) = rest[1..].chars().next() {
                    out.push('\\');
                    out.push(escaped);
                    i += 1 + escaped.len_utf8();
                    continue;
                }
            }
            Context::Dollar(tag) if rest.starts_with(tag.as_str()) => {
                out.push_str(tag);
                i += tag.len();
                ctx = Context::Bare;
                continue;
            }
            Context::LineComment if c == '\n' => ctx = Context::Bare,
            Context::BlockComment if c == '*' && next == Some(b'/') => {
                out.push_str("*/");
                i += 2;
                ctx = Context::Bare;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += c.len_utf8();
    }
    Ok(out)
}

/// `$tag$` at the start of `s`, if it opens a dollar quote.
fn dollar_tag(s: &str) -> Option<String> {
    let body = &s[1..];
    let end = body.find('$')?;
    let tag = &body[..end];
    let ok = tag
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    ok.then(|| format!("${tag}$"))
}

fn place(
    ph: &str,
    kind: Kind,
    value: &str,
    ctx: &Context,
    syntax: Syntax,
) -> Result<String, RenderError> {
    let refuse = |what: &str| {
        Err(RenderError(format!(
            "the value for {ph} contains {what}, which would break out of its quoting; refused"
        )))
    };
    if value.contains('\0') {
        return refuse("a NUL byte");
    }
    match ctx {
        Context::Single => {
            if value.contains('\'') {
                return refuse("a single quote");
            }
            if value.contains('\\') {
                return refuse("a backslash");
            }
            Ok(value.to_owned())
        }
        Context::Double => {
            if value.contains('"') {
                return refuse("a double quote");
            }
            if syntax == Syntax::MySql && value.contains('\\') {
                return refuse("a backslash");
            }
            Ok(value.to_owned())
        }
        Context::Backtick => {
            if value.contains('`') {
                return refuse("a backtick");
            }
            Ok(value.to_owned())
        }
        Context::Dollar(_) | Context::LineComment | Context::BlockComment => {
            let plain = value.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '+' | ' ')
            });
            if plain {
                Ok(value.to_owned())
            } else {
                // Which character is not said: the value may be a password.
                refuse("characters other than letters, digits and _-.:+ (inside $$ or a comment)")
            }
        }
        Context::Bare => match (kind, syntax) {
            (Kind::Identifier, Syntax::Postgres) => Ok(quote_identifier(value)),
            _ => {
                if value.contains('\\') {
                    return refuse("a backslash");
                }
                Ok(quote_literal(value))
            }
        },
    }
}

/// `"name"`, with embedded double quotes doubled (PostgreSQL's identifier quoting).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded single quotes doubled, for both dialects. Callers refuse backslashes
/// and NUL first: MySQL would read a backslash as an escape.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v<'a>(name: &'a str, password: &'a str) -> Values<'a> {
        Values {
            name,
            password: Some(password),
            expiration: Some("2026-11-22 10:00:00+0000"),
            host: None,
        }
    }

    fn pg(stmt: &str, v: &Values<'_>) -> Result<String, RenderError> {
        render(stmt, v, Syntax::Postgres)
    }

    fn my(stmt: &str, v: &Values<'_>) -> Result<String, RenderError> {
        render(stmt, v, Syntax::MySql)
    }

    #[test]
    fn openbao_documented_statements_render() {
        let s = r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";"#;
        assert_eq!(
            pg(s, &v("mf-a", "pw1")).unwrap(),
            r#"CREATE ROLE "mf-a" WITH LOGIN PASSWORD 'pw1' VALID UNTIL '2026-11-22 10:00:00+0000'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "mf-a";"#
        );
        assert_eq!(
            pg(
                "ALTER ROLE {{username}} PASSWORD {{password}}",
                &v("a\"b", "it's")
            )
            .unwrap(),
            r#"ALTER ROLE "a""b" PASSWORD 'it''s'"#
        );
        // Dollar-quoted bodies and comments pass plain values.
        assert_eq!(
            pg(
                "DO $x$ BEGIN EXECUTE 'DROP ROLE {{name}}'; END $x$; -- {{name}}",
                &v("mf-a", "p")
            )
            .unwrap(),
            "DO $x$ BEGIN EXECUTE 'DROP ROLE mf-a'; END $x$; -- mf-a"
        );
    }

    #[test]
    fn values_that_break_out_of_their_quotes_are_refused() {
        let cases = [
            (
                r#"CREATE ROLE "{{name}}""#,
                "x\"; DROP TABLE t; --",
                "double quote",
            ),
            (
                "PASSWORD '{{password}}'",
                "a'; DROP TABLE t; --",
                "single quote",
            ),
            ("PASSWORD '{{password}}'", "a\\", "backslash"),
            ("DO $$ {{name}} $$", "a'b", "characters other than"),
            ("-- {{name}}", "a\nDROP", "characters other than"),
            ("{{password}}", "a\\", "backslash"),
            ("{{name}}", "a\0", "NUL"),
        ];
        for (stmt, value, what) in cases {
            let e = pg(stmt, &v(value, value)).unwrap_err();
            assert!(e.0.contains(what), "{stmt} with {value:?}: {e}");
            assert!(
                !e.0.contains(value),
                "the error must not echo the value: {e}"
            );
        }
    }

    #[test]
    fn missing_values_are_errors() {
        let vals = Values {
            name: "a",
            password: None,
            expiration: None,
            host: None,
        };
        assert!(pg("DROP ROLE \"{{name}}\"", &vals).is_ok());
        assert!(pg("ALTER ROLE x PASSWORD '{{password}}'", &vals).is_err());
    }

    #[test]
    fn mysql_statements_render_with_its_own_quoting() {
        let vals = Values {
            host: Some("%"),
            ..v("mf-a", "it's")
        };
        // OpenBao's documented MySQL statement, and the same with bare placeholders.
        assert_eq!(
            my(
                "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';",
                &v("mf-a", "pw1")
            )
            .unwrap(),
            "CREATE USER 'mf-a'@'%' IDENTIFIED BY 'pw1'; GRANT SELECT ON *.* TO 'mf-a'@'%';"
        );
        assert_eq!(
            my(
                "CREATE USER {{name}}@{{host}} IDENTIFIED BY {{password}}",
                &vals
            )
            .unwrap(),
            "CREATE USER 'mf-a'@'%' IDENTIFIED BY 'it''s'"
        );
        // A backslash-escaped quote does not end the string; `#` starts a comment; $ is plain.
        assert_eq!(
            my(
                "SELECT 'a\\'{{name}}' # {{name}}\nSELECT $a$",
                &v("mf-a", "p")
            )
            .unwrap(),
            "SELECT 'a\\'mf-a' # mf-a\nSELECT $a$"
        );
        let cases = [
            ("CREATE USER `{{name}}`", "a`b", "backtick"),
            ("IDENTIFIED BY \"{{password}}\"", "a\\", "backslash"),
            ("IDENTIFIED BY '{{password}}'", "a'b", "single quote"),
            ("# {{name}}", "a\nDROP", "characters other than"),
        ];
        for (stmt, value, what) in cases {
            let e = my(stmt, &v(value, value)).unwrap_err();
            assert!(e.0.contains(what), "{stmt} with {value:?}: {e}");
        }
    }
}
