//! What a payload looks like on one connection: the query parameters a client chose (`v`,
//! `encoding`, `compress`), encoding of outgoing payloads (JSON text or ETF binary), transport
//! compression (one zlib or zstd stream per connection) and decoding of incoming frames.
//!
//! Owns: the byte transformations between the JSON text of a frame and the WebSocket messages
//! that carry it, both ways. Does not own: deciding what to send (see `connection`).

use std::io::Write;

use bytes::Bytes;
use flate2::Compression as ZlibLevel;
use flate2::write::ZlibEncoder;
use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::frame::Utf8Bytes;

use crate::etf;

/// Payload encoding chosen by the client with `?encoding=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `json` (the default): text frames.
    #[default]
    Json,
    /// `etf`: Erlang External Term Format in binary frames, both ways.
    Etf,
}

/// Transport compression chosen by the client with `?compress=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No transport compression.
    #[default]
    None,
    /// `zlib-stream`: one deflate stream per connection, a sync flush (`00 00 ff ff`) per payload.
    ZlibStream,
    /// `zstd-stream`: one zstd stream per connection, flushed (never ended) per payload.
    ZstdStream,
}

/// The gateway query string as the mock understood it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayParams {
    /// `v`, if given and numeric.
    pub version: Option<u8>,
    /// `encoding` (json when absent).
    pub encoding: Encoding,
    /// `compress` (none when absent).
    pub compression: Compression,
}

/// A query parameter value the mock does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `v` missing, not a number, or not 9/10.
    #[error("invalid API version {0:?}")]
    Version(Option<String>),
    /// `encoding` other than json/etf.
    #[error("invalid encoding {0:?}")]
    Encoding(String),
    /// `compress` other than zlib-stream/zstd-stream.
    #[error("invalid compression {0:?}")]
    Compression(String),
}

impl GatewayParams {
    /// Parses a query string (without the `?`). Unknown keys are ignored.
    pub fn parse(query: &str) -> Result<Self, ParamError> {
        let mut params = Self::default();
        let mut version_text = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "v" => version_text = Some(value.to_owned()),
                "encoding" => {
                    params.encoding = match value {
                        "json" => Encoding::Json,
                        "etf" => Encoding::Etf,
                        other => return Err(ParamError::Encoding(other.to_owned())),
                    }
                }
                "compress" => {
                    params.compression = match value {
                        "zlib-stream" => Compression::ZlibStream,
                        "zstd-stream" => Compression::ZstdStream,
                        other => return Err(ParamError::Compression(other.to_owned())),
                    }
                }
                _ => {}
            }
        }
        params.version = version_text.as_deref().and_then(|v| v.parse().ok());
        match params.version {
            Some(9 | 10) => Ok(params),
            _ => Err(ParamError::Version(version_text)),
        }
    }
}

