//! The OpenAPI 3 document of the engine, built from the same path table that routes requests.
//! OpenBao decodes it into its own document type and merges it under the mount's prefix, so it
//! sticks to the plain OpenAPI 3.0 shapes that decoder knows (response codes as string keys).

use serde_json::{Map, Value, json};

use crate::contract::fields::{FieldDef, FieldType};
use crate::contract::request::Operation;
use crate::paths::router::{NAME_RULE, PathDef};

pub fn document(paths: &[PathDef], version: &str) -> Value {
    let mut out = Map::new();
    for def in paths {
        out.insert(format!("/{}", def.pattern), path_item(def));
    }
    json!({
        "openapi": "3.0.2",
        "info": {
            "title": "mayfly",
            "description": "Dynamic secrets with a durable ledger: credentials tied to a task and a deadline.",
            "version": version,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}
        },
        "paths": out,
        "components": {"schemas": {}}
    })
}

fn path_item(def: &PathDef) -> Value {
    let params: Vec<Value> = def
        .params()
        .map(|p| {
            json!({"name": p, "description": NAME_RULE, "in": "path", "required": true,
                   "schema": {"type": "string"}})
        })
        .collect();
    let mut item = Map::new();
    item.insert("description".into(), Value::String(def.synopsis.into()));
    item.insert("parameters".into(), Value::Array(params));
    let id = def.pattern.replace(['/', '{', '}'], "-");
    let id = id.trim_matches('-');
    for op in &def.operations {
        match op.operation {
            Operation::Read => {
                item.insert("get".into(), operation(def, &format!("read-{id}"), None));
            }
            Operation::List => {
                let list = json!([{"name": "list", "description": "Must be set to `true`",
                    "in": "query", "required": true, "schema": {"type": "string", "enum": ["true"]}}]);
                item.insert(
                    "get".into(),
                    operation(def, &format!("list-{id}"), Some(list)),
                );
            }
            Operation::Update | Operation::Create => {
                let mut post = operation(def, &format!("write-{id}"), None);
                post["requestBody"] = json!({
                    "required": def.fields.iter().any(|f| f.required),
                    "content": {"application/json": {"schema": body_schema(&def.fields)}}
                });
                item.insert("post".into(), post);
            }
            Operation::Delete => {
                item.insert(
                    "delete".into(),
                    operation(def, &format!("delete-{id}"), None),
                );
            }
            _ => {}
        }
    }
    Value::Object(item)
}

fn operation(def: &PathDef, id: &str, parameters: Option<Value>) -> Value {
    let mut op = json!({
        "summary": def.synopsis,
        "operationId": id,
        "tags": ["secrets"],
        "responses": {"200": {"description": "OK"}, "204": {"description": "empty body"}}
    });
    if let Some(p) = parameters {
        op["parameters"] = p;
    }
    op
}

fn body_schema(fields: &[FieldDef]) -> Value {
    let mut props = Map::new();
    for f in fields {
        let mut s = json!({"type": f.ty.openapi_type(), "description": f.description});
        match f.ty {
            FieldType::StringList | FieldType::Statements => s["items"] = json!({"type": "string"}),
            FieldType::Duration => s["format"] = json!("duration"),
            _ => {}
        }
        if let Some(d) = &f.default {
            s["default"] = d.to_json();
        }
        if f.secret {
            s["format"] = json!("password");
        }
        props.insert(f.name.into(), s);
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut schema = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}
