//! `username_template`: the subset of Go templates that OpenBao's database engine documents, so
//! that templates written for OpenBao work unchanged.
//!
//! Fields: `.RoleName`, `.DisplayName`, and mayfly's own `.CredentialID` and `.TaskID` (empty
//! without a task), so that a name can carry what it was issued for, and `.Mark`, the mount's
//! mark ([`mark_of`]), which the orphan scan looks for. Functions: `random N`, `truncate N`, `lowercase`,
//! `uppercase`, `replace OLD NEW`, `printf FORMAT ARGS…` (`%s`, `%d`, `%%`), `unix_time`,
//! `unix_time_millis`, `uuid`. Pipes (`x | truncate 8`) pass their value as the last argument,
//! and parentheses group a pipeline.

use crate::contract::error::Error;
use crate::contract::host::{now, random_lower, random_string};

/// mayfly's default: the mount's mark, the role, the requester's display name and randomness,
/// cut to PostgreSQL's 63-byte identifier limit. Lowercase, so the name needs no case care.
pub const DEFAULT_USERNAME_TEMPLATE: &str = r#"{{ printf "%s%s-%s-%s" .Mark (.RoleName | truncate 16) (.DisplayName | truncate 8) (random 16) | lowercase | truncate 63 }}"#;

/// The mark every mount's principals began with before marks were per mount, and still the
/// beginning of each mount's own (`mark_of`).
pub const LEGACY_MARK: &str = "mf-";

/// Hex digits of the backend UUID a mark carries: 16.7 million marks, so two mounts (or two
/// clusters) on one target have the same one with odds of one in millions, and the mark stays
/// short enough for MySQL's 32-character user names.
const MARK_DIGITS: usize = 6;

/// The mark of a mount whose backend UUID is `backend_uuid`: `mf-` and the UUID's first six hex
/// digits, then `-` (`mf-3fa2c1-`). The host keeps a mount's backend UUID when the mount is
/// moved and makes a new one for every new mount, so the mark tells one mount's principals
/// from every other mount's and cluster's on a shared target. Without a UUID (the host's
/// registration probe, which issues nothing) it is [`LEGACY_MARK`].
pub fn mark_of(backend_uuid: &str) -> String {
    let hex: String = backend_uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(MARK_DIGITS)
        .collect::<String>()
        .to_lowercase();
    if hex.len() < MARK_DIGITS {
        return LEGACY_MARK.to_owned();
    }
    format!("{LEGACY_MARK}{hex}-")
}

/// Whether `name` carries a mayfly mark other than `own` (a mount's [`mark_of`]): another
/// mount's or cluster's mark, or the bare [`LEGACY_MARK`] of principals made before marks were
/// per mount, which no mount can claim by its mark alone.
pub fn has_other_mark(name: &str, own: &str) -> bool {
    name.starts_with(LEGACY_MARK) && !name.starts_with(own)
}

/// The longest text a template may produce, whole or at any step of its rendering. Names are
/// short (PostgreSQL's are 63 bytes); the bound keeps a hostile template (a chain of `replace`
/// that doubles its text at each step) from exhausting the memory of the plugin process, which
/// every mount shares.
pub const MAX_RENDERED: usize = 4096;

pub struct Inputs<'a> {
    pub role_name: &'a str,
    pub display_name: &'a str,
    pub credential_id: &'a str,
    pub task_id: &'a str,
    /// The mount's mark ([`mark_of`]).
    pub mark: &'a str,
    pub sources: Sources,
}

/// Where `random`, `uuid` and the clock functions take their values from.
#[derive(Clone, Copy)]
pub enum Sources {
    /// Randomness and the clock: for names that are used.
    Live,
    /// Every random character is `fill` and the clock stands at `millis`: renderings that
    /// differ only in `fill` (and `.CredentialID`) show whether a template's names differ
    /// from one credential to the next ([`unique_per_credential`]).
    Fixed { fill: char, millis: i64 },
}

/// How many random characters a name needs before it is taken by no one: 16 are 64 bits at
/// the least (hex, as `uuid` makes), 82 in lowercase letters and digits. Issuance skips the
/// target's look-up of such a name.
pub const UNGUESSABLE: usize = 16;

