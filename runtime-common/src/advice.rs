//! Recognisable configuration mistakes, explained in words: a pure function from an error's
//! text (and the URL that was used) to advice for the operator.
//!
//! Owns: recognising RabbitMQ's and Redis' refusals (vhost not found, authentication refused,
//! an exchange or queue that exists with other flags, nothing listening) and wording what to
//! do. Does not own logging or retrying (the caller logs the advice beside the error).

/// What to do about an AMQP error `error` seen while using `url`. Pass the URL with its
/// password redacted (`SecretUrl::redacted`): the advice may quote it. `None` when the error
/// is not one of the known mistakes.
pub fn amqp(error: &str, url: &str) -> Option<String> {
    let lower = error.to_ascii_lowercase();
    if lower.contains("vhost") && lower.contains("not found") {
        return Some(match amqp_vhost(url) {
            Some(vhost) if vhost.is_empty() => format!(
                "the AMQP URL ends in `/`, which names the empty vhost \"\" (AMQP URI spec), \
                 not RabbitMQ's default vhost `/`; write `%2f` for it: {}%2f",
                url.trim_end_matches('/').to_owned() + "/"
            ),
            Some(vhost) => format!(
                "RabbitMQ has no vhost {vhost:?}: create it (`rabbitmqctl add_vhost {vhost}` \
                 and grant the user permissions) or fix the path of the AMQP URL"
            ),
            None => "RabbitMQ has no such vhost: fix the path of the AMQP URL".to_owned(),
        });
    }
    if lower.contains("access_refused") && lower.contains("login")
        || lower.contains("authentication")
    {
        return Some(
            "RabbitMQ refused the user name or password of the AMQP URL (check them; the \
             `guest` user may only log in from localhost)"
                .to_owned(),
        );
    }
    if lower.contains("precondition_failed") && lower.contains("inequivalent arg") {
        return Some(inequivalent(error));
    }
    if lower.contains("connection refused") {
        return Some(format!(
            "nothing accepts connections at {}: is RabbitMQ running, and is the host and port \
             of the AMQP URL right?",
            host_port(url).unwrap_or("the AMQP URL's address")
        ));
    }
    None
}

/// What to do about a Redis error `error` seen while using `url`.
pub fn redis(error: &str, url: &str) -> Option<String> {
    let lower = error.to_ascii_lowercase();
    if lower.contains("wrongpass")
        || lower.contains("noauth")
        || lower.contains("invalid password")
        || lower.contains("authentication failed")
    {
        return Some(
            "Redis refused the password (or needs one): set it in the Redis URL, \
             redis://:PASSWORD@host:6379/ or redis://USER:PASSWORD@host:6379/"
                .to_owned(),
        );
    }
    if lower.contains("connection refused") {
        return Some(format!(
            "nothing accepts connections at {}: is Redis running, and is the host and port of \
             the Redis URL right?",
            host_port(url).unwrap_or("the Redis URL's address")
        ));
    }
    None
}

