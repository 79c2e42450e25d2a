//! `cluster-*`: three real Gatehouse processes of one cluster (`GATEHOUSE_CLUSTER`, leases of
//! 3 s) on one mock gateway, sharing six shards through Redis.
//!
//! - `cluster-start-mc1` / `cluster-start-mc2`: the three start together with
//!   `max_concurrency` 1 or 2. The mock records every IDENTIFY of every connection, whichever
//!   process sent it: no bucket may identify twice within 5 s, and every shard becomes READY.
//! - `cluster-overlap`: explicit, overlapping shard ids (`0-3`, `2-5`, `0-5`): every shard runs,
//!   never with two live sessions at once.
//! - `cluster-sigkill`: one of the three is SIGKILLed under load: its shards are taken over and
//!   RESUMED, 0 events missing.
//! - `cluster-rolling-restart`: each process in turn gets SIGTERM (it hands its shards over)
//!   and is started again, under load: every hand-over RESUMEs, 0 events missing.
//! - `cluster-reshard`: the cluster runs 4 shards under load (guild events, routed as Discord
//!   does to every session owning the guild, whatever its shard count); the re-shard to 8 is
//!   asked for in Redis (what `gatehouse reshard --to 8` records): the 8 shards come up beside
//!   the 4, publishing switches, the 4 close; 0 guild events missing, and no shard of 8
//!   identified afresh after the switch (its previous session's unread events would be lost).
//!   Events that arrive only after the normal wait are reported as late (`fault`).
//!
//! Every case checks, from the mock's recording, that no shard ever had two live sessions at
//! once and that no identify rule was broken. Load and counting are the fault scenarios'
//! (`fault`); durations follow its scale (`CONFORMANCE_FAULT_SCALE`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::gateway::{self, IdentifyOutcome, Recording, ResumeOutcome, ViolationKind};
use crate::process::ImplProcess;
use crate::profiles::Profile;
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::fault::{self, FaultRun, scaled};

/// The processes of the cluster.
const MEMBERS: usize = 3;
/// The bot's shards.
const SHARDS: u32 = 6;
/// The lease time the processes are started with.
const LEASE_MS: u64 = 3_000;
/// Load before and after each fault at full scale.
const LEAD: Duration = Duration::from_secs(10);
/// How long the shards of a stopped or killed process may take to run elsewhere again.
const TAKEOVER: Duration = Duration::from_secs(40);
/// `cluster-reshard`: from 4 shards to this many.
const RESHARD_FROM: u32 = 4;
/// See [`RESHARD_FROM`].
const RESHARD_TO: u32 = 8;
/// How long the re-shard may take (the new set identifies, warms up, switches), and then
/// the old set's sessions to close.
const RESHARD_TIME: Duration = Duration::from_secs(90);

/// How much longer than [`RESHARD_TIME`] the old set may take to close: a shard of the old set
/// closes once it has read everything the gateway sent it, and keeps reading while it is
/// behind (Gatehouse's `Retiring`: up to ten minutes while it reads), so on a busy machine
/// it closes after the normal wait. Waiting for it is part of the scenario (closing behind
/// would lose events); the grace is the one the late events get ([`fault::LATE_GRACE`]).
const RETIRE_GRACE: Duration = fault::LATE_GRACE;

/// The shards the case starts with.
fn shards(case: Case) -> u32 {
    if case == Case::Reshard {
        RESHARD_FROM
    } else {
        SHARDS
    }
}

/// Which cluster case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Start together with this `max_concurrency`.
    Start(u32),
    /// Explicit, overlapping shard ids.
    Overlap,
    /// One process SIGKILLed under load.
    Kill,
    /// Every process restarted in turn under load.
    Rolling,
    /// Re-sharding from 4 to 8 shards under load.
    Reshard,
}

/// See the module docs.
pub struct Cluster(pub Case);

impl Scenario for Cluster {
    fn name(&self) -> String {
        match self.0 {
            Case::Start(n) => format!("cluster-start-mc{n}"),
            Case::Overlap => "cluster-overlap".into(),
            Case::Kill => "cluster-sigkill".into(),
            Case::Rolling => "cluster-rolling-restart".into(),
            Case::Reshard => "cluster-reshard".into(),
        }
    }

