//! Shard state changes posted to a Discord channel (twilight-dispatch's `LOG_CHANNEL`,
//! `discord.log_channel`): one embed per change, through `POST /channels/{id}/messages`, on a
//! thread of its own so that a slow or rate-limited REST API never delays a shard.
//!
//! Owns: the message, the request, and Discord's rate limits for it (a 429's `retry_after`, and
//! waiting out `X-RateLimit-Reset-After` when `X-RateLimit-Remaining` reaches 0), decided by
//! [`after_response`], a pure function. Does not own when states change (`metrics` reports
//! them). The only REST call besides `GET /gateway/bot`, made only when configured.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use proto_core::secret::Secret;

/// How often one message is tried before it is dropped (with a warning).
const ATTEMPTS: u32 = 5;
/// The longest wait a rate limit may impose on this low-priority queue.
const MAX_WAIT: Duration = Duration::from_secs(60);

static CHANNEL: OnceLock<mpsc::Sender<Post>> = OnceLock::new();

struct Post {
    title: String,
    color: u32,
}

/// What to do after one response.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Done (posted, or refused for good); wait this long before the next message.
    Done(Duration),
    /// Rate limited: try the same message again after this long.
    Retry(Duration),
}

/// The decision after a response: `status`, the body (for a 429's `retry_after`, in seconds),
/// and the `X-RateLimit-Remaining` / `X-RateLimit-Reset-After` headers.
pub fn after_response(
    status: u16,
    body: &str,
    remaining: Option<&str>,
    reset_after: Option<&str>,
) -> Next {
    let seconds = |s: f64| Duration::from_secs_f64(s.clamp(0.0, MAX_WAIT.as_secs_f64()));
    if status == 429 {
        let retry_after = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["retry_after"].as_f64())
            .or_else(|| reset_after.and_then(|r| r.trim().parse().ok()))
            .unwrap_or(1.0);
        return Next::Retry(seconds(retry_after));
    }
    let exhausted = remaining.is_some_and(|r| r.trim() == "0");
    let reset = reset_after.and_then(|r| r.trim().parse::<f64>().ok());
    Next::Done(match (exhausted, reset) {
        (true, Some(reset)) => seconds(reset),
        _ => Duration::ZERO,
    })
}

/// Starts the poster for `channel` (once per process).
pub fn start(api_base: &str, token: &Secret, channel: u64) {
    let url = format!(
        "{}/channels/{channel}/messages",
        api_base.trim_end_matches('/')
    );
    let token = token.clone();
    let (tx, rx) = mpsc::channel::<Post>();
    if CHANNEL.set(tx).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("gatehouse-log-channel".into())
        .spawn(move || {
            let agent = crate::discord_http::rest_agent();
            for post in rx {
                let pause = send(&agent, &url, &token, &post);
                std::thread::sleep(pause);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the log channel's thread");
    }
    tracing::info!(channel, "posting shard state changes to the log channel");
}

/// Posts one message, retrying on 429; returns how long to wait before the next one.
fn send(agent: &ureq::Agent, url: &str, token: &Secret, post: &Post) -> Duration {
    let body = serde_json::json!({
        "embeds": [{ "title": post.title, "color": post.color }]
    })
    .to_string();
    for _ in 0..ATTEMPTS {
        let response = agent
            .post(url)
            .header("Authorization", format!("Bot {}", token.expose()))
            .header("Content-Type", "application/json")
            .send(&body);
        let mut response = match response {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(error = %e, "cannot post to the log channel");
                return Duration::ZERO;
            }
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (remaining, reset_after) = (
            header("x-ratelimit-remaining"),
            header("x-ratelimit-reset-after"),
        );
        let text = response.body_mut().read_to_string().unwrap_or_default();
        match after_response(status, &text, remaining.as_deref(), reset_after.as_deref()) {
            Next::Retry(wait) => {
                tracing::debug!(?wait, "log channel rate limited; retrying");
                std::thread::sleep(wait);
            }
            Next::Done(wait) => {
                if !(200..300).contains(&status) {
                    tracing::warn!(status, "Discord refused the log channel message");
                }
                return wait;
            }
        }
    }
    tracing::warn!("log channel message dropped: still rate limited");
    Duration::ZERO
}

/// Posts "Shard N <state>" when a log channel is configured (green when active, red when
/// disconnected or closed, yellow otherwise).
pub(crate) fn shard_state(shard: &str, state: &str, reason: &str) {
    let Some(channel) = CHANNEL.get() else {
        return;
    };
    let color = match state {
        "active" => 0x2e_cc_71,
        "disconnected" | "fatally_closed" => 0xe7_4c_3c,
        _ => 0xf1_c4_0f,
    };
    let _ = channel.send(Post {
        title: format!("Shard {shard} {state}: {reason}"),
        color,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_respected() {
        assert_eq!(
            after_response(200, "{}", Some("4"), Some("1")),
            Next::Done(Duration::ZERO)
        );
        assert_eq!(
            after_response(200, "{}", Some("0"), Some("2.5")),
            Next::Done(Duration::from_millis(2500))
        );
        assert_eq!(
            after_response(429, r#"{"retry_after": 0.05, "global": false}"#, None, None),
            Next::Retry(Duration::from_millis(50))
        );
        assert_eq!(
            after_response(429, "not json", Some("0"), Some("3")),
            Next::Retry(Duration::from_secs(3))
        );
        assert_eq!(
            after_response(429, r#"{"retry_after": 99999}"#, None, None),
            Next::Retry(MAX_WAIT)
        );
        assert_eq!(
            after_response(403, "{}", None, None),
            Next::Done(Duration::ZERO)
        );
    }
}
