//! The state every thread of a running mock shares: configuration, frame templates, URLs, the
//! session table, the recorder, the shutdown flag and the connection threads.
//!
//! Owns: [`Shared`] and the resume path. Depends on nothing that uses it, so `server`,
//! `connection`, `http` and `control` all depend on it one way.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::MockConfig;
use crate::frames::{SessionStartLimit, Templates};
use crate::recorder::Recorder;
use crate::session::SessionTable;

/// The path of the WebSocket URL that READY's `resume_gateway_url` names. The mock serves the
/// gateway on every path; a RESUME on another path is recorded as a violation.
pub const RESUME_PATH: &str = "/resume";

pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) templates: Templates,
    pub(crate) ws_url: String,
    pub(crate) resume_url: String,
    pub(crate) state: Mutex<SessionTable>,
    pub(crate) recorder: Recorder,
    pub(crate) shutdown: AtomicBool,
    /// Connections still to be greeted with op 7 instead of HELLO.
    pub(crate) reconnects_before_hello: AtomicU64,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, SessionTable> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn session_start_limit(&self, now: Instant) -> SessionStartLimit {
        let (remaining, reset_after) = self.state().session_start(&self.config, now);
        SessionStartLimit {
            total: self.config.session_start_total,
            remaining,
            reset_after_ms: reset_after.as_millis() as u64,
            max_concurrency: self.config.max_concurrency,
        }
    }

    pub(crate) fn gateway_bot_body(&self, now: Instant) -> String {
        let limit = self.session_start_limit(now);
        self.templates
            .gateway_bot(&self.ws_url, self.config.shards, limit)
    }

    pub(crate) fn spawn(self: &Arc<Self>, name: String, f: impl FnOnce() + Send + 'static) {
        let handle = std::thread::Builder::new().name(name).spawn(f);
        match handle {
            Ok(handle) => {
                let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(e) => tracing::warn!(error = %e, "mock gateway could not spawn a thread"),
        }
    }
}
