//! Encoders that play Discord's side in tests: zlib-stream, zstd-stream, payload compression.

use flate2::{Compress, Compression as Level, FlushCompress};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective as EndDirective;
use zstd::zstd_safe::{CCtx, InBuffer, OutBuffer};

/// One zlib stream for a connection; each payload ends with a sync flush, as Discord sends it.
pub(super) struct ZlibStreamEncoder(Compress);

impl ZlibStreamEncoder {
    pub(super) fn new() -> Self {
        Self(Compress::new(Level::default(), true))
    }

    /// The compressed bytes of one payload (ending with `00 00 ff ff`).
    pub(super) fn payload(&mut self, json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(json.len() / 2 + 64);
        let mut input = json;
        loop {
            out.reserve(4096);
            let before = self.0.total_in();
            self.0
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("compress");
            input = &input[(self.0.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out
    }
}

/// A standalone zlib blob (payload compression).
pub(super) fn zlib_blob(json: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Level::default());
    std::io::Write::write_all(&mut e, json).expect("compress");
    e.finish().expect("compress")
}

/// One zstd frame for a connection that never ends; each payload is flushed as one message.
pub(super) struct ZstdStreamEncoder(CCtx<'static>);

impl ZstdStreamEncoder {
    pub(super) fn new() -> Self {
        Self(CCtx::create())
    }

    pub(super) fn payload(&mut self, json: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; json.len() + 1024];
        let mut input = InBuffer::around(json);
        let mut output = OutBuffer::around(&mut out[..]);
        loop {
            let remaining = self
                .0
                .compress_stream2(&mut output, &mut input, EndDirective::ZSTD_e_flush)
                .expect("compress");
            if remaining == 0 {
                break;
            }
        }
        let n = output.pos();
        out.truncate(n);
        out
    }
}

/// A dispatch envelope around `d`, in Discord's key order.
pub(super) fn dispatch(t: &str, s: u64, d: &str) -> Vec<u8> {
    format!(r#"{{"t":"{t}","s":{s},"op":0,"d":{d}}}"#).into_bytes()
}

/// A GUILD_CREATE of about `members` x 290 bytes, with non-ASCII names and escapes: 10,000
/// members make one as large as the real 2.8 MB capture.
pub(super) fn big_guild_create(members: usize) -> Vec<u8> {
    let mut d = String::from(r#"{"id":"81384788765712384","name":"Discord API","members":["#);
    for i in 0..members {
        if i > 0 {
            d.push(',');
        }
        d.push_str(&format!(
            r#"{{"user":{{"username":"𝓓user \"{i}\" 🎉","id":"{}","discriminator":"{:04}","avatar":"a_1cf79b0055927be3bb5b865862b545a8"}},"roles":["159592059873787904","81384788765712384"],"mute":false,"joined_at":"2016-01-12T18:09:46.123000+00:00","deaf":false,"nick":null}}"#,
            100_000_000_000_000_000u64 + i as u64,
            i % 10_000
        ));
    }
    d.push_str(r#"],"large":true,"member_count":18552}"#);
    dispatch("GUILD_CREATE", 2, &d)
}
