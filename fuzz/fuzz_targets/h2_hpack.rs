//! `traceparent` written into HTTP/2 HEADERS frames (`--propagate` on grpc-go clients): the
//! framing decisions of the kernel's `sk_msg` program (`spanhook_common::h2`, the same code
//! the probe runs) driven over a client connection's byte stream cut into arbitrary writes,
//! with the kernel's `bpf_msg_cork_bytes` modelled (held bytes come back with the next write
//! once enough are there). The stream that leaves must be the stream written with exactly one
//! HPACK field added to each HEADERS frame that can take one and whose stream had a value
//! queued, its length grown to match, and nothing else changed; each added field must decode
//! (RFC 7541 §6.2.2, here by a decoder of its own) to `traceparent` and the queued value.
//!
//! Input: a byte of queued streams (bit `i`: stream `i + 1`), then frames of five bytes each
//! (type, flags, stream, two of length) made plausible as a client's (RFC 9113 §6;
//! a client never writes other frames), then 16-bit cut points for the writes. The
//! connection is followed from its first byte: a connection picked up later starts from a
//! guess, which is a heuristic outside this check.
//!
//! Seeds (written by `cargo xtask fuzz`): grpc-go's request shapes (SETTINGS, WINDOW_UPDATE,
//! HEADERS + DATA on several streams) in one write, cut inside headers and blocks, with
//! CONTINUATION, padding, and frames too large to grow.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use spanhook_common::{
    h2::{
        encode_field, encode_len, AfterWalk, FrameHeader, FrameWalk, WriteStart, FRAME_HEADER_LEN,
        HPACK_TRACEPARENT_LEN, MAX_FRAMES, MAX_FRAME_PAYLOAD, MAX_HEADERS,
    },
    H2ConnState,
};

/// Frames per input at most: far fewer than the program walks in one write, so the walk is
/// never cut short by its loop bound (and few enough to keep each execution short).
const MAX_INPUT_FRAMES: usize = 64;
/// Frames of nearly the largest size per input at most (more only slow each execution down).
const MAX_LARGE_FRAMES: usize = 2;

/// One frame as the application writes it.
struct Frame {
    header: FrameHeader,
    payload: Vec<u8>,
}

/// The `traceparent` value queued for `stream`.
fn value(stream: u32) -> [u8; 55] {
    let text = format!(
        "00-{:032x}-{:016x}-01",
        0xabc0_0000 + stream,
        0x5eed + stream
    );
    text.as_bytes().try_into().expect("55 bytes")
}

/// A frame header made plausible for a client: a defined type, the stream rule and the fixed
/// length of its type. Lengths are mostly short (`len_low`), up to 1023 when `len_high` is
/// 0xf0–0xfe, and within 255 bytes of the largest when it is 0xff (where adding the field no
/// longer fits, and `large` is still true): short frames keep each execution fast.
fn plausible(ty: u8, flags: u8, stream: u8, len_high: u8, len_low: u8, large: bool) -> FrameHeader {
    let ty = match ty % 10 {
        5 => 1, // PUSH_PROMISE: servers only
        t => t,
    };
    let len = match len_high {
        0xff if large => MAX_FRAME_PAYLOAD - u32::from(len_low),
        0xf0.. => u32::from(len_high & 0x3) << 8 | u32::from(len_low),
        _ => u32::from(len_low),
    };
    let stream = u32::from(stream % 8);
    let (stream, len) = match ty {
        0 | 1 | 9 => (stream.max(1), len),
        2 => (stream.max(1), 5),
        3 => (stream.max(1), 4),
        4 => (0, len - len % 6),
        6 => (0, 8),
        7 => (0, len.max(8)),
        _ => (stream, 4),
    };
    let header = FrameHeader {
        len,
        ty,
        flags,
        stream,
    };
    assert!(header.plausible(), "{header:?}");
    header
}

fn encode(h: &FrameHeader) -> [u8; FRAME_HEADER_LEN] {
    let len = encode_len(h.len);
    let s = h.stream.to_be_bytes();
    [
        len[0], len[1], len[2], h.ty, h.flags, s[0], s[1], s[2], s[3],
    ]
}

/// The header at `at` of `buf`, when all nine bytes are there.
fn read(buf: &[u8], at: u32) -> Option<FrameHeader> {
    let at = at as usize;
    let b = buf.get(at..at.checked_add(FRAME_HEADER_LEN)?)?;
    Some(FrameHeader::decode(b.try_into().expect("nine bytes")))
}

