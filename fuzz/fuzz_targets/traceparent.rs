//! The incoming `traceparent` in user space: `reassembly::Traceparent::parse` of an arbitrary
//! header value, checked against W3C Trace Context level 1 (what a valid value must look like,
//! and that the ids read are the value's own), and the same value carried in a request head
//! through `head::parse_request`, which must read it the same way.
//!
//! Seeds (written by `cargo xtask fuzz`): valid values of each version and flag, the W3C
//! specification's invalid examples (uppercase, zero ids, version `ff`, short, long, bad
//! separators), values with surrounding whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanhook::reassembly::{head::parse_request, Traceparent};

/// Lowercase hex, as the header carries ids.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let parsed = Traceparent::parse(data);
    let value = data.trim_ascii();
    match parsed {
        Traceparent::Valid {
            trace_id,
            parent_id,
            flags,
        } => {
            assert!(value.len() >= 55, "{value:?}");
            assert_ne!(&value[..2], b"ff");
            if &value[..2] == b"00" {
                assert_eq!(value.len(), 55, "version 00 has exactly four fields");
            } else {
                assert!(value.len() == 55 || value[55] == b'-');
            }
            assert_eq!(value[2], b'-');
            assert_eq!(hex(&trace_id).as_bytes(), &value[3..35]);
            assert_eq!(value[35], b'-');
            assert_eq!(hex(&parent_id).as_bytes(), &value[36..52]);
            assert_eq!(value[52], b'-');
            assert_eq!(hex(&[flags]).as_bytes(), &value[53..55]);
            assert_ne!(trace_id, [0; 16]);
            assert_ne!(parent_id, [0; 8]);
        }
        Traceparent::Invalid => {}
        Traceparent::Absent => panic!("a value that is there is never absent"),
    }
    // The value as the header of a request: read the same, unless it breaks the line.
    if !data.iter().any(|&b| b == b'\r' || b == b'\n') {
        let head = [
            b"GET /orders HTTP/1.1\r\nHost: shop\r\ntraceparent:".as_slice(),
            data,
            b"\r\nAccept: */*\r\n\r\n",
        ]
        .concat();
        let request = parse_request(&head).expect("a well-formed head");
        assert_eq!(request.traceparent, parsed);
        assert_eq!(request.path, "/orders");
    }
});
