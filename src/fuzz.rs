//! Fuzzing of what the engine parses from outside, as property tests: request fields and whole
//! requests (operation, path, body) through the engine, the path router, durations and username
//! templates. Every case must end without a panic, in bounded time, with a result that keeps the
//! rules (a bad input is a 4xx that names the field, a rendered name keeps its limits).
//! CI runs the default number of cases; `scripts/fuzz` runs many more (`PROPTEST_CASES`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::contract::fields::{FieldDef, FieldType, FieldValue, parse_duration};
use crate::contract::request::{Operation, Request};
use crate::contract::storage::InMemoryStorage;
use crate::contract::template::{DEFAULT_USERNAME_TEMPLATE, Inputs, Sources, render};
use crate::paths::router::{Router, validate_name};
use crate::testkit::Fake;
use crate::testkit::FixedHost;
use crate::{Backends, Engine};

/// The longest one case may take: a case that runs longer is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(2);

/// Any JSON value, nested a few levels, with strings that look like the engine's own inputs.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<u64>().prop_map(Value::from),
        "[0-9]{0,6}[smhd]{0,2}".prop_map(Value::String),
        "[a-z*,= ]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const TYPES: [FieldType; 9] = [
    FieldType::String,
    FieldType::Int,
    FieldType::Bool,
    FieldType::Duration,
    FieldType::StringList,
    FieldType::Statements,
    FieldType::StringMap,
    FieldType::Json,
    FieldType::String,
];

/// Path segments: the engine's own words, names, and anything.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "config",
            "roles",
            "creds",
            "leases",
            "tasks",
            "revoke",
            "task",
            "role",
            "all",
            "revocations",
            "orphans",
            "rotate-root",
            "static-roles",
            "static-creds",
            "rotate-role",
            "policies",
            "policies-schema",
            "simulate",
            "",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9._-]{1,12}",
        any::<String>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("/"))
}

fn operation() -> impl Strategy<Value = Operation> {
    prop::sample::select(vec![
        Operation::Read,
        Operation::Create,
        Operation::Update,
        Operation::Patch,
        Operation::Delete,
        Operation::List,
        Operation::parse("help"),
        Operation::parse("rollback"),
        Operation::parse("renew"),
        Operation::parse("revoke"),
    ])
}

/// Request bodies whose keys are the engine's field names as often as not.
fn body() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "plugin_name",
            "connection_url",
            "username",
            "password",
            "allowed_roles",
            "verify_connection",
            "db_name",
            "default_ttl",
            "max_ttl",
            "creation_statements",
            "revocation_statements",
            "username_template",
            "member_of",
            "ttl",
            "task_id",
            "description",
            "metadata",
            "policy",
            "rotation_period",
            "rotation_schedule",
            "max_open_connections",
            "host",
            "port",
            "nodes",
            "labels",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ];
    prop::collection::btree_map(key, json_value(), 0..6).prop_map(|m| m.into_iter().collect())
}

fn engine() -> Engine {
    crate::testkit::engine(
        InMemoryStorage::new(),
        &Arc::new(Fake::default()),
        FixedHost::default(),
    )
}

proptest! {
    #[test]
    fn fuzz_field_parse_keeps_its_contract(ty in 0..TYPES.len(), raw in json_value()) {
        let def = FieldDef::new("the_field", TYPES[ty], "");
        let started = Instant::now();
        match def.parse(&raw) {
            Ok(FieldValue::String(s)) => prop_assert_eq!(Some(s.as_str()), raw.as_str()),
            Ok(_) => {}
            Err(e) => {
                prop_assert_eq!(e.status(), 400);
                prop_assert!(e.to_string().contains("'the_field'"), "{}", e);
            }
        }
        prop_assert!(started.elapsed() < CASE_LIMIT);
    }

    #[test]
    fn fuzz_parse_duration_never_panics(text in any::<String>()) {
        let _ = parse_duration(&text);
    }

    #[test]
    fn fuzz_parse_duration_sums_its_units(parts in prop::collection::vec((0u64..10_000, 0usize..4), 1..5)) {
        let units = [('s', 1), ('m', 60), ('h', 3600), ('d', 86400)];
        let text: String = parts.iter().map(|(n, u)| format!("{n}{}", units[*u].0)).collect();
        let sum: u64 = parts.iter().map(|(n, u)| n * units[*u].1).sum();
        prop_assert_eq!(parse_duration(&text), Some(sum));
    }

    #[test]
    fn fuzz_router_matches_only_valid_names(path in path()) {
        let router = Router { paths: crate::engine::paths(&Backends::new(vec![Arc::new(Fake::default())])) };
        if let Ok(m) = router.find(&path) {
            let pattern: Vec<&str> = m.def.pattern.split('/').collect();
            prop_assert_eq!(pattern.len(), path.split('/').count());
            for (name, value) in &m.params {
                prop_assert!(validate_name(name, value).is_ok(), "{} = {:?}", name, value);
            }
        }
    }

    #[test]
    fn fuzz_requests_through_the_engine_never_fail_inside(
        op in operation(), path in path(), data in body()
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let engine = engine();
        let started = Instant::now();
        let result = rt.block_on(engine.handle(Request::new(op, &path).with_data(Value::Object(data))));
        prop_assert!(started.elapsed() < CASE_LIMIT);
        if let Err(e) = result {
            // The fake target never fails, storage is in memory: a 500 is a bug in mayfly.
            prop_assert!(e.status() != 500, "{} {:?}: {}", path, op, e);
        }
    }

    #[test]
    fn fuzz_username_templates_end_in_bounded_time(template in template_text()) {
        let inputs = Inputs { role_name: "app", display_name: "token", credential_id: "c1", task_id: "", mark: "mf-0a1b2c-", sources: Sources::Live };
        let started = Instant::now();
        match render(&template, &inputs) {
            Ok(out) => prop_assert!(out.len() < 1 << 20),
            Err(e) => prop_assert!(e.to_string().contains("username_template"), "{}", e),
        }
        prop_assert!(started.elapsed() < CASE_LIMIT);
    }

    #[test]
    fn fuzz_default_template_keeps_the_mark_and_the_limit(
        role in any::<String>(), display in any::<String>(), task in any::<String>()
    ) {
        let inputs = Inputs { role_name: &role, display_name: &display, credential_id: "c1", task_id: &task, mark: "mf-0a1b2c-", sources: Sources::Live };
        let name = render(DEFAULT_USERNAME_TEMPLATE, &inputs).unwrap();
        prop_assert!(name.starts_with(inputs.mark), "{}", name);
        prop_assert!(name.len() <= 63, "{} bytes", name.len());
        prop_assert_eq!(name.to_lowercase(), name.clone());
    }
}

/// Templates built from the language's own pieces, so that most cases parse far enough to
/// exercise functions, pipes and parentheses.
fn template_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "{{",
            "}}",
            " ",
            "|",
            "(",
            ")",
            ".RoleName",
            ".DisplayName",
            ".CredentialID",
            ".TaskID",
            "random",
            "truncate",
            "lowercase",
            "uppercase",
            "replace",
            "printf",
            "unix_time",
            "unix_time_millis",
            "uuid",
            "\"%s-%d%%\"",
            "\"a\"",
            "8",
            "99999999999",
            "-1",
            "0",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    prop::collection::vec(token, 0..16).prop_map(|t| t.concat())
}
