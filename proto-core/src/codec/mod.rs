//! Turns the WebSocket messages of one connection into gateway payloads.
//!
//! Owns: transport decompression (one inflate context per connection), payload compression,
//! ETF-to-JSON conversion, locating `op`/`t`/`s`/`d` in a JSON payload without parsing `d`, and
//! the limits that keep hostile input from growing memory. Does not decide anything about the
//! protocol: that is the shard's job.
//!
//! Sub-modules, one job each:
//! - `zlib`: the `zlib-stream` transport (one inflate context per connection, sync flush);
//! - `zstd`: the `zstd-stream` transport (one DCtx per connection, one payload per message);
//! - `payload`: payload compression (a binary message that is one standalone zlib blob);
//! - `etf`: Erlang External Term Format to the JSON a JSON connection would have received;
//! - `etf_encode`: the other direction, JSON commands to ETF for `encoding=etf` connections;
//! - `envelope`: the JSON scanner that finds `op`, `t`, `s` and the span of `d`;
//! - `limits`: the bounded, reused output buffer and the depth limits.
//!
//! # Which messages are decompressed how
//!
//! | message | `Compression::ZlibStream` | `ZstdStream` | `None` |
//! |---|---|---|---|
//! | binary | piece of the connection's zlib stream | one zstd-stream payload | a zlib blob if it starts with a zlib header (payload compression), else the payload itself |
//! | text | the payload itself | the payload itself | the payload itself |
//!
//! The decompressed bytes are then JSON (scanned as they are) or ETF (converted to JSON first),
//! per [`Encoding`]. Every payload that leaves is one `Bytes` holding exactly the JSON text;
//! [`Payload`] ranges point into it.
//!
//! # Errors and limits
//!
//! Any error means the connection's stream state can no longer be trusted: the caller closes the
//! connection, resumes on a new one and calls [`Decoder::reset`] (or makes a new decoder). A
//! payload larger than [`DecoderConfig::max_payload`] is refused with [`DecodeError::TooLarge`]
//! as soon as inflation passes the limit, so a small zip bomb costs at most `max_payload` bytes
//! of memory; corrupt or truncated streams are [`DecodeError::Decompress`]; bad JSON or ETF is
//! [`DecodeError::Malformed`]. Nothing panics on wire input.

mod envelope;
mod etf;
mod etf_encode;
mod limits;
mod payload;
mod zlib;
mod zstd;

use std::ops::Range;

use bytes::Bytes;

pub use etf_encode::{EtfEncodeError, json_to_etf};

/// Appends `s` as a quoted JSON string, escaped as `serde_json` escapes it (for the converters
/// that write JSON text: ETF to JSON here, msgpack to JSON in the profiles).
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Transport compression negotiated in the gateway URL (`compress=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// No transport compression (payload compression may still apply to binary frames).
    None,
    /// `compress=zlib-stream`: one zlib stream per connection, messages end with `00 00 ff ff`.
    #[default]
    ZlibStream,
    /// `compress=zstd-stream`: one zstd frame per connection, one payload per message.
    ZstdStream,
}

/// Payload encoding negotiated in the gateway URL (`encoding=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON text.
    #[default]
    Json,
    /// Erlang External Term Format; converted to JSON by the decoder.
    Etf,
}

/// Per-connection decoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Transport compression.
    pub compression: Compression,
    /// Payload encoding.
    pub encoding: Encoding,
    /// Largest decompressed payload accepted, in bytes. Larger ones are an error.
    pub max_payload: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            compression: Compression::ZlibStream,
            encoding: Encoding::Json,
            max_payload: 64 << 20,
        }
    }
}

/// Why a message could not be decoded. The connection that produced it should be closed with a
/// resumable code: the decoder's state is no longer trustworthy.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The decompressed payload exceeded [`DecoderConfig::max_payload`].
    #[error("payload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The compressed stream is corrupt.
    #[error("corrupt compressed stream: {0}")]
    Decompress(String),
    /// The payload is not a valid gateway envelope.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// One decoded gateway payload: JSON bytes plus where its envelope fields are.
///
/// `bytes` is the whole payload exactly as Discord sent it (JSON connections) or as converted
/// from ETF. `d` and `t` are ranges into `bytes`, so slicing them is free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The complete payload.
    pub bytes: Bytes,
    /// The opcode.
    pub op: u8,
    /// The sequence number, for dispatches.
    pub s: Option<u64>,
    /// The event name's range in `bytes` (without quotes), for dispatches.
    pub t: Option<Range<usize>>,
    /// The range of the `d` value in `bytes` (`null` when absent is represented by an empty range).
    pub d: Range<usize>,
}

impl Payload {
    /// The event name, for dispatches.
    pub fn event_name(&self) -> Option<&str> {
        let r = self.t.clone()?;
        std::str::from_utf8(&self.bytes[r]).ok()
    }

    /// The raw bytes of `d` (`null` if it was absent).
    pub fn data(&self) -> &[u8] {
        if self.d.is_empty() {
            b"null"
        } else {
            &self.bytes[self.d.clone()]
        }
    }

