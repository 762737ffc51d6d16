//! Child processes of a benchmark run: each in its own process group (so a Ctrl-C reaches only
//! the bench, which then stops them in order), killed if the bench dies, and killed on drop.
//! Also what the kernel says about a process: CPU time, peak memory, resource usage at exit.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, ExitStatus},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Set by the Ctrl-C handler; every wait of the bench checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler that turns Ctrl-C / SIGTERM into an orderly stop.
pub fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")
}

/// Fails when the bench was interrupted, so guards unwind and clean up.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// CPU time, peak memory and exit status of a process that has exited.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// How it ended.
    pub status: ExitStatus,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident set size in bytes.
    pub max_rss: u64,
}

/// A child process, killed (with its process group) when dropped.
pub struct Proc {
    child: Option<Child>,
    name: String,
    lines: Option<mpsc::Receiver<String>>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` in its own process group; it gets SIGKILL if the bench dies first.
    /// Its standard input is what `cmd` says (inherited by default: none of the bench's
    /// programs reads it unless given a pipe).
    /// Standard output is read line by line (see [`Proc::expect_line`]) unless the caller
    /// redirected it; standard error is kept (last lines) for error messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        let shown = format!("{cmd:?}");
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the new process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {shown}"))?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(err);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let mut t = tail.lock().unwrap();
                    t.push(line.trim_end().to_string());
                    if t.len() > 40 {
                        t.remove(0);
                    }
                    line.clear();
                }
            });
        }
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
            lines,
            stderr_tail,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Writes to the child's standard input (when it was piped).
    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.as_mut()?.stdin.as_mut()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    fn stderr_excerpt(&self) -> String {
        // Let the reader thread catch the last lines of a process that just died.
        std::thread::sleep(Duration::from_millis(100));
        let tail = self.stderr_tail.lock().unwrap();
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "\n  its last output:\n    {}",
                tail[tail.len().saturating_sub(12)..].join("\n    ")
            )
        }
    }

    /// Waits for a line of standard output that starts with `prefix`; returns the rest.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let end = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let rx = self
                .lines
                .as_ref()
                .with_context(|| format!("{}: standard output is not piped", self.name))?;
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= end {
                        bail!(
                            "{} printed no line starting with {prefix:?} within {timeout:?}{}",
                            self.name,
                            self.stderr_excerpt()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "{} exited before printing {prefix:?}{}",
                    self.name,
                    self.stderr_excerpt()
                ),
            }
        }
    }

    /// Reaps the process if it has exited; `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<Exit>> {
        let Some(child) = self.child.as_ref() else {
            bail!("{} was already waited for", self.name);
        };
        let pid = child.id() as i32;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r < 0 {
            bail!(
                "waiting for {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        if r != pid {
            return Ok(None);
        }
        // Reaped: the Child must not be killed or waited for again.
        self.child = None;
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Ok(Some(Exit {
            status: ExitStatus::from_raw(status),
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            max_rss: usage.ru_maxrss as u64 * 1024,
        }))
    }

    /// Waits for the process to exit and returns its resource usage.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exited()? {
                return Ok(exit);
            }
            if Instant::now() >= end {
                bail!(
                    "{} did not exit within {timeout:?}{}",
                    self.name,
                    self.stderr_excerpt()
                );
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal`, then waits; kills it if it does not exit in time.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> Result<Exit> {
        self.signal(signal);
        match self.wait(timeout) {
            Ok(exit) => Ok(exit),
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }

    /// Kills the process group and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: the group was created for this child by `process_group(0)`.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Standard output lines not consumed by [`Proc::expect_line`], up to the end of the
    /// output (call after the process exited) or `timeout`.
    pub fn rest_of_output(&mut self, timeout: Duration) -> Vec<String> {
        let Some(rx) = self.lines.as_ref() else {
            return Vec::new();
        };
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Ok(line) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            out.push(line);
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system) the threads of `pid` have run so far, in nanoseconds, from
/// `/proc/PID/task/*/schedstat` (nanosecond resolution; `/proc/PID/stat` counts 10 ms ticks).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path().join("schedstat");
        let mut text = String::new();
        if fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_err()
        {
            continue; // the thread exited meanwhile
        }
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// Peak resident set size of `pid` so far (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no VmHWM in {path}"))
}
