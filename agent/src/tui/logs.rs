//! Keeping log lines off the full-screen view: while it is up, file descriptor 2 is a pipe
//! whose lines the view shows (the newest in the status line, all of them on `l`); when it
//! closes, stderr is restored and the lines are written there, so nothing logged is lost.
//!
//! Redirecting the descriptor, rather than the logger, also catches what other code writes to
//! stderr (a panic message, a library's warning).

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufRead, BufReader, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

/// Lines kept for the view at most.
pub const MAX_LINES: usize = 1_000;

/// Captured lines, shared between the reader thread and the view.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<LogBuffer>>);

#[derive(Default)]
struct LogBuffer {
    raw: VecDeque<String>,
    total: u64,
}

impl LogLines {
    /// Adds a line as written (terminal colours included).
    pub fn push(&self, line: String) {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if b.raw.len() >= MAX_LINES {
            b.raw.pop_front();
        }
        b.raw.push_back(line);
        b.total += 1;
    }

    /// The newest line, without terminal escapes.
    pub fn last(&self) -> Option<String> {
        let b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        b.raw.back().map(|l| plain(l))
    }

    /// The newest `n` lines, oldest first, without terminal escapes.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let skip = b.raw.len().saturating_sub(n);
        b.raw.iter().skip(skip).map(|l| plain(l)).collect()
    }

    /// Lines seen in all.
    pub fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    fn drain(&self) -> (Vec<String>, u64) {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<String> = b.raw.drain(..).collect();
        let lost = b.total - lines.len() as u64;
        (lines, lost)
    }
}

/// Removes terminal escape sequences (the logger colours its levels).
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, up to the final byte @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// Stderr redirected into [`LogLines`] until [`StderrCapture::restore`].
pub struct StderrCapture {
    saved: OwnedFd,
    reader: Option<JoinHandle<()>>,
    lines: LogLines,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl StderrCapture {
    /// Points descriptor 2 at a pipe read into `lines`.
    pub fn start(lines: LogLines) -> io::Result<Self> {
        let _ = io::stderr().flush();
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded, so both descriptors are new and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: duplicating descriptor 2 has no memory effects; the result is checked.
        let saved = check(unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) })?;
        // SAFETY: as above; `saved` is a fresh descriptor.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: dup2 onto 2 replaces stderr atomically; both descriptors are valid.
        check(unsafe { libc::dup2(write.as_raw_fd(), 2) })?;
        // Only descriptor 2 holds the pipe's write end now, so restoring 2 ends the reader.
        drop(write);
        let sink = lines.clone();
        let reader = std::thread::Builder::new()
            .name("spanhook-log".into())
            .spawn(move || {
                let mut r = BufReader::new(File::from(read));
                let mut buf = Vec::new();
                while let Ok(n) = r.read_until(b'\n', &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let line = String::from_utf8_lossy(&buf);
                    sink.push(line.trim_end_matches(['\n', '\r']).to_string());
                    buf.clear();
                }
            })?;
        Ok(Self {
            saved,
            reader: Some(reader),
            lines,
        })
    }

    /// Puts stderr back and writes every captured line to it.
    pub fn restore(mut self) {
        self.restore_fd();
    }

    fn restore_fd(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        // SAFETY: both descriptors are valid; this closes the pipe's last write end.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        let _ = reader.join();
        let (lines, lost) = self.lines.drain();
        let mut err = io::stderr().lock();
        if lost > 0 {
            let _ = writeln!(err, "({lost} earlier log lines were not kept)");
        }
        for l in lines {
            let _ = writeln!(err, "{l}");
        }
    }
}

impl Drop for StderrCapture {
    fn drop(&mut self) {
        self.restore_fd();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours_and_controls() {
        assert_eq!(
            plain(
                "\u{1b}[2m2026-05-20T10:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m exporting to top"
            ),
            "2026-05-20T10:00:00Z  INFO exporting to top"
        );
        assert_eq!(plain("a\tb\u{7}c"), "a bc");
    }

    #[test]
    fn keeps_the_newest_lines() {
        let lines = LogLines::default();
        for i in 0..MAX_LINES + 5 {
            lines.push(format!("line {i}"));
        }
        assert_eq!(lines.total(), (MAX_LINES + 5) as u64);
        assert_eq!(lines.last().as_deref(), Some("line 1004"));
        assert_eq!(lines.tail(2), ["line 1003", "line 1004"]);
        let (kept, lost) = lines.drain();
        assert_eq!(kept.len(), MAX_LINES);
        assert_eq!(lost, 5);
    }
}
