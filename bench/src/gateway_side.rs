//! The gateway side alone beside twilight-gateway (issue 13, item 3; PERFORMANCE.md item 2):
//! one `gatehouse` shard with publishing switched off (the null output of a binary built with
//! feature `bench`: every publication is acknowledged at once and dropped; no Redis) reading
//! the mock's replay as fast as it can, and in the same invocation one twilight-gateway shard
//! reading the same replay as raw messages and, typed, as `next_event` with every event type.
//!
//! Owns: the Gatehouse side of that scenario and the comparison. Does not own the twilight
//! client (`twilight`) nor the mock settings (`e2e::mock_config`).
//!
//! Gatehouse's progress is read from its own metrics endpoint (`gatehouse_events_published_total`,
//! every 50 ms); the rate and the CPU (`utime + stime` of the process) are taken between the 5%
//! and 95% marks, as for twilight.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mock_gateway::{Fixture, MockGateway};

use crate::e2e::mock_config;
use crate::services::{self, Gatehouse, TOKEN};

/// One client's steady figures.
#[derive(Clone, Debug)]
pub struct Rate {
    pub events_per_second: f64,
    pub cpu_per_million: f64,
    pub load_before: String,
    pub load_after: String,
}

/// The sum of `gatehouse_events_published_total` over its labels.
fn published(agent: &ureq::Agent, url: &str) -> Result<u64> {
    let text = agent.get(url).call()?.body_mut().read_to_string()?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("gatehouse_events_published_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// One `gatehouse` shard (null output, no Redis) reading `fixture` as fast as it can.
pub fn gatehouse_null(
    binary: &Path,
    fixture: &Fixture,
    compress: &str,
    log_dir: &Path,
) -> Result<Rate> {
    let mock = MockGateway::start(mock_config(1, fixture.clone()))?;
    let metrics_address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let config = log_dir.join("gatehouse-gateway-side.toml");
    // No Redis: twilight persists nothing either.
    std::fs::write(&config, "[redis]\nenabled = false\n")?;
    let env = vec![
        ("DISCORD_TOKEN", TOKEN.to_owned()),
        ("DISCORD_API_BASE", mock.api_base()),
        ("SHARD_COUNT", "1".to_owned()),
        ("DISCORD_COMPRESS", compress.to_owned()),
        ("GATEHOUSE_CONFIG", config.display().to_string()),
        ("GATEHOUSE_METRICS_ADDRESS", metrics_address.to_string()),
        ("GATEHOUSE_BENCH_NULL_OUTPUT", "1".to_owned()),
    ];
    let load_before = services::load_average();
    let log = log_dir.join("gatehouse-gateway-side.log");
    let gatehouse = Gatehouse::start(binary, &env, &log)?;
    let pid = gatehouse.pid();
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let url = format!("http://{metrics_address}/metrics");
    // READY is published too.
    let expected = fixture.len() as u64 + 1;
    let (lo, hi) = (expected / 20, expected - expected / 20);
    let mut start = None;
    let mut last = (Instant::now(), 0);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let count = published(&agent, &url).unwrap_or(0);
        let now = Instant::now();
        if count != last.1 {
            last = (now, count);
        } else if now.duration_since(last.0) > Duration::from_secs(60) {
            bail!(
                "gatehouse stopped at {count} of {expected} events (see {})",
                log.display()
            );
        }
        if count >= lo && start.is_none() {
            start = Some((now, count, services::cpu_seconds(pid)));
        }
        if count >= hi {
            let (t0, n0, c0) = start.context("lo < hi")?;
            let cpu = services::cpu_seconds(pid) - c0;
            let n = (count - n0) as f64;
            let rate = Rate {
                events_per_second: n / now.duration_since(t0).as_secs_f64(),
                cpu_per_million: cpu / n * 1e6,
                load_before,
                load_after: services::load_average(),
            };
            drop(gatehouse);
            return Ok(rate);
        }
    }
}

/// The twilight event types of `fixture` that `next_event` delivers (it skips, silently, the
/// dispatches whose name twilight-model does not know).
pub fn twilight_modelled(fixture: &Fixture) -> (usize, Vec<String>) {
    let mut unknown: Vec<String> = Vec::new();
    let mut known = 0;
    for event in fixture.events() {
        if crate::twilight::knows(&event.name) {
            known += 1;
        } else if !unknown.iter().any(|u| u == &*event.name) {
            unknown.push(event.name.to_string());
        }
    }
    (known, unknown)
}
