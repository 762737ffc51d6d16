//! The full-screen view on the real terminal: raw mode and the alternate screen while it runs,
//! restored however the view ends (quit, stop, panic).

use std::{
    io::{self, Write},
    sync::atomic::AtomicBool,
    time::Instant,
};

use crossterm::{
    cursor,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    ExecutableCommand,
};
use ratatui::{backend::CrosstermBackend, Terminal};

#[cfg(doc)]
use super::logs::StderrCapture;
use super::{
    app::{App, Settings},
    feed::FeedReceiver,
    logs::LogLines,
    session::{self, Exit, TerminalInput},
};

/// Raw mode and the alternate screen, undone on drop.
struct ScreenGuard;

impl ScreenGuard {
    fn enter() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        let guard = ScreenGuard;
        let mut out = io::stdout();
        out.execute(EnterAlternateScreen)?;
        out.execute(cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for ScreenGuard {
    fn drop(&mut self) {
        let mut out = io::stdout();
        let _ = out.execute(cursor::Show);
        let _ = out.execute(LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
}

/// Runs the full-screen view on standard output until the user quits or `stop` is set.
///
/// The screen opens at once and says "attaching…" until the pipeline starts. The caller
/// captures stderr into `logs` ([`StderrCapture`]) before tracing starts, so the lines logged
/// while attaching show in the view too, and restores it when this returns.
pub fn run(
    feed: FeedReceiver,
    settings: Settings,
    logs: LogLines,
    stop: &AtomicBool,
) -> anyhow::Result<Exit> {
    let mut app = App::new(settings, logs, Instant::now());
    let guard = ScreenGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let result = session::run(&mut terminal, &mut TerminalInput, &mut app, &feed, stop);
    drop(terminal);
    drop(guard);
    result
}