    fn description(&self) -> String {
        match self.0 {
            Case::Start(n) => format!(
                "three processes of one cluster start together, max_concurrency {n}: no identify violation"
            ),
            Case::Overlap => {
                "three processes with overlapping shard ids: never two live sessions of one shard".into()
            }
            Case::Kill => {
                "one of three processes SIGKILLed under load: shards taken over and resumed, 0 missing".into()
            }
            Case::Rolling => "rolling restart of three processes under load: 0 missing".into(),
            Case::Reshard => {
                "re-sharding three processes from 4 to 8 shards under load: 0 guild events missing".into()
            }
        }
    }

    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Cluster mode is Gatehouse's own; it is the same under every profile.
        (profile == Profile::Gatehouse).then_some(Requirement::Required)
    }

    fn setup(&self, _profile: Profile) -> Setup {
        let concurrency = match self.0 {
            Case::Start(n) => n,
            Case::Reshard => RESHARD_TO,
            _ => SHARDS,
        };
        let mut setup = Setup::default()
            .with_shards(shards(self.0))
            .with_max_concurrency(concurrency);
        setup.any_shard_count = self.0 == Case::Reshard;
        setup
    }

    fn budget(&self) -> Duration {
        match self.0 {
            Case::Start(_) | Case::Overlap => Duration::from_secs(150),
            Case::Kill => fault::budget(Duration::from_secs(200), LEAD * 2),
            Case::Rolling => fault::budget(Duration::from_secs(420), LEAD * 4),
            Case::Reshard => fault::budget(Duration::from_secs(240), LEAD * 2) + RETIRE_GRACE,
        }
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, self.0))
    }
}

/// The shell text that makes member `index` a process of the cluster.
fn member_prefix(case: Case, index: usize) -> String {
    let shards = match (case, index) {
        (Case::Overlap, 0) => "export SHARD_IDS=0-3;",
        (Case::Overlap, 1) => "export SHARD_IDS=2-5;",
        (Case::Overlap, _) => "export SHARD_IDS=0-5;",
        _ => "unset SHARD_IDS;",
    };
    format!("export GATEHOUSE_CLUSTER=conformance GATEHOUSE_CLUSTER_LEASE_MS={LEASE_MS}; {shards} ")
}

/// The members besides the context's own implementation (member 0).
struct Others {
    processes: Vec<Option<ImplProcess>>,
    starts: usize,
}

impl Others {
    fn start(&mut self, ctx: &Context, case: Case, index: usize) -> Result<(), Failure> {
        self.starts += 1;
        let label = format!("member{index}.{}", self.starts);
        self.processes[index - 1] = Some(ctx.start_member(&label, &member_prefix(case, index))?);
        Ok(())
    }

    fn exited(&mut self) -> Option<String> {
        self.processes.iter_mut().enumerate().find_map(|(i, p)| {
            let status = p.as_mut()?.exit_status()?;
            Some(format!(
                "member {} exited ({status}) before it was stopped: {}",
                i + 1,
                p.as_ref().map(|p| p.log_tail(8)).unwrap_or_default()
            ))
        })
    }

    async fn stop_all(&mut self) {
        for process in self.processes.iter_mut().flatten() {
            process.stop(crate::contract::STOP_GRACE).await;
        }
    }
}

async fn run(ctx: &mut Context, case: Case) -> Result<(), Failure> {
    let started = Instant::now();
    let mut others = Others {
        processes: (1..MEMBERS).map(|_| None).collect(),
        starts: 0,
    };
    let result = scenario(ctx, case, &mut others).await;
    let exited = others.exited();
    others.stop_all().await;
    let mut problems: Vec<String> = result.err().map(|f| f.message).into_iter().collect();
    problems.extend(exited);
    let recording = ctx.gateway.recorder().snapshot();
    problems.extend(identify_violations(&recording));
    problems.extend(double_sessions(&recording, started));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::fail(problems.join("; ")))
    }
}

