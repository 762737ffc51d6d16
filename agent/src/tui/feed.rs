//! The view's place in the export pipeline: an [`Exporter`] that hands each batch of spans to
//! the view's thread, beside whatever OTLP or file exporters run.
//!
//! The pipeline must never wait for the screen: when the view falls behind (a queue of
//! [`QUEUE_BATCHES`] batches), batches are dropped for the view only and counted; the other
//! exporters still get every span.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;

use crate::{
    export::{ExportError, Exporter},
    spans::SpanRecord,
};

/// Batches queued for the view at most (the pipeline sends up to 512 spans per batch).
pub const QUEUE_BATCHES: usize = 1024;

/// What the pipeline tells the view.
#[derive(Debug)]
pub enum FeedMessage {
    /// The pipeline runs: probes are attached and spans will flow.
    Started,
    /// Spans, and when they reached the view's queue.
    Spans(Vec<SpanRecord>, Instant),
}

/// The exporter end.
pub struct Feed {
    tx: SyncSender<FeedMessage>,
    dropped: Arc<AtomicU64>,
    started: bool,
}

/// The view's end.
pub struct FeedReceiver {
    rx: Receiver<FeedMessage>,
    dropped: Arc<AtomicU64>,
}

/// A connected feed and receiver.
pub fn feed() -> (Feed, FeedReceiver) {
    let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Feed {
            tx,
            dropped: dropped.clone(),
            started: false,
        },
        FeedReceiver { rx, dropped },
    )
}

impl Feed {
    /// Hands a copy of `spans` to the view without waiting.
    pub fn push(&mut self, spans: &[SpanRecord]) {
        if spans.is_empty() {
            return;
        }
        let message = FeedMessage::Spans(spans.to_vec(), Instant::now());
        match self.tx.try_send(message) {
            Ok(()) => {}
            // A closed view (it quit) is not an export failure: the pipeline is stopping.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped
                    .fetch_add(spans.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Tells the view that tracing has started.
    pub fn start(&mut self) {
        if !std::mem::replace(&mut self.started, true) {
            let _ = self.tx.try_send(FeedMessage::Started);
        }
    }
}

impl Exporter for Feed {
    fn name(&self) -> String {
        "top".into()
    }

    fn export<'a>(&'a mut self, spans: &'a [SpanRecord]) -> BoxFuture<'a, Result<(), ExportError>> {
        self.push(spans);
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }

    fn tick(&mut self) {
        // The pipeline ticks every exporter once when it starts, after the probes attached.
        self.start();
    }
}

impl FeedReceiver {
    /// The next message, waiting at most `timeout`; `None` on timeout or when the feed closed.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<FeedMessage> {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// A message already waiting, if any.
    pub fn try_recv(&self) -> Option<FeedMessage> {
        self.rx.try_recv().ok()
    }

    /// Spans the view could not take because it fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::window::tests::span;

    #[test]
    fn passes_batches_and_counts_what_it_drops() {
        let (mut feed, rx) = feed();
        feed.tick();
        feed.tick();
        assert!(matches!(rx.try_recv(), Some(FeedMessage::Started)));
        assert!(rx.try_recv().is_none(), "started is said once");
        let s = span("svc", "GET /a", 1.0, 200);
        for _ in 0..QUEUE_BATCHES + 3 {
            feed.push(std::slice::from_ref(&s));
        }
        assert_eq!(rx.dropped(), 3);
        assert!(matches!(rx.try_recv(), Some(FeedMessage::Spans(v, _)) if v.len() == 1));
        drop(rx);
        feed.push(std::slice::from_ref(&s));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_running_pipeline_tells_the_view_it_started_before_any_span() {
        // The view says "attaching…" until this message; an idle pipeline (no span yet, so
        // nothing to wake it) must still send it.
        let (feed, rx) = feed();
        let pipeline = crate::export::Pipeline::start(vec![Box::new(feed)], 16);
        let started = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(matches!(started, Some(FeedMessage::Started)), "{started:?}");
        pipeline.shutdown().await;
    }
}