/// Whether `template` (given the role, requester and task of `inputs`) makes a different name
/// for each credential: from randomness or the credential id that `truncate` keeps. A name
/// that can repeat is refused, because issuance would fail on (or, in a target that overwrites,
/// take over) the account an earlier credential made.
pub fn unique_per_credential(template: &str, inputs: &Inputs<'_>) -> Result<bool, Error> {
    Ok(random_chars(template, inputs)? > 0)
}

/// How many characters of the names `template` makes (given the role, requester and task of
/// `inputs`) come from randomness or the credential id: the places where renderings that
/// differ only in those differ.
pub fn random_chars(template: &str, inputs: &Inputs<'_>) -> Result<usize, Error> {
    let fixed = |fill: char, credential_id: &str| -> Result<Vec<char>, Error> {
        let name = render(
            template,
            &Inputs {
                credential_id,
                sources: Sources::Fixed {
                    fill,
                    millis: 1_700_000_000_000,
                },
                ..*inputs
            },
        )?;
        Ok(name.chars().collect())
    };
    // Three fills, so that a template replacing one fill character by another still counts.
    let a = fixed('a', "aaaaaaaaaaaaaaaaaaaa")?;
    let b = fixed('b', "bbbbbbbbbbbbbbbbbbbb")?;
    let c = fixed('c', "cccccccccccccccccccc")?;
    let longest = a.len().max(b.len()).max(c.len());
    Ok((0..longest)
        .filter(|&i| {
            let (x, y, z) = (a.get(i), b.get(i), c.get(i));
            x != y || x != z
        })
        .count())
}

/// Renders `template`. Errors name the field `username_template`.
pub fn render(template: &str, inputs: &Inputs<'_>) -> Result<String, Error> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| bad("an action opened with {{ is never closed with }}"))?;
        let tokens = tokenize(&after[..end])?;
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
            inputs,
        };
        let value = parser.pipeline()?;
        if parser.pos != tokens.len() {
            return Err(bad("unexpected text after the end of an action"));
        }
        out.push_str(&value.text());
        within_bound(out.len())?;
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    within_bound(out.len())?;
    Ok(out)
}

/// Refuses a text of `len` bytes past [`MAX_RENDERED`].
fn within_bound(len: usize) -> Result<(), Error> {
    if len > MAX_RENDERED {
        return Err(bad(format!(
            "the name grows past {MAX_RENDERED} bytes while it is rendered"
        )));
    }
    Ok(())
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
/// Bytes, as OpenBao's `truncate` counts, because the limits it serves are in bytes
/// (PostgreSQL's 63-byte names); a character is never split.
fn truncate_bytes(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("field 'username_template': {msg}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(String),
    Ident(String),
    Str(String),
    Int(i64),
    Pipe,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, Error> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '|' => {
                chars.next();
                tokens.push(Token::Pipe);
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, c)) => s.push(c),
                            None => return Err(bad("a string is never closed")),
                        },
                        Some((_, c)) => s.push(c),
                        None => return Err(bad("a string is never closed")),
                    }
                }
                tokens.push(Token::Str(s));
            }
            _ => {
                let mut end = i;
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '|' | '(' | ')' | '"') {
                        break;
                    }
                    end = j + c.len_utf8();
                    chars.next();
                }
                let word = &text[i..end];
                tokens.push(if let Some(field) = word.strip_prefix('.') {
                    Token::Field(field.to_owned())
                } else if let Ok(n) = word.parse::<i64>() {
                    Token::Int(n)
                } else {
                    Token::Ident(word.to_owned())
                });
            }
        }
    }
    Ok(tokens)
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
        }
    }
}

struct Parser<'t, 'i> {
    tokens: &'t [Token],
    pos: usize,
    inputs: &'i Inputs<'i>,
}

impl Parser<'_, '_> {
    fn pipeline(&mut self) -> Result<Val, Error> {
        let mut value = self.command(None)?;
        while self.tokens.get(self.pos) == Some(&Token::Pipe) {
            self.pos += 1;
            value = self.command(Some(value))?;
        }
        Ok(value)
    }

