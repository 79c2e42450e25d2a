//! The JSON-to-msgpack event encoder (the Spectacles and Cordis profiles' hot path) beside the
//! library way of doing it: `serde-transcode` from `serde_json` into `rmp-serde`.
//!
//! ```sh
//! cd bench && cargo run --release -p gatehouse-bench-codecs [-- --events 20000 --rounds 21]
//! ```
//!
//! Corpus: the `d` of every dispatch in `fixtures/sessions/*.jsonl` under 1 MiB (what the
//! profiles transcode), repeated in order to `--events` events. Before timing, both encoders'
//! output is decoded with `rmpv` and compared value for value. The rounds alternate between the
//! two, so that both see the same machine load; the ratio is taken within each round.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

fn main() {
    let arg = |name: &str, default: usize| -> usize {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let (events, rounds) = (arg("--events", 20_000), arg("--rounds", 21));
    let frames =
        dispatch_data(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sessions"));
    assert!(!frames.is_empty(), "no dispatches in fixtures/sessions");
    let corpus: Vec<&[u8]> = frames
        .iter()
        .cycle()
        .take(events)
        .map(Vec::as_slice)
        .collect();
    let identical = check(&frames);
    let json_bytes: usize = corpus.iter().map(|d| d.len()).sum();
    println!(
        "corpus: {} events from {} dispatches, {:.1} MB of `d` JSON; outputs decode to the same values, {identical} of {} byte for byte",
        corpus.len(),
        frames.len(),
        json_bytes as f64 / 1e6,
        frames.len(),
    );
    let (mut ours, mut library, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let a = time(|| corpus.iter().map(|d| hand_written(d).len()).sum());
        let b = time(|| corpus.iter().map(|d| transcoded(d).len()).sum());
        ratios.push(b.as_secs_f64() / a.as_secs_f64());
        ours.push(a);
        library.push(b);
    }
    let n = corpus.len() as f64;
    let rates = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        (n / v[0].as_secs_f64(), n / v[v.len() / 2].as_secs_f64())
    };
    let (ours, library) = (rates(&mut ours), rates(&mut library));
    ratios.sort_by(f64::total_cmp);
    println!("events/s, best / median of {rounds} rounds:");
    println!(
        "  proto-core json_to_msgpack:      {:>10.0} / {:>10.0}",
        ours.0, ours.1
    );
    println!(
        "  serde-transcode + rmp-serde:     {:>10.0} / {:>10.0}",
        library.0, library.1
    );
    println!(
        "  library time / hand-written time, per round: median {:.2}, min {:.2}, max {:.2}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

/// The profiles' encoder.
fn hand_written(d: &[u8]) -> Vec<u8> {
    proto_core::profile::msgpack::json_to_msgpack(d).expect("valid JSON")
}

/// The library way: serde_json's parser streamed into rmp-serde's serializer.
fn transcoded(d: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.len() + 16);
    let mut de = serde_json::Deserializer::from_slice(d);
    serde_transcode::transcode(&mut de, &mut rmp_serde::Serializer::new(&mut out))
        .expect("transcodes");
    de.end().expect("one value");
    out
}

/// Both encoders give the same msgpack values; returns how many frames are identical bytes.
fn check(frames: &[Vec<u8>]) -> usize {
    let decode = |mut bytes: &[u8]| rmpv::decode::read_value(&mut bytes).expect("msgpack");
    frames
        .iter()
        .filter(|d| {
            let (a, b) = (hand_written(d), transcoded(d));
            assert_eq!(decode(&a), decode(&b), "{}", String::from_utf8_lossy(d));
            a == b
        })
        .count()
}

fn time(f: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    black_box(f());
    start.elapsed()
}

/// The raw `d` of every dispatch (op 0) under 1 MiB in the `.jsonl` files of `dir`.
fn dispatch_data(dir: &Path) -> Vec<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        op: u8,
        #[serde(borrow)]
        d: Option<&'a RawValue>,
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures/sessions")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && l.len() < 1 << 20)
        {
            let frame: Frame<'_> = serde_json::from_str(line).expect("a gateway frame");
            if let (0, Some(d)) = (frame.op, frame.d) {
                out.push(d.get().as_bytes().to_vec());
            }
        }
    }
    out
}
