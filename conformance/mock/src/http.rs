//! The HTTP side of the mock: reading a request head, answering the REST routes
//! (`GET /api[/v9|/v10]/gateway[/bot]`, and `POST .../channels/{id}/messages`, recorded, for
//! clients that post to a log channel) and accepting WebSocket upgrades.
//!
//! Owns: HTTP parsing and responses, the `Authorization: Bot <token>` check, the upgrade
//! handshake. Does not own: anything that happens after the upgrade (see `connection`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::recorder::HttpRecord;
use crate::shared::Shared;

const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head plus any bytes read past it.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    headers: Vec<(String, String)>,
    pub(crate) leftover: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
            && self.header("sec-websocket-key").is_some()
    }

    pub(crate) fn full_path(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// Reads one request head (blocking, with a deadline).
pub(crate) fn read_request(stream: &mut TcpStream, timeout: Duration) -> io::Result<Request> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ));
        }
        stream.set_read_timeout(Some(deadline - now))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = request.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                return Ok(Request {
                    method: request.method.unwrap_or("").to_owned(),
                    path: path.to_owned(),
                    query: query.to_owned(),
                    headers: request
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    leftover: buf[len..].to_vec(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too large",
                ));
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Writes the `101 Switching Protocols` answer to a WebSocket upgrade request.
pub(crate) fn accept_upgrade(stream: &mut TcpStream, request: &Request) -> io::Result<()> {
    let key = request.header("sec-websocket-key").unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

fn respond(stream: &mut TcpStream, status: u16, reason: &str, body: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Which REST route a path names.
enum Route {
    Gateway,
    GatewayBot,
    ChannelMessages,
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/api")?;
    let rest = match rest.strip_prefix("/v") {
        Some(versioned) => {
            let (version, tail) = versioned.split_once('/')?;
            if !matches!(version, "9" | "10") {
                return None;
            }
            tail
        }
        None => rest.strip_prefix('/')?,
    };
    match rest.trim_end_matches('/') {
        "gateway" => Some(Route::Gateway),
        "gateway/bot" => Some(Route::GatewayBot),
        other => {
            let channel = other.strip_prefix("channels/")?.strip_suffix("/messages")?;
            channel
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then_some(Route::ChannelMessages)
        }
    }
}

/// The request body (by `Content-Length`, at most 1 MiB), the bytes past the head included.
fn read_body(stream: &mut TcpStream, request: &Request) -> io::Result<String> {
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = request.leftover.clone();
    body.truncate(length);
    let mut chunk = [0u8; 4096];
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n.min(length - body.len())]);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Whether a request carries the configured bot token (any token when none is configured).
fn authorized(shared: &Shared, request: &Request) -> bool {
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bot "));
    match (&shared.config.token, token) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(expected), Some(given)) => expected == given.trim(),
    }
}

const UNAUTHORIZED: &str = "{\"message\": \"401: Unauthorized\", \"code\": 0}";

/// Answers a plain HTTP request and records it.
pub(crate) fn serve_rest(
    shared: &Shared,
    stream: &mut TcpStream,
    request: &Request,
) -> io::Result<()> {
    let route = route(&request.path);
    let body = match (request.method.as_str(), &route) {
        ("POST", Some(Route::ChannelMessages)) => read_body(stream, request)?,
        _ => String::new(),
    };
    let (status, reason, answer) = match (request.method.as_str(), route) {
        ("POST", Some(Route::ChannelMessages)) if !authorized(shared, request) => {
            (401, "Unauthorized", UNAUTHORIZED.to_owned())
        }
        ("POST", Some(Route::ChannelMessages)) => {
            let posted = shared.recorder.read(|r| {
                r.http
                    .iter()
                    .filter(|h| h.method == "POST" && h.path.contains("/channels/"))
                    .count()
            });
            if posted < shared.config.rate_limit_channel_messages as usize {
                (
                    429,
                    "Too Many Requests",
                    "{\"message\": \"You are being rate limited.\", \"retry_after\": 0.05, \"global\": false}"
                        .to_owned(),
                )
            } else {
                (200, "OK", "{\"id\": \"1\", \"type\": 0}".to_owned())
            }
        }
        ("GET", Some(Route::Gateway)) => (
            200,
            "OK",
            format!("{{\"url\":{}}}", crate::frames::json_string(&shared.ws_url)),
        ),
        ("GET", Some(Route::GatewayBot)) => {
            if authorized(shared, request) {
                (200, "OK", shared.gateway_bot_body(Instant::now()))
            } else {
                (401, "Unauthorized", UNAUTHORIZED.to_owned())
            }
        }
        (_, Some(_)) => (
            405,
            "Method Not Allowed",
            "{\"message\": \"405: Method Not Allowed\", \"code\": 0}".to_owned(),
        ),
        (_, None) => (
            404,
            "Not Found",
            "{\"message\": \"404: Not Found\", \"code\": 0}".to_owned(),
        ),
    };
    shared.recorder.update(|r| {
        r.http.push(HttpRecord {
            at: Instant::now(),
            method: request.method.clone(),
            path: request.full_path(),
            body,
            status,
        });
    });
    respond(stream, status, reason, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            route("/api/v10/gateway/bot"),
            Some(Route::GatewayBot)
        ));
        assert!(matches!(
            route("/api/v9/gateway/bot"),
            Some(Route::GatewayBot)
        ));
        assert!(matches!(route("/api/gateway/bot"), Some(Route::GatewayBot)));
        assert!(matches!(route("/api/v10/gateway"), Some(Route::Gateway)));
        assert!(route("/api/v8/gateway/bot").is_none());
        assert!(route("/gateway/bot").is_none());
    }
}
