//! HTTP/1 exchanges rebuilt from the bytes traced processes read from and write to their TCP
//! sockets (or pass to libssl), for programs whose symbols spanhook cannot use.
//!
//! Records from the kernel ([`crate::events::socket`]) are grouped by connection — the kernel
//! socket for system calls, the `SSL` object for libssl — and each connection's two
//! directions are framed as HTTP/1 ([`stream`]): heads are parsed ([`head`]), bodies are
//! skipped by their `Content-Length` or chunking without being read, so pipelined and
//! keep-alive requests are found wherever they start and bytes inside a body never start a
//! message. Requests pair with responses in order ([`connection`]); each pair is an
//! [`Exchange`], which `spans::socket` turns into a span.
//!
//! Memory is bounded: a connection keeps at most one head being read (≤ 32 KiB) and
//! [`connection::MAX_PENDING`] unanswered requests, the table at most
//! [`MAX_CONNECTIONS`], and connections idle for [`IDLE_NS`] are dropped by [`Reassembler::sweep`].
//! Nothing here panics on any input: it is fuzzed (`fuzz/fuzz_targets/http1_stream.rs`).

pub mod connection;
pub mod head;
pub mod stream;
pub mod transcript;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use spanhook_common::socket::{direction, source};

pub use connection::{Connection, Side};
pub use head::{RequestHead, Traceparent};
pub use stream::Time;

use crate::events::socket::{SocketRecord, SocketRecordKind};

/// Connections tracked at most; beyond, new connections are not followed (counted).
pub const MAX_CONNECTIONS: usize = 65_536;
/// A connection without a call for this long is forgotten.
pub const IDLE_NS: u64 = 600 * 1_000_000_000;

/// Which side of HTTP the traced process is on for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It read the request: a SERVER span.
    Server,
    /// It wrote the request: a CLIENT span.
    Client,
}

/// One request and its response, as the traced process saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The process.
    pub tgid: u32,
    /// Its side.
    pub role: Role,
    /// The request head's facts.
    pub request: RequestHead,
    /// The response status; `None` when the connection closed first.
    pub status: Option<u16>,
    /// The response's HTTP version.
    pub response_version: Option<(u8, u8)>,
    /// Server: when the read that returned the request's first byte returned. Client: when
    /// the write of its first byte began. `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// When the call that moved the response's last byte returned.
    pub end_ns: u64,
    /// Why the exchange is incomplete (some facts missing), if it is.
    pub partial: Option<&'static str>,
    /// Seen as plaintext through libssl.
    pub tls: bool,
    /// The process's end of the connection.
    pub local: Option<SocketAddr>,
    /// The peer.
    pub remote: Option<SocketAddr>,
}

/// Where the reassembler's results go.
pub trait Sink {
    /// A finished exchange.
    fn exchange(&mut self, exchange: Exchange);
    /// Connection `sock` of `tgid` does not carry HTTP/1: the kernel may stop copying it.
    /// `ports` (local, remote) identify the connection, should the kernel reuse `sock`.
    fn not_http(&mut self, _tgid: u32, _sock: u64, _ports: (u16, u16)) {}
}

impl<F: FnMut(Exchange)> Sink for F {
    fn exchange(&mut self, exchange: Exchange) {
        self(exchange)
    }
}

/// What the reassembler did, for the agent's own report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records fed.
    pub records: u64,
    /// Exchanges handed out (complete or partial).
    pub exchanges: u64,
    /// Exchanges handed out incomplete.
    pub partial: u64,
    /// Connections found not to carry HTTP/1.
    pub not_http: u64,
    /// Connections not followed because the table was full.
    pub refused: u64,
    /// Records of processes not registered (ignored).
    pub unknown_process: u64,
}

/// Identity of a followed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    tgid: u32,
    tls: bool,
    /// The `struct sock` for system calls, the `SSL` for libssl.
    id: u64,
}

/// What the reassembler knows about one traced process.
#[derive(Clone, Copy, Debug)]
struct Process {
    server: bool,
    client: bool,
}

/// Every followed connection of every traced process.
#[derive(Debug, Default)]
pub struct Reassembler {
    conns: HashMap<Key, Connection>,
    /// TLS sessions by the socket under them, to close them with it.
    tls_by_sock: HashMap<(u32, u64), u64>,
    /// Connections that existed before capture: (tgid, local port, remote address).
    preexisting: HashSet<(u32, u16, SocketAddr)>,
    processes: HashMap<u32, Process>,
    stats: Stats,
}

