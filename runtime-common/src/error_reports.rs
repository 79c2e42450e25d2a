//! Opt-in error reports to Sentry (Retsu's `sentry_url`, `sentry.url`, `SENTRY_DSN`): panics,
//! a run that ends in an error, and shards closed for good, as Sentry events.
//!
//! Owns: starting the Sentry client and what is reported. Without a configured URL nothing is
//! started and [`report`] does nothing. Reports carry the error texts Gatehouse logs, which never
//! hold the token or a password (see `gatehouse_config::SecretUrl`).

use gatehouse_config::SecretUrl;

/// The Sentry client while it runs; dropping it sends what is still queued (at most 2 s).
#[must_use = "dropping the guard stops the reports"]
pub struct ErrorReports {
    _guard: Option<sentry::ClientInitGuard>,
}

impl std::fmt::Debug for ErrorReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self._guard.is_some() {
            "ErrorReports(on)"
        } else {
            "ErrorReports(off)"
        })
    }
}

/// Starts the client for `url` (nothing without one).
pub fn init(url: Option<&SecretUrl>) -> ErrorReports {
    let Some(url) = url else {
        return ErrorReports { _guard: None };
    };
    let dsn = match url.expose().parse::<sentry::types::Dsn>() {
        Ok(dsn) => dsn,
        Err(e) => {
            tracing::warn!(url = %url, error = %e, "not a Sentry DSN: no error reports");
            return ErrorReports { _guard: None };
        }
    };
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(concat!("gatehouse@", env!("CARGO_PKG_VERSION")).into());
    let guard = sentry::init(options);
    tracing::info!(url = %url, "sending error reports to Sentry");
    ErrorReports {
        _guard: Some(guard),
    }
}

/// Reports an error (a no-op without a client).
pub fn report(message: &str) {
    sentry::capture_message(message, sentry::Level::Error);
}
