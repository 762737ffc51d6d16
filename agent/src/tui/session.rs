//! The view's loop: take spans from the pipeline, refresh the rows once per interval, and
//! answer every key press with a redraw at once.
//!
//! The loop is generic over the terminal backend and the source of key presses, so the
//! benchmark (`examples/tui_load.rs`) runs this very loop against a test backend with
//! scripted keys while spans pour in.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crossterm::event::Event;
use ratatui::{backend::Backend, Terminal};

use super::{app::App, feed::FeedReceiver, view};

/// Longest the loop sleeps: how soon it notices that tracing stopped.
const POLL: Duration = Duration::from_millis(50);
/// Events handled together before a redraw at most.
const BURST: usize = 64;
/// Longest the loop spends taking spans before it looks at the keyboard again.
const INGEST_SLICE: Duration = Duration::from_millis(10);

/// Where key presses come from.
pub trait Input {
    /// The next terminal event, waiting at most `timeout`.
    fn next_event(&mut self, timeout: Duration) -> io::Result<Option<Event>>;

    /// Called after every frame is drawn.
    fn drawn(&mut self) {}
}

/// Key presses from the terminal.
pub struct TerminalInput;

impl Input for TerminalInput {
    fn next_event(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        if crossterm::event::poll(timeout)? {
            crossterm::event::read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The user quit.
    Quit,
    /// Tracing stopped (deadline, signal, every process exited).
    Stopped,
}

/// Runs the view until the user quits or `stop` is set.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    input: &mut dyn Input,
    app: &mut App,
    feed: &FeedReceiver,
    stop: &AtomicBool,
) -> anyhow::Result<Exit>
where
    B::Error: Send + Sync + 'static,
{
    let refresh = app.refresh_interval();
    let mut next_refresh = Instant::now();
    let mut redraw = true;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(Exit::Stopped);
        }
        // Spans first, in a bounded slice, so a backlog cannot hold up the keyboard.
        let slice_end = Instant::now() + INGEST_SLICE;
        while let Some(message) = feed.try_recv() {
            app.take(message);
            if Instant::now() >= slice_end {
                break;
            }
        }
        app.dropped = feed.dropped();
        let now = Instant::now();
        if now >= next_refresh {
            app.refresh(now);
            next_refresh = now + refresh;
            redraw = true;
        }
        if redraw {
            terminal.draw(|f| view::draw(f, app))?;
            input.drawn();
            redraw = false;
        }
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(POLL);
        if let Some(event) = input.next_event(wait)? {
            app.handle_event(event, Instant::now());
            // Keys typed together (a paste, a held key) get one redraw; a bounded number, so
            // an endless stream of events still lets frames through.
            for _ in 0..BURST {
                if app.quit_requested() {
                    break;
                }
                match input.next_event(Duration::ZERO)? {
                    Some(event) => app.handle_event(event, Instant::now()),
                    None => break,
                }
            }
            if app.quit_requested() {
                return Ok(Exit::Quit);
            }
            // Redraw before anything else: this is what a key press waits for.
            terminal.draw(|f| view::draw(f, app))?;
            input.drawn();
        }
    }
}
