//! URLs that carry credentials, and how they are shown.
//!
//! Owns: [`SecretUrl`] (whose `Debug` and `Display` never show a secret) and [`redact_url`], the
//! one redaction every log line, error, metric and status page uses for a URL.

use std::fmt;

use proto_core::percent::percent_decode;
use proto_core::secret::Secret;

/// A URL that may carry credentials. `Debug` and `Display` show it redacted ([`redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    /// The URL itself, credentials included, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with every secret replaced by `***`, for logs.
    pub fn redacted(&self) -> String {
        redact_url(self.0.expose())
    }

    /// `text` (typically a client library's error message, which may quote the URL it was
    /// given) with the URL and each of its secrets replaced: the whole URL by its redacted
    /// form, then the password and every query value, as written and percent-decoded, by
    /// `***`.
    pub fn scrub(&self, text: &str) -> String {
        let url = self.0.expose();
        let mut out = text.replace(url, &self.redacted());
        for secret in secrets_of(url) {
            for form in [secret.clone(), percent_decode(&secret)] {
                if !form.is_empty() {
                    out = out.replace(&form, "***");
                }
            }
        }
        out
    }
}

/// The secret parts of a URL: the userinfo's password (or a bare token), and query values.
fn secrets_of(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    let after = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            secrets.push(match userinfo.split_once(':') {
                Some((_, password)) => password.to_owned(),
                None => userinfo.to_owned(),
            });
            &rest[at + 1..]
        }
        None => rest,
    };
    if let Some((_, query)) = after.split('#').next().unwrap_or_default().split_once('?') {
        secrets.extend(
            query
                .split('&')
                .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_owned())),
        );
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so that a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A URL with its secrets replaced by `***`, for logs, errors, metrics and status pages:
///
/// - the password of the userinfo: `scheme://user:password@host/...` becomes
///   `scheme://user:***@host/...`, and a userinfo without a colon (a bare token, as Redis
///   allows) becomes `***`. The userinfo runs to the *last* `@`, so a password containing
///   `@ / ? #` (unescaped) is hidden whole; an `@` in a query string therefore hides what comes
///   before it too, which errs on the safe side;
/// - every query value (`?password=...`, which Redis accepts, and any other): `?k=***`;
/// - a fragment: `#***`.
///
/// Text without `://` is returned unchanged (it is not a URL, so it cannot carry credentials
/// in a form this function knows).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..authority_start]);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _password)) if !user.contains(['/', '?', '#']) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                _ => out.push_str("***"),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (before_fragment, fragment) = match after_userinfo.split_once('#') {
        Some((before, _)) => (before, true),
        None => (after_userinfo, false),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let redacted: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) => format!("{key}=***"),
                    None if pair.is_empty() => String::new(),
                    None => "***".to_owned(),
                })
                .collect();
            out.push_str(&redacted.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if fragment {
        out.push_str("#***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact_url("amqp://u:p@h/v"), "amqp://u:***@h/v");
        assert_eq!(redact_url("redis://tok@h:1/"), "redis://***@h:1/");
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("amqp://u:p@ss@h/"), "amqp://u:***@h/");
    }

    #[test]
    fn passwords_with_url_delimiters_are_hidden_whole() {
        for (url, shown) in [
            ("amqp://u:pa/ss@h/v", "amqp://u:***@h/v"),
            ("amqp://u:pa?ss@h/v", "amqp://u:***@h/v"),
            ("amqp://u:pa#ss@h/v", "amqp://u:***@h/v"),
            ("redis://:s/e?c#r@et@h:6379/0", "redis://:***@h:6379/0"),
            ("amqp://u:p@a/b@h/v", "amqp://u:***@h/v"),
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, shown, "{url}");
        }
    }

    #[test]
    fn query_values_and_fragments_are_hidden() {
        assert_eq!(
            redact_url("redis://h:6379/0?password=hunter2"),
            "redis://h:6379/0?password=***"
        );
        assert_eq!(
            redact_url("redis://h/?db=1&password=hunter2&flag"),
            "redis://h/?db=***&password=***&***"
        );
        assert_eq!(
            redact_url("amqp://u:p@h/%2f?heartbeat=10#frag"),
            "amqp://u:***@h/%2f?heartbeat=***#***"
        );
        // An `@` in a query hides what precedes it: safe, if more than needed.
        assert!(!redact_url("amqp://h/v?password=a@b").contains("a@b"));
    }

    #[test]
    fn error_texts_are_scrubbed() {
        let url = SecretUrl::new("amqp://user:p%40ss/w0rd@host:5672/%2f?auth=t0ken");
        let text = format!(
            "invalid URI {}: password p@ss/w0rd rejected, token t0ken",
            url.expose()
        );
        let scrubbed = url.scrub(&text);
        for secret in ["p%40ss/w0rd", "p@ss/w0rd", "t0ken"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(
            scrubbed.contains("amqp://user:***@host:5672/%2f?auth=***"),
            "{scrubbed}"
        );
        let plain = SecretUrl::new("redis://127.0.0.1:6379/");
        assert_eq!(plain.scrub("connection refused"), "connection refused");
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let url = SecretUrl::new("redis://:hunter2@h/?password=hunter3");
        for shown in [format!("{url}"), format!("{url:?}"), url.redacted()] {
            assert!(!shown.contains("hunter"), "{shown}");
        }
        assert_eq!(url.expose(), "redis://:hunter2@h/?password=hunter3");
    }
}
