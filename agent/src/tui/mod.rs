//! `spanhook top`: a live terminal view of what spanhook traces, without a backend.
//!
//! The view is one more consumer of the export pipeline: [`feed::Feed`] is an exporter that
//! hands each batch to the view's thread, so the same spans reach OTLP and file exporters at
//! the same time. On the view's side, [`model::Model`] keeps a sliding window of per-operation
//! facts ([`window`]) and a bounded store of recent traces ([`traces`]); [`app::App`] holds what
//! is shown (filter, sort, selection, pause) and [`input`] maps keys onto it; [`view`] draws it
//! with ratatui; [`session`] is the loop and [`terminal`] runs it full screen, while [`logs`]
//! keeps stderr off the screen; [`plain`] prints a periodic text table instead when standard
//! output is not a terminal.

pub mod app;
pub mod columns;
pub mod feed;
pub mod filter;
pub mod format;
pub mod input;
pub mod logs;
pub mod model;
pub mod plain;
pub mod session;
pub mod terminal;
pub mod traces;
pub mod view;
pub mod window;

pub use app::{App, Settings};
pub use feed::{feed, Feed, FeedReceiver};
pub use session::Exit;
