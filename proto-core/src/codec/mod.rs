//! Turns the WebSocket messages of one connection into gateway payloads.
//!
//! Owns: transport decompression (one inflate context per connection), payload compression,
//! ETF-to-JSON conversion, locating `op`/`t`/`s`/`d` in a JSON payload without parsing `d`, and
//! the limits that keep hostile input from growing memory. Does not decide anything about the
//! protocol: that is the shard's job.
//!
//! CONTRACT STUB: the types below are the interface the shard and the profiles rely on. The
//! implementation behind them is being replaced by the fast one.

mod envelope;

use std::ops::Range;

use bytes::Bytes;

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
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
}

impl Decoder {
    /// A decoder for a new connection.
    pub fn new(config: DecoderConfig) -> Self {
        Self { config }
    }

    /// The settings this decoder was made with.
    pub fn config(&self) -> DecoderConfig {
        self.config
    }

    /// Forgets all stream state, for a new connection.
    pub fn reset(&mut self) {}

    /// Feeds one WebSocket message (`binary` says which frame type it came in). Returns
    /// `Ok(None)` when the message is only part of a payload (zlib-stream without the suffix).
    pub fn decode(&mut self, message: &[u8], binary: bool) -> Result<Option<Payload>, DecodeError> {
        let _ = binary;
        if message.len() > self.config.max_payload {
            return Err(DecodeError::TooLarge {
                limit: self.config.max_payload,
            });
        }
        scan_json(Bytes::copy_from_slice(message)).map(Some)
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