/// A socket address from a record's family, address bytes and port.
fn address(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        10 => {
            let v6 = Ipv6Addr::from(*addr);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

impl Reassembler {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows `tgid`'s connections; exchanges of a role that is off are not handed out
    /// (that side is traced another way).
    pub fn add_process(&mut self, tgid: u32, server: bool, client: bool) {
        self.processes.insert(tgid, Process { server, client });
    }

    /// Records that `tgid` had these connections (local port, peer) before capture began, so
    /// their first bytes may fall in the middle of a message.
    pub fn add_preexisting(
        &mut self,
        tgid: u32,
        conns: impl IntoIterator<Item = (u16, SocketAddr)>,
    ) {
        for (port, peer) in conns {
            self.preexisting.insert((tgid, port, peer));
        }
    }

    /// Forgets a process and its connections (it exited).
    pub fn remove_process(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
        self.conns.retain(|k, _| k.tgid != tgid);
        self.tls_by_sock.retain(|k, _| k.0 != tgid);
        self.preexisting.retain(|k| k.0 != tgid);
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Connections followed now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn emit(stats: &mut Stats, process: Process, tgid: u32, ex: Exchange, sink: &mut dyn Sink) {
        let wanted = match ex.role {
            Role::Server => process.server,
            Role::Client => process.client,
        };
        if !wanted {
            return;
        }
        stats.exchanges += 1;
        if ex.partial.is_some() {
            stats.partial += 1;
        }
        sink.exchange(Exchange { tgid, ..ex });
    }

    /// Feeds one record from the kernel.
    pub fn feed(&mut self, rec: &SocketRecord<'_>, sink: &mut dyn Sink) {
        self.stats.records += 1;
        let h = &rec.header;
        let tgid = h.header.tgid;
        let Some(&process) = self.processes.get(&tgid) else {
            self.stats.unknown_process += 1;
            return;
        };
        if rec.kind == SocketRecordKind::Close {
            self.close_sock(tgid, h.sock, h.header.end_ns, process, sink);
            return;
        }
        let tls = h.source == source::TLS;
        let key = Key {
            tgid,
            tls,
            id: if tls { h.ssl } else { h.sock },
        };
        if key.id == 0 {
            return;
        }
        // An SSL object serving another connection than before (freed and reused).
        if tls && h.sock != 0 {
            if let Some(old) = self.conns.get(&key) {
                if old.sock != 0 && old.sock != h.sock {
                    self.close_key(key, h.header.end_ns, process, sink);
                }
            }
        }
        // A `struct sock` holding another connection than before: its close went unseen
        // (the descriptor went away at exit, through dup2 or close_range, or in another
        // process), and the kernel built a new connection in the freed memory.
        if !tls && h.family != 0 {
            if let Some(old) = self.conns.get(&key) {
                let same = |a: Option<SocketAddr>, port: u16| a.is_none_or(|a| a.port() == port);
                if !same(old.local, h.local_port) || !same(old.remote, h.remote_port) {
                    self.close_key(key, h.header.end_ns, process, sink);
                }
            }
        }
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= MAX_CONNECTIONS {
                self.stats.refused += 1;
                return;
            }
            let local = address(h.family, &h.local_addr, h.local_port);
            let remote = address(h.family, &h.remote_addr, h.remote_port);
            let preexisting = match (local, remote) {
                (Some(l), Some(r)) => self.preexisting.contains(&(tgid, l.port(), r)),
                _ => true,
            };
            let mut conn = Connection::new(tls, h.sock, preexisting);
            conn.local = local;
            conn.remote = remote;
            self.conns.insert(key, conn);
        }
        let conn = self.conns.get_mut(&key).expect("inserted above");
        if conn.sock == 0 && h.sock != 0 {
            conn.sock = h.sock;
            conn.local = address(h.family, &h.local_addr, h.local_port);
            conn.remote = address(h.family, &h.remote_addr, h.remote_port);
        }
        if tls && h.sock != 0 {
            self.tls_by_sock.insert((tgid, h.sock), h.ssl);
        }
        let side = if h.direction == direction::INGRESS {
            Side::Ingress
        } else {
            Side::Egress
        };
        let time = Time {
            start_ns: h.header.start_ns,
            end_ns: h.header.end_ns.max(h.header.start_ns),
        };
        let was_http = !conn.not_http;
        let stats = &mut self.stats;
        let still_http = conn.feed(side, rec.data, h.len, time, &mut |ex| {
            Self::emit(stats, process, tgid, ex, sink)
        });
        if was_http && !still_http {
            self.stats.not_http += 1;
            if !tls {
                sink.not_http(tgid, h.sock, (h.local_port, h.remote_port));
            }
        }
    }

    fn close_key(&mut self, key: Key, end_ns: u64, process: Process, sink: &mut dyn Sink) {
        if let Some(mut conn) = self.conns.remove(&key) {
            let stats = &mut self.stats;
            conn.close(end_ns, &mut |ex| {
                Self::emit(stats, process, key.tgid, ex, sink)
            });
        }
    }

    fn close_sock(
        &mut self,
        tgid: u32,
        sock: u64,
        end_ns: u64,
        process: Process,
        sink: &mut dyn Sink,
    ) {
        self.close_key(
            Key {
                tgid,
                tls: false,
                id: sock,
            },
            end_ns,
            process,
            sink,
        );
        if let Some(ssl) = self.tls_by_sock.remove(&(tgid, sock)) {
            self.close_key(
                Key {
                    tgid,
                    tls: true,
                    id: ssl,
                },
                end_ns,
                process,
                sink,
            );
        }
    }

    /// Forgets connections idle since before `now_ns - IDLE_NS` (as if closed).
    pub fn sweep(&mut self, now_ns: u64, sink: &mut dyn Sink) {
        let idle: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_ns) > IDLE_NS)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            let Some(&process) = self.processes.get(&key.tgid) else {
                self.conns.remove(&key);
                continue;
            };
            let last = self.conns.get(&key).map_or(now_ns, |c| c.last_ns);
            self.close_key(key, last, process, sink);
        }
        let conns = &self.conns;
        self.tls_by_sock.retain(|(tgid, _), ssl| {
            conns.contains_key(&Key {
                tgid: *tgid,
                tls: true,
                id: *ssl,
            })
        });
    }
}

#[cfg(test)]
mod tests;
