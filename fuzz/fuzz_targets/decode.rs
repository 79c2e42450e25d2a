//! `Decoder::decode` over arbitrary message sequences, in every mode.
//!
//! Input layout: one mode byte (compression = b % 3, encoding = b / 3 % 2, a 4 KiB payload
//! limit when bit 7 is set, else 1 MiB), then messages, each a flags byte (bit 0: binary frame,
//! bit 1: reset the decoder first), a little-endian u16 length and that many bytes (the last
//! message takes whatever is left). Checks: no panic, bounded output, ranges inside the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::codec::{Compression, Decoder, DecoderConfig, Encoding};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let compression = [Compression::None, Compression::ZlibStream, Compression::ZstdStream]
        [usize::from(mode % 3)];
    let encoding = [Encoding::Json, Encoding::Etf][usize::from(mode / 3 % 2)];
    let max_payload = if mode & 0x80 != 0 { 4 << 10 } else { 1 << 20 };
    let mut decoder = Decoder::new(DecoderConfig { compression, encoding, max_payload });
    while let [flags, tail @ ..] = rest {
        let (len, body) = match tail {
            [a, b, body @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), body),
            _ => (tail.len(), &[][..]),
        };
        let (message, next) = body.split_at(len.min(body.len()));
        rest = next;
        if flags & 2 != 0 {
            decoder.reset();
        }
        match decoder.decode(message, flags & 1 != 0) {
            Ok(Some(p)) => {
                assert!(p.bytes.len() <= max_payload);
                assert!(p.d.end <= p.bytes.len() && p.d.start <= p.d.end);
                if let Some(t) = &p.t {
                    assert!(t.end <= p.bytes.len());
                    assert!(p.event_name().is_some());
                }
                let _ = (p.data(), p.data_bytes());
            }
            Ok(None) => {}
            Err(_) => decoder.reset(),
        }
    }
});
