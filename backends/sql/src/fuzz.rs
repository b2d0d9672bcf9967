//! Fuzzing of statement rendering, as property tests: whatever the statement and the values,
//! rendering ends without a panic, and a value that is accepted stays one token in the place
//! its placeholder held. An independent decoder (quotes doubled, MySQL's backslash escapes) reads
//! the rendered SQL back: a value that closed its quote would show as extra tokens.
//! `scripts/fuzz` runs many more cases (`PROPTEST_CASES`).

use proptest::prelude::*;

use crate::statements::{Syntax, Values, render};

/// A token of rendered SQL: a bare word, or a quoted text with its quote and decoded content.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(char, String),
}

/// Splits `sql` into words and quoted texts, decoding quotes as `dialect`'s server would.
fn lex(sql: &str, syntax: Syntax) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '\'' | '"' | '`' => {
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        '\\' if syntax == Syntax::MySql && c != '`' => text.push(chars.next()?),
                        q if q == c && chars.peek() == Some(&c) => {
                            chars.next();
                            text.push(c);
                        }
                        q if q == c => break,
                        other => text.push(other),
                    }
                }
                out.push(Token::Quoted(c, text));
            }
            _ => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '\'' | '"' | '`') {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Some(out)
}

fn values<'a>(name: &'a str, password: &'a str) -> Values<'a> {
    Values {
        name,
        password: Some(password),
        expiration: Some("2026-12-02 10:00:00+0000"),
        host: Some("%"),
    }
}

fn word(w: &str) -> Token {
    Token::Word(w.to_owned())
}

/// Values that stress quoting: quotes, backslashes, NUL, `$$`, comment openers, and anything.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z'\"`\\\\$;#/*\\- \n\u{0}]{0,16}", any::<String>(),]
}

proptest! {
    #[test]
    fn fuzz_render_never_panics(
        stmt in prop::collection::vec(prop_oneof![
            prop::sample::select(vec!["{{name}}", "{{username}}", "{{password}}", "{{expiration}}",
                "{{host}}", "'", "\"", "`", "$$", "$x$", "--", "#", "/*", "*/", "\n", "\\", " "])
                .prop_map(str::to_owned),
            any::<String>(),
        ], 0..12).prop_map(|p| p.concat()),
        name in hostile(), password in hostile(), mysql in any::<bool>()
    ) {
        let dialect = if mysql { Syntax::MySql } else { Syntax::Postgres };
        if let Err(e) = render(&stmt, &values(&name, &password), dialect) {
            // Errors say which placeholder failed, never the value.
            prop_assert!(password.len() < 4 || !e.0.contains(&password), "{}", e.0);
        }
    }

    #[test]
    fn fuzz_postgres_values_stay_in_their_place(name in hostile(), password in hostile()) {
        let v = values(&name, &password);
        for stmt in ["CREATE ROLE {{name}} PASSWORD {{password}} ;",
                     "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' ;"] {
            if let Ok(sql) = render(stmt, &v, Syntax::Postgres) {
                let tokens = lex(&sql, Syntax::Postgres);
                let want = vec![word("CREATE"), word("ROLE"), Token::Quoted('"', name.clone()),
                                word("PASSWORD"), Token::Quoted('\'', password.clone()), word(";")];
                prop_assert_eq!(tokens, Some(want), "{}", sql);
            }
        }
    }

    #[test]
    fn fuzz_mysql_values_stay_in_their_place(name in hostile(), password in hostile()) {
        let v = values(&name, &password);
        for stmt in ["CREATE USER {{name}} @ {{host}} IDENTIFIED BY {{password}} ;",
                     "CREATE USER '{{name}}' @ '%' IDENTIFIED BY '{{password}}' ;"] {
            if let Ok(sql) = render(stmt, &v, Syntax::MySql) {
                let tokens = lex(&sql, Syntax::MySql);
                let want = vec![word("CREATE"), word("USER"), Token::Quoted('\'', name.clone()),
                                word("@"), Token::Quoted('\'', "%".into()), word("IDENTIFIED"),
                                word("BY"), Token::Quoted('\'', password.clone()), word(";")];
                prop_assert_eq!(tokens, Some(want), "{}", sql);
            }
        }
    }
}