async fn scenario(ctx: &mut Context, case: Case, others: &mut Others) -> Result<(), Failure> {
    let load = matches!(case, Case::Kill | Case::Rolling | Case::Reshard);
    let worker_url = ctx.env.amqp_url.clone();
    let counter = if load {
        Some(FaultRun::workers(ctx, &worker_url).await?)
    } else {
        None
    };
    let rss = FaultRun::sampler(ctx);
    ctx.set_command_prefix(member_prefix(case, 0));
    ctx.start_implementation()?;
    for index in 1..MEMBERS {
        others.start(ctx, case, index)?;
    }
    let rounds = SHARDS.div_ceil(ctx.gateway.config().max_concurrency.max(1));
    let startup = crate::contract::STARTUP_BUDGET + ctx.gateway.config().identify_window * rounds;
    every_shard_live(ctx, "the cluster started", startup, shards(case)).await?;
    let Some(counter) = counter else {
        // Let the cluster settle (placement, hand-overs) and look again.
        ctx.observe(Duration::from_secs(5)).await?;
        return every_shard_live(ctx, "the cluster settled", startup, SHARDS).await;
    };
    let mut run = if case == Case::Reshard {
        // Guilds 0..16 << 22: each lands on every shard of 4 and of 8 (twice over).
        let load = fault::Load::by_guild(ctx.gateway.control(), 16, fault::marker_prefix(ctx));
        FaultRun::with_load(counter, rss, load)
    } else {
        FaultRun::with(ctx, counter, rss)
    };
    let ready_at = Instant::now();
    let mut switched = None;
    run.note(ctx.observe(scaled(LEAD)).await);
    match case {
        Case::Kill => {
            if let Some(mut victim) = others.processes[MEMBERS - 2].take() {
                victim.kill().await;
            }
            run.note(every_shard_live(ctx, "a member was SIGKILLed", TAKEOVER, SHARDS).await);
            run.note(ctx.observe(scaled(LEAD)).await);
        }
        Case::Rolling => {
            for index in 0..MEMBERS {
                if index == 0 {
                    run.note(ctx.terminate_implementation().await);
                } else if let Some(mut process) = others.processes[index - 1].take() {
                    process.stop(crate::contract::STOP_GRACE).await;
                }
                let why = format!("member {index} was stopped");
                run.note(every_shard_live(ctx, &why, TAKEOVER, SHARDS).await);
                if index == 0 {
                    run.note(ctx.start_implementation());
                } else {
                    run.note(others.start(ctx, case, index));
                }
                // The new process takes its share back (hand-overs) before the next stop.
                run.note(ctx.observe(scaled(LEAD)).await);
                let why = format!("member {index} was started again");
                run.note(every_shard_live(ctx, &why, TAKEOVER, SHARDS).await);
            }
        }
        Case::Reshard => {
            let result = reshard(ctx).await;
            switched = result.as_ref().ok().copied();
            run.note(result.map(drop));
            run.note(ctx.observe(scaled(LEAD)).await);
        }
        Case::Start(_) | Case::Overlap => {}
    }
    if case == Case::Reshard {
        // The new set identifies by design, before the switch; after it, none may.
        if let Some(at) = switched {
            let identified = ctx
                .gateway
                .read(|r| identified_since(r, at, Some(RESHARD_TO)));
            if !identified.is_empty() {
                run.problem(format!(
                    "shards {identified:?} of {RESHARD_TO} identified afresh after the switch instead of resuming: what their previous sessions had not read is lost"
                ));
            }
        }
        if let Some(exited) = others.exited() {
            run.problem(exited);
        }
        return run.finish(ctx).await.map(drop);
    }
    let identified = ctx.gateway.read(|r| identified_since(r, ready_at, None));
    if !identified.is_empty() {
        run.problem(format!(
            "shards {identified:?} identified afresh after the cluster was up instead of resuming: Discord's replay of the missed events is lost"
        ));
    }
    if let Some(exited) = others.exited() {
        run.problem(exited);
    }
    run.finish(ctx).await.map(drop)
}