enum Compressor {
    None,
    Zlib(ZlibEncoder<Vec<u8>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

/// Turns the JSON text of server frames into WebSocket messages for one connection. Holds the
/// connection's compression stream, so it must see every payload of the connection in order.
pub(crate) struct Outbound {
    encoding: Encoding,
    compressor: Compressor,
    zlib_max_message: usize,
}

impl Outbound {
    pub(crate) fn new(params: &GatewayParams, zlib_level: u32, zlib_max_message: usize) -> Self {
        let compressor = match params.compression {
            Compression::None => Compressor::None,
            Compression::ZlibStream => Compressor::Zlib(ZlibEncoder::new(
                Vec::new(),
                ZlibLevel::new(zlib_level.min(9)),
            )),
            Compression::ZstdStream => Compressor::Zstd(Box::new(
                zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd context"),
            )),
        };
        Self {
            encoding: params.encoding,
            compressor,
            zlib_max_message: zlib_max_message.max(1),
        }
    }

    /// The uncompressed payload for `json` in this connection's encoding.
    pub(crate) fn encode(&self, json: &Bytes) -> Bytes {
        match self.encoding {
            Encoding::Json => json.clone(),
            Encoding::Etf => {
                Bytes::from(etf::encode_json(json).expect("the mock only sends valid JSON"))
            }
        }
    }

    /// The WebSocket messages that carry one payload (already encoded by [`Self::encode`]).
    pub(crate) fn messages(
        &mut self,
        payload: Bytes,
        out: &mut Vec<Message>,
    ) -> std::io::Result<()> {
        match &mut self.compressor {
            Compressor::None => out.push(match self.encoding {
                Encoding::Json => {
                    Message::Text(Utf8Bytes::try_from(payload).map_err(std::io::Error::other)?)
                }
                Encoding::Etf => Message::Binary(payload),
            }),
            Compressor::Zlib(encoder) => {
                encoder.write_all(&payload)?;
                encoder.flush()?;
                let compressed = Bytes::from(std::mem::take(encoder.get_mut()));
                split_zlib(compressed, self.zlib_max_message, out);
            }
            Compressor::Zstd(encoder) => {
                encoder.write_all(&payload)?;
                encoder.flush()?;
                out.push(Message::Binary(Bytes::from(std::mem::take(
                    encoder.get_mut(),
                ))));
            }
        }
        Ok(())
    }
}

const SYNC_FLUSH: &[u8] = &[0, 0, 0xff, 0xff];

/// Splits one sync-flushed zlib payload into messages of at most `max` bytes. Only the last one
/// may end with the sync-flush suffix (clients use the suffix to find the end of a payload), so a
/// cut that would make an earlier piece end with it is moved.
fn split_zlib(compressed: Bytes, max: usize, out: &mut Vec<Message>) {
    let mut rest = compressed;
    while rest.len() > max {
        let mut cut = max;
        while cut > 1 && rest[..cut].ends_with(SYNC_FLUSH) {
            cut -= 1;
        }
        out.push(Message::Binary(rest.split_to(cut)));
    }
    out.push(Message::Binary(rest));
}

/// Why a client frame could not be decoded (Discord closes with 4002).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeProblem {
    /// Larger than the 4096-byte limit.
    #[error("payload of {0} bytes exceeds 4096")]
    TooLarge(usize),
    /// Not valid JSON / ETF, or not an object.
    #[error("undecodable payload: {0}")]
    Malformed(String),
    /// A text frame on an ETF connection or a binary frame on a JSON one.
    #[error("wrong frame type for the connection's encoding")]
    WrongFrameType,
}

/// Decodes one client message into a JSON value (an object), enforcing the size limit.
pub(crate) fn decode_inbound(
    encoding: Encoding,
    message: &Message,
    max_payload: usize,
) -> Result<Value, DecodeProblem> {
    let (bytes, is_text): (&[u8], bool) = match message {
        Message::Text(text) => (text.as_bytes(), true),
        Message::Binary(bytes) => (bytes, false),
        _ => return Err(DecodeProblem::WrongFrameType),
    };
    if bytes.len() > max_payload {
        return Err(DecodeProblem::TooLarge(bytes.len()));
    }
    let value = match (encoding, is_text) {
        (Encoding::Json, true) => serde_json::from_slice::<Value>(bytes)
            .map_err(|e| DecodeProblem::Malformed(e.to_string()))?,
        (Encoding::Etf, false) => {
            etf::decode_to_json(bytes).map_err(|e| DecodeProblem::Malformed(e.to_string()))?
        }
        _ => return Err(DecodeProblem::WrongFrameType),
    };
    if !value.is_object() {
        return Err(DecodeProblem::Malformed("payload is not an object".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn params_follow_discord() {
        let p = GatewayParams::parse("v=10&encoding=etf&compress=zstd-stream").unwrap();
        assert_eq!(p.encoding, Encoding::Etf);
        assert_eq!(p.compression, Compression::ZstdStream);
        assert_eq!(
            GatewayParams::parse("v=10").unwrap().encoding,
            Encoding::Json
        );
        assert!(GatewayParams::parse("encoding=json").is_err());
        assert!(GatewayParams::parse("v=10&compress=gzip").is_err());
    }

    #[test]
    fn zlib_split_pieces_form_one_stream() {
        let params = GatewayParams::parse("v=10&compress=zlib-stream").unwrap();
        let mut outbound = Outbound::new(&params, 6, 64);
        let payload = Bytes::from(
            crate::fixtures::BASIC_SESSION
                .lines()
                .next()
                .unwrap()
                .to_owned(),
        );
        let mut messages = Vec::new();
        outbound.messages(payload.clone(), &mut messages).unwrap();
        assert!(messages.len() > 1);
        let mut all = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let Message::Binary(b) = m else {
                panic!("binary expected")
            };
            assert!(b.len() <= 64);
            assert_eq!(b.ends_with(SYNC_FLUSH), i == messages.len() - 1);
            all.extend_from_slice(b);
        }
        assert_eq!(&all[..2], &[0x78, 0x9c]);
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&all[..])
            .read_to_end(&mut inflated)
            .ok();
        assert_eq!(inflated, payload);
    }
}
