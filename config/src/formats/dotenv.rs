//! `.env` files: `NAME=value` lines, as twilight-dispatch's setup (`cp .env.example .env`) and
//! docker compose use them.
//!
//! Owns: the syntax: `#` comments, blank lines, an optional `export ` prefix, values in single
//! quotes (taken literally) or double quotes (with `\n`, `\"` and `\\` escapes), and unquoted
//! values (trimmed; ` #` starts a comment). Does not own: precedence (the caller lets the
//! process environment win, as dotenv tools do).

/// The variables of a `.env` file, in file order. A line that is not `NAME=value` is reported
/// by its number (counted from 1), never with its content, which may hold a secret.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {} is not NAME=value", index + 1));
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!("line {}: not a variable name", index + 1));
        }
        vars.push((name.to_owned(), value_of(value.trim())));
    }
    Ok(vars)
}

fn value_of(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.split_once('\'')) {
        return inner.0.to_owned();
    }
    if let Some(rest) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return out;
    }
    match raw.find(" #") {
        Some(comment) => raw[..comment].trim_end().to_owned(),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_syntax() {
        let text = "# comment\nRUST_LOG=info\n\nBOT_TOKEN=\nexport SHARDS_END=1\n\
                    STATUS=online # inline\nACTIVITY_NAME=\"Testing \\\"it\\\"\"\nPW='a#b c'\n";
        let vars = parse(text).unwrap();
        let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("RUST_LOG"), Some("info"));
        assert_eq!(get("BOT_TOKEN"), Some(""));
        assert_eq!(get("SHARDS_END"), Some("1"));
        assert_eq!(get("STATUS"), Some("online"));
        assert_eq!(get("ACTIVITY_NAME"), Some("Testing \"it\""));
        assert_eq!(get("PW"), Some("a#b c"));
    }

    #[test]
    fn errors_name_the_line_not_its_content() {
        let err = parse("A=1\nsecret-token-here\n").unwrap_err();
        assert_eq!(err, "line 2 is not NAME=value");
    }
}