/// What the `sk_msg` program does with one message (see `on_write` in
/// ebpf/probes/src/socket/h2.rs): `Some(until)` when it is held back.
fn on_write(
    st: &mut H2ConnState,
    msg: &mut Vec<u8>,
    queued: &mut HashMap<u32, [u8; 55]>,
) -> Option<u32> {
    let size = u32::try_from(msg.len()).expect("small input");
    let (start, known) = match st.write_start(size, |at| read(msg, at)) {
        WriteStart::Inside | WriteStart::Lost => return None,
        WriteStart::At { at, known } => (at, known),
    };
    let mut walk = FrameWalk::new(size, start);
    let mut noted = Vec::new();
    for _ in 0..MAX_FRAMES {
        let (over, at) = walk.step(|at| read(msg, at));
        if let Some(at) = at {
            if noted.len() < MAX_HEADERS as usize {
                noted.push(at);
            }
        }
        if over {
            break;
        }
    }
    match st.after_walk(&walk, start, known, |stream| queued.contains_key(&stream)) {
        AfterWalk::Hold { until } => return Some(until),
        AfterWalk::Lost => return None,
        AfterWalk::Synced => {}
    }
    let mut grown = 0;
    for at in noted {
        let at = at + grown;
        let f = read(msg, at).expect("a noted frame is in the message");
        let Some(value) = queued.remove(&f.stream) else {
            continue;
        };
        let Some(len) = f.grown_len() else {
            continue;
        };
        let mut field = [0u8; HPACK_TRACEPARENT_LEN];
        encode_field(&value, &mut field);
        let end = (at + FRAME_HEADER_LEN as u32 + f.len) as usize;
        let tail = msg.split_off(end);
        msg.extend_from_slice(&field);
        msg.extend_from_slice(&tail);
        msg[at as usize..at as usize + 3].copy_from_slice(&encode_len(len));
        grown += HPACK_TRACEPARENT_LEN as u32;
    }
    None
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1): value and bytes used.
fn hpack_int(b: &[u8], n: u32) -> Option<(u64, usize)> {
    let max = (1u64 << n) - 1;
    let first = u64::from(*b.first()?) & max;
    if first < max {
        return Some((first, 1));
    }
    let (mut value, mut shift) = (max, 0);
    for (i, &byte) in b.iter().enumerate().skip(1) {
        value += u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    None
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
fn hpack_str(b: &[u8]) -> Option<(&[u8], usize)> {
    if b.first()? & 0x80 != 0 {
        return None;
    }
    let (len, used) = hpack_int(b, 7)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(used..end)?, end))
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2): name, value, length.
fn literal_without_indexing(b: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    if *b.first()? != 0x00 {
        return None;
    }
    let (name, n) = hpack_str(&b[1..])?;
    let (value, v) = hpack_str(&b[1 + n..])?;
    Some((name, value, 1 + n + v))
}

fuzz_target!(|data: &[u8]| {
    let Some((&queued_bits, rest)) = data.split_first() else {
        return;
    };
    let frame_count = (rest.len() / 5).min(MAX_INPUT_FRAMES);
    let (specs, cuts) = rest.split_at(frame_count * 5);
    let mut large = 0;
    let frames: Vec<Frame> = specs
        .chunks_exact(5)
        .enumerate()
        .map(|(i, s)| {
            let header = plausible(s[0], s[1], s[2], s[3], s[4], large < MAX_LARGE_FRAMES);
            if header.len > 1023 {
                large += 1;
            }
            // A byte that differs from frame to frame, so a misplaced frame shows (filled, not
            // computed byte by byte: frames of 16 KiB would dominate the execution time).
            let payload = vec![(i as u8).wrapping_mul(31) ^ 0x5a; header.len as usize];
            Frame { header, payload }
        })
        .collect();
    let mut stream: Vec<u8> = Vec::new();
    for f in &frames {
        stream.extend_from_slice(&encode(&f.header));
        stream.extend_from_slice(&f.payload);
    }
    let queued: HashMap<u32, [u8; 55]> = (0..8)
        .filter(|i| queued_bits & (1 << i) != 0)
        .map(|i| (i + 1, value(i + 1)))
        .collect();

    // What must leave: the first HEADERS frame of each queued stream that can take the field
    // gets it (a value is used once, and dropped when the frame would grow too large).
    let mut left = queued.clone();
    let mut expected = Vec::new();
    let mut added = 0;
    for f in &frames {
        let mut header = f.header;
        let mut payload = f.payload.clone();
        if header.takes_field() {
            if let Some(v) = left.remove(&header.stream) {
                if let Some(len) = header.grown_len() {
                    let mut field = [0u8; HPACK_TRACEPARENT_LEN];
                    encode_field(&v, &mut field);
                    payload.extend_from_slice(&field);
                    header.len = len;
                    added += 1;
                }
            }
        }
        expected.extend_from_slice(&encode(&header));
        expected.extend_from_slice(&payload);
    }

    // The application's writes, cut where the input says.
    let mut points: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut st = H2ConnState {
        synced: 1,
        ..H2ConnState::default()
    };
    let mut queued = queued;
    let mut sent = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    let mut until = 0usize;
    let mut from = 0;
    for &to in &points {
        held.extend_from_slice(&stream[from..to]);
        from = to;
        if held.is_empty() || held.len() < until {
            continue;
        }
        let mut msg = std::mem::take(&mut held);
        match on_write(&mut st, &mut msg, &mut queued) {
            Some(n) => {
                assert!(
                    n as usize > msg.len(),
                    "held for {n} bytes with {} there",
                    msg.len()
                );
                until = n as usize;
                held = msg;
            }
            None => {
                until = 0;
                sent.extend_from_slice(&msg);
            }
        }
    }
    assert!(
        held.is_empty(),
        "{} bytes still held at the end",
        held.len()
    );
    assert_eq!(st.synced, 1, "the framing of well-formed frames was lost");
    assert!(
        sent == expected,
        "the stream left changed: {} bytes, {} expected",
        sent.len(),
        expected.len()
    );

    // Each added field, found again by walking what left, decodes to the queued value.
    let mut at = 0;
    let mut found = 0;
    for f in &frames {
        let h = read(&sent, at as u32).expect("a frame header");
        let block_end = at + FRAME_HEADER_LEN + h.len as usize;
        if h.len == f.header.len + HPACK_TRACEPARENT_LEN as u32 {
            let field = &sent[block_end - HPACK_TRACEPARENT_LEN..block_end];
            let (name, value, used) = literal_without_indexing(field).expect("an HPACK literal");
            assert_eq!(
                (name, used),
                (b"traceparent".as_slice(), HPACK_TRACEPARENT_LEN)
            );
            assert_eq!(value, &self::value(h.stream)[..]);
            found += 1;
        }
        at = block_end;
    }
    assert_eq!(found, added);
});
