//! Payload compression (`identify.compress: true`): some binary messages are each one complete,
//! independent zlib stream.
//!
//! Owns: inflating one such blob into the connection's [`OutputBuf`], with one reused inflate
//! context reset per blob. Does not own deciding which messages are compressed (the decoder
//! does: binary frames that start with a zlib header).

use flate2::{Decompress, FlushDecompress, Status};

use super::DecodeError;
use super::limits::OutputBuf;
use super::zlib::inflate_into;

/// Whether `message` starts like a zlib stream (RFC 1950: deflate method, header checksum ok).
pub(crate) fn looks_like_zlib(message: &[u8]) -> bool {
    match message {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Inflates standalone zlib blobs.
#[derive(Default)]
pub(crate) struct PayloadInflater {
    inflate: Option<Decompress>,
}

impl std::fmt::Debug for PayloadInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadInflater")
            .field("allocated", &self.inflate.is_some())
            .finish()
    }
}

impl PayloadInflater {
    /// Inflates one complete zlib blob into `out`.
    pub(crate) fn inflate(&mut self, blob: &[u8], out: &mut OutputBuf) -> Result<(), DecodeError> {
        let inflate = self.inflate.get_or_insert_with(|| Decompress::new(true));
        inflate.reset(true);
        match inflate_into(inflate, blob, out, FlushDecompress::Finish)? {
            Status::StreamEnd => Ok(()),
            _ => Err(DecodeError::Decompress("truncated zlib payload".into())),
        }
    }
}
