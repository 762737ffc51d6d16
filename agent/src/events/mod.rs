//! Ring-buffer records → typed events, length-checked, with an exhaustive match on the kind.
//!
//! A record of an unknown kind or the wrong length is an error: it is counted and skipped,
//! never guessed at.

pub mod socket;

use spanhook_common::{
    event::{read_plain, Plain},
    EventHeader, EventKind, GrpcClientEvent, GrpcServerEvent, HttpClientEvent, HttpServerEvent,
    RustHttpClientEvent, RustHttpServerEvent,
};
use spanhook_common::{RustGrpcClientEvent, RustGrpcServerEvent};

/// A decoded record.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// A request handled by a Go `net/http` server.
    HttpServer(HttpServerEvent),
    /// A request made by a Go `net/http` client.
    HttpClient(HttpClientEvent),
    /// An RPC served by grpc-go.
    GrpcServer(GrpcServerEvent),
    /// An RPC made by a grpc-go client.
    GrpcClient(GrpcClientEvent),
    /// A request served by hyper (Rust, HTTP/1).
    RustHttpServer(RustHttpServerEvent),
    /// A request made by a hyper client (Rust, HTTP/1).
    RustHttpClient(RustHttpClientEvent),
    /// An RPC served by tonic/h2 (Rust).
    RustGrpcServer(RustGrpcServerEvent),
    /// An RPC made by a tonic client (Rust).
    RustGrpcClient(RustGrpcClientEvent),
}

impl Event {
    /// The common header of the record.
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::HttpServer(e) => &e.header,
            Event::HttpClient(e) => &e.header,
            Event::GrpcServer(e) => &e.header,
            Event::GrpcClient(e) => &e.header,
            Event::RustHttpServer(e) => &e.header,
            Event::RustHttpClient(e) => &e.header,
            Event::RustGrpcServer(e) => &e.header,
            Event::RustGrpcClient(e) => &e.header,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than its header.
    #[error("record of {len} bytes is shorter than an event header")]
    NoHeader {
        /// Record length.
        len: usize,
    },
    /// The header names a kind this agent does not know (probes and agent out of step).
    #[error("record has unknown event kind {kind}")]
    UnknownKind {
        /// The raw kind.
        kind: u16,
    },
    /// The record's length does not match its kind.
    #[error("{kind:?} record has {len} bytes, expected {expected}")]
    WrongLength {
        /// The kind from the header.
        kind: EventKind,
        /// Record length.
        len: usize,
        /// Size of the kind's struct.
        expected: usize,
    },
}

fn exact<T: Plain>(kind: EventKind, bytes: &[u8]) -> Result<T, DecodeError> {
    let expected = core::mem::size_of::<T>();
    if bytes.len() != expected {
        return Err(DecodeError::WrongLength {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    Ok(read_plain(bytes).expect("length checked"))
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader =
        read_plain(bytes).ok_or(DecodeError::NoHeader { len: bytes.len() })?;
    let kind =
        EventKind::from_raw(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    match kind {
        EventKind::HttpServer => exact(kind, bytes).map(Event::HttpServer),
        EventKind::HttpClient => exact(kind, bytes).map(Event::HttpClient),
        EventKind::GrpcServer => exact(kind, bytes).map(Event::GrpcServer),
        EventKind::GrpcClient => exact(kind, bytes).map(Event::GrpcClient),
        EventKind::RustHttpServer => exact(kind, bytes).map(Event::RustHttpServer),
        EventKind::RustHttpClient => exact(kind, bytes).map(Event::RustHttpClient),
        EventKind::RustGrpcServer => exact(kind, bytes).map(Event::RustGrpcServer),
        EventKind::RustGrpcClient => exact(kind, bytes).map(Event::RustGrpcClient),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use spanhook_common::{Str, TraceIds};

    /// Builds a `Str<N>` holding `s`.
    pub fn str_of<const N: usize>(s: &str) -> Str<N> {
        let mut out = Str::<N>::default();
        let n = s.len().min(N);
        out.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        out.len = s.len() as u32;
        out
    }

    /// A plausible server event for tests.
    pub fn server_event(method: &str, path: &str, status: u16) -> HttpServerEvent {
        HttpServerEvent {
            header: EventHeader {
                kind: EventKind::HttpServer as u16,
                _pad: 0,
                tgid: 4242,
                start_ns: 1_000_000,
                end_ns: 3_500_000,
            },
            trace: TraceIds {
                trace_id: [7; 16],
                span_id: [8; 8],
                parent_span_id: [0; 8],
                flags: 1,
                origin: TraceIds::ORIGIN_NEW,
                _pad: [0; 6],
            },
            goid: 17,
            status,
            proto_major: 1,
            proto_minor: 1,
            tls: 0,
            _pad: [0; 3],
            method: str_of(method),
            path: str_of(path),
            host: str_of("localhost:8080"),
            route: str_of(""),
            remote: str_of("127.0.0.1:50000"),
        }
    }

    /// A plausible client event for tests.
    pub fn client_event(method: &str, host: &str, path: &str, status: u16) -> HttpClientEvent {
        HttpClientEvent {
            header: EventHeader {
                kind: EventKind::HttpClient as u16,
                _pad: 0,
                tgid: 4242,
                start_ns: 1_100_000,
                end_ns: 2_100_000,
            },
            trace: TraceIds {
                trace_id: [7; 16],
                span_id: [9; 8],
                parent_span_id: [8; 8],
                flags: 1,
                origin: TraceIds::ORIGIN_GOROUTINE,
                _pad: [0; 6],
            },
            goid: 17,
            error_itab: 0,
            status,
            proto_major: 1,
            proto_minor: 1,
            propagated: 0,
            _pad: [0; 3],
            method: str_of(method),
            scheme: str_of("http"),
            host: str_of(host),
            path: str_of(path),
        }
    }

    pub(crate) fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_server_event() {
        let ev = server_event("GET", "/hello", 200);
        let Ok(Event::HttpServer(got)) = decode(&bytes_of(&ev)) else {
            panic!("not a server event");
        };
        assert_eq!(got.method.as_bytes(), b"GET");
        assert_eq!(got.path.as_bytes(), b"/hello");
        assert_eq!(got.status, 200);
        assert_eq!(got.header.tgid, 4242);
    }

    #[test]
    fn decodes_a_client_event() {
        let ev = client_event("POST", "api:8080", "/v1/x", 201);
        let Ok(Event::HttpClient(got)) = decode(&bytes_of(&ev)) else {
            panic!("not a client event");
        };
        assert_eq!(got.host.as_bytes(), b"api:8080");
        assert_eq!(got.status, 201);
        // A client record is not a server record, whatever their lengths.
        let mut bytes = bytes_of(&ev);
        bytes[0] = EventKind::HttpServer as u8;
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::WrongLength { .. })
        ));
    }

    #[test]
    fn rejects_short_unknown_and_wrong_length_records() {
        assert!(matches!(
            decode(&[1, 0, 0]),
            Err(DecodeError::NoHeader { len: 3 })
        ));
        let mut bytes = bytes_of(&server_event("GET", "/", 200));
        bytes[0] = 99;
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::UnknownKind { kind: 99 })
        ));
        let mut bytes = bytes_of(&server_event("GET", "/", 200));
        bytes.truncate(100);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::WrongLength {
                expected: 696,
                len: 100,
                ..
            })
        ));
    }
}
