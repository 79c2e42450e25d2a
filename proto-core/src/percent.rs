//! Percent-encoding (RFC 3986) of the parts of a URL: the query values of a Redis Sentinel URL
//! (`redis_topology` decodes them, the configuration encodes the ones it adds) and the secrets
//! the configuration scrubs from error texts.
//!
//! Owns: encoding and decoding. `+` stays a plus (RFC 3986, not HTML form encoding: passwords
//! hold pluses more often than spaces). Does not own parsing or redacting URLs.

/// `text` with every byte but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) written as
/// `%XX`: safe in any part of a URL.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `text` with each `%XX` replaced by its byte. A `%` not followed by two hex digits is kept
/// as written; bytes that do not form UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn escapes_are_decoded_and_the_rest_kept() {
        assert_eq!(percent_decode("p%40ss%2Fw0rd"), "p@ss/w0rd");
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters_and_decodes_back() {
        use super::percent_encode;
        assert_eq!(percent_encode("a&b c#d+é"), "a%26b%20c%23d%2B%C3%A9");
        assert_eq!(percent_encode("Az09-._~"), "Az09-._~");
        for text in ["p@ss/w0rd?", "100%", "ü:=&"] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
    }
}
