//! Gateway intents: every intent by name and bit (PROTOCOL.md §12), and parsing of the
//! configuration's intent lists.
//!
//! Owns: the intent table, the groups `all`, `privileged` and `nonPrivileged`, and turning a
//! configured value (a raw bitfield, or a comma list of names and groups in `SCREAMING_SNAKE`
//! or `camelCase`) into the IDENTIFY bitfield. Does not know which events an intent enables.

use std::fmt;

/// One gateway intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The name in Discord's docs, for example `GUILD_MESSAGES`.
    pub name: &'static str,
    /// The camelCase name, for example `guildMessages`.
    pub camel: &'static str,
    /// The bit number.
    pub bit: u8,
    /// Whether it must be enabled in the developer portal.
    pub privileged: bool,
}

impl Intent {
    /// The intent's value in the bitfield.
    pub const fn value(self) -> u64 {
        1 << self.bit
    }
}

const fn intent(name: &'static str, camel: &'static str, bit: u8, privileged: bool) -> Intent {
    Intent {
        name,
        camel,
        bit,
        privileged,
    }
}

/// Every documented intent, by bit.
pub const INTENTS: [Intent; 21] = [
    intent("GUILDS", "guilds", 0, false),
    intent("GUILD_MEMBERS", "guildMembers", 1, true),
    intent("GUILD_MODERATION", "guildModeration", 2, false),
    intent("GUILD_EXPRESSIONS", "guildExpressions", 3, false),
    intent("GUILD_INTEGRATIONS", "guildIntegrations", 4, false),
    intent("GUILD_WEBHOOKS", "guildWebhooks", 5, false),
    intent("GUILD_INVITES", "guildInvites", 6, false),
    intent("GUILD_VOICE_STATES", "guildVoiceStates", 7, false),
    intent("GUILD_PRESENCES", "guildPresences", 8, true),
    intent("GUILD_MESSAGES", "guildMessages", 9, false),
    intent(
        "GUILD_MESSAGE_REACTIONS",
        "guildMessageReactions",
        10,
        false,
    ),
    intent("GUILD_MESSAGE_TYPING", "guildMessageTyping", 11, false),
    intent("DIRECT_MESSAGES", "directMessages", 12, false),
    intent(
        "DIRECT_MESSAGE_REACTIONS",
        "directMessageReactions",
        13,
        false,
    ),
    intent("DIRECT_MESSAGE_TYPING", "directMessageTyping", 14, false),
    intent("MESSAGE_CONTENT", "messageContent", 15, true),
    intent("GUILD_SCHEDULED_EVENTS", "guildScheduledEvents", 16, false),
    intent(
        "AUTO_MODERATION_CONFIGURATION",
        "autoModerationConfiguration",
        20,
        false,
    ),
    intent(
        "AUTO_MODERATION_EXECUTION",
        "autoModerationExecution",
        21,
        false,
    ),
    intent("GUILD_MESSAGE_POLLS", "guildMessagePolls", 24, false),
    intent("DIRECT_MESSAGE_POLLS", "directMessagePolls", 25, false),
];

/// Former names Discord still documents, and what they mean now.
const ALIASES: [(&str, &str, u8); 3] = [
    ("GUILD_BANS", "guildBans", 2),
    ("GUILD_EMOJIS_AND_STICKERS", "guildEmojisAndStickers", 3),
    // The name before stickers joined it (Spectacles' `GUILD_EMOJIS`, Cordis' `guildEmojis`).
    ("GUILD_EMOJIS", "guildEmojis", 3),
];

const fn sum(privileged: Option<bool>) -> u64 {
    let mut bits = 0;
    let mut i = 0;
    while i < INTENTS.len() {
        let matches = match privileged {
            None => true,
            Some(p) => INTENTS[i].privileged == p,
        };
        if matches {
            bits |= INTENTS[i].value();
        }
        i += 1;
    }
    bits
}

/// All documented intents (`0x331FFFF`).
pub const ALL: u64 = sum(None);

