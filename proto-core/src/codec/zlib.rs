//! zlib inflation: the connection-long `compress=zlib-stream` transport, and the inflate loop
//! shared with payload compression.
//!
//! Owns: one inflate context per connection, fed each message as it arrives (a payload may span
//! several messages; only the last ends with the sync-flush suffix `00 00 ff ff`), inflating
//! into the connection's [`OutputBuf`] so nothing is buffered twice and nothing is zero-filled per
//! call. Does not own what the inflated bytes mean.

use flate2::{Decompress, FlushDecompress, Status};

use super::DecodeError;
use super::limits::OutputBuf;

/// The bytes every complete zlib-stream payload ends with (an empty stored block: sync flush).
pub(crate) const SYNC_FLUSH_SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One connection's `zlib-stream` inflater.
pub(crate) struct ZlibStream {
    inflate: Decompress,
    /// The zlib stream ended (Discord never ends it); anything after is an error.
    ended: bool,
    /// The last four bytes received since the last complete payload, so a suffix split over
    /// two messages is still seen.
    last4: [u8; 4],
}

impl std::fmt::Debug for ZlibStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibStream")
            .field("total_in", &self.inflate.total_in())
            .field("total_out", &self.inflate.total_out())
            .field("ended", &self.ended)
            .finish()
    }
}

impl ZlibStream {
    pub(crate) fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
            ended: false,
            last4: [0xaa; 4],
        }
    }

    /// Starts a new stream, for a new connection (keeps the context's memory).
    pub(crate) fn reset(&mut self) {
        self.inflate.reset(true);
        self.ended = false;
        self.last4 = [0xaa; 4];
    }

    /// Inflates one message, appending to `out`. Returns `true` when the message completed a
    /// payload (it ended with the sync-flush suffix): `out` then holds the whole payload.
    pub(crate) fn push(
        &mut self,
        message: &[u8],
        out: &mut OutputBuf,
    ) -> Result<bool, DecodeError> {
        if self.ended {
            return Err(DecodeError::Decompress(
                "message after the end of the zlib stream".into(),
            ));
        }
        let complete = self.ends_payload(message);
        let flush = if complete {
            FlushDecompress::Sync
        } else {
            FlushDecompress::None
        };
        let status = inflate_into(&mut self.inflate, message, out, flush)?;
        if status == Status::StreamEnd {
            self.ended = true;
        }
        Ok(complete || self.ended)
    }

    /// Whether the stream so far ends with the sync-flush suffix, after `message`.
    fn ends_payload(&mut self, message: &[u8]) -> bool {
        if let Some(tail) = message.last_chunk::<4>() {
            self.last4 = *tail;
        } else {
            for &b in message {
                self.last4 = [self.last4[1], self.last4[2], self.last4[3], b];
            }
        }
        let complete = self.last4 == SYNC_FLUSH_SUFFIX;
        if complete {
            self.last4 = [0xaa; 4];
        }
        complete
    }
}

/// Inflates all of `input` into `out` until the input is consumed and the inflater has nothing
/// more to write (the output has room left after the last call). Stops with
/// [`DecodeError::TooLarge`] as soon as the output passes its limit.
pub(crate) fn inflate_into(
    inflate: &mut Decompress,
    mut input: &[u8],
    out: &mut OutputBuf,
    flush: FlushDecompress,
) -> Result<Status, DecodeError> {
    loop {
        let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(input, out.spare()?, flush)
            .map_err(|e| DecodeError::Decompress(e.to_string()))?;
        let consumed = progress(before_in, inflate.total_in());
        let produced = progress(before_out, inflate.total_out());
        input = input.get(consumed..).unwrap_or_default();
        out.advance(produced)?;
        if status == Status::StreamEnd {
            if !input.is_empty() {
                return Err(DecodeError::Decompress(
                    "data after the end of the zlib stream".into(),
                ));
            }
            return Ok(status);
        }
        if out.is_full() {
            continue; // there may be more output waiting; give it room
        }
        if input.is_empty() {
            return Ok(status);
        }
        if consumed == 0 && produced == 0 {
            return Err(DecodeError::Decompress("inflate made no progress".into()));
        }
    }
}

fn progress(before: u64, after: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}
