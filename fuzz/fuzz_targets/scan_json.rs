//! `scan_json` against serde_json: whenever serde_json accepts an envelope, the scanner must
//! agree on `op`, `s`, `t` and the bytes of `d` (the same property as the proptest, unguided).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::codec::scan_json;

#[derive(serde::Deserialize)]
struct Oracle<'a> {
    op: u8,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default, borrow)]
    t: Option<&'a str>,
    #[serde(default, borrow)]
    d: Option<&'a serde_json::value::RawValue>,
}

fuzz_target!(|data: &[u8]| {
    let ours = scan_json(data.to_vec().into());
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return;
    }
    if let Ok(o) = serde_json::from_slice::<Oracle<'_>>(data) {
        let p = ours.expect("serde_json accepted it");
        assert_eq!((p.op, p.s, p.event_name()), (o.op, o.s, o.t));
        assert_eq!(p.data(), o.d.map_or("null", |d| d.get()).as_bytes());
    }
});
