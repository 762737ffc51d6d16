//! Socket records (the `SOCKET_EVENTS` ring) → a typed header and the bytes that follow it,
//! length-checked: a record whose lengths disagree is an error, never guessed at.

use spanhook_common::event::read_plain;
pub use spanhook_common::{socket::SocketRecordKind, SocketDataHeader};

/// One decoded socket record, borrowing its bytes from the ring.
#[derive(Clone, Copy, Debug)]
pub struct SocketRecord<'a> {
    /// Its kind.
    pub kind: SocketRecordKind,
    /// The fixed header.
    pub header: SocketDataHeader,
    /// The copied prefix of the call's bytes (empty for a close).
    pub data: &'a [u8],
}

/// Why a socket record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketDecodeError {
    /// Shorter than its header.
    #[error("socket record of {len} bytes is shorter than its header")]
    NoHeader {
        /// Record length.
        len: usize,
    },
    /// An unknown kind (probes and agent out of step, or a record from another ring).
    #[error("socket record has unknown kind {kind}")]
    UnknownKind {
        /// The raw kind.
        kind: u16,
    },
    /// The header's byte count does not match the record's length.
    #[error("socket record says {captured} bytes follow its header, but {actual} do")]
    WrongLength {
        /// What the header says.
        captured: usize,
        /// What the record holds.
        actual: usize,
    },
}

/// Size of the fixed header.
pub const HEADER_BYTES: usize = core::mem::size_of::<SocketDataHeader>();

/// Decodes one record of the `SOCKET_EVENTS` ring.
pub fn decode(bytes: &[u8]) -> Result<SocketRecord<'_>, SocketDecodeError> {
    let header: SocketDataHeader =
        read_plain(bytes).ok_or(SocketDecodeError::NoHeader { len: bytes.len() })?;
    let kind =
        SocketRecordKind::from_raw(header.header.kind).ok_or(SocketDecodeError::UnknownKind {
            kind: header.header.kind,
        })?;
    let data = &bytes[HEADER_BYTES..];
    if data.len() != header.captured as usize
        || (header.captured as u64) > header.len
        || (kind == SocketRecordKind::Close && !data.is_empty())
    {
        return Err(SocketDecodeError::WrongLength {
            captured: header.captured as usize,
            actual: data.len(),
        });
    }
    Ok(SocketRecord { kind, header, data })
}

/// Builds a record's bytes (for tests and fuzzing seeds).
pub fn encode(header: &SocketDataHeader, data: &[u8]) -> Vec<u8> {
    let mut h = *header;
    h.captured = data.len() as u16;
    // SAFETY: reading the bytes of a plain #[repr(C)] value.
    let raw = unsafe {
        std::slice::from_raw_parts((&h as *const SocketDataHeader).cast::<u8>(), HEADER_BYTES)
    };
    let mut out = raw.to_vec();
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use spanhook_common::EventHeader;

    fn header(len: u64) -> SocketDataHeader {
        SocketDataHeader {
            header: EventHeader {
                kind: SocketRecordKind::Data as u16,
                _pad: 0,
                tgid: 7,
                start_ns: 1,
                end_ns: 2,
            },
            sock: 0xffff_8880_0000_1000,
            ssl: 0,
            len,
            tid: 7,
            fd: 5,
            captured: 0,
            family: 2,
            local_port: 8080,
            remote_port: 50000,
            source: 0,
            direction: 0,
            flags: 0,
            _pad: [0; 5],
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    #[test]
    fn decodes_and_checks_lengths() {
        let bytes = encode(&header(100), b"GET / HTTP/1.1\r\n");
        let r = decode(&bytes).unwrap();
        assert_eq!(r.kind, SocketRecordKind::Data);
        assert_eq!(r.data, b"GET / HTTP/1.1\r\n");
        assert_eq!(r.header.local_port, 8080);
        let mut short = bytes.clone();
        short.pop();
        assert!(matches!(
            decode(&short),
            Err(SocketDecodeError::WrongLength { .. })
        ));
        // More bytes copied than the call moved.
        let bytes = encode(&header(3), b"GET / HTTP/1.1\r\n");
        assert!(decode(&bytes).is_err());
        assert!(matches!(
            decode(&bytes[..10]),
            Err(SocketDecodeError::NoHeader { len: 10 })
        ));
        let mut bad = encode(&header(0), b"");
        bad[0] = 1;
        assert!(matches!(
            decode(&bad),
            Err(SocketDecodeError::UnknownKind { kind: 1 })
        ));
    }
}
