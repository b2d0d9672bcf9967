//! Fuzzing of the RESP reply decoder, as property tests: any bytes from a server end in a reply
//! or an error, never a panic or a hang (nesting is read without recursion, lengths are not
//! allocated before their bytes arrive); and every well-formed reply is read back exactly.
//! `scripts/fuzz` runs many more cases (`PROPTEST_CASES`).

use proptest::prelude::*;

use crate::resp::{Reply, read_reply};

fn read(bytes: &[u8]) -> Option<Reply> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut reader = tokio::io::BufReader::new(bytes);
    rt.block_on(read_reply(&mut reader)).ok()
}

/// RESP2 for `reply`, written independently of the decoder.
fn encode(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Reply::Bulk(Some(b)) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(Some(items)) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for i in items {
                encode(i, out);
            }
        }
    }
}

fn reply() -> impl Strategy<Value = Reply> {
    // Simple strings and errors are one line: no CR or LF in them.
    let line = "[^\r\n]{0,12}";
    let leaf = prop_oneof![
        line.prop_map(Reply::Simple),
        line.prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Int),
        Just(Reply::Bulk(None)),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| Reply::Bulk(Some(b))),
        Just(Reply::Array(None)),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop::collection::vec(inner, 0..5).prop_map(|v| Reply::Array(Some(v)))
    })
}

proptest! {
    #[test]
    fn fuzz_any_bytes_end_in_a_reply_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = read(&bytes);
    }

    #[test]
    fn fuzz_resp_shaped_garbage_ends_cleanly(parts in prop::collection::vec(prop_oneof![
        prop::sample::select(vec!["*", "$", "+", "-", ":", "\r\n", "\n", "-1", "0", "3",
            "536870911", "99999999999999999999", "*1\r\n*1\r\n*1\r\n"]).prop_map(str::to_owned),
        "[a-z0-9]{0,4}",
    ], 0..24)) {
        let bytes = parts.concat().into_bytes();
        let started = std::time::Instant::now();
        let _ = read(&bytes);
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn fuzz_well_formed_replies_read_back_exactly(r in reply()) {
        let mut bytes = Vec::new();
        encode(&r, &mut bytes);
        prop_assert_eq!(read(&bytes), Some(r));
    }
}
