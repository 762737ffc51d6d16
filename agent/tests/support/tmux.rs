//! A real terminal for tests: tmux runs a command in a pane of a chosen size; the test types
//! keys into it (`send-keys`) and reads the screen back (`capture-pane`), as a user would.
//!
//! Each terminal gets its own tmux server (`-L`), so tests run in parallel and never touch a
//! tmux the machine's user runs.

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

/// A command running in a tmux pane.
pub struct Terminal {
    socket: String,
}

/// Quotes `s` for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Terminal {
    /// Runs `program args…` with `env` in a `width`×`height` terminal. When the program ends,
    /// the pane prints `exit status N` and stays open so its last screen can be read.
    pub fn start(
        name: &str,
        width: u16,
        height: u16,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Terminal {
        assert!(
            tmux_available(),
            "these tests drive the real binary in a real terminal and need tmux: install it \
             (`apt-get install tmux`) or run `cargo xtask test`, which installs it"
        );
        let socket = format!("spanhook-test-{name}-{}", std::process::id());
        let mut command = String::from("env");
        for (k, v) in env {
            command.push(' ');
            command.push_str(&shell_quote(&format!("{k}={v}")));
        }
        command.push(' ');
        command.push_str(&shell_quote(&program.to_string_lossy()));
        for a in args {
            command.push(' ');
            command.push_str(&shell_quote(a));
        }
        command.push_str("; echo \"exit status $?\"; exec sleep 86400");
        let terminal = Terminal { socket };
        // No user configuration: the same terminal on every machine.
        let out = terminal.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        terminal
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    /// Presses keys, named as tmux names them: `Tab`, `Enter`, `Escape`, `Down`, `q`, `/`.
    pub fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        let out = self.tmux(&args);
        assert!(out.status.success(), "send-keys {keys:?} failed");
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-t", "main", "-l", text]);
        assert!(out.status.success(), "send-keys -l {text:?} failed");
    }

    /// The screen as text, one line per row, trailing spaces removed.
    pub fn screen(&self) -> Vec<String> {
        let out = self.tmux(&["capture-pane", "-p", "-t", "main"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Everything the pane printed on its normal screen, wrapped lines joined (for what a
    /// program prints after it leaves the full-screen view).
    pub fn scrollback(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-S", "-1000", "-t", "main"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `ok` accepts the screen; returns it. Fails with `what` and the last screen.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            // The program ended: waiting longer cannot help.
            let exited = screen.iter().any(|l| l.starts_with("exit status "));
            if exited || start.elapsed() > timeout {
                panic!(
                    "{} waiting for {what}; the screen:\n{}\n(scrollback:\n{})",
                    if exited {
                        "the program exited".to_string()
                    } else {
                        format!("timed out after {timeout:?}")
                    },
                    screen.join("\n"),
                    self.scrollback()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the program to end; returns its exit status.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            let text = self.scrollback();
            if let Some(code) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("exit status "))
                .and_then(|c| c.trim().parse().ok())
            {
                return code;
            }
            if start.elapsed() > timeout {
                panic!("the program did not exit within {timeout:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resizes the terminal.
    pub fn resize(&self, width: u16, height: u16) {
        let out = self.tmux(&[
            "resize-window",
            "-t",
            "main",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        assert!(
            out.status.success(),
            "resize-window failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
