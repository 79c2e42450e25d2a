//! A small blocking gateway client for tests: connects to a mock (or any gateway URL without
//! TLS), undoes transport compression and ETF, and sends commands.
//!
//! Owns: nothing of the mock; it is the other end of the wire, written plainly so that tests of
//! the mock do not depend on the product's codec. Not meant for production use.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::write::ZlibDecoder;
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::wire::{Compression, Encoding, GatewayParams};

/// What [`TestClient::recv`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// One complete gateway payload as JSON bytes (decompressed; ETF converted to JSON).
    Payload(Bytes),
    /// The server closed the connection with this close code (`None`: no close frame).
    Closed(Option<u16>),
}

/// Errors of the test client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket or handshake failure.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// WebSocket failure.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// A payload could not be decoded.
    #[error("decode: {0}")]
    Decode(String),
    /// Something other than what was expected arrived.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

enum Inflater {
    None,
    Zlib {
        decoder: Box<ZlibDecoder<Vec<u8>>>,
        pending: Vec<u8>,
    },
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
}

/// A blocking WebSocket gateway client.
pub struct TestClient {
    ws: WebSocket<TcpStream>,
    encoding: Encoding,
    inflater: Inflater,
    /// Number of WebSocket messages received (a zlib payload may span several).
    pub messages_received: usize,
    closed: bool,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl TestClient {
    /// Connects to `base` (e.g. `ws://127.0.0.1:1234`) with the query string `query`
    /// (e.g. `v=10&encoding=json&compress=zlib-stream`).
    pub fn connect(base: &str, query: &str) -> Result<Self, ClientError> {
        let url = format!("{}/?{}", base.trim_end_matches('/'), query);
        Self::connect_url(&url)
    }

    /// Connects to a full URL (`ws://host:port/path?query`).
    pub fn connect_url(url: &str) -> Result<Self, ClientError> {
        let without_scheme = url
            .strip_prefix("ws://")
            .ok_or_else(|| ClientError::Unexpected(format!("not a ws:// URL: {url}")))?;
        let host = without_scheme.split(['/', '?']).next().unwrap_or_default();
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let params = GatewayParams::parse(query).unwrap_or_default();
        let stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _response) = tungstenite::client::client_with_config(url, stream, Some(config))
            .map_err(|e| ClientError::Unexpected(format!("handshake: {e}")))?;
        let inflater = match params.compression {
            Compression::None => Inflater::None,
            Compression::ZlibStream => Inflater::Zlib {
                decoder: Box::new(ZlibDecoder::new(Vec::new())),
                pending: Vec::new(),
            },
            Compression::ZstdStream => Inflater::Zstd(Box::new(
                zstd::stream::write::Decoder::new(Vec::new()).map_err(ClientError::Io)?,
            )),
        };
        Ok(Self {
            ws,
            encoding: params.encoding,
            inflater,
            messages_received: 0,
            closed: false,
        })
    }

    /// Receives the next payload or close, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        if self.closed {
            return Ok(Received::Closed(None));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout);
            }
            self.ws
                .get_ref()
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            let message = match self.ws.read() {
                Ok(message) => message,
                Err(WsError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.closed = true;
                    return Ok(Received::Closed(None));
                }
                Err(WsError::Io(_) | WsError::Protocol(_)) => {
                    self.closed = true;
                    return Ok(Received::Closed(None));
                }
                Err(e) => return Err(e.into()),
            };
            self.messages_received += 1;
            let bytes: Vec<u8> = match message {
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Close(frame) => {
                    self.closed = true;
                    let _ = self.ws.flush();
                    return Ok(Received::Closed(frame.map(|f| u16::from(f.code))));
                }
                _ => continue,
            };
            let Some(payload) = self.inflate(bytes)? else {
                continue;
            };
            let json = match self.encoding {
                Encoding::Json => payload,
                Encoding::Etf => {
                    let value =
                        crate::etf::decode_server_payload(&payload).map_err(ClientError::Decode)?;
                    serde_json::to_vec(&value).map_err(|e| ClientError::Decode(e.to_string()))?
                }
            };
            return Ok(Received::Payload(Bytes::from(json)));
        }
    }

    fn inflate(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, ClientError> {
        match &mut self.inflater {
            Inflater::None => Ok(Some(bytes)),
            Inflater::Zlib { decoder, pending } => {
                pending.extend_from_slice(&bytes);
                if !pending.ends_with(&[0, 0, 0xff, 0xff]) {
                    return Ok(None);
                }
                decoder.write_all(pending)?;
                decoder.flush()?;
                pending.clear();
                Ok(Some(std::mem::take(decoder.get_mut())))
            }
            Inflater::Zstd(decoder) => {
                decoder.write_all(&bytes)?;
                decoder.flush()?;
                Ok(Some(std::mem::take(decoder.get_mut())))
            }
        }
    }

    /// Receives the next payload as a JSON value (a close is an error).
    pub fn recv_json(&mut self, timeout: Duration) -> Result<Value, ClientError> {
        match self.recv(timeout)? {
            Received::Payload(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
            }
            Received::Closed(code) => Err(ClientError::Unexpected(format!("closed with {code:?}"))),
        }
    }

    /// Receives payloads until one with opcode `op` arrives (others are skipped); returns it.
    pub fn recv_op(&mut self, op: u64, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self.recv_json(left)?;
            if value["op"].as_u64() == Some(op) {
                return Ok(value);
            }
        }
    }

    /// Receives until the connection closes; returns the close code.
    pub fn recv_close(&mut self, timeout: Duration) -> Result<Option<u16>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Received::Closed(code) = self.recv(left)? {
                return Ok(code);
            }
        }
    }

    /// Sends a JSON payload in the connection's encoding (ETF with binary keys).
    pub fn send(&mut self, value: &Value) -> Result<(), ClientError> {
        let message = match self.encoding {
            Encoding::Json => Message::text(value.to_string()),
            Encoding::Etf => Message::binary(crate::etf::encode_client_payload(value)),
        };
        self.ws.send(message)?;
        Ok(())
    }

    /// Sends a raw WebSocket message.
    pub fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message)?;
        Ok(())
    }

    /// Sends op 2 IDENTIFY.
    pub fn identify(
        &mut self,
        token: &str,
        shard: [u32; 2],
        intents: u64,
    ) -> Result<(), ClientError> {
        self.send(&json!({"op": 2, "d": {
            "token": token,
            "properties": {"os": "linux", "browser": "mock-gateway-test", "device": "mock-gateway-test"},
            "shard": shard,
            "intents": intents,
        }}))
    }

    /// Sends op 6 RESUME.
    pub fn resume(&mut self, token: &str, session_id: &str, seq: u64) -> Result<(), ClientError> {
        self.send(&json!({"op": 6, "d": {"token": token, "session_id": session_id, "seq": seq}}))
    }

    /// Sends op 1 with `seq` (or null).
    pub fn heartbeat(&mut self, seq: Option<u64>) -> Result<(), ClientError> {
        self.send(&json!({"op": 1, "d": seq}))
    }

    /// Sends a close frame with `code` and waits briefly for the server's answer.
    pub fn close(&mut self, code: u16) -> Result<(), ClientError> {
        self.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        self.closed = true;
        Ok(())
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

/// A plain HTTP/1.1 GET on `127.0.0.1:port`; returns `(status, body)`.
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
