//! The decoder through its public API, in every mode.

use bytes::Bytes;

use super::support::{ZlibStreamEncoder, ZstdStreamEncoder, big_guild_create, dispatch, zlib_blob};
use crate::codec::{Compression, DecodeError, Decoder, DecoderConfig, Encoding, Payload};

const ZLIB_HELLO: &[u8] = include_bytes!("../../../tests/data/zlib_stream_hello.bin");
const ZSTD_HELLO: &[u8] = include_bytes!("../../../tests/data/zstd_stream_hello.bin");

fn decoder(compression: Compression) -> Decoder {
    Decoder::new(DecoderConfig {
        compression,
        encoding: Encoding::Json,
        max_payload: 8 << 20,
    })
}

fn one(dec: &mut Decoder, message: &[u8], binary: bool) -> Payload {
    dec.decode(message, binary)
        .expect("decodes")
        .expect("a complete payload")
}

#[test]
fn zlib_stream_recorded_hello() {
    let mut dec = decoder(Compression::ZlibStream);
    let p = one(&mut dec, ZLIB_HELLO, true);
    assert_eq!(
        &p.bytes[..],
        br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250,"_trace":["[\"gateway-prd-main-858d\",{\"micros\":0.0}]"]}}"#
    );
    assert_eq!((p.op, p.s, p.event_name()), (10, None, None));
    assert!(p.data().starts_with(b"{\"heartbeat_interval\":41250"));
}

#[test]
fn zstd_stream_recorded_hello() {
    let mut dec = decoder(Compression::ZstdStream);
    let p = one(&mut dec, ZSTD_HELLO, true);
    assert_eq!(
        &p.bytes[..],
        br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250,"_trace":["[\"gateway-prd-us-east1-c-7s4x\",{\"micros\":0.0}]"]}}"#
    );
    assert_eq!(p.op, 10);
}

