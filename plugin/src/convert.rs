//! Between the host's protocol messages and the core's request model (protocol document §4).

use mayfly::{Error, LeaseGrant, LeaseInfo, Operation, Request, Requester, Response};
use serde_json::{Map, Value};

use crate::proto::pb;

/// The core request for a host request. A body that is not a JSON object is a 400.
pub fn request(req: pb::Request) -> Result<Request, Error> {
    let data = match req.data.trim() {
        "" | "null" => Map::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(Error::bad_request("the request body must be a JSON object")),
            Err(e) => {
                return Err(Error::bad_request(format!(
                    "the request body is not valid JSON: {e}"
                )));
            }
        },
    };
    let lease = req.secret.map(|secret| {
        let options = secret.lease_options.unwrap_or_default();
        LeaseInfo {
            internal_data: match serde_json::from_str(&secret.internal_data) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            },
            lease_id: secret.lease_id,
            increment: seconds(options.increment),
            max_ttl: seconds(options.max_ttl),
        }
    });
    let headers = req
        .headers
        .into_iter()
        .map(|(name, values)| (name.to_ascii_lowercase(), values.header.join(", ")))
        .collect();
    Ok(Request {
        lease,
        headers,
        operation: Operation::parse(&req.operation),
        path: req.path,
        data,
        body_len: req.data.len(),
        requester: Requester {
            entity_id: req.entity_id,
            token_accessor: req.client_token_accessor,
            display_name: req.display_name,
            remote_addr: req.connection.map(|c| c.remote_addr).unwrap_or_default(),
        },
    })
}

fn seconds(nanos: i64) -> u64 {
    u64::try_from(nanos).unwrap_or(0) / 1_000_000_000
}

fn nanos(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX)
}

/// The host's lease for a grant. `issue_time` must be set whenever lease options are (the
/// host fails the request with "invalid nil Timestamp" otherwise).
fn secret(grant: LeaseGrant) -> pb::Secret {
    pb::Secret {
        lease_options: Some(pb::LeaseOptions {
            ttl: nanos(grant.ttl),
            renewable: grant.renewable,
            increment: 0,
            issue_time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            max_ttl: nanos(grant.max_ttl),
        }),
        internal_data: Value::Object(grant.internal_data).to_string(),
        lease_id: String::new(),
    }
}

/// The host reply for a core result. `data` is always JSON text (`null` when empty), never "".
///
/// A 400 goes back as an "error response" (`data = {"error": msg}` and no ProtoError): it is the
/// only form OpenBao 2.7.2 shows verbatim (`{"errors":["msg"]}`). Every ProtoError, coded ones
/// included, reaches the client wrapped as "1 error occurred:\n\t* msg".
pub fn reply(result: Result<Response, Error>) -> pb::HandleRequestReply {
    let response = |data: Value, warnings: Vec<String>| pb::Response {
        data: data.to_string(),
        warnings,
        ..Default::default()
    };
    match result {
        Ok(resp) if resp.data.is_none() && resp.warnings.is_empty() && resp.lease.is_none() => {
            pb::HandleRequestReply::default()
        }
        Ok(resp) => pb::HandleRequestReply {
            response: Some(pb::Response {
                secret: resp.lease.map(secret),
                ..response(
                    resp.data.map(Value::Object).unwrap_or(Value::Null),
                    resp.warnings,
                )
            }),
            err: None,
        },
        Err(Error::BadRequest(msg)) => pb::HandleRequestReply {
            response: Some(response(serde_json::json!({ "error": msg }), Vec::new())),
            err: None,
        },
        Err(e) => pb::HandleRequestReply {
            response: None,
            err: Some(error(&e)),
        },
    }
}

/// ProtoError types: 3 ("coded") carries our own HTTP status; 5 and 6 are the host's own
/// "unsupported operation/path" (their text is fixed by the host).
pub fn error(e: &Error) -> pb::ProtoError {
    let (err_type, code) = match e {
        Error::UnsupportedOperation => (5, 405),
        Error::UnsupportedPath => (6, 404),
        other => (3, i64::from(other.status())),
    };
    pb::ProtoError {
        err_type,
        err_msg: e.to_string(),
        err_code: code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_data_is_null_and_bad_bodies_are_400() {
        let r = request(pb::Request {
            data: "null".into(),
            operation: "read".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(r.data.is_empty());
        let e = request(pb::Request {
            data: "[1]".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.status(), 400);
        let reply = reply(Ok(Response::empty()));
        assert!(reply.response.is_none() && reply.err.is_none());
        let mut m = Map::new();
        m.insert("a".into(), Value::from(1));
        assert_eq!(
            super::reply(Ok(Response::data(m))).response.unwrap().data,
            r#"{"a":1}"#
        );
        let bad = super::reply(Err(Error::bad_request("field 'x': no")));
        assert_eq!(bad.response.unwrap().data, r#"{"error":"field 'x': no"}"#);
        assert!(bad.err.is_none());
        let e = error(&Error::Target("db down".into()));
        assert_eq!(
            (e.err_type, e.err_code, e.err_msg.as_str()),
            (3, 502, "db down")
        );
    }
}
