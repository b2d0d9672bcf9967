//! The path table at work: connections and their secrets, bad input, help and OpenAPI.

use std::sync::Arc;

use serde_json::Value;
use serde_json::json;

use crate::contract::connection_config;
use crate::contract::error::Error;
use crate::contract::request::{Operation, Request, Response};
use crate::contract::storage::InMemoryStorage;
use crate::engine::*;
use crate::testkit;
use crate::testkit::Fake;
use crate::testkit::FixedHost;

fn engine() -> (Engine, InMemoryStorage) {
    let s = InMemoryStorage::new();
    let e = testkit::engine(s.clone(), &Arc::new(Fake::default()), FixedHost::default());
    (e, s)
}

async fn call(e: &Engine, op: Operation, path: &str, data: Value) -> Result<Response, Error> {
    e.handle(Request::new(op, path).with_data(data)).await
}

/// Found by a caller who could write connections but not read them: pointing one at a
/// server of theirs sent them its stored password.
#[tokio::test]
async fn a_connection_moves_elsewhere_only_with_its_secrets() {
    let (e, _) = engine();
    let write = |body: Value| call(&e, Operation::Update, "config/db", body);
    write(
        json!({"plugin_name": "fake", "url": "fake://db", "password": "hunter2",
                 "verify_connection": false}),
    )
    .await
    .unwrap();
    let err = write(json!({"url": "fake://theirs"})).await.unwrap_err();
    assert_eq!(err.status(), 400);
    let msg = err.to_string();
    assert!(
        msg.starts_with("field 'password' is required")
            && msg.contains("changes where it connects ('url')"),
        "{msg}"
    );
    // Nothing else needs them; with them, the move is the writer's to make.
    write(json!({"pool": 8, "allowed_roles": "*"}))
        .await
        .unwrap();
    write(json!({"url": "fake://theirs", "password": "theirs"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn config_round_trip_hides_secrets() {
    let (e, s) = engine();
    let body = json!({"plugin_name": "fake-database-plugin", "url": "fake://db", "password": "hunter2",
                      "allowed_roles": "a,b"});
    call(&e, Operation::Update, "config/main", body)
        .await
        .unwrap();
    let read = call(&e, Operation::Read, "config/main", Value::Null)
        .await
        .unwrap();
    let data = read.data.unwrap();
    assert_eq!(
        data["plugin_name"], "fake",
        "alias stored as the canonical kind"
    );
    assert_eq!(data["connection_details"]["pool"], 4);
    assert_eq!(data["allowed_roles"], json!(["a", "b"]));
    assert_eq!(data["secret_fields_set"], json!(["password"]));
    assert!(!Value::Object(data).to_string().contains("hunter2"));
    let dbg = format!(
        "{:?}",
        connection_config::load(&s, "main").await.unwrap().unwrap()
    );
    assert!(!dbg.contains("hunter2"), "{dbg}");

    // An update keeps what it does not mention.
    call(&e, Operation::Update, "config/main", json!({"pool": 9}))
        .await
        .unwrap();
    let c = connection_config::load(&s, "main").await.unwrap().unwrap();
    assert_eq!(c.secret("password"), Some("hunter2"));
    assert_eq!(c.setting_i64("pool"), Some(9));

    let list = call(&e, Operation::List, "config/", Value::Null)
        .await
        .unwrap();
    assert_eq!(list.data.unwrap()["keys"], json!(["main"]));
    call(&e, Operation::Delete, "config/main", Value::Null)
        .await
        .unwrap();
    let read = call(&e, Operation::Read, "config/main", Value::Null)
        .await
        .unwrap();
    assert_eq!(read.data, None);
}

#[tokio::test]
async fn bad_input_is_a_400_that_names_the_field_and_saves_nothing() {
    let (e, s) = engine();
    let cases = [
        (
            json!({"url": "fake://db"}),
            "field 'plugin_name' is required",
        ),
        (
            json!({"plugin_name": "oracle", "url": "fake://db"}),
            "unknown kind 'oracle'; known kinds: fake (alias: fake-database-plugin)",
        ),
        (
            json!({"plugin_name": 7}),
            "field 'plugin_name': expected a string",
        ),
        (json!({"plugin_name": "fake"}), "field 'url' is required"),
        (
            json!({"plugin_name": "fake", "url": "fake://db", "colour": "red"}),
            "unknown field 'colour'",
        ),
        (
            json!({"plugin_name": "fake", "url": "fake://db", "pool": "many"}),
            "field 'pool': expected an integer",
        ),
        (
            json!({"plugin_name": "fake", "url": "http://db"}),
            "field 'url': expected fake://",
        ),
        (
            json!({"plugin_name": "fake", "url": "fake://down", "password": "hunter2"}),
            "cannot connect: auth failed for <redacted>",
        ),
    ];
    for (body, expected) in cases {
        let err = call(&e, Operation::Update, "config/x", body.clone())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 400, "{body}: {err}");
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
    assert!(s.dump().is_empty(), "nothing half-created");

    let big = json!({"plugin_name": "fake", "url": "x".repeat(MAX_BODY_BYTES)});
    let err = call(&e, Operation::Update, "config/x", big)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 413);
    let err = call(&e, Operation::Update, "config/bad name", json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("path segment 'name'"), "{err}");
}

#[tokio::test]
async fn verification_can_be_skipped_and_kind_cannot_change() {
    let (e, _) = engine();
    let body = json!({"plugin_name": "fake", "url": "fake://down", "verify_connection": false});
    call(&e, Operation::Update, "config/x", body).await.unwrap();
    // The stored config keeps verify_connection=false, so an update does not verify either.
    call(&e, Operation::Update, "config/x", json!({"pool": 2}))
        .await
        .unwrap();
    let err = call(
        &e,
        Operation::Update,
        "config/x",
        json!({"verify_connection": true}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn host_operations_never_fail() {
    let (e, _) = engine();
    for op in [Operation::ResolvePath, Operation::Rollback] {
        assert_eq!(
            call(&e, op, "anything/at/all", Value::Null).await,
            Ok(Response::empty())
        );
    }
    assert_eq!(
        call(&e, Operation::Read, "nope", Value::Null).await,
        Err(Error::UnsupportedPath)
    );
    assert_eq!(
        call(&e, Operation::List, "config/x", Value::Null).await,
        Err(Error::UnsupportedOperation)
    );
}

#[tokio::test]
async fn help_and_openapi_come_from_the_path_table() {
    let (e, _) = engine();
    let root = call(&e, Operation::Help, "", Value::Null)
        .await
        .unwrap()
        .data
        .unwrap();
    let doc = &root["openapi"];
    assert_eq!(doc["openapi"], "3.0.2");
    let item = &doc["paths"]["/config/{name}"];
    assert!(
        item["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["url"]
            .is_object()
    );
    assert_eq!(item["parameters"][0]["name"], "name");
    assert!(doc["paths"]["/config/"]["get"].is_object());
    let help = call(&e, Operation::Help, "config/x", Value::Null)
        .await
        .unwrap()
        .data
        .unwrap();
    let text = help["help"].as_str().unwrap();
    assert!(
        text.contains("plugin_name") && text.contains("password (string, write-only)"),
        "{text}"
    );
}
