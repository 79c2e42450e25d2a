//! The mock Discord gateway as scenarios use it: start one per scenario run with the scenario's
//! settings, read what it recorded, and steer it (op 7, op 9, closes, dropped ACKs).
//!
//! A thin adapter over the `mock-gateway` crate. PLACEHOLDER until that crate's API lands.

use std::time::Duration;

/// The mock's behaviour for one scenario.
#[derive(Clone, Debug)]
pub struct MockSettings {
    /// `heartbeat_interval` in HELLO.
    pub heartbeat_interval: Duration,
    /// `session_start_limit.max_concurrency`.
    pub max_concurrency: u32,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(1500),
            max_concurrency: 1,
        }
    }
}

/// A running mock gateway.
pub struct Gateway {
    api_base: String,
}

impl Gateway {
    /// Starts a mock on a free loopback port that accepts only `token`.
    pub fn start(settings: &MockSettings, token: &str) -> Result<Self, String> {
        let _ = (settings, token);
        Err("the mock gateway is not available yet".into())
    }

    /// `http://127.0.0.1:PORT/api/v10`.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }
}
