//! One TCP connection (or one TLS session over it): its two streams, which side of HTTP the
//! traced process is on, and the requests waiting for their responses.
//!
//! The role is learnt from the traffic: the first request head read by the process makes it
//! the server of the connection, the first one written makes it the client. Responses pair
//! with requests in order (HTTP/1 answers in order, pipelined or not); interim `1xx`
//! responses do not end an exchange; `101` and a successful `CONNECT` end HTTP/1 on the
//! connection.

use std::{collections::VecDeque, net::SocketAddr};

use super::{
    head::{self, Framing, Kind, RequestHead},
    stream::{Framer, Lost, Stream, Time},
    Exchange, Role,
};

/// Requests kept waiting for a response at most (deeper pipelines drop the oldest).
pub const MAX_PENDING: usize = 64;
/// Calls in a row without a message start after which a connection that never carried an
/// HTTP/1 message is taken for another protocol.
pub const MISSES_BEFORE_NOT_HTTP: u32 = 16;

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    head: RequestHead,
    start_ns: u64,
    partial: Option<&'static str>,
}

/// A response whose head was read, with its request.
#[derive(Debug)]
struct Answer {
    request: Option<Pending>,
    status: u16,
    version: (u8, u8),
}

/// Everything about the pairing of requests and responses on one connection.
#[derive(Debug, Default)]
struct Pairing {
    role: Option<Role>,
    pending: VecDeque<Pending>,
    answer: Option<Answer>,
    /// Exchanges finished, waiting to be handed out.
    done: Vec<Exchange>,
    /// Heads that failed to parse, for statistics.
    malformed: u64,
    /// The stream that read the first request, when the role was just decided.
    role_from: Option<Side>,
    /// A `101` or successful `CONNECT` ended HTTP/1 here.
    tunnel: bool,
}

/// Which of the two streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Bytes read by the traced process.
    Ingress,
    /// Bytes written by it.
    Egress,
}

/// The framer of one side, borrowing the pairing state.
struct SideFramer<'a> {
    side: Side,
    pairing: &'a mut Pairing,
}

impl Pairing {
    fn request(
        &mut self,
        side: Side,
        head: RequestHead,
        first: Time,
        partial: Option<&'static str>,
    ) {
        if self.role.is_none() {
            self.role = Some(match side {
                Side::Ingress => Role::Server,
                Side::Egress => Role::Client,
            });
            self.role_from = Some(side);
        }
        let start_ns = match self.role {
            // A server's request begins when the read that returned its first byte did.
            Some(Role::Server) => first.end_ns,
            // A client's when it began writing it.
            _ => first.start_ns,
        };
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            head,
            start_ns,
            partial,
        });
    }

    fn finish(&mut self, end: Time, partial: Option<&'static str>) {
        if let Some(answer) = self.answer.take() {
            if let Some(req) = answer.request {
                self.done.push(Exchange {
                    role: self.role.unwrap_or(Role::Server),
                    request: req.head,
                    status: Some(answer.status),
                    response_version: Some(answer.version),
                    start_ns: req.start_ns,
                    end_ns: end.end_ns.max(req.start_ns),
                    partial: req.partial.or(partial),
                    tls: false,
                    tgid: 0,
                    local: None,
                    remote: None,
                });
            }
        }
    }

    /// Requests that will get no response (the connection closed): partial exchanges.
    fn abandon(&mut self, end_ns: u64, why: &'static str) {
        while let Some(req) = self.pending.pop_front() {
            self.done.push(Exchange {
                role: self.role.unwrap_or(Role::Server),
                request: req.head,
                status: None,
                response_version: None,
                start_ns: req.start_ns,
                end_ns: end_ns.max(req.start_ns),
                partial: Some(req.partial.unwrap_or(why)),
                tls: false,
                tgid: 0,
                local: None,
                remote: None,
            });
        }
    }
}

impl Framer for SideFramer<'_> {
    fn head(&mut self, kind: Kind, head: &[u8], first: Time, time: Time) -> Option<Framing> {
        match kind {
            Kind::Request => match head::parse_request(head) {
                Ok(req) => {
                    let framing = req.framing;
                    self.pairing.request(self.side, req, first, None);
                    Some(framing)
                }
                Err(_) => {
                    self.pairing.malformed += 1;
                    None
                }
            },
            Kind::Response => {
                let method = self.pairing.pending.front().map(|p| p.head.method.as_str());
                match head::parse_response(head, method) {
                    Ok(resp) => {
                        let interim = (100..200).contains(&resp.status) && resp.status != 101;
                        if !interim {
                            self.pairing.answer = Some(Answer {
                                request: self.pairing.pending.pop_front(),
                                status: resp.status,
                                version: resp.version,
                            });
                        }
                        if resp.framing == Framing::Tunnel {
                            self.pairing.finish(time, None);
                            self.pairing.tunnel = true;
                        }
                        Some(resp.framing)
                    }
                    Err(_) => {
                        self.pairing.malformed += 1;
                        None
                    }
                }
            }
        }
    }

    fn complete(&mut self, kind: Kind, time: Time) {
        if kind == Kind::Response {
            self.pairing.finish(time, None);
        }
    }

    fn lost(&mut self, kind: Kind, why: Lost, head: &[u8], first: Time, time: Time) {
        if why == Lost::Malformed {
            self.pairing.malformed += 1;
        }
        match kind {
            Kind::Request => {
                // A request whose head could not be read whole still gets its response, as a
                // partial exchange, when its request line was read.
                if let Some(req) = truncated_request(head) {
                    self.pairing
                        .request(self.side, req, first, Some(why.reason()));
                }
            }
            Kind::Response => {
                if self.pairing.answer.is_some() {
                    self.pairing.finish(time, Some(why.reason()));
                } else if let Some(status) = truncated_status(head) {
                    self.pairing.answer = Some(Answer {
                        request: self.pairing.pending.pop_front(),
                        status,
                        version: (1, 1),
                    });
                    self.pairing.finish(time, Some(why.reason()));
                }
            }
        }
    }
}

