//! Capturing what switchboard logs, to check what never reaches a log line.

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// Every event logged through `tracing` on the current thread, at every
/// level, while the guard returned by [`CapturedLogs::start`] lives; but
/// those of the WebSocket client library the tests themselves use, which
/// logs the requests it makes.
///
/// Thread-local: use it in a current-thread runtime (`#[tokio::test]`), so
/// that the tasks a test spawns, and those of the Redis client, log on the
/// test's thread.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Starts capturing; capture ends when the guard drops.
    pub fn start() -> (CapturedLogs, tracing::dispatcher::DefaultGuard) {
        let logs = CapturedLogs::default();
        let guard = tracing_subscriber::fmt()
            .with_env_filter("trace,tungstenite=off,tokio_tungstenite=off")
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish()
            .set_default();
        (logs, guard)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }

    /// Panics, showing the logs, if `secret` appears in them.
    pub fn assert_absent(&self, secret: &str) {
        let text = self.text();
        assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
