//! The reassembler on traffic written by hand: keep-alive, pipelining, bodies of every
//! framing, bytes that were not copied, other protocols, malformed input.

use spanhook_common::{
    socket::{direction, flags, source},
    EventHeader, SocketDataHeader, SocketRecordKind,
};

use super::*;

const PID: u32 = 4242;
const SOCK: u64 = 0xffff_8880_1234_0000;

/// Builds records and collects what the reassembler hands out.
struct Wire {
    r: Reassembler,
    out: Vec<Exchange>,
    not_http: Vec<u64>,
    clock: u64,
    /// Remote port of the records made (50000 unless a test changes it).
    remote_port: u16,
}

impl Sink for (Vec<Exchange>, Vec<u64>) {
    fn exchange(&mut self, exchange: Exchange) {
        self.0.push(exchange);
    }
    fn not_http(&mut self, _tgid: u32, sock: u64, _ports: (u16, u16)) {
        self.1.push(sock);
    }
}

fn header(sock: u64, dir: u8, len: u64, at: u64) -> SocketDataHeader {
    SocketDataHeader {
        header: EventHeader {
            kind: SocketRecordKind::Data as u16,
            _pad: 0,
            tgid: PID,
            start_ns: at,
            end_ns: at + 10,
        },
        sock,
        ssl: 0,
        len,
        tid: PID,
        fd: 7,
        captured: 0,
        family: 2,
        local_port: 8080,
        remote_port: 50000,
        source: source::SYSCALL,
        direction: dir,
        flags: 0,
        _pad: [0; 5],
        local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

impl Wire {
    fn new() -> Self {
        let mut r = Reassembler::new();
        r.add_process(PID, true, true);
        Wire {
            r,
            out: Vec::new(),
            not_http: Vec::new(),
            clock: 1_000,
            remote_port: 50000,
        }
    }

    fn call(&mut self, sock: u64, dir: u8, bytes: &[u8], len: u64, tls: Option<u64>) {
        self.clock += 1_000;
        let mut h = header(sock, dir, len, self.clock);
        h.remote_port = self.remote_port;
        if let Some(ssl) = tls {
            h.source = source::TLS;
            h.ssl = ssl;
        }
        let captured = bytes.len().min(len as usize);
        h.captured = captured as u16;
        let rec = SocketRecord {
            kind: SocketRecordKind::Data,
            header: h,
            data: &bytes[..captured],
        };
        let mut sink = (
            std::mem::take(&mut self.out),
            std::mem::take(&mut self.not_http),
        );
        self.r.feed(&rec, &mut sink);
        (self.out, self.not_http) = sink;
    }

    /// The process read `bytes` (all copied).
    fn read(&mut self, bytes: &[u8]) {
        self.call(SOCK, direction::INGRESS, bytes, bytes.len() as u64, None);
    }

    /// The process wrote `bytes` (all copied).
    fn write(&mut self, bytes: &[u8]) {
        self.call(SOCK, direction::EGRESS, bytes, bytes.len() as u64, None);
    }

    fn close(&mut self, sock: u64) {
        self.clock += 1_000;
        let mut h = header(sock, direction::EGRESS, 0, self.clock);
        h.header.kind = SocketRecordKind::Close as u16;
        let rec = SocketRecord {
            kind: SocketRecordKind::Close,
            header: h,
            data: &[],
        };
        let mut sink = (
            std::mem::take(&mut self.out),
            std::mem::take(&mut self.not_http),
        );
        self.r.feed(&rec, &mut sink);
        (self.out, self.not_http) = sink;
    }

    fn summary(&self) -> Vec<(Role, String, String, Option<u16>, bool)> {
        self.out
            .iter()
            .map(|e| {
                (
                    e.role,
                    e.request.method.clone(),
                    e.request.path.clone(),
                    e.status,
                    e.partial.is_some(),
                )
            })
            .collect()
    }
}

fn server(method: &str, path: &str, status: u16) -> (Role, String, String, Option<u16>, bool) {
    (
        Role::Server,
        method.into(),
        path.into(),
        Some(status),
        false,
    )
}

#[test]
fn keep_alive_requests_each_make_one_exchange() {
    let mut w = Wire::new();
    w.read(b"GET /a?token=secret HTTP/1.1\r\nHost: h:8080\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    w.read(b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody");
    w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    w.read(b"DELETE /c HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n");
    assert_eq!(
        w.summary(),
        vec![
            server("GET", "/a", 200),
            server("POST", "/b", 201),
            server("DELETE", "/c", 404)
        ]
    );
    let first = &w.out[0];
    assert_eq!(first.request.host.as_deref(), Some("h:8080"));
    assert_eq!(first.remote, Some("127.0.0.2:50000".parse().unwrap()));
    assert_eq!(first.local, Some("127.0.0.1:8080".parse().unwrap()));
    // The server's span starts when the request was read and ends when the response was.
    assert_eq!(first.start_ns, 2_010);
    assert_eq!(first.end_ns, 3_010);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut w = Wire::new();
    w.read(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n");
    w.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    );
    assert_eq!(
        w.summary(),
        vec![
            server("GET", "/1", 200),
            server("GET", "/2", 500),
            server("HEAD", "/3", 200)
        ]
    );
}

#[test]
fn bodies_that_look_like_http_are_skipped() {
    let mut w = Wire::new();
    let fake = b"GET /fake HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    let mut req =
        format!("PUT /up HTTP/1.1\r\nContent-Length: {}\r\n\r\n", fake.len()).into_bytes();
    req.extend_from_slice(fake);
    w.read(&req);
    let mut resp =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", fake.len()).into_bytes();
    resp.extend_from_slice(fake);
    w.write(&resp);
    // A chunked body whose chunk data is a request, split at every place.
    let body = b"5\r\nGET /\r\n1c\r\n HTTP/1.1\r\nHost: x\r\n\r\nxxxxx\r\n0\r\n\r\n";
    w.read(b"POST /chunks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in body.chunks(3) {
        w.read(piece);
    }
    w.write(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        w.summary(),
        vec![server("PUT", "/up", 200), server("POST", "/chunks", 204)]
    );
}

#[test]
fn bodies_that_were_not_copied_are_skipped_by_count() {
    let mut w = Wire::new();
    w.read(b"POST /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    // 100 000 body bytes in calls of which only the first 4 KiB were copied, and they look
    // like a request.
    let junk = b"GET /no HTTP/1.1\r\n\r\n".repeat(250);
    for _ in 0..25 {
        w.call(SOCK, direction::INGRESS, &junk[..4000], 4000, None);
    }
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n");
    w.call(SOCK, direction::EGRESS, &junk[..4096], 70000, None);
    w.read(b"GET /next HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        w.summary(),
        vec![server("POST", "/big", 200), server("GET", "/next", 200)]
    );
}

#[test]
fn a_file_body_sent_by_sendfile_is_counted() {
    let mut w = Wire::new();
    w.read(b"GET /file HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n");
    w.call(SOCK, direction::EGRESS, b"", 9000, None);
    w.read(b"GET /again HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9000\r\n\r\n");
    assert_eq!(
        w.summary(),
        vec![server("GET", "/file", 200), server("GET", "/again", 304)]
    );
    let _ = flags::FROM_FILE;
}

#[test]
fn heads_split_anywhere_are_joined() {
    let req = b"GET /split HTTP/1.1\r\nHost: a\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
    let resp =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nX-T: 1\r\n\r\n";
    for cut in 1..req.len() {
        let mut w = Wire::new();
        w.read(&req[..cut]);
        w.read(&req[cut..]);
        for piece in resp.chunks(cut.min(resp.len())) {
            w.write(piece);
        }
        assert_eq!(w.summary(), vec![server("GET", "/split", 200)], "cut {cut}");
        assert!(matches!(
            w.out[0].request.traceparent,
            Traceparent::Valid { .. }
        ));
        // The request began with the first read.
        assert_eq!(w.out[0].start_ns, 2_010);
    }
}

#[test]
fn a_client_connection_pairs_the_other_way() {
    let mut w = Wire::new();
    w.write(b"GET /api HTTP/1.1\r\nHost: backend:9000\r\n\r\n");
    w.read(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 3\r\n\r\nbad");
    w.write(b"GET /again HTTP/1.1\r\nHost: backend:9000\r\n\r\n");
    w.read(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
    assert_eq!(w.out.len(), 1);
    w.read(b"more of the body");
    w.close(SOCK);
    let s = w.summary();
    assert_eq!(
        s,
        vec![
            (Role::Client, "GET".into(), "/api".into(), Some(503), false),
            (
                Role::Client,
                "GET".into(),
                "/again".into(),
                Some(200),
                false
            )
        ]
    );
    // A client span runs from the start of the write to the end of the last read.
    assert_eq!(w.out[0].start_ns, 2_000);
    assert_eq!(w.out[0].end_ns, 3_010);
    assert_eq!(w.out[1].end_ns, 6_010);
}

#[test]
fn interim_responses_do_not_end_the_exchange() {
    let mut w = Wire::new();
    w.read(b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n");
    w.read(b"abc");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(w.summary(), vec![server("PUT", "/x", 200)]);
}

#[test]
fn an_upgrade_ends_http_on_the_connection() {
    let mut w = Wire::new();
    w.read(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    w.read(b"GET /not-a-request HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(w.summary(), vec![server("GET", "/ws", 101)]);
}

#[test]
fn closed_connections_leave_partial_exchanges_and_fd_reuse_starts_afresh() {
    let mut w = Wire::new();
    w.read(b"GET /never HTTP/1.1\r\n\r\n");
    w.close(SOCK);
    assert_eq!(
        w.summary(),
        vec![(Role::Server, "GET".into(), "/never".into(), None, true)]
    );
    // The same socket address, a new connection: nothing of the old one remains.
    w.out.clear();
    w.read(b"GET /fresh HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(w.summary(), vec![server("GET", "/fresh", 200)]);
}

#[test]
fn a_head_longer_than_the_copied_prefix_gives_a_partial_exchange() {
    let mut w = Wire::new();
    let mut req = b"GET /long HTTP/1.1\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 6000));
    req.extend_from_slice(b"\r\n\r\n");
    w.call(
        SOCK,
        direction::INGRESS,
        &req[..4096],
        req.len() as u64,
        None,
    );
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    w.read(b"GET /after HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        w.summary(),
        vec![
            (Role::Server, "GET".into(), "/long".into(), Some(200), true),
            server("GET", "/after", 200)
        ]
    );
}

#[test]
fn other_protocols_are_recognised_and_dropped() {
    // TLS on the raw socket.
    let mut w = Wire::new();
    w.read(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    assert_eq!(w.not_http, vec![SOCK]);
    // A binary protocol on a new connection: known at its first bytes.
    let mut w = Wire::new();
    w.read(b"\x00\x00\x00\x2a*some binary framing*");
    assert_eq!(w.not_http, vec![SOCK]);
    w.read(b"GET / HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(w.out.is_empty());
    // A connection that existed before capture gets a few calls to show a message start.
    let mut w = Wire::new();
    w.r.add_preexisting(PID, [(8080, "127.0.0.2:50000".parse().unwrap())]);
    w.read(b"rest of an earlier body");
    assert!(w.not_http.is_empty());
    w.read(b"GET /late HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(w.summary(), vec![server("GET", "/late", 200)]);
}

#[test]
fn tls_sessions_follow_their_ssl_object() {
    let mut w = Wire::new();
    let ssl = 0x5555_0000;
    w.call(
        0,
        direction::INGRESS,
        b"GET /tls HTTP/1.1\r\n\r\n",
        22,
        Some(ssl),
    );
    w.call(
        SOCK,
        direction::EGRESS,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        38,
        Some(ssl),
    );
    assert_eq!(w.summary(), vec![server("GET", "/tls", 200)]);
    assert!(w.out[0].tls);
    // The socket closes: the session goes with it, and the SSL address may serve another.
    w.close(SOCK);
    w.call(
        SOCK + 64,
        direction::INGRESS,
        b"GET /second HTTP/1.1\r\n\r\n",
        25,
        Some(ssl),
    );
    w.call(
        SOCK + 64,
        direction::EGRESS,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        38,
        Some(ssl),
    );
    assert_eq!(w.out.len(), 2);
    assert_eq!(w.out[1].request.path, "/second");
}

#[test]
fn roles_traced_elsewhere_are_not_handed_out() {
    let mut w = Wire::new();
    w.r.add_process(PID, false, true);
    w.read(b"GET / HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(w.out.is_empty());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic generator: HTTP-ish fragments and noise, split anywhere.
    let pieces: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"\r\n",
        b"ffffffffffffffff\r\n",
        b"0\r\n\r\n",
        b"\x16\x03\x01",
        b"\x00\xff\n\n\r",
        b"abc",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut w = Wire::new();
        for _ in 0..40 {
            let mut bytes = Vec::new();
            for _ in 0..(next() % 6) {
                bytes.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let len = bytes.len() as u64 + next() % 3 * (next() % 5000);
            let dir = (next() % 2) as u8;
            match next() % 10 {
                0 => w.close(SOCK),
                1 => w.call(SOCK, dir, &bytes, len, Some(next() % 3)),
                _ => w.call(SOCK, dir, &bytes, len, None),
            }
        }
        for e in &w.out {
            assert!(e.start_ns <= e.end_ns);
        }
    }
}

#[test]
fn chunk_framing_in_bytes_not_copied() {
    // One chunk per write, each longer than the copied prefix: the CRLF after its data is
    // the only thing missing, and the next write starts with the next chunk-size line.
    let mut w = Wire::new();
    w.read(b"GET /chunks HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut chunk = b"1388\r\n".to_vec();
    chunk.extend(std::iter::repeat_n(b'G', 5000));
    chunk.extend_from_slice(b"\r\n");
    for _ in 0..3 {
        w.call(
            SOCK,
            direction::EGRESS,
            &chunk[..4096],
            chunk.len() as u64,
            None,
        );
    }
    w.write(b"0\r\n\r\n");
    // Several chunks in one write, the framing lost after the copied prefix: the body ends
    // where the next response starts.
    w.read(b"GET /blind HTTP/1.1\r\n\r\n");
    let mut many = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        many.extend_from_slice(&chunk);
    }
    w.call(
        SOCK,
        direction::EGRESS,
        &many[..4096],
        many.len() as u64,
        None,
    );
    w.write(b"5\r\nhello\r\n");
    w.read(b"GET /next HTTP/1.1\r\n\r\n");
    w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    // And a blind body that ends with the last chunk in a call of its own.
    w.read(b"GET /blind-end HTTP/1.1\r\n\r\n");
    w.call(
        SOCK,
        direction::EGRESS,
        &many[..4096],
        many.len() as u64,
        None,
    );
    w.write(b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(
        w.summary(),
        vec![
            server("GET", "/chunks", 200),
            server("GET", "/blind", 200),
            server("GET", "/next", 404),
            server("GET", "/blind-end", 200)
        ]
    );
    // /blind ended with the write before the next response.
    assert_eq!(w.out[1].end_ns, w.out[2].start_ns - 1_000);
}

#[test]
fn a_struct_sock_reused_without_a_close_seen_is_a_new_connection() {
    let mut w = Wire::new();
    // A TLS ClientHello on the raw socket: not HTTP.
    w.read(&[
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ]);
    assert_eq!(w.not_http, [SOCK]);
    // Its close is never seen; the kernel builds the next connection in the same memory.
    w.remote_port = 50001;
    w.read(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    w.write(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(w.summary(), [server("GET", "/after", 204)]);
    assert_eq!(w.out[0].remote.unwrap().port(), 50001);
}
