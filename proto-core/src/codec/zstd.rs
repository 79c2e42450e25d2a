//! The `compress=zstd-stream` transport: one zstd frame per connection that never ends; each
//! message is exactly one payload (PROTOCOL.md §11.3).
//!
//! Owns: one decompression context (DCtx) per connection, reset (session only) on reconnect,
//! decompressing each message into the connection's [`OutputBuf`] until the input is consumed
//! and the output is not full. Does not own what the bytes mean.
//!
//! Memory: the frame header chooses the window the DCtx allocates. Discord's frames ask for
//! 256 KiB (window log 18, in the recorded vector); the context refuses windows above 8 MiB
//! ([`MAX_WINDOW_LOG`], the size RFC 8878 asks every decoder to support), so a hostile header
//! cannot make it allocate zstd's default maximum of 128 MiB.

use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use super::DecodeError;
use super::limits::OutputBuf;

/// Largest window accepted: 2^23 = 8 MiB.
pub(crate) const MAX_WINDOW_LOG: u32 = 23;

/// One connection's zstd-stream decompressor.
pub(crate) struct ZstdStream {
    dctx: DCtx<'static>,
}

impl std::fmt::Debug for ZstdStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdStream").finish_non_exhaustive()
    }
}

impl ZstdStream {
    pub(crate) fn new() -> Self {
        let mut dctx = DCtx::create();
        // Setting a valid parameter on a fresh context cannot fail.
        let _ = dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG));
        Self { dctx }
    }

    /// Starts a new stream, for a new connection.
    pub(crate) fn reset(&mut self) {
        // Resetting the session only cannot fail, and keeps the parameters.
        let _ = self.dctx.reset(ResetDirective::SessionOnly);
    }

    /// Decompresses one message (one whole payload) into `out`.
    pub(crate) fn push(&mut self, message: &[u8], out: &mut OutputBuf) -> Result<(), DecodeError> {
        let mut input = InBuffer::around(message);
        loop {
            let before = input.pos();
            let spare = out.spare()?;
            let capacity = spare.len();
            let mut output = OutBuffer::around(spare);
            self.dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|code| {
                    DecodeError::Decompress(zstd::zstd_safe::get_error_name(code).into())
                })?;
            let produced = output.pos();
            out.advance(produced)?;
            let consumed = input.pos() - before;
            if input.pos() == message.len() && produced < capacity {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(DecodeError::Decompress("zstd made no progress".into()));
            }
        }
    }
}
