//! SVG charts of the benchmarks' results (issue 13, item 7), written by hand (no plotting
//! dependency): the latency CDF (`latency --charts <dir>`), scaling (`e2e --charts <dir>`) and
//! memory per shard (`memory`/`twilight-memory --charts <dir>` append to `memory.csv`;
//! `charts --charts <dir>` draws `memory.svg` from it).
//!
//! Owns: the drawing and the small CSV files beside the charts. Does not own any measurement.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::e2e::{LatencyRun, Run};

const WIDTH: f64 = 640.0;
/// The legend's room right of the plot, beyond `WIDTH` (long series names).
const LEGEND_EXTRA: f64 = 130.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart; `log_x` draws the x axis in powers of ten.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> String {
    let fx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| {
        (a.min(fx(x)), b.max(fx(x)))
    });
    let y1 = all.iter().fold(0.0f64, |m, &(_, y)| m.max(y)) * 1.1;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    if log_x {
        (x0, x1) = (x0.floor(), x1.ceil());
    } else {
        x0 = x0.min(0.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (fx(x) - x0) / (x1 - x0) * plot_w;
    let py = |y: f64| TOP + plot_h - y / y1 * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#,
        WIDTH + LEGEND_EXTRA
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="14" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Axes, ticks and grid.
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    for i in 0..=5 {
        let y = y1 / 1.1 * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py(y) + 4.0,
            tick(y),
            y = py(y),
        );
    }
    let x_ticks: Vec<f64> = if log_x {
        (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5)
            .map(|i| x0 + (x1 - x0) * f64::from(i) / 5.0)
            .collect()
    };
    for x in x_ticks {
        let _ = writeln!(
            svg,
            r##"<line y1="{TOP}" y2="{}" x1="{x:.1}" x2="{x:.1}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0,
            tick(x),
            x = px(x),
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        if s.points.len() <= 12 {
            for p in &points {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
            }
        }
        let ly = TOP + 14.0 + 18.0 * i as f64;
        let lx = WIDTH - RIGHT + 10.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;")
}

/// Cumulative buckets as CDF points in milliseconds and percent.
fn bucket_points(buckets: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let total = buckets.last().map_or(0, |b| b.1).max(1) as f64;
    buckets
        .iter()
        .filter(|(bound, _)| bound.is_finite())
        .map(|&(bound, count)| (bound * 1e3, 100.0 * count as f64 / total))
        .collect()
}

/// `latency-<kind>.svg` and `.csv`: the share of events at or under each latency, for
/// Gatehouse's two histograms and the plain lapin publisher's exact latencies.
pub fn latency_cdf(
    dir: &Path,
    kind: &str,
    rate: f64,
    lapin: Option<&[Duration]>,
    run: &LatencyRun,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut series = vec![
        Series {
            name: "gatehouse: arrival -> lapin hand-off".into(),
            points: bucket_points(&run.handoff),
        },
        Series {
            name: "gatehouse: arrival -> confirm".into(),
            points: bucket_points(&run.confirm),
        },
    ];
    let mut csv = String::from("series,ms,percent_at_or_below\n");
    for (name, buckets) in [("handoff", &run.handoff), ("confirm", &run.confirm)] {
        for (ms, pct) in bucket_points(buckets) {
            let _ = writeln!(csv, "gatehouse-{name},{ms},{pct:.3}");
        }
    }
    if let Some(latencies) = lapin.filter(|l| !l.is_empty()) {
        let n = latencies.len();
        let points: Vec<(f64, f64)> = (1..=200)
            .map(|i| {
                let index = ((n - 1) * i / 200).min(n - 1);
                (
                    latencies[index].as_secs_f64() * 1e3,
                    100.0 * (index + 1) as f64 / n as f64,
                )
            })
            .collect();
        for (ms, pct) in &points {
            let _ = writeln!(csv, "plain-lapin-confirm,{ms:.4},{pct:.3}");
        }
        series.push(Series {
            name: "plain lapin: publish -> confirm (broker)".into(),
            points,
        });
    }
    let title = format!("Latency CDF, {kind}, {rate:.0} events/s, one shard");
    std::fs::write(
        dir.join(format!("latency-{kind}.svg")),
        line_chart(
            &title,
            "latency (ms, log scale)",
            "% of events at or under",
            &series,
            true,
        ),
    )?;
    std::fs::write(dir.join(format!("latency-{kind}.csv")), csv)?;
    Ok(())
}

/// `scaling.csv` rows and the charts `scaling-rate.svg` and `scaling-cpu.svg`: msg/s and CPU-s
/// per million events against the shard count, one line per round.
pub fn scaling(dir: &Path, rows: &[(usize, u32, Run)]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut csv = String::from("round,shards,msg_per_s,cpu_s_per_million,load_before,load_after\n");
    let mut rate = Vec::new();
    let mut cpu = Vec::new();
    let rounds: Vec<usize> = {
        let mut r: Vec<usize> = rows.iter().map(|r| r.0).collect();
        r.dedup();
        r
    };
    for round in rounds {
        let of_round: Vec<&(usize, u32, Run)> = rows.iter().filter(|r| r.0 == round).collect();
        for (_, shards, run) in &of_round {
            let _ = writeln!(
                csv,
                "{round},{shards},{:.0},{:.2},{},{}",
                run.steady_rate,
                run.cpu_per_million.unwrap_or(f64::NAN),
                run.load_before,
                run.load_after
            );
        }
        rate.push(Series {
            name: format!("round {round}"),
            points: of_round
                .iter()
                .map(|(_, s, r)| (f64::from(*s), r.steady_rate))
                .collect(),
        });
        cpu.push(Series {
            name: format!("round {round}"),
            points: of_round
                .iter()
                .map(|(_, s, r)| (f64::from(*s), r.cpu_per_million.unwrap_or(f64::NAN)))
                .collect(),
        });
    }
    std::fs::write(dir.join("scaling.csv"), csv)?;
    std::fs::write(
        dir.join("scaling-rate.svg"),
        line_chart(
            "Gatehouse into RabbitMQ: steady rate by shards",
            "shards (log scale)",
            "messages per second",
            &rate,
            true,
        ),
    )?;
    std::fs::write(
        dir.join("scaling-cpu.svg"),
        line_chart(
            "Gatehouse CPU per event by shards",
            "shards (log scale)",
            "CPU-s per million events",
            &cpu,
            true,
        ),
    )?;
    Ok(())
}

/// Appends one idle-memory reading to `memory.csv` (`client,compress,shards,rss_kib,load`).
pub fn append_memory(
    dir: &Path,
    client: &str,
    compress: &str,
    shards: u32,
    rss_kib: u64,
    load: &str,
) -> Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("memory.csv");
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    if new {
        writeln!(file, "client,compress,shards,rss_kib,load")?;
    }
    writeln!(file, "{client},{compress},{shards},{rss_kib},{load}")?;
    Ok(())
}

/// `memory.svg` from `memory.csv`: KiB per shard ((RSS - RSS at the smallest count) / extra
/// shards) against the shard count, one line per client and compression (the latest reading
/// of each point).
pub fn memory(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("memory.csv"))?;
    let mut readings: std::collections::BTreeMap<
        (String, String),
        std::collections::BTreeMap<u32, u64>,
    > = Default::default();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if let [client, compress, shards, rss, ..] = fields[..]
            && let (Ok(shards), Ok(rss)) = (shards.parse(), rss.parse())
        {
            readings
                .entry((client.to_owned(), compress.to_owned()))
                .or_default()
                .insert(shards, rss);
        }
    }
    let series: Vec<Series> = readings
        .into_iter()
        .filter_map(|((client, compress), points)| {
            let (&base_shards, &base_rss) = points.iter().next()?;
            let points: Vec<(f64, f64)> = points
                .iter()
                .filter(|(s, _)| **s > base_shards)
                .map(|(&s, &rss)| {
                    (
                        f64::from(s),
                        (rss as f64 - base_rss as f64) / f64::from(s - base_shards),
                    )
                })
                .collect();
            (!points.is_empty()).then(|| Series {
                name: format!("{client}, {compress}"),
                points,
            })
        })
        .collect();
    std::fs::write(
        dir.join("memory.svg"),
        line_chart(
            "Resident memory per idle shard",
            "shards (log scale)",
            "KiB per shard",
            &series,
            true,
        ),
    )?;
    Ok(())
}