/// The privileged intents: GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT.
pub const PRIVILEGED: u64 = sum(Some(true));

/// Every intent that is not privileged.
pub const NON_PRIVILEGED: u64 = sum(Some(false));

/// A configured intent value that is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    /// The value is empty.
    #[error("no intents given (use a number, intent names or `all`/`privileged`/`nonPrivileged`)")]
    Empty,
    /// A name that is neither an intent nor a group.
    #[error(
        "unknown intent `{0}`; known: all, privileged, nonPrivileged, and {names}",
        names = KnownNames
    )]
    UnknownName(String),
    /// A raw bitfield with bits Discord does not define.
    #[error("intent bits {0:#x} are not defined (all defined bits: {ALL:#x})")]
    UndefinedBits(u64),
}

struct KnownNames;

impl fmt::Display for KnownNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, intent) in INTENTS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(intent.name)?;
        }
        f.write_str(" (or their camelCase forms)")
    }
}

/// The value of one name: an intent (either spelling, or a former name) or a group.
pub fn by_name(name: &str) -> Option<u64> {
    match name {
        "all" | "ALL" => return Some(ALL),
        "privileged" | "PRIVILEGED" => return Some(PRIVILEGED),
        "nonPrivileged" | "NON_PRIVILEGED" => return Some(NON_PRIVILEGED),
        _ => {}
    }
    INTENTS
        .iter()
        .find(|i| i.name == name || i.camel == name)
        .map(|i| i.value())
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(s, c, _)| *s == name || *c == name)
                .map(|(_, _, bit)| 1 << bit)
        })
}

/// Checks a raw bitfield: every set bit must be a documented intent.
pub fn from_bits(bits: u64) -> Result<u64, IntentError> {
    match bits & !ALL {
        0 => Ok(bits),
        undefined => Err(IntentError::UndefinedBits(undefined)),
    }
}

/// Parses a configured intent value: a decimal (or `0x` hex) bitfield, or a comma-separated
/// list of intent names, group names and bitfields, combined with OR.
///
/// `"GUILDS, GUILD_MESSAGES"`, `"guilds,guildMessages"`, `"nonPrivileged,messageContent"`,
/// `"513"` and `"all"` are all accepted.
pub fn parse(spec: &str) -> Result<u64, IntentError> {
    let mut bits = 0;
    let mut any = false;
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        any = true;
        bits |= match parse_number(item) {
            Some(n) => from_bits(n)?,
            None => by_name(item).ok_or_else(|| IntentError::UnknownName(item.to_owned()))?,
        };
    }
    if any {
        Ok(bits)
    } else {
        Err(IntentError::Empty)
    }
}