    /// One command: a function call with its arguments (and the piped value last), or a lone
    /// operand.
    fn command(&mut self, piped: Option<Val>) -> Result<Val, Error> {
        let Some(first) = self.tokens.get(self.pos).cloned() else {
            return Err(bad("an action or pipe stage is empty"));
        };
        if let Token::Ident(name) = first {
            self.pos += 1;
            let mut args = Vec::new();
            while let Some(t) = self.tokens.get(self.pos) {
                if matches!(t, Token::Pipe | Token::Close) {
                    break;
                }
                args.push(self.operand()?);
            }
            args.extend(piped);
            return call(&name, args, self.inputs.sources);
        }
        let value = self.operand()?;
        if piped.is_some() {
            return Err(bad("only a function can follow '|'"));
        }
        Ok(value)
    }

    fn operand(&mut self) -> Result<Val, Error> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match token {
            Some(Token::Str(s)) => Ok(Val::Str(s)),
            Some(Token::Int(n)) => Ok(Val::Int(n)),
            Some(Token::Field(f)) => match f.as_str() {
                "RoleName" => Ok(Val::Str(self.inputs.role_name.to_owned())),
                "DisplayName" => Ok(Val::Str(self.inputs.display_name.to_owned())),
                "CredentialID" => Ok(Val::Str(self.inputs.credential_id.to_owned())),
                "TaskID" => Ok(Val::Str(self.inputs.task_id.to_owned())),
                "Mark" => Ok(Val::Str(self.inputs.mark.to_owned())),
                other => Err(bad(format!(
                    "unknown field '.{other}'; known fields: .RoleName, .DisplayName, \
                     .CredentialID, .TaskID, .Mark"
                ))),
            },
            Some(Token::Ident(name)) => call(&name, Vec::new(), self.inputs.sources),
            Some(Token::Open) => {
                let value = self.pipeline()?;
                if self.tokens.get(self.pos) != Some(&Token::Close) {
                    return Err(bad("a '(' is never closed"));
                }
                self.pos += 1;
                Ok(value)
            }
            Some(Token::Pipe) | Some(Token::Close) | None => {
                Err(bad("expected a value, a field or a function"))
            }
        }
    }
}

fn call(name: &str, args: Vec<Val>, sources: Sources) -> Result<Val, Error> {
    let int = |v: &Val| match v {
        Val::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(bad(format!("{name}: expected a non-negative integer"))),
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(bad(format!(
                "{name} takes {n} argument(s), got {}",
                args.len()
            )))
        }
    };
    match name {
        "random" => {
            arity(1)?;
            let n = int(&args[0])?;
            if n > 128 {
                return Err(bad("random: at most 128 characters"));
            }
            Ok(Val::Str(match sources {
                Sources::Live => random_string(n),
                Sources::Fixed { fill, .. } => fill.to_string().repeat(n),
            }))
        }
        "truncate" => {
            arity(2)?;
            let n = int(&args[0])?;
            Ok(Val::Str(truncate_bytes(&args[1].text(), n).to_owned()))
        }
        "lowercase" => {
            arity(1)?;
            let text = args[0].text().to_lowercase();
            within_bound(text.len())?;
            Ok(Val::Str(text))
        }
        "uppercase" => {
            arity(1)?;
            let text = args[0].text().to_uppercase();
            within_bound(text.len())?;
            Ok(Val::Str(text))
        }
        "replace" => {
            arity(3)?;
            let (old, new, text) = (args[0].text(), args[1].text(), args[2].text());
            // Sized before it is made: each step of a chain may multiply the text.
            let count = if old.is_empty() {
                text.chars().count() + 1
            } else {
                text.matches(old.as_str()).count()
            };
            within_bound((text.len() - count * old.len()).saturating_add(count * new.len()))?;
            Ok(Val::Str(text.replace(&old, &new)))
        }
        "unix_time" => {
            arity(0)?;
            Ok(Val::Int(match sources {
                Sources::Live => now() as i64,
                Sources::Fixed { millis, .. } => millis / 1000,
            }))
        }
        "unix_time_millis" => {
            arity(0)?;
            let ms = match sources {
                Sources::Live => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                Sources::Fixed { millis, .. } => millis,
            };
            Ok(Val::Int(ms))
        }
        "uuid" => {
            arity(0)?;
            let random = match sources {
                Sources::Live => random_lower(32),
                Sources::Fixed { fill, .. } => fill.to_string().repeat(32),
            };
            let h = random
                .chars()
                .map(|c| if c.is_ascii_digit() { c } else { hex_of(c) })
                .collect::<String>();
            Ok(Val::Str(format!(
                "{}-{}-4{}-a{}-{}",
                &h[0..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..32]
            )))
        }
        "printf" => {
            let Some((format, rest)) = args.split_first() else {
                return Err(bad("printf needs a format"));
            };
            printf(&format.text(), rest).map(Val::Str)
        }
        other => Err(bad(format!(
            "unknown function '{other}'; known functions: random, truncate, lowercase, \
             uppercase, replace, printf, unix_time, unix_time_millis, uuid"
        ))),
    }
}

