//! The one HTTP request Gatehouse makes: `GET {api_base}/gateway/bot`.
//!
//! Owns: the request (a small blocking client run on its own thread, once at start), the
//! response type and clear errors (the token never appears in them). Does not own: what the
//! answer means for sharding (see `gatehouse_config::Config::cluster`).

use std::time::Duration;

pub use proto_core::identify::SessionStartLimit;
use proto_core::secret::Secret;

/// `GET /gateway/bot`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct GatewayBot {
    /// The gateway URL (without query).
    pub url: String,
    /// The recommended shard count.
    pub shards: u32,
    /// The identify limits.
    pub session_start_limit: SessionStartLimit,
}

/// Why `/gateway/bot` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GatewayBotError {
    /// Discord refused the token.
    #[error("Discord refused the token (HTTP 401): check DISCORD_TOKEN")]
    Unauthorized,
    /// Another HTTP status.
    #[error("GET {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Transport or parse failure.
    #[error("GET {url} failed: {message}")]
    Failed {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Fetches `/gateway/bot` on a separate thread (the client blocks) and waits for it.
pub async fn fetch_gateway_bot(
    api_base: &str,
    token: &Secret,
) -> Result<GatewayBot, GatewayBotError> {
    let url = format!("{}/gateway/bot", api_base.trim_end_matches('/'));
    let token = token.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gatehouse-gateway-bot".into())
        .spawn(move || {
            let _ = tx.send(fetch_blocking(&url, &token));
        })
        .map_err(|e| GatewayBotError::Failed {
            url: api_base.to_owned(),
            message: e.to_string(),
        })?;
    rx.await.unwrap_or_else(|_| {
        Err(GatewayBotError::Failed {
            url: api_base.to_owned(),
            message: "the request thread died".into(),
        })
    })
}

/// The HTTP client of Discord's REST API: a 15 s budget per request, statuses as values, and
/// the `User-Agent` Discord asks bots for.
pub(crate) fn rest_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .user_agent("DiscordBot (https://example.invalid/gatehouse, 0.1)")
        .build()
        .new_agent()
}

fn fetch_blocking(url: &str, token: &Secret) -> Result<GatewayBot, GatewayBotError> {
    let failed = |message: String| GatewayBotError::Failed {
        url: url.to_owned(),
        message,
    };
    let mut response = rest_agent()
        .get(url)
        .header("Authorization", format!("Bot {}", token.expose()))
        .call()
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| failed(e.to_string()))?;
    match status {
        200 => serde_json::from_str(&body).map_err(|e| failed(format!("unexpected answer: {e}"))),
        401 => Err(GatewayBotError::Unauthorized),
        _ => Err(GatewayBotError::Status {
            url: url.to_owned(),
            status,
            body: body.chars().take(200).collect(),
        }),
    }
}
