//! The expected reactions to a server event (a close code, op 7, op 9, a zombie connection):
//! resume, start a new session, reconnect either way, or stop. Shared by the scenarios that
//! provoke them.

use std::time::{Duration, Instant};

use crate::gateway::{self, CloseKind, IdentifyOutcome, Recording, ResumeOutcome};
use crate::scenario::{Context, Failure};
use crate::scenarios::{RECONNECT_BUDGET, ms};
use crate::{ensure, fail};

/// What the client must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// RESUME the session on READY's `resume_gateway_url` with the last sequence received.
    Resume,
    /// Start a new session with IDENTIFY (a RESUME attempt is tolerated only if the server
    /// refuses it).
    Reidentify,
    /// Reconnect, resuming or identifying.
    Reconnect,
    /// Never reconnect (a fatal close).
    Stop,
}

impl Reaction {
    /// A label for descriptions.
    pub fn label(self) -> &'static str {
        match self {
            Self::Resume => "resume",
            Self::Reidentify => "re-identify",
            Self::Reconnect => "reconnect",
            Self::Stop => "stop, no reconnect",
        }
    }
}

/// The state of a shard just before the event.
#[derive(Clone, Debug)]
pub struct Before {
    /// The shard.
    pub shard: u32,
    /// Its open connection.
    pub connection: u64,
    /// Its session.
    pub session_id: String,
    /// The last sequence it received (and acknowledged in a heartbeat).
    pub last_seq: u64,
    /// When the event was provoked.
    pub at: Instant,
}

/// How long a client that must stop is watched for reconnect attempts (unless it exits before):
/// long enough to catch a reconnect after a backoff of 15 s or more. The watch gives up the
/// scenario's `--jobs` slot, so such watches run beside the other scenarios.
pub const STOP_OBSERVATION: Duration = Duration::from_secs(30);

/// Checks that the client closed the connection itself with a code that keeps the session
/// (anything but 1000/1001, or no close frame), as it must before resuming.
pub fn closed_keeping_session(rec: &Recording, before: &Before, why: &str) -> Result<(), Failure> {
    let conn = rec
        .connections
        .iter()
        .find(|c| c.id.0 == before.connection)
        .ok_or_else(|| Failure::error("the connection vanished from the recording"))?;
    match conn.close.as_ref().map(|c| &c.kind) {
        Some(CloseKind::ClientClose(Some(code))) if *code == 1000 || *code == 1001 => fail!(
            "after {why} the client closed with {code}, which invalidates the session; close with another code (e.g. 4000) to resume"
        ),
        Some(CloseKind::ClientClose(_) | CloseKind::ClientDropped) => Ok(()),
        Some(other) => fail!(
            "after {why} the client did not close the connection itself (it ended by {other:?})"
        ),
        None => fail!("after {why} the client kept the old connection open"),
    }
}

/// Waits for and checks the reaction of `before.shard` to `why`. A failure says what the mock saw
/// after the event (a reconnect storm by name) and quotes the implementation's log.
pub async fn expect(
    ctx: &mut Context,
    before: &Before,
    reaction: Reaction,
    why: &str,
) -> Result<(), Failure> {
    let result = expect_inner(ctx, before, reaction, why).await;
    result.map_err(|f| f.explained(|| ctx.explanation(Some(before.at))))
}

