//! A Go `*net.TCPConn` as the kernel names its connection, for queuing a `traceparent` the
//! `sk_msg` program will find by the same key.

use spanhook_common::{ConnKey, GoField, TargetConfig};

use crate::read;

/// The connection behind the `*net.TCPConn` at `tcp_conn`, read through `conn.fd` (`*netFD`)
/// → local and remote `*net.TCPAddr`. Anything that does not read as a TCP connection
/// (ports out of range, an address that is neither IPv4 nor IPv6) gives `None`: a key built
/// from a misread could only match a real connection of a traced process by accident.
#[inline(always)]
pub fn tcp_conn_key(cfg: &TargetConfig, tcp_conn: u64) -> Option<ConnKey> {
    let fd = read::pointer(tcp_conn + cfg.offset(GoField::NetConnFd)?).ok()?;
    let laddr = read::pointer(fd + cfg.offset(GoField::NetFdLocalAddr)? + 8).ok()?;
    let raddr = read::pointer(fd + cfg.offset(GoField::NetFdRemoteAddr)? + 8).ok()?;
    let port_off = cfg.offset(GoField::TcpAddrPort)?;
    let ip_off = cfg.offset(GoField::TcpAddrIp)?;
    let local_port = read::user::<u64>(laddr + port_off).ok()?;
    let remote_port = read::user::<u64>(raddr + port_off).ok()?;
    if local_port == 0 || local_port > 65535 || remote_port == 0 || remote_port > 65535 {
        return None;
    }
    let [ip_ptr, ip_len] = read::user::<[u64; 2]>(raddr + ip_off).ok()?;
    let mut key = ConnKey {
        local_port: local_port as u16,
        remote_port: remote_port as u16,
        _pad: 0,
        remote_ip: [0; 16],
    };
    match ip_len {
        16 => key.remote_ip = read::user::<[u8; 16]>(ip_ptr).ok()?,
        4 => {
            let v4 = read::user::<[u8; 4]>(ip_ptr).ok()?;
            key.remote_ip[10] = 0xff;
            key.remote_ip[11] = 0xff;
            key.remote_ip[12..].copy_from_slice(&v4);
        }
        _ => return None,
    }
    Some(key)
}
