//! `mock-gateway`: runs the mock Discord gateway until killed. The first line on stdout is the
//! REST API base URL (`http://127.0.0.1:PORT/api/v10`), so scripts can read it; logs go to stderr.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use mock_gateway::{Fixture, FrameRecording, MockConfig, MockGateway, ReplayRate};

#[derive(Parser, Debug)]
#[command(
    name = "mock-gateway",
    about = "A mock Discord gateway on 127.0.0.1 that replays recorded traffic"
)]
struct Args {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Bot token clients must present (without "Bot "). Any token is accepted when omitted.
    #[arg(long, env = "MOCK_GATEWAY_TOKEN")]
    token: Option<String>,
    /// Recommended shard count returned by /gateway/bot.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// session_start_limit.max_concurrency.
    #[arg(long, default_value_t = 1)]
    max_concurrency: u32,
    /// Builtin fixture name (basic, large, empty) or path to a .jsonl session file.
    #[arg(long, default_value = "basic")]
    fixture: String,
    /// Dispatches per second after READY; 0 sends as fast as the client reads; omit to send each
    /// pass all at once.
    #[arg(long)]
    rate: Option<f64>,
    /// Replay the fixture forever (sequence numbers keep increasing).
    #[arg(long = "loop")]
    loop_replay: bool,
    /// heartbeat_interval sent in HELLO, in milliseconds.
    #[arg(long, default_value_t = 41_250)]
    heartbeat_interval: u64,
    /// Identify concurrency window in milliseconds (Discord: 5000).
    #[arg(long, default_value_t = 5_000)]
    identify_window: u64,
    /// Frames kept per connection and direction by the recorder.
    #[arg(long, default_value_t = 1_000)]
    record_frames: usize,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let fixture = match Fixture::load(&args.fixture) {
        Ok(fixture) => fixture,
        Err(e) => {
            eprintln!("mock-gateway: {e}");
            std::process::exit(2);
        }
    };
    let mut config = MockConfig::default();
    config.port = args.port;
    config.token = args.token;
    config.shards = args.shards.max(1);
    config.max_concurrency = args.max_concurrency.max(1);
    config.fixture = fixture;
    config.rate = match args.rate {
        None => ReplayRate::AllAtOnce,
        Some(rate) if rate <= 0.0 => ReplayRate::AsFastAsClientReads,
        Some(rate) => ReplayRate::PerSecond(rate),
    };
    config.loop_replay = args.loop_replay;
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval.max(1));
    config.identify_window = Duration::from_millis(args.identify_window);
    config.record_frames = FrameRecording::Last(args.record_frames);
    let mock = match MockGateway::start(config) {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock-gateway: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", mock.api_base());
    let _ = writeln!(stdout, "{}", mock.ws_url());
    let _ = stdout.flush();
    tracing::info!(api = %mock.api_base(), gateway = %mock.ws_url(), "mock gateway listening");
    mock.wait();
}
