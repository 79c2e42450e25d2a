//! The broker faults, each under load, each passing only with every event in a worker queue:
//!
//! - `fault-broker-cut`: the implementation's broker connection goes through the suite's proxy,
//!   which closes it and refuses new ones for 10 s;
//! - `fault-broker-stall`: the proxy forwards nothing for 60 s (no confirms, connections open);
//! - `fault-broker-alarm`: a private RabbitMQ node raises a memory alarm for 60 s
//!   (`set_vm_memory_high_watermark 0`), which blocks every publishing connection;
//! - `fault-broker-restart`: a private node is restarted (`rabbitmqctl stop_app`, 5 s,
//!   `start_app`) while the workers are away, so what sits in the queues must survive it.
//!
//! During every one of them each shard must stay connected to Discord and keep heartbeating (one
//! connection, no close, heartbeats at the interval): a broker problem must not become a Discord
//! problem. Durations scale with `CONFORMANCE_FAULT_SCALE`.

use std::time::{Duration, Instant};

use crate::private_services::PrivateRabbit;
use crate::profiles::Profile;
use crate::proxy::Proxy;
use crate::scenario::{Context, Failure, Requirement, Scenario, ScenarioFuture, Setup};
use crate::scenarios::fault::{self, FaultRun, SHARDS, live_connections, scaled, stayed_connected};
use crate::scenarios::fault_process::LEAD;

/// Which broker fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerFault {
    /// Connections closed and refused.
    Cut,
    /// Nothing forwarded.
    Stall,
    /// A resource alarm (private node).
    Alarm,
    /// `stop_app` / `start_app` (private node).
    Restart,
}

impl BrokerFault {
    /// Every broker fault.
    pub const ALL: [BrokerFault; 4] = [Self::Cut, Self::Stall, Self::Alarm, Self::Restart];

    /// How long the fault lasts at full scale.
    pub fn length(self) -> Duration {
        match self {
            Self::Cut => Duration::from_secs(10),
            Self::Stall | Self::Alarm => Duration::from_secs(60),
            Self::Restart => Duration::from_secs(5),
        }
    }
}

impl Scenario for BrokerFault {
    fn requirement(&self, profile: Profile) -> Option<Requirement> {
        // Zero loss under faults is Gatehouse's promise (RELIABILITY.md), not the predecessors'.
        Requirement::native_only(profile)
    }

    fn name(&self) -> String {
        match self {
            Self::Cut => "fault-broker-cut",
            Self::Stall => "fault-broker-stall",
            Self::Alarm => "fault-broker-alarm",
            Self::Restart => "fault-broker-restart",
        }
        .into()
    }

    fn description(&self) -> String {
        match self {
            Self::Cut => "broker connection cut for 10 s under load: shards stay up, no event missing",
            Self::Stall => "broker link stalled 60 s (no confirms): shards keep heartbeating, no event missing",
            Self::Alarm => "memory alarm for 60 s (private node): shards keep heartbeating, no event missing",
            Self::Restart => "broker restart (private node, stop_app/start_app): no queued or unconfirmed event missing",
        }
        .into()
    }

    fn setup(&self, _profile: Profile) -> Setup {
        Setup::default()
            .with_shards(SHARDS)
            .with_max_concurrency(SHARDS)
    }

    fn budget(&self) -> Duration {
        let private = match self {
            Self::Alarm | Self::Restart => Duration::from_secs(100),
            _ => Duration::ZERO,
        };
        fault::budget(Duration::from_secs(200) + private, LEAD * 3 + self.length())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> ScenarioFuture<'a> {
        Box::pin(run(ctx, *self))
    }
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> Result<String, Failure> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| Failure::error(format!("bad AMQP URL: {e}")))?;
    parsed
        .set_ip_host(addr.ip())
        .and_then(|()| parsed.set_port(Some(addr.port())))
        .map_err(|()| Failure::error("cannot rewrite the AMQP URL"))?;
    Ok(parsed.to_string())
}

/// The broker address of an AMQP URL.
fn upstream(url: &str) -> Result<std::net::SocketAddr, Failure> {
    let parsed = url::Url::parse(url).map_err(|e| Failure::error(format!("bad AMQP URL: {e}")))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(5672);
    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv4()))
        .ok_or_else(|| Failure::error(format!("cannot resolve the broker {host}:{port}")))
}

