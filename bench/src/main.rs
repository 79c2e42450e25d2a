//! `gatehouse-bench`: benchmarks of the whole `gatehouse` binary against RabbitMQ and Redis
//! (PERFORMANCE.md items 3, 4 and 5; BENCHMARKS.md has the results and the commands).
//!
//! ```sh
//! cargo build --release -p runtime-tokio            # in the main workspace: target/release/gatehouse
//! cd bench && cargo run --release -- e2e --events 60000 --rounds 2 --shards 1,16,256
//! cd bench && cargo run --release -- memory --shards 10,1000,2500 --compress zlib-stream,none
//! cd bench && cargo run --release --features twilight-zlib -- twilight-memory --shards 10,1000
//! cd bench && cargo run --release --features twilight -- twilight-memory --shards 10,1000
//! # added latency: gatehouse's two histograms beside plain lapin, persistent or transient
//! cd bench && cargo run --release -- latency --rate 3500 --seconds 20 --transient yes --charts charts
//! # the twilight-dispatch-style pipeline beside gatehouse (native and twilight-dispatch profiles)
//! cd bench && cargo run --release --features twilight-zlib -- e2e --twilight-dispatch yes \
//!     --profiles gatehouse,twilight-dispatch
//! # memory.svg from the memory.csv that `memory`/`twilight-memory --charts charts` append to
//! cd bench && cargo run --release -- charts --charts charts
//! # the AMQP clients alone, each in a child process: plain lapin, lapin as Gatehouse drives it,
//! # amqprs (current_thread and multi_thread), rounds alternating (issue 13, item 1)
//! cd bench && cargo run --release -- publishers --events 60000 --rounds 3 \
//!     --clients lapin,lapin-batched,amqprs,amqprs-mt [--mandatory yes] [--perf-dir perf]
//! # gatehouse end to end with each AMQP client (GATEHOUSE_AMQP_CLIENT), CPU per message vs plain lapin
//! cd bench && cargo run --release -- e2e --events 60000 --rounds 2 --clients lapin,amqprs
//! # what lapin and amqprs report for routed, returned and nacked messages and a closed connection
//! cd bench && cargo run --release -- guarantees
//! # the gateway side alone (gatehouse built with `--features bench`: null output) beside twilight:
//! cd bench && cargo run --release --features twilight-zlib -- gateway-side --events 200000 --rounds 2
//! ```
//!
//! Options: `--gatehouse <path>` (default `../target/release/gatehouse`; `e2e` takes a comma
//! list and runs each binary in turn), `--fixture <name or .jsonl>` (default `basic`),
//! `--log-dir <dir>` (default the temp dir), `--charts <dir>` (write SVG charts and their CSV
//! there: `e2e` with several shard counts, `latency`, `memory`). Needs RabbitMQ with the
//! management API on 127.0.0.1 (guest/guest) and Redis (`scripts/services.sh`).

mod charts;
mod e2e;
#[cfg(feature = "twilight")]
mod gateway_side;
mod guarantees;
mod memory;
mod publishers;
mod services;
#[cfg(feature = "twilight")]
mod twilight;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

struct Args {
    command: String,
    options: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = std::env::args().skip(1);
        let command = args.next().unwrap_or_default();
        let mut options = HashMap::new();
        while let Some(key) = args.next() {
            let Some(name) = key.strip_prefix("--") else {
                bail!("unexpected argument {key}");
            };
            let value = args
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            options.insert(name.to_owned(), value);
        }
        Ok(Self { command, options })
    }

    fn get(&self, name: &str, default: &str) -> String {
        self.options
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.options.get(name) {
            Some(v) => v.parse().ok().with_context(|| format!("--{name}: {v}")),
            None => Ok(default),
        }
    }

    fn list<T: std::str::FromStr>(&self, name: &str, default: &str) -> Result<Vec<T>> {
        self.get(name, default)
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .ok()
                    .with_context(|| format!("--{name}: {v}"))
            })
            .collect()
    }
}

/// One run of the twilight-dispatch-style pipeline: its steady rate and CPU per million.
#[cfg(feature = "twilight")]
async fn twilight_dispatch_reference(
    fixture_name: &str,
    events: usize,
) -> Result<Option<(f64, Option<f64>)>> {
    let corpus = e2e::corpus(fixture_name, events)?;
    let run = e2e::through_twilight_dispatch(&corpus).await?;
    run.print();
    Ok(Some((run.steady_rate, run.cpu_per_million)))
}