/// RabbitMQ's `PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'gateway' in
/// vhost '/': received 'true' but current is 'false'`, in words.
fn inequivalent(error: &str) -> String {
    let quoted = |after: &str| -> Option<&str> {
        let start = error.find(after)? + after.len();
        let rest = &error[start..];
        rest.split('\'').next()
    };
    let flag = quoted("inequivalent arg '").unwrap_or("?");
    let (kind, name) = match (quoted("for exchange '"), quoted("for queue '")) {
        (Some(name), _) => ("exchange", name),
        (None, Some(name)) => ("queue", name),
        (None, None) => ("object", "?"),
    };
    if flag == "x-queue-type" {
        let current = error
            .split("current is the value '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or("another type");
        let wanted = quoted("received the value '").unwrap_or("classic (no x-queue-type)");
        return format!(
            "the queue {name:?} already exists as a {current} queue, but Gatehouse declares it as \
             {wanted} (profile.queue_type / GATEHOUSE_QUEUE_TYPE; 406 PRECONDITION_FAILED): a \
             queue's type cannot change. Set queue_type back, or drain and delete the queue so \
             that it is declared again with the new type (workers that declare it must use the \
             same type)"
        );
    }
    let wanted = quoted("received '").unwrap_or("?");
    let current = quoted("but current is '").unwrap_or("?");
    format!(
        "the {kind} {name:?} already exists with {flag} = {current}, but this profile declares \
         it with {flag} = {wanted} (406 PRECONDITION_FAILED): another program or profile \
         declared it differently. Delete it (its bindings go with it), or give Gatehouse \
         another name (profile.exchange / GATEHOUSE_EXCHANGE) or another vhost"
    )
}

/// The vhost an AMQP URL names: `None` without a path (the default vhost), otherwise the
/// percent-decoded path without its leading `/` (so a trailing `/` alone gives "").
fn amqp_vhost(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or_default();
    Some(percent_decode(&path[1..]))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    authority.rsplit('@').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_of_another_type_is_explained() {
        let error = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue \
                     'gateway.commands.dlx' in vhost '/': received none but current is the \
                     value 'quorum' of type 'longstr'";
        let advice = amqp(error, "amqp://guest:***@127.0.0.1:5672/%2f").unwrap();
        assert!(advice.contains("\"gateway.commands.dlx\""), "{advice}");
        assert!(advice.contains("exists as a quorum queue"), "{advice}");
        assert!(advice.contains("classic"), "{advice}");
        assert!(advice.contains("GATEHOUSE_QUEUE_TYPE"), "{advice}");
        let error = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in \
                     vhost '/': received the value 'quorum' of type 'longstr' but current is \
                     the value 'classic' of type 'longstr'";
        let advice = amqp(error, "amqp://h").unwrap();
        assert!(advice.contains("exists as a classic queue"), "{advice}");
        assert!(advice.contains("declares it as quorum"), "{advice}");
    }

    #[test]
    fn a_trailing_slash_names_the_empty_vhost() {
        let advice = amqp(
            "protocol error: NOT_ALLOWED - vhost  not found",
            "amqp://guest:<redacted>@127.0.0.1:5672/",
        )
        .unwrap();
        assert!(advice.contains("%2f"), "{advice}");
        assert!(
            advice.contains("amqp://guest:<redacted>@127.0.0.1:5672/%2f"),
            "{advice}"
        );
    }

    #[test]
    fn a_missing_vhost_is_named() {
        let advice = amqp(
            "NOT_ALLOWED - vhost staging not found",
            "amqp://u:p@rabbit:5672/staging",
        )
        .unwrap();
        assert!(advice.contains("\"staging\""), "{advice}");
        assert!(advice.contains("rabbitmqctl add_vhost staging"), "{advice}");
        assert_eq!(amqp_vhost("amqp://h/%2f").as_deref(), Some("/"));
        assert_eq!(amqp_vhost("amqp://h"), None);
    }

    #[test]
    fn refused_logins_are_explained() {
        let advice = amqp(
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            "amqp://guest:wrong@127.0.0.1:5672/%2f",
        )
        .unwrap();
        assert!(advice.contains("user name or password"), "{advice}");
        assert!(
            redis(
                "WRONGPASS invalid username-password pair",
                "redis://h:6379/"
            )
            .unwrap()
            .contains("password")
        );
    }

    #[test]
    fn an_exchange_with_other_flags_names_the_flag() {
        let advice = amqp(
            "channel error: PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'gateway' in vhost '/': received 'true' but current is 'false'",
            "amqp://127.0.0.1",
        )
        .unwrap();
        assert!(
            advice.contains("\"gateway\" already exists with durable = false"),
            "{advice}"
        );
        assert!(advice.contains("durable = true"), "{advice}");
        assert!(advice.contains("406"), "{advice}");
        let queue = amqp(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'gateway:READY' in vhost '/': received the value '120000' of type 'signedint' but current is none",
            "amqp://127.0.0.1",
        )
        .unwrap();
        assert!(queue.contains("queue \"gateway:READY\""), "{queue}");
        assert!(queue.contains("x-message-ttl"), "{queue}");
    }

    #[test]
    fn refused_connections_name_the_address_without_credentials() {
        let advice = amqp(
            "IO error: Connection refused (os error 111)",
            "amqp://guest:secret@10.0.0.5:5673/%2f",
        )
        .unwrap();
        assert!(advice.contains("10.0.0.5:5673"), "{advice}");
        assert!(!advice.contains("secret"), "{advice}");
    }

    #[test]
    fn other_errors_get_no_advice() {
        assert_eq!(amqp("frame too large", "amqp://h"), None);
        assert_eq!(redis("timed out", "redis://h"), None);
    }
}
