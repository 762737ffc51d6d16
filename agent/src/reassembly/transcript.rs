//! A compact binary transcript of socket calls — which connection, which way, how many bytes
//! moved and which were copied, closes — replayed through the [`Reassembler`]. The fuzz target
//! `http1_stream` feeds it arbitrary bytes, and `cargo xtask fuzz` writes its seeds with
//! [`encode`], so both agree on one format.
//!
//! Each call is a control byte (bit 0: written by the process, else read; bit 1: a close;
//! bit 2: through libssl; bits 3–5: one of eight connections), a byte of bytes moved but not
//! copied (× 64), a little-endian `u16` length, and that many copied bytes (fewer when the
//! input ends).

use spanhook_common::{
    socket::{direction, source},
    EventHeader, SocketDataHeader, SocketRecordKind,
};

use super::{Reassembler, Side, Sink};
use crate::events::socket::SocketRecord;

/// The process every replayed call belongs to.
pub const PID: u32 = 4242;

/// One call of a transcript.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// Connection number (0–7).
    pub conn: u8,
    /// Read or written by the process.
    pub side: Side,
    /// Plaintext seen through libssl.
    pub tls: bool,
    /// The connection closes (no bytes).
    pub close: bool,
    /// The copied bytes.
    pub bytes: &'a [u8],
    /// Further bytes moved but not copied, in units of 64.
    pub uncopied: u8,
}

impl<'a> Call<'a> {
    /// The process read `bytes` on `conn`.
    pub fn read(conn: u8, bytes: &'a [u8]) -> Self {
        Call {
            conn,
            side: Side::Ingress,
            tls: false,
            close: false,
            bytes,
            uncopied: 0,
        }
    }

    /// The process wrote `bytes` on `conn`.
    pub fn write(conn: u8, bytes: &'a [u8]) -> Self {
        Call {
            side: Side::Egress,
            ..Call::read(conn, bytes)
        }
    }

    /// `conn` closes.
    pub fn close(conn: u8) -> Self {
        Call {
            close: true,
            ..Call::read(conn, &[])
        }
    }
}

/// Writes `calls` as a transcript.
pub fn encode(calls: &[Call<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in calls {
        let ctrl = (c.side == Side::Egress) as u8
            | (c.close as u8) << 1
            | (c.tls as u8) << 2
            | (c.conn & 7) << 3;
        let n = c.bytes.len().min(u16::MAX as usize);
        out.push(ctrl);
        out.push(c.uncopied);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&c.bytes[..n]);
    }
    out
}

/// Replays a transcript (any bytes) through a fresh reassembler; returns it for inspection.
pub fn replay(data: &[u8], sink: &mut dyn Sink) -> Reassembler {
    let mut r = Reassembler::new();
    r.add_process(PID, true, true);
    let mut at = 0usize;
    let mut clock = 1_000u64;
    while at + 4 <= data.len() {
        let ctrl = data[at];
        let uncopied = data[at + 1] as u64 * 64;
        let n = u16::from_le_bytes([data[at + 2], data[at + 3]]) as usize;
        at += 4;
        let bytes = &data[at..(at + n).min(data.len())];
        at += n;
        clock += 1_000;
        let conn = ((ctrl >> 3) & 7) as u64;
        let tls = ctrl & 4 != 0;
        let close = ctrl & 2 != 0;
        let h = SocketDataHeader {
            header: EventHeader {
                kind: if close {
                    SocketRecordKind::Close
                } else {
                    SocketRecordKind::Data
                } as u16,
                _pad: 0,
                tgid: PID,
                start_ns: clock,
                end_ns: clock + 500,
            },
            sock: 0xffff_8880_0000_0000 + conn * 0x1000,
            ssl: if tls { 0x5000 + conn * 0x100 } else { 0 },
            len: if close {
                0
            } else {
                bytes.len() as u64 + uncopied
            },
            tid: PID,
            fd: 3 + conn as i32,
            captured: if close { 0 } else { bytes.len() as u16 },
            family: 2,
            local_port: 8080,
            remote_port: 40000 + conn as u16,
            source: if tls { source::TLS } else { source::SYSCALL },
            direction: if ctrl & 1 != 0 {
                direction::EGRESS
            } else {
                direction::INGRESS
            },
            flags: 0,
            _pad: [0; 5],
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, conn as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let rec = SocketRecord {
            kind: if close {
                SocketRecordKind::Close
            } else {
                SocketRecordKind::Data
            },
            header: h,
            data: if close { &[] } else { bytes },
        };
        r.feed(&rec, sink);
    }
    r
}

/// Typical traffic as transcripts, with the number of exchanges each gives: the fuzz seeds.
pub fn examples() -> Vec<(&'static str, Vec<u8>, usize)> {
    let fake = b"GET /in-a-body HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    let mut put = b"PUT /up HTTP/1.1\r\nContent-Length: 36\r\n\r\n".to_vec();
    put.extend_from_slice(fake);
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        24\r\nGET /in-a-body HTTP/1.1\r\n\r\nHTTP/1.1 200\r\n0\r\nX-Trailer: 1\r\n\r\n";
    vec![
        (
            "server-keep-alive",
            encode(&[
                Call::read(0, b"GET /a?q=1 HTTP/1.1\r\nHost: h:8080\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"),
                Call::write(0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                Call::read(0, &put),
                Call::write(0, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
                Call::read(0, b"HEAD /a HTTP/1.1\r\n\r\n"),
                Call::write(0, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
            ]),
            3,
        ),
        (
            "server-pipelined-chunked",
            encode(&[
                Call::read(1, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
                Call::write(1, chunked),
                Call::write(1, b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!"),
            ]),
            2,
        ),
        (
            "client-until-close",
            encode(&[
                Call::write(2, b"DELETE /x HTTP/1.1\r\nHost: api\r\n\r\n"),
                Call::read(2, b"HTTP/1.0 500 Oops\r\n\r\nbody until close"),
                Call::close(2),
            ]),
            1,
        ),
        (
            "uncopied-body-and-tls",
            encode(&[
                Call::read(3, b"POST /big HTTP/1.1\r\nContent-Length: 20000\r\n\r\n"),
                Call {
                    uncopied: 255,
                    ..Call::read(3, b"GET /no HTTP/1.1\r\n\r\n")
                },
                Call {
                    uncopied: 56,
                    ..Call::read(3, b"")
                },
                Call::write(3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                Call {
                    tls: true,
                    ..Call::read(4, b"GET /secure HTTP/1.1\r\n\r\n")
                },
                Call {
                    tls: true,
                    ..Call::write(4, b"HTTP/1.1 204 No Content\r\n\r\n")
                },
                Call::read(5, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
                Call::read(6, b"\x00\x00\x00\x2a binary protocol"),
            ]),
            2,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reassembly::Exchange;

    #[test]
    fn a_transcript_replays_into_exchanges() {
        let data = encode(&[
            Call::read(1, b"GET /a HTTP/1.1\r\n\r\n"),
            Call::write(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Call::write(2, b"POST /b HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Call::read(2, b"HTTP/1.1 500 Oops\r\n\r\n"),
            Call::close(2),
        ]);
        let mut got: Vec<Exchange> = Vec::new();
        replay(&data, &mut |e| got.push(e));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].request.path, "/a");
        assert_eq!(got[1].status, Some(500));
        for (name, data, n) in examples() {
            let mut got = 0;
            replay(&data, &mut |_: Exchange| got += 1);
            assert_eq!(got, n, "{name}");
        }
        // Cut anywhere, it still does not panic.
        for cut in 0..data.len() {
            replay(&data[..cut], &mut |_: Exchange| {});
        }
    }
}