/// Asks for the re-shard in Redis (as `gatehouse reshard --to 8` does) and waits until the
/// cluster switched to 8 shards, every one of them live, and no session of 4 shards is left
/// (see [`RETIRE_GRACE`]).
/// Returns when the switch was seen.
async fn reshard(ctx: &mut Context) -> Result<Instant, Failure> {
    let counts = ":cluster:conformance:shards";
    let current = ctx
        .redis
        .hash_get(counts, "current")
        .await
        .map_err(|e| Failure::error(e.to_string()))?;
    if current.as_deref() != Some("4") {
        return Err(Failure::fail(format!(
            "the cluster recorded the shard count {current:?} in Redis, not 4"
        )));
    }
    ctx.redis
        .hash_set(counts, "target", &RESHARD_TO.to_string())
        .await
        .map_err(|e| Failure::error(e.to_string()))?;
    ctx.wait_for_async(
        "the cluster to switch to 8 shards",
        RESHARD_TIME,
        |c: &Context| {
            Box::pin(async move {
                let current = c.redis.hash_get(counts, "current").await.ok().flatten();
                (current.as_deref() == Some("8")).then_some(())
            })
        },
    )
    .await?;
    let switched = Instant::now();
    let recorder = ctx.gateway.recorder();
    ctx.wait_for(
        "every shard of 8 live and every session of 4 closed",
        RESHARD_TIME + RETIRE_GRACE,
        |_| {
            recorder.read(|r| {
                let live = |count: u32| {
                    r.connections
                        .iter()
                        .filter(|c| c.close.is_none())
                        .filter_map(|c| c.shard)
                        .filter(|s| s[1] == count)
                        .map(|s| s[0])
                        .collect::<std::collections::BTreeSet<u32>>()
                };
                (live(RESHARD_TO).len() == RESHARD_TO as usize && live(RESHARD_FROM).is_empty())
                    .then_some(())
            })
        },
    )
    .await
    .map(|()| switched)
}

/// The shards (of `count` shards, if given) that sent an IDENTIFY after `since`.
fn identified_since(rec: &Recording, since: Instant, count: Option<u32>) -> Vec<u32> {
    rec.identifies
        .iter()
        .filter(|i| i.at > since)
        .filter_map(|i| i.shard)
        .filter(|s| count.is_none_or(|c| s[1] == c))
        .map(|s| s[0])
        .collect()
}

/// Waits until every one of `count` shards has a live session.
async fn every_shard_live(
    ctx: &mut Context,
    why: &str,
    timeout: Duration,
    count: u32,
) -> Result<(), Failure> {
    let shards: Vec<u32> = (0..count).collect();
    let recorder = ctx.gateway.recorder();
    ctx.wait_for(
        &format!("a live session of every shard after {why}"),
        timeout,
        |_| recorder.read(|r| gateway::live_sessions(r, &shards)),
    )
    .await
    .map(drop)
}

/// IDENTIFYs that broke Discord's limits, whichever processes sent them.
fn identify_violations(rec: &Recording) -> Vec<String> {
    gateway::counted(
        rec.violations
            .iter()
            .filter(|v| {
                matches!(
                    v.kind,
                    ViolationKind::IdentifyBucket { .. }
                        | ViolationKind::SessionStartLimitExhausted
                )
            })
            .map(gateway::describe),
    )
}

/// Shards that had two live sessions at once: a session lives from its successful IDENTIFY or
/// RESUME until its connection closed.
fn double_sessions(rec: &Recording, since: Instant) -> Vec<String> {
    let mut started: BTreeMap<u64, Instant> = BTreeMap::new();
    for identify in &rec.identifies {
        if matches!(identify.outcome, IdentifyOutcome::Ready { .. }) {
            started.entry(identify.connection.0).or_insert(identify.at);
        }
    }
    for resume in &rec.resumes {
        if matches!(resume.outcome, ResumeOutcome::Resumed { .. }) {
            started.entry(resume.connection.0).or_insert(resume.at);
        }
    }
    let mut per_shard: BTreeMap<[u32; 2], Vec<(Instant, Option<Instant>)>> = BTreeMap::new();
    for connection in &rec.connections {
        let (Some(shard), Some(&from)) = (connection.shard, started.get(&connection.id.0)) else {
            continue;
        };
        if from < since {
            continue;
        }
        let until = connection.close.as_ref().map(|c| c.at);
        per_shard.entry(shard).or_default().push((from, until));
    }
    let mut problems = Vec::new();
    for (shard, mut sessions) in per_shard {
        sessions.sort_by_key(|s| s.0);
        for pair in sessions.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            if earlier.1.is_none_or(|end| end > later.0) {
                problems.push(format!(
                    "shard {shard:?} had two live sessions at once (a second one started {} after the first while it was still open)",
                    crate::scenarios::ms(later.0 - earlier.0)
                ));
                break;
            }
        }
    }
    problems
}
