//! A writer that keeps everything written to it, for tests that read what a
//! function logged or wrote as metrics.

use lambda_http::tracing;
use lambda_http::tracing::subscriber::fmt::MakeWriter;
use std::sync::{Arc, Mutex};

/// Everything written to it, as shared bytes.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A JSON subscriber like the runtime's (AWS_LAMBDA_LOG_FORMAT=JSON),
    /// writing here, for the current thread, up to `level`.
    pub fn install(&self, level: tracing::Level) -> tracing::dispatcher::DefaultGuard {
        let subscriber = tracing::subscriber::fmt()
            .json()
            .with_max_level(level)
            .with_writer(self.clone())
            .finish();
        tracing::dispatcher::set_default(&tracing::Dispatch::new(subscriber))
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// As [`Captured::install`], for every thread of the process: for a
    /// multi-thread runtime. Once per process (nextest runs each test in
    /// its own).
    pub fn install_global(&self, level: tracing::Level) {
        let subscriber = tracing::subscriber::fmt()
            .json()
            .with_max_level(level)
            .with_writer(self.clone())
            .finish();
        tracing::dispatcher::set_global_default(tracing::Dispatch::new(subscriber))
            .expect("the first subscriber");
    }
}