#[test]
fn zlib_stream_many_payloads_one_context() {
    let mut enc = ZlibStreamEncoder::new();
    let mut dec = decoder(Compression::ZlibStream);
    for s in 1..200u64 {
        let json = dispatch(
            "MESSAGE_CREATE",
            s,
            &format!(r#"{{"content":"message {s}","n":[{s}]}}"#),
        );
        let p = one(&mut dec, &enc.payload(&json), true);
        assert_eq!(&p.bytes[..], &json[..]);
        assert_eq!(
            (p.op, p.s, p.event_name()),
            (0, Some(s), Some("MESSAGE_CREATE"))
        );
        assert_eq!(
            p.data_bytes(),
            Bytes::from(format!(r#"{{"content":"message {s}","n":[{s}]}}"#))
        );
    }
}

#[test]
fn zlib_stream_payload_split_over_several_messages() {
    let mut enc = ZlibStreamEncoder::new();
    let mut dec = decoder(Compression::ZlibStream);
    for (s, pieces) in [1usize, 2, 3, 7, 50].into_iter().enumerate() {
        let json = dispatch(
            "GUILD_MEMBERS_CHUNK",
            s as u64,
            &format!("[{}]", "1,".repeat(3000) + "1"),
        );
        let compressed = enc.payload(&json);
        let step = compressed.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = compressed.chunks(step).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let got = dec.decode(chunk, true).expect("decodes");
            if i + 1 < chunks.len() {
                assert_eq!(got, None, "message {i} of {} is not the end", chunks.len());
            } else {
                assert_eq!(&got.expect("complete").bytes[..], &json[..]);
            }
        }
    }
    // Even a split inside the suffix itself works.
    let json = dispatch("X", 9, "null");
    let compressed = enc.payload(&json);
    let (a, b) = compressed.split_at(compressed.len() - 2);
    assert_eq!(dec.decode(a, true), Ok(None));
    assert_eq!(&one(&mut dec, b, true).bytes[..], &json[..]);
}

#[test]
fn reset_between_connections() {
    let json_a = dispatch("A", 1, "{}");
    let json_b = dispatch("B", 1, "[]");
    for compression in [Compression::ZlibStream, Compression::ZstdStream] {
        let mut dec = decoder(compression);
        let encode = |json: &[u8]| match compression {
            Compression::ZlibStream => ZlibStreamEncoder::new().payload(json),
            _ => ZstdStreamEncoder::new().payload(json),
        };
        assert_eq!(
            &one(&mut dec, &encode(&json_a), true).bytes[..],
            &json_a[..]
        );
        // A new connection's stream starts with a new header: without a reset it is refused…
        assert!(
            dec.decode(&encode(&json_b), true).is_err(),
            "{compression:?}"
        );
        // …and after one it decodes, and so does the next connection after a partial payload.
        dec.reset();
        assert_eq!(
            &one(&mut dec, &encode(&json_b), true).bytes[..],
            &json_b[..]
        );
        dec.reset();
        let second = encode(&json_a);
        if compression == Compression::ZlibStream {
            assert_eq!(dec.decode(&second[..second.len() / 2], true), Ok(None));
            dec.reset();
        }
        assert_eq!(&one(&mut dec, &second, true).bytes[..], &json_a[..]);
    }
}

#[test]
fn big_guild_create_in_every_mode() {
    let json = big_guild_create(10_000);
    assert!(json.len() > 2_700_000, "{}", json.len());
    let small = dispatch("TYPING_START", 3, r#"{"user_id":"1"}"#);

    let mut zlib = ZlibStreamEncoder::new();
    let mut dec = decoder(Compression::ZlibStream);
    let p = one(&mut dec, &zlib.payload(&json), true);
    assert_eq!(
        (&p.bytes[..], p.event_name()),
        (&json[..], Some("GUILD_CREATE"))
    );
    assert!(p.data().ends_with(br#""member_count":18552}"#));
    // The output buffer gave its memory back, and later small payloads still decode.
    assert!(dec.out.capacity() <= super::super::limits::RETAINED_OUTPUT);
    assert_eq!(
        &one(&mut dec, &zlib.payload(&small), true).bytes[..],
        &small[..]
    );

    let mut zstd = ZstdStreamEncoder::new();
    let mut dec = decoder(Compression::ZstdStream);
    assert_eq!(
        &one(&mut dec, &zstd.payload(&json), true).bytes[..],
        &json[..]
    );
    assert_eq!(
        &one(&mut dec, &zstd.payload(&small), true).bytes[..],
        &small[..]
    );

    let mut dec = decoder(Compression::None);
    assert_eq!(&one(&mut dec, &zlib_blob(&json), true).bytes[..], &json[..]);
    assert_eq!(&one(&mut dec, &json, false).bytes[..], &json[..]);
}

#[test]
fn payload_compression_and_plain_text() {
    let mut dec = decoder(Compression::None);
    let hello = br#"{"op":10,"d":{"heartbeat_interval":41250}}"#;
    let p = one(&mut dec, hello, false);
    assert_eq!(
        (p.op, p.data()),
        (10, &br#"{"heartbeat_interval":41250}"#[..])
    );
    // Binary frames are independent zlib blobs, with no shared context.
    for s in 0..3 {
        let json = dispatch("READY", s, r#"{"v":10}"#);
        assert_eq!(&one(&mut dec, &zlib_blob(&json), true).bytes[..], &json[..]);
    }
    // A binary frame that is not zlib is the payload itself.
    assert_eq!(one(&mut dec, hello, true).op, 10);
    // A truncated blob is an error.
    let blob = zlib_blob(hello);
    assert!(matches!(
        dec.decode(&blob[..blob.len() - 3], true),
        Err(DecodeError::Decompress(_))
    ));
    // Text frames are never decompressed, whatever the transport.
    assert_eq!(
        one(&mut decoder(Compression::ZlibStream), hello, false).op,
        10
    );
}

#[test]
fn zip_bomb_is_stopped_at_the_limit() {
    let zeros = vec![b' '; 20 << 20];
    let limit = 1 << 20;
    let config = |compression| DecoderConfig {
        compression,
        encoding: Encoding::Json,
        max_payload: limit,
    };

    let mut dec = Decoder::new(config(Compression::ZlibStream));
    let bomb = ZlibStreamEncoder::new().payload(&zeros);
    assert!(bomb.len() < 100_000);
    assert_eq!(
        dec.decode(&bomb, true),
        Err(DecodeError::TooLarge { limit })
    );
    assert!(dec.out.capacity() <= super::super::limits::RETAINED_OUTPUT);

    let mut dec = Decoder::new(config(Compression::ZstdStream));
    let bomb = ZstdStreamEncoder::new().payload(&zeros);
    assert_eq!(
        dec.decode(&bomb, true),
        Err(DecodeError::TooLarge { limit })
    );

    let mut dec = Decoder::new(config(Compression::None));
    assert_eq!(
        dec.decode(&zlib_blob(&zeros), true),
        Err(DecodeError::TooLarge { limit })
    );
    assert_eq!(
        dec.decode(&zeros, false),
        Err(DecodeError::TooLarge { limit })
    );

    // Exactly at the limit is fine.
    let json = dispatch("X", 1, &format!("\"{}\"", "a".repeat(limit - 30)));
    let json = [&json[..], &vec![b' '; limit - json.len()]].concat();
    assert_eq!(json.len(), limit);
    let mut dec = Decoder::new(config(Compression::ZlibStream));
    assert_eq!(
        one(&mut dec, &ZlibStreamEncoder::new().payload(&json), true)
            .bytes
            .len(),
        limit
    );
}

#[test]
fn corrupt_and_truncated_streams_are_errors() {
    let json = dispatch(
        "MESSAGE_CREATE",
        1,
        r#"{"content":"hello hello hello hello"}"#,
    );
    let good = ZlibStreamEncoder::new().payload(&json);

    // Corrupt header.
    let mut bad = good.clone();
    bad[0] = 0x12;
    let mut dec = decoder(Compression::ZlibStream);
    assert!(matches!(
        dec.decode(&bad, true),
        Err(DecodeError::Decompress(_))
    ));

    // Bytes missing from the middle (the message still ends with the suffix).
    let truncated = [&good[..good.len() / 2], &good[good.len() - 4..]].concat();
    let mut dec = decoder(Compression::ZlibStream);
    assert!(dec.decode(&truncated, true).is_err());
    dec.reset();
    assert_eq!(&one(&mut dec, &good, true).bytes[..], &json[..]);

    // Decompressed but not JSON.
    let mut dec = decoder(Compression::ZlibStream);
    let not_json = ZlibStreamEncoder::new().payload(b"hello");
    assert!(matches!(
        dec.decode(&not_json, true),
        Err(DecodeError::Malformed(_))
    ));

    // zstd: garbage and a truncated message.
    let mut dec = decoder(Compression::ZstdStream);
    assert!(
        dec.decode(b"\x28\xb5\x2f\xfdgarbage-garbage", true)
            .is_err()
    );
    dec.reset();
    assert!(
        dec.decode(&ZSTD_HELLO[..40], true).is_err()
            || dec.decode(&ZSTD_HELLO[40..], true).is_err()
    );
    dec.reset();
    assert_eq!(one(&mut dec, ZSTD_HELLO, true).op, 10);
}

#[test]
fn every_flip_of_a_stream_is_handled() {
    // Every single-byte corruption of a real stream: an error or a payload, never a panic.
    for compression in [Compression::ZlibStream, Compression::ZstdStream] {
        let vector = if compression == Compression::ZlibStream {
            ZLIB_HELLO
        } else {
            ZSTD_HELLO
        };
        for i in 0..vector.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut m = vector.to_vec();
                m[i] ^= flip;
                let mut dec = decoder(compression);
                let _ = dec.decode(&m, true);
                let _ = dec.decode(vector, true);
            }
        }
    }
}

#[test]
fn etf_over_zlib_stream_and_plain() {
    use crate::codec::etf::tests::enc::*;
    let etf = version(map(vec![
        (atom("t"), atom("GUILD_CREATE")),
        (atom("s"), small_int(2)),
        (atom("op"), small_int(0)),
        (
            atom("d"),
            map(vec![(
                binary("id"),
                small_big(81_384_788_765_712_384, false),
            )]),
        ),
    ]));
    let expected = br#"{"t":"GUILD_CREATE","s":2,"op":0,"d":{"id":"81384788765712384"}}"#;
    let config = |compression| DecoderConfig {
        compression,
        encoding: Encoding::Etf,
        max_payload: 1 << 20,
    };

    let mut dec = Decoder::new(config(Compression::ZlibStream));
    let mut enc = ZlibStreamEncoder::new();
    for _ in 0..3 {
        let p = one(&mut dec, &enc.payload(&etf), true);
        assert_eq!(&p.bytes[..], &expected[..]);
        assert_eq!(
            (p.op, p.s, p.event_name(), p.data()),
            (
                0,
                Some(2),
                Some("GUILD_CREATE"),
                &br#"{"id":"81384788765712384"}"#[..]
            )
        );
    }
    let mut dec = Decoder::new(config(Compression::None));
    assert_eq!(&one(&mut dec, &etf, true).bytes[..], &expected[..]);
    // Heartbeat ACK with nil atoms, as Discord sends it.
    let ack = version(map(vec![
        (atom("t"), atom("nil")),
        (atom("s"), atom("nil")),
        (atom("op"), small_int(11)),
        (atom("d"), atom("nil")),
    ]));
    let p = one(&mut dec, &ack, true);
    assert_eq!(
        (p.op, p.s, p.t.clone(), p.data()),
        (11, None, None, &b"null"[..])
    );
    let mut dec = Decoder::new(config(Compression::ZstdStream));
    assert_eq!(
        &one(&mut dec, &ZstdStreamEncoder::new().payload(&etf), true).bytes[..],
        &expected[..]
    );
    // Garbage is an error, not a panic.
    assert!(matches!(
        Decoder::new(config(Compression::None)).decode(&[131, 200], true),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn decoder_and_payload_can_move_between_threads() {
    fn send<T: Send + 'static>() {}
    send::<Decoder>();
    send::<Payload>();
}