/// The request line of a head that could not be read whole.
fn truncated_request(head: &[u8]) -> Option<RequestHead> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let mut line = head[..=line_end].to_vec();
    line.extend_from_slice(b"\r\n");
    head::parse_request(&line).ok().map(|mut r| {
        r.framing = Framing::None;
        r
    })
}

/// The status of a response head that could not be read whole.
fn truncated_status(head: &[u8]) -> Option<u16> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let mut line = head[..=line_end].to_vec();
    line.extend_from_slice(b"\r\n");
    head::parse_response(&line, None).ok().map(|r| r.status)
}

/// One connection's state.
#[derive(Debug)]
pub struct Connection {
    ingress: Stream,
    egress: Stream,
    pairing: Pairing,
    /// The traced process's end of the connection.
    pub local: Option<SocketAddr>,
    /// The peer.
    pub remote: Option<SocketAddr>,
    /// Seen through libssl.
    pub tls: bool,
    /// The kernel socket, when known.
    pub sock: u64,
    /// Existed before capture began, so its first bytes may be the middle of a message.
    pub preexisting: bool,
    /// Not HTTP/1: every further call is ignored.
    pub not_http: bool,
    /// `CLOCK_MONOTONIC` time of the last call seen.
    pub last_ns: u64,
}

impl Connection {
    /// A connection before any of its bytes.
    pub fn new(tls: bool, sock: u64, preexisting: bool) -> Self {
        Connection {
            ingress: Stream::new(Kind::Request),
            egress: Stream::new(Kind::Request),
            pairing: Pairing::default(),
            local: None,
            remote: None,
            tls,
            sock,
            preexisting,
            not_http: false,
            last_ns: 0,
        }
    }

    /// The role, once learnt.
    pub fn role(&self) -> Option<Role> {
        self.pairing.role
    }

    /// Heads that failed to parse so far.
    pub fn malformed(&self) -> u64 {
        self.pairing.malformed
    }

    /// Feeds one call; finished exchanges go to `out`. Returns false when the connection is
    /// now taken for another protocol.
    pub fn feed(
        &mut self,
        side: Side,
        bytes: &[u8],
        len: u64,
        time: Time,
        out: &mut dyn FnMut(Exchange),
    ) -> bool {
        self.last_ns = self.last_ns.max(time.end_ns);
        if self.not_http {
            return false;
        }
        let never_http = self.ingress.messages == 0 && self.egress.messages == 0;
        if never_http && !self.tls && looks_like_tls(bytes) {
            // A TLS record on the raw socket: the plaintext (if any) comes through libssl.
            self.not_http = true;
            return false;
        }
        let first_bytes =
            never_http && self.ingress.last.end_ns == 0 && self.egress.last.end_ns == 0;
        let stream = match side {
            Side::Ingress => &mut self.ingress,
            Side::Egress => &mut self.egress,
        };
        let mut framer = SideFramer {
            side,
            pairing: &mut self.pairing,
        };
        let misses = stream.misses;
        stream.feed(bytes, len, time, &mut framer);
        let missed = stream.misses > misses;
        // The role was just decided: the other stream carries responses.
        if let Some(from) = self.pairing.role_from.take() {
            match from {
                Side::Ingress => self.egress.reset(Kind::Response),
                Side::Egress => self.ingress.reset(Kind::Response),
            }
        }
        if self.pairing.tunnel {
            self.ingress.tunnel();
            self.egress.tunnel();
        }
        self.hand_out(out);
        if never_http && self.ingress.messages == 0 && self.egress.messages == 0 {
            // A new connection whose very first bytes are not HTTP/1 is another protocol; one
            // that predates capture gets the benefit of the doubt for a while (its first bytes
            // may be the end of a body).
            let misses = self.ingress.misses + self.egress.misses;
            if (missed && first_bytes && !self.preexisting) || misses >= MISSES_BEFORE_NOT_HTTP {
                self.not_http = true;
                return false;
            }
        }
        true
    }

    /// The connection closed at `end_ns`: a body delimited by the close is complete, and
    /// requests still waiting will get no response.
    pub fn close(&mut self, end_ns: u64, out: &mut dyn FnMut(Exchange)) {
        for stream in [&self.ingress, &self.egress] {
            if stream.kind != Kind::Response {
                continue;
            }
            if stream.until_close() {
                let last = stream.last;
                self.pairing.finish(last, None);
            } else if stream.in_message() {
                let last = stream.last;
                self.pairing.finish(
                    last,
                    Some("connection closed before the response was complete"),
                );
            }
        }
        self.pairing
            .abandon(end_ns, "connection closed before a response");
        self.hand_out(out);
    }

    fn hand_out(&mut self, out: &mut dyn FnMut(Exchange)) {
        for mut ex in self.pairing.done.drain(..) {
            ex.tls = self.tls;
            ex.local = self.local;
            ex.remote = self.remote;
            out(ex);
        }
    }
}

/// Whether a call begins with a TLS record header (content type 20–23, version 3.x).
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, 0..=4, ..])
}