/// Maps a random lowercase letter onto a hex digit, for `uuid`.
fn hex_of(c: char) -> char {
    b"0123456789abcdef"[(c as usize) % 16] as char
}

fn printf(format: &str, args: &[Val]) -> Result<String, Error> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s') | Some('d') | Some('v') => {
                let arg = args
                    .next()
                    .ok_or_else(|| bad("printf: more verbs than arguments"))?;
                out.push_str(&arg.text());
                within_bound(out.len())?;
            }
            other => {
                return Err(bad(format!(
                    "printf: unsupported verb %{}; use %s, %d or %%",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    if args.next().is_some() {
        return Err(bad("printf: more arguments than verbs"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: Inputs = Inputs {
        role_name: "Reader-Role-With-A-Long-Name",
        display_name: "token-abc",
        credential_id: "abcdefghij0123456789",
        task_id: "",
        mark: "mf-3fa2c1-",
        sources: Sources::Live,
    };

    #[test]
    fn another_mounts_mark_is_told_from_this_ones() {
        let own = mark_of("3fa2c1d4-0b1e");
        assert!(!has_other_mark("mf-3fa2c1-app-x", &own));
        assert!(has_other_mark("mf-77aa00-app-x", &own));
        assert!(
            has_other_mark("mf-app-x", &own),
            "the bare legacy mark is no one's"
        );
        assert!(!has_other_mark("v-token-app-x", &own));
        assert!(!has_other_mark("alice", &own));
    }

    #[test]
    fn a_mark_comes_from_the_backend_uuid() {
        assert_eq!(
            mark_of("3FA2C1d4-0b1e-4c2d-9e7f-1234567890ab"),
            "mf-3fa2c1-"
        );
        assert_eq!(mark_of(""), LEGACY_MARK);
        assert_eq!(mark_of("12-3"), LEGACY_MARK);
        // A legacy name never starts with a mount's mark unless its role name is that mark's
        // six hex digits.
        assert!(!"mf-reader-token-x".starts_with(&mark_of("3fa2c1")));
    }

    #[test]
    fn random_characters_are_counted_where_truncate_keeps_them() {
        let count = |t: &str| random_chars(t, &IN).unwrap();
        assert!(count(DEFAULT_USERNAME_TEMPLATE) >= UNGUESSABLE);
        assert_eq!(count("{{ .RoleName }}-{{ random 16 }}"), 16);
        assert_eq!(count("{{ .RoleName }}-{{ random 1 }}"), 1);
        assert_eq!(count("{{ .CredentialID | truncate 4 }}"), 4);
        assert_eq!(count("{{ .CredentialID }}"), 20);
        assert!(count("{{ uuid }}") >= UNGUESSABLE);
        assert_eq!(count("{{ random 30 | truncate 8 }}"), 8);
        assert_eq!(count("{{ .RoleName }}"), 0);
    }

    #[test]
    fn templates_whose_names_can_repeat_are_told_apart() {
        let unique = |t: &str| unique_per_credential(t, &IN).unwrap();
        assert!(unique(DEFAULT_USERNAME_TEMPLATE));
        assert!(unique("{{ .RoleName }}-{{ random 1 }}"));
        assert!(unique("{{ .CredentialID | truncate 4 }}"));
        assert!(unique("{{ uuid }}"));
        // A replace that maps one fill onto another still counts as random.
        assert!(unique(r#"{{ random 4 | replace "a" "b" }}"#));
        for repeats in [
            "{{ .RoleName }}",
            "app",
            "{{ .DisplayName }}-{{ .TaskID }}",
            "{{ printf \"%s-%s\" .RoleName (random 8) | truncate 4 }}",
            "{{ .RoleName }}-{{ unix_time }}",
            "{{ .RoleName }}-{{ unix_time_millis }}",
            "{{ .CredentialID | truncate 0 }}x",
        ] {
            assert!(!unique(repeats), "{repeats}");
        }
    }

    /// A chain of `replace` doubles its text at each step: 40 steps would ask for a terabyte.
    #[test]
    fn a_template_cannot_grow_past_its_bound() {
        let mut t = "{{ .RoleName".to_owned();
        for _ in 0..40 {
            t.push_str(r#" | replace "e" "ee""#);
        }
        t.push_str(" }}");
        let started = std::time::Instant::now();
        let err = render(&t, &IN).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(err.status(), 400);
        assert!(
            err.to_string()
                .contains("field 'username_template': the name grows past 4096 bytes"),
            "{err}"
        );
        let wide = format!("{{{{ printf \"{}\" }}}}", "%s".repeat(3000));
        let args = " .RoleName".repeat(3000);
        let wide = wide.replace("\" }}", &format!("\"{args} }}}}"));
        assert!(
            render(&wide, &IN)
                .unwrap_err()
                .to_string()
                .contains("4096 bytes")
        );
        assert!(render(&"x".repeat(5000), &IN).is_err());
        // Within the bound, replace works as before, an empty pattern included.
        let ok = r#"{{ .RoleName | replace "-" "_" | replace "" "." | truncate 9 }}"#;
        assert_eq!(render(ok, &IN).unwrap(), ".R.e.a.d.");
    }

    #[test]
    fn default_template_is_marked_short_and_lowercase() {
        let name = render(DEFAULT_USERNAME_TEMPLATE, &IN).unwrap();
        assert!(
            name.starts_with("mf-3fa2c1-reader-role-with-token-ab-"),
            "{name}"
        );
        assert!(name.len() <= 63 && name == name.to_lowercase(), "{name}");
        assert_ne!(name, render(DEFAULT_USERNAME_TEMPLATE, &IN).unwrap());
    }

    /// Found by fuzzing: `truncate` counted characters, so a display name of multi-byte
    /// characters made a default name longer than PostgreSQL's 63 bytes, and issuance failed.
    #[test]
    fn default_template_stays_within_63_bytes_for_any_display_name() {
        let inputs = Inputs {
            role_name: "\u{1F300}\u{1D54A}00\u{FE70}\u{11F00}a\u{AD0} \u{3A3}",
            display_name: "\u{10A60}\u{0A85}aa\u{102A0}Aa\u{130}\u{130}",
            ..IN
        };
        let name = render(DEFAULT_USERNAME_TEMPLATE, &inputs).unwrap();
        assert!(name.len() <= 63, "{} bytes: {name}", name.len());
        assert!(
            name.starts_with(IN.mark) && name == name.to_lowercase(),
            "{name}"
        );
        let t = "{{ \"\u{E9}\u{E9}\u{E9}\" | truncate 3 }}";
        assert_eq!(
            render(t, &IN).unwrap(),
            "\u{E9}",
            "a character is never split"
        );
    }

    #[test]
    fn openbao_documented_template_works_unchanged() {
        let t = r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#;
        let name = render(t, &IN).unwrap();
        assert!(name.starts_with("v-token-ab-Reader-R-"), "{name}");
        assert_eq!(name.len(), "v-token-ab-Reader-R-".len() + 20 + 1 + 10);
        let t = r#"app_{{.RoleName | lowercase | replace "-" "_"}}_{{random 4}}"#;
        assert!(
            render(t, &IN)
                .unwrap()
                .starts_with("app_reader_role_with_a_long_name_")
        );
    }

    #[test]
    fn bad_templates_name_the_field() {
        for t in [
            "{{.Nope}}",
            "{{ random }}",
            "{{ frobnicate 3 }}",
            "{{ .RoleName",
            "{{ printf \"%q\" .RoleName }}",
            "{{ (random 3 }}",
        ] {
            let e = render(t, &IN).unwrap_err();
            assert!(
                e.to_string().starts_with("field 'username_template'"),
                "{t}: {e}"
            );
        }
    }
}