fn parse_number(item: &str) -> Option<u64> {
    if let Some(hex) = item.strip_prefix("0x").or_else(|| item.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if item.bytes().all(|b| b.is_ascii_digit()) {
        return item.parse().ok();
    }
    None
}

/// The intents set in a bitfield, in bit order.
pub fn intents_in(bits: u64) -> impl Iterator<Item = Intent> {
    INTENTS.into_iter().filter(move |i| bits & i.value() != 0)
}

/// The names of the intents set in a bitfield, comma-separated (for logs and status).
pub fn describe(bits: u64) -> String {
    intents_in(bits)
        .map(|i| i.name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Intents from a list of names or numbers (each item as [`parse`] accepts, for example
/// `GUILDS`, `guildMessages`, `nonPrivileged` or `513`), combined with OR.
pub fn parse_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<u64, IntentError> {
    let mut bits = 0;
    for name in names {
        bits |= parse(name)?;
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_names_and_groups() {
        assert_eq!(parse_names(["all"]).unwrap(), ALL);
        assert_eq!(parse_names(["privileged"]).unwrap(), 2 | 256 | 32768);
        assert_eq!(parse_names(["nonPrivileged"]).unwrap(), 53_575_421);
        assert_eq!(
            parse_names(["guildMessages", "GUILD_BANS", "DIRECT_MESSAGES"]).unwrap(),
            512 | 4 | 4096
        );
        assert_eq!(parse_names(["GUILD_EMOJIS"]).unwrap(), 8);
        assert_eq!(parse_names(["guildEmojis"]).unwrap(), 8);
        assert!(
            parse_names(["GUILDZ"])
                .unwrap_err()
                .to_string()
                .contains("GUILDZ")
        );
    }
    use proptest::prelude::*;

    #[test]
    fn groups_match_the_protocol_doc() {
        assert_eq!(ALL, 0x331_FFFF);
        assert_eq!(ALL, 53_608_447);
        assert_eq!(NON_PRIVILEGED, 53_575_421);
        assert_eq!(PRIVILEGED, 2 | 256 | 32_768);
        assert_eq!(PRIVILEGED | NON_PRIVILEGED, ALL);
        assert_eq!(PRIVILEGED & NON_PRIVILEGED, 0);
    }

    #[test]
    fn every_intent_by_both_names() {
        for i in INTENTS {
            assert_eq!(by_name(i.name), Some(i.value()), "{}", i.name);
            assert_eq!(by_name(i.camel), Some(i.value()), "{}", i.camel);
            assert_eq!(parse(i.name), Ok(i.value()));
        }
        assert_eq!(by_name("GUILD_BANS"), Some(4));
        assert_eq!(by_name("guildEmojisAndStickers"), Some(8));
        assert_eq!(by_name("GUILD_MESSAGES"), Some(512));
        assert_eq!(by_name("guildMessages"), Some(512));
        assert_eq!(by_name("DIRECT_MESSAGE_POLLS"), Some(33_554_432));
    }

    #[test]
    fn lists_groups_and_numbers() {
        assert_eq!(parse("GUILDS, GUILD_MESSAGES"), Ok(513));
        assert_eq!(parse("guilds,guildMessages,"), Ok(513));
        assert_eq!(
            parse("nonPrivileged,messageContent"),
            Ok(NON_PRIVILEGED | 32_768)
        );
        assert_eq!(parse("all"), Ok(ALL));
        assert_eq!(parse("privileged"), Ok(PRIVILEGED));
        assert_eq!(parse("NON_PRIVILEGED"), Ok(NON_PRIVILEGED));
        assert_eq!(parse("513"), Ok(513));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0x201"), Ok(513));
        assert_eq!(parse("1, GUILD_MESSAGES"), Ok(513));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(parse(""), Err(IntentError::Empty));
        assert_eq!(parse(" , "), Err(IntentError::Empty));
        let err = parse("GUILDS,guild_messages").expect_err("unknown");
        assert_eq!(err, IntentError::UnknownName("guild_messages".into()));
        let text = err.to_string();
        assert!(
            text.contains("`guild_messages`") && text.contains("GUILD_MESSAGES"),
            "{text}"
        );
        assert_eq!(parse("131072"), Err(IntentError::UndefinedBits(1 << 17)));
        assert!(parse("1 << 3").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999999999999999999").is_err());
        assert_eq!(
            from_bits(u64::MAX).expect_err("undefined").to_string(),
            format!(
                "intent bits {:#x} are not defined (all defined bits: 0x331ffff)",
                !ALL
            )
        );
    }

    #[test]
    fn describe_names_set_bits() {
        assert_eq!(describe(513), "GUILDS,GUILD_MESSAGES");
        assert_eq!(describe(0), "");
        assert_eq!(intents_in(PRIVILEGED).count(), 3);
    }

    proptest! {
        #[test]
        fn describe_then_parse_roundtrips(bits in 0u64..(1 << 26)) {
            let bits = bits & ALL;
            let text = describe(bits);
            if bits == 0 {
                prop_assert_eq!(parse(&text), Err(IntentError::Empty));
            } else {
                prop_assert_eq!(parse(&text), Ok(bits));
            }
            prop_assert_eq!(parse(&bits.to_string()), Ok(bits));
        }
    }
}
