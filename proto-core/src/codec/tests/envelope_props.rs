//! Property tests of the envelope scanner against `serde_json` as the oracle: generated
//! envelopes (every key order, whitespace, escapes, nested `d`, unknown keys) and garbage.

use proptest::prelude::*;
use serde_json::value::RawValue;

use crate::codec::envelope::scan;

/// What `serde_json` makes of an envelope: the contract stub's deserialisation.
#[derive(serde::Deserialize)]
struct Oracle<'a> {
    op: u8,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default, borrow)]
    t: Option<&'a str>,
    #[serde(default, borrow)]
    d: Option<&'a RawValue>,
}

type Fields = (u8, Option<u64>, Option<String>, String);

fn oracle(bytes: &[u8]) -> Option<Fields> {
    // serde's derived structs also accept a JSON array of the fields in order; an envelope is an
    // object, so that is not part of the oracle.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let o: Oracle<'_> = serde_json::from_slice(bytes).ok()?;
    let d = o.d.map_or("null", RawValue::get).to_owned();
    Some((o.op, o.s, o.t.map(str::to_owned), d))
}

fn ours(bytes: &[u8]) -> Option<Fields> {
    let e = scan(bytes).ok()?;
    let t =
        e.t.map(|r| String::from_utf8(bytes[r].to_vec()).expect("t is UTF-8"));
    let d = if e.d.is_empty() {
        "null".to_owned()
    } else {
        String::from_utf8_lossy(&bytes[e.d]).into_owned()
    };
    Some((e.op, e.s, t, d))
}

/// The property for any input: the scanner agrees with serde_json whenever serde_json accepts;
/// when only the scanner accepts, the difference lies inside `d` (whose contents it does not
/// validate), so serde_json accepts the same bytes with `d` replaced by `null`.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let theirs = oracle(bytes);
    let mine = ours(bytes);
    if theirs.is_some() {
        prop_assert_eq!(&mine, &theirs, "input {:?}", String::from_utf8_lossy(bytes));
    } else if mine.is_some() {
        let e = scan(bytes).expect("accepted above");
        prop_assert!(
            !e.d.is_empty(),
            "accepted {:?}",
            String::from_utf8_lossy(bytes)
        );
        let mut patched = bytes[..e.d.start].to_vec();
        patched.extend_from_slice(b"null");
        patched.extend_from_slice(&bytes[e.d.end..]);
        prop_assert!(
            oracle(&patched).is_some(),
            "accepted {:?}, but its envelope outside d is invalid",
            String::from_utf8_lossy(bytes)
        );
    }
    Ok(())
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t ", "\r\n  "])
}

fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 _{}\\[\\]:,]{0,6}".prop_map(|s| s),
        1 => Just("\\\"".to_owned()),
        1 => Just("\\\\".to_owned()),
        1 => Just("\\/\\n\\t\\b\\f\\r".to_owned()),
        1 => Just("\\u00e9\\ud83d\\ude00".to_owned()),
        1 => Just("é😀\u{1d4d3}".to_owned()),
        1 => Just("\\\\\\\"]}".to_owned()),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("-0.5e+10".to_owned()),
        Just("1.25E-3".to_owned()),
        json_string(),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..6).prop_map(|items| {
                let body: Vec<String> =
                    items.iter().map(|(a, v, b)| format!("{a}{v}{b}")).collect();
                format!("[{}]", body.join(","))
            }),
            prop::collection::vec((json_string(), ws(), inner, ws()), 0..6).prop_map(|items| {
                let body: Vec<String> = items
                    .iter()
                    .map(|(k, a, v, b)| format!("{a}{k}{b}:{a}{v}{b}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

fn key(name: &'static str, escape: bool) -> String {
    if escape {
        let esc: String = name
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        format!("\"{esc}\"")
    } else {
        format!("\"{name}\"")
    }
}

prop_compose! {
    /// A well-formed envelope with any key order, whitespace, missing keys and unknown keys.
    fn envelope()(
        op in any::<u8>(),
        s in prop::option::of(prop::option::of(any::<u64>())),
        t in prop::option::of(prop::option::of("[A-Z_]{1,24}")),
        d in prop::option::of(json_value()),
        extra in prop::collection::vec(("[a-z_]{0,8}", json_value()), 0..3),
        escape in any::<[bool; 4]>(),
        order_seed in any::<u64>(),
        spaces in prop::collection::vec(ws(), 40),
    ) -> String {
        let mut members = vec![(key("op", escape[0]), op.to_string())];
        if let Some(s) = s {
            members.push((key("s", escape[1]), s.map_or("null".into(), |v| v.to_string())));
        }
        if let Some(t) = t {
            members.push((key("t", escape[2]), t.map_or("null".into(), |v| format!("\"{v}\""))));
        }
        if let Some(d) = d {
            members.push((key("d", escape[3]), d));
        }
        for (k, v) in extra {
            members.push((format!("\"x{k}\""), v));
        }
        // A seeded Fisher-Yates shuffle: every order of the keys is reachable.
        let mut seed = order_seed | 1;
        for i in (1..members.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            members.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut sp = spaces.into_iter().cycle();
        let mut out = format!("{}{{", sp.next().unwrap_or_default());
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| {
                let (a, b, c, e) = (sp.next(), sp.next(), sp.next(), sp.next());
                format!("{}{k}{}:{}{v}{}", a.unwrap_or_default(), b.unwrap_or_default(), c.unwrap_or_default(), e.unwrap_or_default())
            })
            .collect();
        out.push_str(&body.join(","));
        out.push('}');
        out.push_str(sp.next().unwrap_or_default());
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_serde_json_on_envelopes(env in envelope()) {
        prop_assert!(oracle(env.as_bytes()).is_some(), "generator made invalid JSON: {}", env);
        check(env.as_bytes())?;
    }

    #[test]
    fn agrees_with_serde_json_on_mutated_envelopes(
        env in envelope(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = env.into_bytes();
        for (at, byte, kind) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, *b"\"\\{}[],:0 n".get(usize::from(byte) % 11).unwrap_or(&b'x')),
            }
        }
        check(&bytes)?;
    }

    #[test]
    fn agrees_with_serde_json_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&bytes)?;
    }

    #[test]
    fn agrees_with_serde_json_on_json_like_garbage(
        bytes in prop::collection::vec(prop::sample::select(b"{}[]\":,\\ opdst0129nulx".to_vec()), 0..48),
    ) {
        check(&bytes)?;
    }
}

#[test]
fn deep_nesting_is_bounded() {
    // Unknown keys' values: rejected past the recursion limit, like serde_json.
    let deep = format!(r#"{{"op":1,"x":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    assert!(scan(deep.as_bytes()).is_err());
    // d: only its structure is followed, iteratively, so any depth is safe.
    let deep_d = format!(
        r#"{{"op":1,"d":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(scan(deep_d.as_bytes()).is_ok());
    let open_d = format!(r#"{{"op":1,"d":{}"#, "[".repeat(100_000));
    assert!(scan(open_d.as_bytes()).is_err());
}

/// Shrunk by proptest: serde_json does not check UTF-8 in strings it skips, so neither do we.
#[test]
fn invalid_utf8_in_skipped_strings_is_accepted_like_serde_json() {
    let bytes = b"{\"op\":0,\"x\":[\"\xa9\"]}";
    assert!(oracle(bytes).is_some());
    assert!(check(bytes).is_ok());
    // In the event name it is refused, by both.
    let bytes = b"{\"op\":0,\"t\":\"\xa9\"}";
    assert!(oracle(bytes).is_none() && ours(bytes).is_none());
}