async fn proxy_to(addr: std::net::SocketAddr) -> Result<Proxy, Failure> {
    Proxy::start(addr)
        .await
        .map_err(|e| Failure::error(format!("cannot start the proxy: {e}")))
}

async fn run(ctx: &mut Context, fault: BrokerFault) -> Result<(), Failure> {
    let service = |e: crate::private_services::ServiceError| Failure::error(e.to_string());
    // Where the workers connect (directly) and what the implementation gets (maybe a proxy).
    let mut rabbit: Option<PrivateRabbit> = None;
    let mut proxy: Option<Proxy> = None;
    let worker_url = match fault {
        BrokerFault::Cut | BrokerFault::Stall => {
            let worker_url = ctx.env.amqp_url.clone();
            let p = proxy_to(upstream(&worker_url)?).await?;
            ctx.env.amqp_url = via(&worker_url, p.addr())?;
            proxy = Some(p);
            worker_url
        }
        BrokerFault::Alarm | BrokerFault::Restart => {
            let node = PrivateRabbit::start(&ctx.env.scenario)
                .await
                .map_err(service)?;
            let worker_url = node.amqp_url();
            if fault == BrokerFault::Restart {
                // The proxy keeps the implementation away until the workers are back (so their
                // bindings exist again before anything is published).
                let p = proxy_to(node.addr()).await?;
                ctx.env.amqp_url = via(&worker_url, p.addr())?;
                proxy = Some(p);
            } else {
                ctx.env.amqp_url = worker_url.clone();
            }
            rabbit = Some(node);
            worker_url
        }
    };
    let mut run = FaultRun::begin(ctx, &worker_url).await?;
    let lead = ctx.observe(scaled(LEAD)).await;
    run.note(lead);

    let interval = ctx.gateway.config().heartbeat_interval;
    let shards = ctx.setup.shard_ids.clone();
    let before = ctx.gateway.read(|r| live_connections(r, &shards));
    if let Some(p) = &proxy
        && p.accepted() == 0
    {
        return Err(Failure::fail(
            "the implementation never connected to the broker through AMQP_URL (the suite's proxy saw no connection)",
        ));
    }
    let from = Instant::now();
    let length = scaled(fault.length());
    match fault {
        BrokerFault::Cut | BrokerFault::Stall => {
            let p = proxy.as_ref().expect("a proxy for cut and stall");
            if fault == BrokerFault::Cut {
                p.cut();
            } else {
                p.stall();
            }
            let during = ctx.observe(length).await;
            run.note(during);
            p.heal();
        }
        BrokerFault::Alarm => {
            let node = rabbit.as_ref().expect("a private node");
            node.ctl(&["set_vm_memory_high_watermark", "0"])
                .await
                .map_err(service)?;
            // No verdict without the alarm: wait until the node reports it.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let alarms = node
                    .ctl(&["eval", "rabbit_alarm:get_alarms()."])
                    .await
                    .map_err(service)?;
                if alarms.contains("memory") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Failure::error(format!(
                        "the private node reports no memory alarm: {alarms}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let during = ctx.observe(length).await;
            run.note(during);
            node.ctl(&["set_vm_memory_high_watermark", "0.4"])
                .await
                .map_err(service)?;
        }
        BrokerFault::Restart => {
            let node = rabbit.as_mut().expect("a private node");
            let p = proxy.as_ref().expect("a proxy for the restart");
            // The workers go away first, so confirmed events wait in the queues over the restart.
            run.counter.pause();
            let away = ctx.observe(scaled(LEAD)).await;
            run.note(away);
            p.cut();
            node.ctl(&["stop_app"]).await.map_err(service)?;
            let down = ctx.observe(length).await;
            run.note(down);
            node.ctl(&["start_app"]).await.map_err(service)?;
            node.wait_amqp(Duration::from_secs(60))
                .await
                .map_err(service)?;
            run.counter.resume();
            run.counter.wait_consuming(Duration::from_secs(30)).await?;
            p.heal();
        }
    }
    let to = Instant::now();
    let rec = ctx.gateway.recorder().snapshot();
    for problem in stayed_connected(&rec, &before, from, to, interval) {
        run.problem(problem);
    }
    let tail = ctx.observe(scaled(LEAD)).await;
    run.note(tail);
    let result = run.finish(ctx).await.map(drop);
    // The implementation goes before the node it talks to.
    ctx.terminate_implementation().await.ok();
    drop(proxy);
    drop(rabbit);
    result
}