/// Watches for [`STOP_OBSERVATION`] (or until the implementation's process group is gone) that
/// no connection is opened after `at`; fails at the first one, saying how long after the event.
async fn expect_no_reconnect(ctx: &mut Context, at: Instant, why: &str) -> Result<(), Failure> {
    ctx.release_job_slot();
    let recorder = ctx.gateway.recorder();
    loop {
        let later = recorder.read(|r| {
            r.connections
                .iter()
                .filter(|c| c.opened_at > at)
                .map(|c| c.opened_at - at)
                .collect::<Vec<_>>()
        });
        if let Some(first) = later.first() {
            fail!(
                "after {why} (a fatal close) the client opened {} new connection(s), the first {} after the close; it must stop that shard for good",
                later.len(),
                ms(*first)
            );
        }
        if !ctx.group_alive() || at.elapsed() >= STOP_OBSERVATION {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn expect_inner(
    ctx: &mut Context,
    before: &Before,
    reaction: Reaction,
    why: &str,
) -> Result<(), Failure> {
    let recorder = ctx.gateway.recorder();
    let shard = before.shard;
    let at = before.at;
    let budget = RECONNECT_BUDGET + ctx.gateway.config().identify_window;
    match reaction {
        // The implementation may exit or stay up; it must not reconnect.
        Reaction::Stop => expect_no_reconnect(ctx, at, why).await,
        Reaction::Resume => {
            let resume = ctx
                .wait_for(&format!("RESUME after {why}"), budget, |_| {
                    recorder.read(|r| {
                        let identify = r.identifies.iter().find(|i| i.at > at).cloned();
                        let resume = r.resumes.iter().find(|x| x.at > at).cloned();
                        match (identify, resume) {
                            (Some(i), None) => Some(Err(i)),
                            (Some(i), Some(x)) if i.at < x.at => Some(Err(i)),
                            (_, Some(x)) => Some(Ok(x)),
                            (None, None) => None,
                        }
                    })
                })
                .await?;
            let resume = match resume {
                Ok(r) => r,
                Err(_) => {
                    fail!("after {why} the client sent IDENTIFY (a new session) instead of RESUME")
                }
            };
            ensure!(
                resume.session_id == before.session_id,
                "after {why} the RESUME names session {:?}, expected {:?}",
                resume.session_id,
                before.session_id
            );
            ensure!(
                resume.seq == Some(before.last_seq),
                "after {why} the RESUME carries seq {:?}, expected the last sequence received ({})",
                resume.seq,
                before.last_seq
            );
            ensure!(
                resume.connection.0 == before.connection || resume.on_resume_url,
                "after {why} the client resumed on the cached gateway URL, not on READY's resume_gateway_url"
            );
            ensure!(
                resume.token_ok,
                "after {why} the RESUME carries the wrong token"
            );
            ensure!(
                matches!(resume.outcome, ResumeOutcome::Resumed { .. }),
                "after {why} the mock refused the RESUME: {:?}",
                resume.outcome
            );
            let rec = recorder.snapshot();
            no_storm(&rec, at, why)?;
            gateway::no_violations(&rec).map_err(Failure::fail)?;
            Ok(())
        }
        Reaction::Reidentify | Reaction::Reconnect => {
            let what = if reaction == Reaction::Reidentify {
                format!("a new session (IDENTIFY, READY) for shard {shard} after {why}")
            } else {
                format!("a reconnect (RESUME or IDENTIFY) of shard {shard} after {why}")
            };
            let outcome = ctx
                .wait_for(&what, budget, |_| {
                    recorder.read(|r| {
                        let resumed = r.resumes.iter().find(|x| {
                            x.at > at && matches!(x.outcome, ResumeOutcome::Resumed { .. })
                        });
                        let identified = r.identifies.iter().find(|i| {
                            i.at > at
                                && i.shard.is_some_and(|s| s[0] == shard)
                                && matches!(i.outcome, IdentifyOutcome::Ready { .. })
                        });
                        match (resumed, identified) {
                            (Some(_), _) => Some(false),
                            (None, Some(_)) => Some(true),
                            (None, None) => None,
                        }
                    })
                })
                .await?;
            if reaction == Reaction::Reidentify && !outcome {
                fail!(
                    "after {why} the client resumed the old session; Discord requires a new session (IDENTIFY) here"
                );
            }
            let rec = recorder.snapshot();
            no_storm(&rec, at, why)?;
            let violations = gateway::counted(
                rec.violations
                    .iter()
                    .filter(|v| {
                        !matches!(
                            v.kind,
                            gateway::ViolationKind::ResumeInvalidatedSession { .. }
                        )
                    })
                    .map(gateway::describe),
            );
            ensure!(
                violations.is_empty(),
                "protocol violation(s): {}",
                violations.join("; ")
            );
            Ok(())
        }
    }
}

/// Fails when the client needed [`gateway::STORM`] or more connections after `at` to get its
/// session back: one (or, after a refused RESUME, two) is what the protocol calls for.
fn no_storm(rec: &Recording, at: Instant, why: &str) -> Result<(), Failure> {
    let opened = rec.connections.iter().filter(|c| c.opened_at > at).count();
    ensure!(
        opened < gateway::STORM,
        "after {why} the client opened {opened} connections before it had a session again (a reconnect storm)"
    );
    Ok(())
}

/// Starts the implementation, waits for READY and takes shard 0's [`Before`] snapshot once the
/// client has caught up: the prelude of the scenarios that provoke a reaction on shard 0.
pub async fn start_and_take_before(ctx: &mut Context) -> Result<Before, Failure> {
    crate::scenarios::start_and_wait_ready(ctx).await?;
    before(ctx, 0).await
}

/// Waits for a resume after `why` and checks that the client closed the old connection with a
/// code that keeps the session ([`closed_keeping_session`]).
pub async fn expect_resume_keeping_session(
    ctx: &mut Context,
    before: &Before,
    why: &str,
) -> Result<(), Failure> {
    expect(ctx, before, Reaction::Resume, why).await?;
    let rec = ctx.gateway.recorder().snapshot();
    closed_keeping_session(&rec, before, why)
}

/// Takes the [`Before`] snapshot of `shard` once the client has caught up.
pub async fn before(ctx: &mut Context, shard: u32) -> Result<Before, Failure> {
    let last_seq = crate::scenarios::wait_caught_up(ctx, shard).await?;
    let (connection, session_id) = ctx
        .gateway
        .read(|r| {
            let c = r.live_connection(shard)?;
            Some((c.id.0, c.session_id.clone()?))
        })
        .ok_or_else(|| Failure::fail(format!("shard {shard} has no live session")))?;
    Ok(Before {
        shard,
        connection,
        session_id,
        last_seq,
        at: Instant::now(),
    })
}