#[cfg(not(feature = "twilight"))]
async fn twilight_dispatch_reference(
    _fixture_name: &str,
    _events: usize,
) -> Result<Option<(f64, Option<f64>)>> {
    bail!("--twilight-dispatch yes needs --features twilight-zlib (or twilight)")
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    // A publisher of `publishers`, in its own process with its own runtime.
    if args.command == publishers::CHILD_COMMAND {
        return publishers::child(&args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let binary = PathBuf::from(args.get(
        "gatehouse",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/gatehouse"),
    ));
    // Absolute, because `gatehouse` runs in the temp dir.
    let binary = std::fs::canonicalize(&binary).unwrap_or(binary);
    let log_dir = PathBuf::from(args.get("log-dir", &std::env::temp_dir().to_string_lossy()));
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        services::load_average()
    );
    match args.command.as_str() {
        "e2e" => {
            let events: usize = args.number("events", 60_000)?;
            let rounds: usize = args.number("rounds", 2)?;
            let window: usize = args.number("window", 1000)?;
            let shard_counts: Vec<u32> = args.list("shards", "1")?;
            let compress = args.get("compress", "zlib-stream");
            let fixture_name = args.get("fixture", "basic");
            let skip_ceiling = args.get("ceiling", "yes") == "no";
            // GATEHOUSE_PROFILE of the gatehouse runs (`gatehouse` is the native one), one run
            // per profile and shard count.
            let profiles: Vec<String> = args.list("profiles", "gatehouse")?;
            // GATEHOUSE_AMQP_CLIENT of the gatehouse runs (issue 13, item 1): one run per
            // client, each compared with this round's plain lapin publisher.
            let clients: Vec<String> = args.list("clients", "lapin")?;
            // The twilight-dispatch-style pipeline (needs the `twilight` features), one shard.
            let twilight_dispatch = args.get("twilight-dispatch", "no") == "yes";
            // `--gatehouse a,b`: each gatehouse run once per binary, in this order.
            let binaries: Vec<PathBuf> = binary
                .to_string_lossy()
                .split(',')
                .map(|b| std::fs::canonicalize(b).unwrap_or_else(|_| PathBuf::from(b)))
                .collect();
            let mut scaling_rows = Vec::new();
            for round in 1..=rounds {
                println!("-- round {round}");
                let mut ceiling = None;
                let mut ceiling_cpu = None;
                if !skip_ceiling {
                    let corpus = e2e::corpus(&fixture_name, events)?;
                    let run = e2e::plain_lapin(&e2e::dispatch_bodies(&corpus), window).await?;
                    run.print();
                    ceiling = Some(run.steady_rate);
                    ceiling_cpu = run.cpu_per_million;
                }
                let reference = if twilight_dispatch {
                    twilight_dispatch_reference(&fixture_name, events).await?
                } else {
                    None
                };
                let runs: Vec<(&PathBuf, &String, &String)> = binaries
                    .iter()
                    .flat_map(|b| profiles.iter().map(move |p| (b, p)))
                    .flat_map(|(b, p)| clients.iter().map(move |c| (b, p, c)))
                    .collect();
                for (binary, profile, client) in runs {
                    for &shards in &shard_counts {
                        // The same number of events in total, spread over the shards.
                        let per_shard = (events / shards as usize).max(1);
                        let corpus = e2e::corpus(&fixture_name, per_shard)?;
                        let run = e2e::through_gatehouse(&e2e::GatehouseRun {
                            binary,
                            fixture: &corpus,
                            shards,
                            compress: &compress,
                            profile,
                            client,
                            log_dir: &log_dir,
                        })
                        .await?;
                        if binaries.len() > 1 {
                            println!("{}:", binary.display());
                        }
                        run.print();
                        if let Some(ceiling) = ceiling {
                            println!(
                                "{:<34} {:.1}% of this round's plain lapin",
                                "",
                                100.0 * run.steady_rate / ceiling
                            );
                        }
                        if let (Some(cpu), Some(plain)) = (run.cpu_per_million, ceiling_cpu) {
                            println!(
                                "{:<34} {:.2}x this round's plain lapin's CPU per message",
                                "",
                                cpu / plain
                            );
                        }
                        if let Some((rate, cpu)) = reference {
                            println!(
                                "{:<34} {:.2}x the twilight-dispatch pipeline's msg/s, {} its CPU per event",
                                "",
                                run.steady_rate / rate,
                                match (run.cpu_per_million, cpu) {
                                    (Some(a), Some(b)) => format!("{:.2}x", a / b),
                                    _ => "-".into(),
                                }
                            );
                        }
                        if profile == "gatehouse" && binary == &binaries[0] && client == &clients[0]
                        {
                            scaling_rows.push((round, shards, run));
                        }
                    }
                }
            }
            if let Some(dir) = args.options.get("charts")
                && shard_counts.len() > 1
            {
                charts::scaling(std::path::Path::new(dir), &scaling_rows)?;
            }
        }
        "publishers" => {
            publishers::compare(&publishers::Rounds {
                clients: args.get("clients", "lapin,lapin-batched,amqprs,amqprs-mt"),
                rounds: args.number("rounds", 3)?,
                events: args.number("events", 60_000)?,
                window: args.number("window", 1000)?,
                fixture: args.get("fixture", "basic"),
                mandatory: args.get("mandatory", "no") == "yes",
                perf_dir: args.options.get("perf-dir").map(PathBuf::from),
            })
            .await?;
        }
        "guarantees" => guarantees::check().await?,
        "memory" => {
            let shard_counts: Vec<u32> = args.list("shards", "10,1000")?;
            let compressions: Vec<String> = args.list("compress", "zlib-stream,none")?;
            let settle = Duration::from_secs(args.number("settle", 15)?);
            for compress in &compressions {
                let mut results = Vec::new();
                for &shards in &shard_counts {
                    let idle =
                        memory::idle_shards(&binary, shards, compress, settle, &log_dir).await?;
                    println!(
                        "{:>5} idle shards, {:<11}: VmRSS {:>8} KiB, CPU {:.2}% of a core ({} heartbeating; load {})",
                        idle.shards,
                        idle.compress,
                        idle.rss_kib,
                        idle.cpu_percent,
                        idle.heartbeating,
                        idle.load
                    );
                    if let Some(dir) = args.options.get("charts") {
                        charts::append_memory(
                            std::path::Path::new(dir),
                            "gatehouse",
                            compress,
                            idle.shards,
                            idle.rss_kib,
                            &idle.load,
                        )?;
                    }
                    results.push(idle);
                }
                if let (Some(small), Some(large)) = (results.first(), results.last())
                    && large.shards > small.shards
                {
                    let per_shard = (large.rss_kib as f64 - small.rss_kib as f64)
                        / f64::from(large.shards - small.shards);
                    println!(
                        "{compress}: {per_shard:.1} KiB per shard (({} - {}) / {})",
                        large.rss_kib,
                        small.rss_kib,
                        large.shards - small.shards
                    );
                }
            }
        }
        "latency" => {
            let rate: f64 = args.number("rate", 3000.0)?;
            let seconds: f64 = args.number("seconds", 20.0)?;
            let compress = args.get("compress", "zlib-stream");
            // Transient: a non-durable sink queue (and transient messages from plain lapin),
            // so the broker confirms without syncing to disk.
            let transient = args.get("transient", "no") == "yes";
            let corpus = e2e::corpus(&args.get("fixture", "basic"), (rate * seconds) as usize)?;
            let kind = if transient { "transient" } else { "persistent" };
            let mut lapin_latencies = None;
            if args.get("ceiling", "yes") != "no" {
                let load = services::load_average();
                let latencies =
                    e2e::plain_lapin_latency(&e2e::dispatch_bodies(&corpus), rate, transient)
                        .await?;
                let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
                println!(
                    "plain lapin at {rate:.0}/s, {kind}, publish -> confirm: p50 {:?}, p90 {:?}, p99 {:?}, max {:?} (load {load} -> {})",
                    at(0.5),
                    at(0.9),
                    at(0.99),
                    at(1.0),
                    services::load_average()
                );
                lapin_latencies = Some(latencies);
            }
            let run = e2e::latency_at_rate(&binary, &corpus, rate, &compress, !transient, &log_dir)
                .await?;
            for (what, buckets) in [
                ("frame arrival -> broker confirm", &run.confirm),
                ("frame arrival -> lapin hand-off", &run.handoff),
            ] {
                let total = buckets.last().map_or(0, |b| b.1).max(1);
                let quantile = |q: f64| {
                    e2e::bucket_quantile(buckets, q).map_or("-".to_owned(), |(e, lo, hi)| {
                        format!("{:.3} ms ({:.2}-{:.2})", e * 1e3, lo * 1e3, hi * 1e3)
                    })
                };
                println!(
                    "gatehouse {kind}, {total} events at {rate:.0}/s, {what} (load {} -> {}): p50 {}, p90 {}, p99 {}",
                    run.load_before,
                    run.load_after,
                    quantile(0.5),
                    quantile(0.9),
                    quantile(0.99)
                );
                for (bound, count) in buckets {
                    println!(
                        "  <= {:>8} ms: {:>6.2}%",
                        if bound.is_finite() {
                            format!("{:.2}", bound * 1e3)
                        } else {
                            "inf".into()
                        },
                        100.0 * *count as f64 / total as f64
                    );
                }
            }
            if let Some(dir) = args.options.get("charts") {
                charts::latency_cdf(
                    std::path::Path::new(dir),
                    kind,
                    rate,
                    lapin_latencies.as_deref(),
                    &run,
                )?;
            }
        }
        #[cfg(feature = "twilight")]
        "twilight-shards" => {
            let url = args.get("url", "");
            twilight::run_shards(url, args.number("shards", 1)?).await?;
        }
        #[cfg(feature = "twilight")]
        "twilight-client" => {
            let typed = args.get("mode", "raw") == "typed";
            twilight::run_rate_client(args.get("url", ""), args.number("events", 1)?, typed)
                .await?;
        }
        #[cfg(feature = "twilight")]
        "twilight-rate" => {
            let corpus = e2e::corpus(
                &args.get("fixture", "basic"),
                args.number("events", 200_000)?,
            )?;
            for round in 1..=args.number("rounds", 2)? {
                println!("-- round {round}");
                twilight::rate(&corpus, false)?;
                twilight::rate(&corpus, true)?;
            }
        }
        #[cfg(feature = "twilight")]
        "gateway-side" => {
            let corpus = e2e::corpus(
                &args.get("fixture", "basic"),
                args.number("events", 200_000)?,
            )?;
            let compress = twilight::COMPRESSION;
            let (known, unknown) = gateway_side::twilight_modelled(&corpus);
            println!(
                "{} events, {compress}; twilight's next_event skips {} of them (types it does not model: {})",
                corpus.len(),
                corpus.len() - known,
                unknown.join(", ")
            );
            let row = |what: &str, r: &gateway_side::Rate, base: Option<&gateway_side::Rate>| {
                let ratio = base
                    .map(|b| {
                        format!(
                            "  {:.2}x twilight raw's CPU per event",
                            r.cpu_per_million / b.cpu_per_million
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{what:<44} {:>8.0} events/s  {:>6.2} CPU-s per million{ratio}  (load {} -> {})",
                    r.events_per_second, r.cpu_per_million, r.load_before, r.load_after
                );
            };
            let typed = args.get("typed", "yes") != "no";
            for round in 1..=args.number("rounds", 2)? {
                println!("-- round {round}");
                let raw = twilight::rate(&corpus, false)?;
                row("twilight-gateway raw messages", &raw, None);
                let gatehouse = gateway_side::gatehouse_null(&binary, &corpus, compress, &log_dir)?;
                row(
                    "gatehouse, null output (publishing off)",
                    &gatehouse,
                    Some(&raw),
                );
                if typed {
                    let typed = twilight::rate(&corpus, true)?;
                    row("twilight-gateway typed next_event", &typed, Some(&raw));
                }
            }
        }
        #[cfg(feature = "twilight")]
        "twilight-memory" => {
            let shard_counts: Vec<u32> = args.list("shards", "10,1000")?;
            let settle = Duration::from_secs(args.number("settle", 15)?);
            let mut results = Vec::new();
            for &shards in &shard_counts {
                let (rss, heartbeating) = twilight::idle_shards(shards, settle).await?;
                println!(
                    "{shards:>5} idle twilight-gateway shards, {:<11}: VmRSS {rss:>8} KiB ({heartbeating} heartbeating; load {})",
                    twilight::COMPRESSION,
                    services::load_average()
                );
                if let Some(dir) = args.options.get("charts") {
                    charts::append_memory(
                        std::path::Path::new(dir),
                        "twilight-gateway",
                        twilight::COMPRESSION,
                        shards,
                        rss,
                        &services::load_average(),
                    )?;
                }
                results.push((shards, rss));
            }
            if let (Some(small), Some(large)) = (results.first(), results.last())
                && large.0 > small.0
            {
                println!(
                    "twilight-gateway {}: {:.1} KiB per shard",
                    twilight::COMPRESSION,
                    (large.1 as f64 - small.1 as f64) / f64::from(large.0 - small.0)
                );
            }
        }
        #[cfg(feature = "twilight")]
        "twilight-dispatch-pipeline" => {
            twilight::run_dispatch_pipeline(args.get("url", ""), args.get("amqp", "")).await?;
        }
        "charts" => {
            charts::memory(std::path::Path::new(&args.get("charts", "charts")))?;
        }
        other => bail!(
            "unknown command {other:?}: use `e2e`, `publishers`, `guarantees`, `latency`, `memory`, `charts` or (feature `twilight`) `gateway-side`, `twilight-rate`, `twilight-memory`"
        ),
    }
    Ok(())
}