    /// The raw bytes of `d` as a cheap slice of the payload.
    pub fn data_bytes(&self) -> Bytes {
        if self.d.is_empty() {
            Bytes::from_static(b"null")
        } else {
            self.bytes.slice(self.d.clone())
        }
    }
}

/// The decoder of one connection. Create one per connection, or [`Decoder::reset`] it on connect.
///
/// It holds the connection's decompression context (zlib: about 40 KiB once used) and one
/// reused output buffer, kept at its size while payloads keep coming and shrunk back to 4 KiB
/// after a payload over 64 KiB or a streak of small ones (BENCHMARKS.md has the resident memory
/// of a busy and an idle decoder).
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    transport: Transport,
    payload: payload::PayloadInflater,
    out: limits::OutputBuf,
}

#[derive(Debug)]
enum Transport {
    None,
    Zlib(zlib::ZlibStream),
    Zstd(zstd::ZstdStream),
}

impl Decoder {
    /// A decoder for a new connection.
    pub fn new(config: DecoderConfig) -> Self {
        let transport = match config.compression {
            Compression::None => Transport::None,
            Compression::ZlibStream => Transport::Zlib(zlib::ZlibStream::new()),
            Compression::ZstdStream => Transport::Zstd(zstd::ZstdStream::new()),
        };
        Self {
            config,
            transport,
            payload: payload::PayloadInflater::default(),
            out: limits::OutputBuf::new(config.max_payload),
        }
    }

    /// The settings this decoder was made with.
    pub fn config(&self) -> DecoderConfig {
        self.config
    }

    /// Forgets all stream state, for a new connection. Keeps the allocated contexts.
    pub fn reset(&mut self) {
        match &mut self.transport {
            Transport::None => {}
            Transport::Zlib(z) => z.reset(),
            Transport::Zstd(z) => z.reset(),
        }
        self.out.clear();
    }

    /// Feeds one WebSocket message (`binary` says which frame type it came in). Returns
    /// `Ok(None)` when the message is only part of a payload (zlib-stream without the suffix).
    ///
    /// After an `Err`, the connection must be closed and the decoder [reset](Self::reset).
    pub fn decode(&mut self, message: &[u8], binary: bool) -> Result<Option<Payload>, DecodeError> {
        let result = self.decode_inner(message, binary);
        if result.is_err() {
            self.out.clear();
        }
        result
    }

    /// [`Self::decode`] for a message the runtime already holds as `Bytes` (tungstenite hands
    /// them out so): a message that is the payload itself (a text frame, or a binary JSON frame
    /// without compression) becomes the payload without a copy.
    pub fn decode_bytes(
        &mut self,
        message: Bytes,
        binary: bool,
    ) -> Result<Option<Payload>, DecodeError> {
        let is_plain = !binary
            || matches!(self.transport, Transport::None) && !payload::looks_like_zlib(&message);
        if is_plain && self.config.encoding == Encoding::Json {
            if message.len() > self.config.max_payload {
                return Err(self.out.too_large());
            }
            return scan_json(message).map(Some);
        }
        self.decode(&message, binary)
    }

    fn decode_inner(
        &mut self,
        message: &[u8],
        binary: bool,
    ) -> Result<Option<Payload>, DecodeError> {
        if !binary {
            return self.plain(message).map(Some);
        }
        match &mut self.transport {
            Transport::Zlib(z) => {
                if !z.push(message, &mut self.out)? {
                    return Ok(None);
                }
            }
            Transport::Zstd(z) => z.push(message, &mut self.out)?,
            Transport::None if payload::looks_like_zlib(message) => {
                self.payload.inflate(message, &mut self.out)?;
            }
            Transport::None => return self.plain(message).map(Some),
        }
        let result = self.convert(self.out.filled());
        self.out.clear();
        result.map(Some)
    }

    /// A message that is the payload itself.
    fn plain(&self, message: &[u8]) -> Result<Payload, DecodeError> {
        if message.len() > self.config.max_payload {
            return Err(self.out.too_large());
        }
        self.convert(message)
    }

    /// Decompressed payload bytes to a scanned JSON payload.
    fn convert(&self, bytes: &[u8]) -> Result<Payload, DecodeError> {
        match self.config.encoding {
            Encoding::Json => scan_json(Bytes::copy_from_slice(bytes)),
            Encoding::Etf => scan_json(Bytes::from(etf::to_json(bytes, self.out.limit())?)),
        }
    }
}

/// Locates the envelope fields of a JSON payload: `op`, `s`, `t` and the span of `d`, without
/// parsing `d` (see the `envelope` module for what is validated).
pub fn scan_json(bytes: Bytes) -> Result<Payload, DecodeError> {
    let env = envelope::scan(&bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(Payload {
        bytes,
        op: env.op,
        s: env.s,
        t: env.t,
        d: env.d,
    })
}

#[cfg(test)]
mod tests;
