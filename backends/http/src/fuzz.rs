//! Fuzzing of the placeholders of declared HTTP calls, as property tests: any template ends
//! without a panic; a value in a path is percent-encoded whole (an independent decoder gets it
//! back, and it adds no `/`, `?`, `#` or `&`); a header never carries a control character; a
//! body's strings hold the values exactly. `scripts/fuzz` runs many more cases.

use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::placeholders::{Vars, body, header, path};

fn vars<'a>(name: &'a str, password: &'a SecretString) -> Vars<'a> {
    Vars {
        name,
        password: Some(password),
        credential_id: "cred-1",
        task_id: "",
        role_name: "role",
        deadline: 1_800_000_000,
        ttl_seconds: 60,
        key_id: name,
    }
}

/// `%XX` sequences back to bytes; `None` for a malformed one.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z/?#&%=+ .\r\n{}]{0,16}", any::<String>()]
}

fn template() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "{{",
                "}}",
                "{{ .Name }}",
                "{{.Password}}",
                "{{ .KeyID }}",
                "{{ .Deadline }}",
                "{{ .DeadlineUnix }}",
                "{{ .TTLSeconds }}",
                "{{ .Nope }}",
                "/",
                "?",
                "&",
                " ",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ],
        0..10,
    )
    .prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn fuzz_any_template_in_any_place_ends_cleanly(t in template(), name in hostile()) {
        let pw = SecretString::from("s3cret-Pw");
        let v = vars(&name, &pw);
        for result in [path(&t, &v), header(&t, &v)] {
            match result {
                Ok(out) => prop_assert!(!out.contains("s3cret-Pw"), "a password outside a body"),
                Err(e) => prop_assert!(!e.contains("s3cret-Pw"), "{}", e),
            }
        }
        let _ = body(&json!({"a": t, "b": [t]}), &v);
    }

    #[test]
    fn fuzz_a_name_in_a_path_is_encoded_whole(name in hostile()) {
        let pw = SecretString::from("pw");
        let out = path("/keys/{{ .Name }}?owner=x", &vars(&name, &pw)).unwrap();
        let encoded = out.strip_prefix("/keys/").and_then(|r| r.strip_suffix("?owner=x")).unwrap();
        prop_assert!(!encoded.contains(['/', '?', '#', '&', ' ']), "{}", out);
        prop_assert_eq!(percent_decode(encoded), Some(name));
    }

    #[test]
    fn fuzz_headers_never_carry_control_characters(name in hostile()) {
        let pw = SecretString::from("pw");
        match header("Key {{ .Name }}", &vars(&name, &pw)) {
            Ok(out) => {
                prop_assert!(!out.chars().any(char::is_control), "{:?}", out);
                prop_assert_eq!(out, format!("Key {name}"));
            }
            Err(_) => prop_assert!(name.chars().any(char::is_control)),
        }
    }

    #[test]
    fn fuzz_body_strings_hold_the_values_exactly(name in hostile(), password in hostile()) {
        let pw = SecretString::from(password.clone());
        let out = body(
            &json!({"name": "{{ .Name }}", "secret": "{{ .Password }}", "note": "for {{ .Name }}!",
                    "ttl": "{{ .TTLSeconds }}"}),
            &vars(&name, &pw),
        )
        .unwrap();
        prop_assert_eq!(&out["name"], &Value::String(name.clone()));
        prop_assert_eq!(&out["secret"], &Value::String(password));
        prop_assert_eq!(&out["note"], &Value::String(format!("for {name}!")));
        prop_assert_eq!(&out["ttl"], &json!(60));
    }
}
