//! Limits that keep hostile input from growing memory, and the bounded output buffer they guard.
//!
//! Owns: [`OutputBuf`], the one reused, already-initialised buffer every decompressor of a
//! connection writes into (so no call zero-fills spare capacity, and nothing is allocated per
//! event except the payload's own `Bytes`), which refuses to grow past the payload limit; and the
//! fixed limits of the decoders (nesting depth of ETF terms). Does not own any decompression.

use super::DecodeError;

/// Output capacity kept between payloads. A connection that received one large payload (a
/// GUILD_CREATE is megabytes) gives the memory back afterwards, so idle connections stay small.
pub(crate) const RETAINED_OUTPUT: usize = 16 << 10;

/// The smallest step the output grows by.
const MIN_GROWTH: usize = 4 << 10;

/// A reused output buffer with a hard size limit.
///
/// `buf` is always fully initialised (`buf.len()` is the usable capacity), so decompressors
/// write into `&mut buf[filled..]` without the buffer being zeroed again; only newly grown memory
/// is initialised, once. The buffer never grows past `limit + 1` bytes: one byte more than the
/// limit is how an oversized payload is detected while it is being inflated.
#[derive(Debug)]
pub(crate) struct OutputBuf {
    buf: Vec<u8>,
    filled: usize,
    limit: usize,
}

impl OutputBuf {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            filled: 0,
            limit,
        }
    }

    /// The writable space after the filled part, grown first when there is none.
    pub(crate) fn spare(&mut self) -> Result<&mut [u8], DecodeError> {
        if self.filled == self.buf.len() {
            let hard_cap = self.limit.saturating_add(1);
            if self.buf.len() >= hard_cap {
                return Err(self.too_large());
            }
            let grown = (self.buf.len().saturating_mul(2))
                .max(MIN_GROWTH)
                .min(hard_cap);
            self.buf.reserve_exact(grown - self.buf.len());
            self.buf.resize(grown, 0);
        }
        Ok(&mut self.buf[self.filled..])
    }

    /// Marks `n` more bytes as written by the last decompressor call into [`Self::spare`].
    pub(crate) fn advance(&mut self, n: usize) -> Result<(), DecodeError> {
        self.filled = (self.filled + n).min(self.buf.len());
        if self.filled > self.limit {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Whether the writable space is used up (a decompressor may have more to write).
    pub(crate) fn is_full(&self) -> bool {
        self.filled == self.buf.len()
    }

    /// The bytes written since the last [`Self::clear`].
    pub(crate) fn filled(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Forgets the written bytes, giving memory back if one large payload grew the buffer.
    pub(crate) fn clear(&mut self) {
        self.filled = 0;
        if self.buf.len() > RETAINED_OUTPUT {
            self.buf.truncate(RETAINED_OUTPUT);
            self.buf.shrink_to_fit();
        }
    }

    /// The configured limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn too_large(&self) -> DecodeError {
        DecodeError::TooLarge { limit: self.limit }
    }

    /// Bytes currently held (for tests of bounded memory).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_grows_past_limit_plus_one() {
        let mut out = OutputBuf::new(10_000);
        loop {
            let n = match out.spare() {
                Ok(s) => s.len(),
                Err(e) => {
                    assert_eq!(e, DecodeError::TooLarge { limit: 10_000 });
                    break;
                }
            };
            if out.advance(n).is_err() {
                break;
            }
        }
        assert!(out.capacity() <= 10_001);
    }

    #[test]
    fn clear_gives_memory_back() {
        let mut out = OutputBuf::new(1 << 30);
        while out.filled().len() < 1 << 20 {
            let n = out.spare().map(|s| s.len()).unwrap_or(0);
            out.advance(n).unwrap();
        }
        out.clear();
        assert!(out.capacity() <= RETAINED_OUTPUT);
        assert!(out.filled().is_empty());
    }
}
