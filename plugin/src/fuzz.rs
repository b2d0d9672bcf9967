//! Fuzzing of what the host sends, as property tests: any bytes as a `HandleRequestArgs` either
//! fail to decode or become a core request (or a 400 for a body that is not a JSON object),
//! never a panic; and any core result becomes a reply the host can read back. `scripts/fuzz`
//! runs many more cases (`PROPTEST_CASES`).

use proptest::prelude::*;
use prost::Message;

use crate::convert;
use crate::proto::pb;

/// Bytes that are a valid message some of the time: a real request, then mutated.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let real = (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        any::<i64>(),
    )
        .prop_map(|(path, data, internal, ttl)| {
            pb::HandleRequestArgs {
                storage_id: 1,
                request: Some(pb::Request {
                    operation: "update".into(),
                    path,
                    data,
                    secret: Some(pb::Secret {
                        internal_data: internal,
                        lease_options: Some(pb::LeaseOptions {
                            ttl,
                            increment: ttl,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }
            .encode_to_vec()
        });
    let mutated = (
        real,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, b) in edits {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
            }
            bytes
        });
    prop_oneof![mutated, prop::collection::vec(any::<u8>(), 0..128)]
}

proptest! {
    #[test]
    fn fuzz_host_messages_decode_or_fail_cleanly(bytes in message_bytes()) {
        let decoded = pb::HandleRequestArgs::decode(bytes.as_slice());
        if let Some(req) = decoded.ok().and_then(|args| args.request) {
            let data = req.data.clone();
            match convert::request(req) {
                Ok(r) => prop_assert_eq!(r.body_len, data.len()),
                Err(e) => prop_assert_eq!(e.status(), 400),
            }
        }
    }

    #[test]
    fn fuzz_request_bodies_are_objects_or_a_400(data in prop_oneof![
        any::<String>(),
        "\\{\"[a-z]{0,5}\": ?(1|\"x\"|null|\\[\\]|\\{\\})\\}",
        Just("null".to_owned()),
        Just(" ".to_owned()),
    ]) {
        let req = pb::Request { operation: "update".into(), data: data.clone(), ..Default::default() };
        let parsed = serde_json::from_str::<serde_json::Value>(data.trim());
        match convert::request(req) {
            Ok(_) => prop_assert!(
                matches!(parsed, Ok(serde_json::Value::Object(_)) | Ok(serde_json::Value::Null))
                    || data.trim().is_empty()
            ),
            Err(e) => {
                prop_assert_eq!(e.status(), 400);
                prop_assert!(!matches!(parsed, Ok(serde_json::Value::Object(_))));
            }
        }
    }

    #[test]
    fn fuzz_replies_encode_and_decode(msg in any::<String>(), status in 0usize..8) {
        let errors = [
            mayfly::Error::bad_request(msg.clone()),
            mayfly::Error::PermissionDenied(msg.clone()),
            mayfly::Error::UnsupportedPath,
            mayfly::Error::UnsupportedOperation,
            mayfly::Error::PayloadTooLarge(msg.clone()),
            mayfly::Error::Target(msg.clone()),
            mayfly::Error::Unavailable(msg.clone()),
            mayfly::Error::Internal(msg.clone()),
        ];
        let reply = convert::reply(Err(errors[status].clone()));
        let bytes = reply.encode_to_vec();
        prop_assert_eq!(pb::HandleRequestReply::decode(bytes.as_slice()).ok(), Some(reply));
    }
}
