//! What a close code from Discord means for the shard: resume, identify afresh, or stop.
//!
//! Owns: the one mapping of PROTOCOL.md §8 ([`CloseReaction::from_close_code`]) and the codes
//! the shard itself closes with. Does not perform the reaction (the shard does).

use super::CloseCode;

impl CloseCode {
    /// The code the shard closes with whenever it wants to keep the session (op 7, zombie,
    /// decode error, worker reconnect, shutdown): 4000, as twilight does. The shard never sends
    /// 1000 or 1001, which would invalidate the session.
    pub const RESUME: CloseCode = CloseCode(4000);

    /// Whether closing with this code keeps the session resumable (anything but 1000/1001).
    pub const fn is_resumable(self) -> bool {
        !matches!(self.0, 1000 | 1001)
    }
}

/// The shard's reaction to the peer closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReaction {
    /// Reconnect and RESUME (keep the session).
    Resume,
    /// Forget the session, reconnect to the gateway URL and IDENTIFY afresh.
    Reidentify,
    /// Stop for good: retrying cannot help.
    Stop {
        /// The close code.
        code: u16,
        /// What it means, for the operator.
        name: &'static str,
    },
}

impl CloseReaction {
    /// The reaction to a close with this code (`None`: the connection dropped without one).
    ///
    /// Resume: 4000, 4001, 4002, 4008, no code, 1000/1001 sent by the server, and every
    /// unknown code (trying a resume is safe: the server answers op 9 if it cannot).
    /// Identify afresh: 4003, 4005, 4007, 4009. Stop: 4004, 4010 to 4014.
    pub const fn from_close_code(code: Option<u16>) -> CloseReaction {
        let Some(code) = code else {
            return CloseReaction::Resume;
        };
        match code {
            4003 | 4005 | 4007 | 4009 => CloseReaction::Reidentify,
            4004 => Self::stop(code, "authentication failed"),
            4010 => Self::stop(code, "invalid shard"),
            4011 => Self::stop(code, "sharding required"),
            4012 => Self::stop(code, "invalid API version"),
            4013 => Self::stop(code, "invalid intents"),
            4014 => Self::stop(code, "disallowed intents"),
            _ => CloseReaction::Resume,
        }
    }

    const fn stop(code: u16, name: &'static str) -> CloseReaction {
        CloseReaction::Stop { code, name }
    }
}

/// The name of a Discord gateway close code, for logs (`None` for codes Discord does not
/// define).
pub const fn close_code_name(code: u16) -> Option<&'static str> {
    Some(match code {
        4000 => "unknown error",
        4001 => "unknown opcode",
        4002 => "decode error",
        4003 => "not authenticated",
        4004 => "authentication failed",
        4005 => "already authenticated",
        4007 => "invalid seq",
        4008 => "rate limited",
        4009 => "session timed out",
        4010 => "invalid shard",
        4011 => "sharding required",
        4012 => "invalid API version",
        4013 => "invalid intents",
        4014 => "disallowed intents",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_its_reaction() {
        use CloseReaction::*;
        for code in [
            4000, 4001, 4002, 4008, 1000, 1001, 1006, 4006, 4200, 4999, 0,
        ] {
            assert_eq!(CloseReaction::from_close_code(Some(code)), Resume, "{code}");
        }
        assert_eq!(CloseReaction::from_close_code(None), Resume);
        for code in [4003, 4005, 4007, 4009] {
            assert_eq!(
                CloseReaction::from_close_code(Some(code)),
                Reidentify,
                "{code}"
            );
        }
        let fatal = [
            (4004, "authentication failed"),
            (4010, "invalid shard"),
            (4011, "sharding required"),
            (4012, "invalid API version"),
            (4013, "invalid intents"),
            (4014, "disallowed intents"),
        ];
        for (code, name) in fatal {
            assert_eq!(
                CloseReaction::from_close_code(Some(code)),
                Stop { code, name }
            );
            assert_eq!(close_code_name(code), Some(name));
        }
        assert_eq!(close_code_name(4006), None);
    }

    #[test]
    fn own_close_code_keeps_the_session() {
        assert!(CloseCode::RESUME.is_resumable());
        assert!(!CloseCode(1000).is_resumable());
        assert!(!CloseCode(1001).is_resumable());
    }
}
