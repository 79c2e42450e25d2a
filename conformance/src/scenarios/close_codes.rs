//! `close-<code>` and `close-without-frame`: the server ends the connection with a close code (or
//! drops TCP), and the client reacts as PROTOCOL.md section 8 says: resume (4000, 4001, 4002, no
//! close frame), start a new session (4003, 4005, 4007, 4009), reconnect either way (4008, and a
//! server-sent 1000/1001), or stop that shard for good (4004, 4010-4014) without a reconnect loop.

use std::time::Duration;

use crate::scenario::{Context, Failure, Scenario, ScenarioFuture};
use crate::scenarios::reaction::{self, Reaction};

/// One close code (or a TCP drop, `code: None`) and the reaction it calls for.
pub struct CloseCode {
    /// The code, or `None` for a TCP drop without a close frame.
    pub code: Option<u16>,
    /// What the client must do.
    pub reaction: Reaction,
}

/// Every case, in report order.
pub fn all() -> Vec<CloseCode> {
    use Reaction::*;
    let cases: [(Option<u16>, Reaction); 16] = [
        (None, Resume),
        (Some(4000), Resume),
        (Some(4001), Resume),
        (Some(4002), Resume),
        (Some(4003), Reidentify),
        (Some(4005), Reidentify),
        (Some(4007), Reidentify),
        (Some(4009), Reidentify),
        (Some(4008), Reconnect),
        (Some(1000), Reconnect),
        (Some(4004), Stop),
        (Some(4010), Stop),
        (Some(4011), Stop),
        (Some(4012), Stop),
        (Some(4013), Stop),
        (Some(4014), Stop),
    ];
    cases
        .into_iter()
        .map(|(code, reaction)| CloseCode { code, reaction })
        .collect()
}

impl Scenario for CloseCode {
    fn name(&self) -> String {
        match self.code {
            Some(code) => format!("close-{code}"),
            None => "close-without-frame".into(),
        }
    }

    fn description(&self) -> String {
        let event = match self.code {
            Some(code) => format!("server closes with {code}"),
            None => "server drops TCP without a close frame".into(),
        };
        format!("{event}: {}", self.reaction.label())
    }

    fn budget(&self) -> Duration {
        match self.reaction {
            // Start-up and catching up, then the 30 s watch for a forbidden reconnect.
            Reaction::Stop => Duration::from_secs(90) + reaction::STOP_OBSERVATION,
            _ => Duration::from_secs(90),
        }
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(self, ctx))
    }
}

async fn run(case: &CloseCode, ctx: &mut Context) -> Result<(), Failure> {
    let before = reaction::start_and_take_before(ctx).await?;
    ctx.steer_mock(|control| {
        let target = control.connection(mock_gateway::ConnectionId(before.connection));
        match case.code {
            Some(code) => target.close(code, "conformance"),
            None => target.drop_tcp(),
        }
    })?;
    let why = match case.code {
        Some(code) => format!("close code {code}"),
        None => "a dropped connection".into(),
    };
    reaction::expect(ctx, &before, case.reaction, &why).await
}
