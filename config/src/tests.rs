//! The configuration as a whole: file, environment and validation together.

use std::collections::HashMap;

use proto_core::codec::{Compression, Encoding};
use proto_core::profile::{BodyEncoding, ProfileConfig, ProfileKind};

use crate::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn conformance_contract_names_are_understood() {
    // The neutral names the conformance suite sets for any implementation.
    let config = Config::load(
        "",
        env(&[
            ("DISCORD_TOKEN", "t"),
            ("DISCORD_API_BASE", "http://127.0.0.1:9/api/v10"),
            ("SHARD_COUNT", "4"),
            ("SHARD_IDS", "1-2"),
            ("DISCORD_INTENTS", "513"),
            ("DISCORD_COMPRESS", "zstd-stream"),
            ("DISCORD_ENCODING", "etf"),
            ("REDIS_KEY_PREFIX", "conformance:x:1:"),
            ("BROKER_PROFILE", "spectacles"),
            ("BROKER_BODY_ENCODING", "json"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.api_base, "http://127.0.0.1:9/api/v10");
    assert_eq!(config.discord.shard_count, Some(4));
    assert_eq!(config.discord.shard_ids, Some(vec![1, 2]));
    assert_eq!(config.discord.intents, 513);
    assert_eq!(config.discord.compression, Compression::ZstdStream);
    assert_eq!(config.discord.encoding, Encoding::Etf);
    assert_eq!(config.redis.key_prefix, "conformance:x:1:");
    assert_eq!(config.profile.kind, ProfileKind::Spectacles);
    assert_eq!(config.profile.body, Some(BodyEncoding::Json));
}

#[test]
fn empty_file_and_environment_give_the_defaults() {
    let config = Config::load("", env(&[])).unwrap();
    assert!(!config.discord.has_token());
    assert_eq!(config.discord.api_base, DEFAULT_API_BASE);
    assert_eq!(config.amqp.url.expose(), DEFAULT_AMQP_URL);
    assert_eq!(config.redis.url.expose(), DEFAULT_REDIS_URL);
    assert_eq!(config.redis.key_prefix, "gatehouse");
    assert_eq!(config.redis.identify_anyway_after, None);
    assert_eq!(config.discord.intents, 53_575_421);
    assert_eq!(config.discord.shard_count, None);
    assert_eq!(config.discord.shard_ids, None);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.metrics.address, None);
    assert_eq!(config.profile, ProfileConfig::default());
}

#[test]
fn file_values_are_read() {
    let text = r#"
        [discord]
        token = "Bot abc.def"
        api_base = "http://127.0.0.1:9999/api/v10/"
        intents = ["GUILDS", "guildMessages", "MESSAGE_CONTENT"]
        shard_count = 8
        shard_ids = "0-3,6"
        large_threshold = 100
        compression = "zstd-stream"
        encoding = "etf"
        presence = { status = "idle", afk = false, since = 0, activities = [] }

        [amqp]
        url = "amqps://user:pw@broker:5671/vhost"

        [redis]
        key_prefix = "gh-test"
        identify_anyway_after_secs = 900

        [profile]
        kind = "spectacles"

        [limits]
        max_unconfirmed_publishes = 50

        [metrics]
        address = "127.0.0.1:9102"
    "#;
    let config = Config::load(text, env(&[])).unwrap();
    assert_eq!(config.discord.token.expose(), "abc.def");
    assert_eq!(config.discord.api_base, "http://127.0.0.1:9999/api/v10");
    assert_eq!(config.discord.intents, 1 | 512 | 32768);
    assert_eq!(config.discord.shard_ids, Some(vec![0, 1, 2, 3, 6]));
    assert_eq!(config.discord.large_threshold, 100);
    assert_eq!(config.discord.compression, Compression::ZstdStream);
    assert_eq!(config.discord.encoding, Encoding::Etf);
    let presence: serde_json::Value =
        serde_json::from_str(config.discord.presence.as_deref().unwrap()).unwrap();
    assert_eq!(presence["status"], "idle");
    assert_eq!(config.redis.key_prefix, "gh-test");
    assert_eq!(
        config.redis.identify_anyway_after,
        Some(std::time::Duration::from_secs(900))
    );
    assert_eq!(config.profile.kind, ProfileKind::Spectacles);
    assert_eq!(config.limits.max_unconfirmed_publishes, 50);
    assert_eq!(
        config.metrics.address,
        Some("127.0.0.1:9102".parse().unwrap())
    );
}

#[test]
fn environment_wins_over_the_file() {
    let text = "[discord]\ntoken = \"from-file\"\nshard_count = 2\n";
    let config = Config::load(
        text,
        env(&[
            ("DISCORD_TOKEN", "from-env"),
            ("GATEHOUSE_SHARD_COUNT", "16"),
            ("GATEHOUSE_SHARD_IDS", "0,2,5"),
            ("GATEHOUSE_INTENTS", "513"),
            ("AMQP_URL", "amqp://u:p@h:5672/v"),
            ("REDIS_URL", "redis://:pw@h:6379/2"),
            ("GATEHOUSE_API_BASE", "http://127.0.0.1:1234/api/v10"),
            ("GATEHOUSE_PROFILE", "cordis"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.token.expose(), "from-env");
    assert_eq!(config.discord.shard_count, Some(16));
    assert_eq!(config.discord.shard_ids, Some(vec![0, 2, 5]));
    assert_eq!(config.discord.intents, 513);
    assert_eq!(config.amqp.url.expose(), "amqp://u:p@h:5672/v");
    assert_eq!(config.discord.api_base, "http://127.0.0.1:1234/api/v10");
    assert_eq!(config.profile.kind, ProfileKind::Cordis);
}

#[test]
fn aliases_apply_and_the_canonical_name_wins() {
    let config = Config::load("", env(&[("BOT_TOKEN", "alias")])).unwrap();
    assert_eq!(config.discord.token.expose(), "alias");
    let config = Config::load(
        "",
        env(&[("BOT_TOKEN", "alias"), ("DISCORD_TOKEN", "canonical")]),
    )
    .unwrap();
    assert_eq!(config.discord.token.expose(), "canonical");
    let config = Config::load("", env(&[("DISCORD_TOKEN", ""), ("BOT_TOKEN", "b")])).unwrap();
    assert_eq!(config.discord.token.expose(), "b", "empty counts as unset");
}

#[test]
fn predecessors_names_apply() {
    let config = Config::load(
        "",
        env(&[
            ("BOT_TOKEN", "t"),
            ("SHARDS_START", "2"),
            ("SHARDS_END", "4"),
            ("SHARDS_TOTAL", "8"),
            ("RABBIT_HOST", "rabbit"),
            ("RABBIT_PASSWORD", "p@ss"),
            ("REDIS_HOST", "cache"),
            ("PROMETHEUS_PORT", "9102"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.shard_ids, Some(vec![2, 3, 4]));
    assert_eq!(config.discord.shard_count, Some(8));
    assert_eq!(
        config.amqp.url.expose(),
        "amqp://guest:p%40ss@rabbit:5672/%2f"
    );
    assert_eq!(config.redis.url.expose(), "redis://cache:6379/");
    assert_eq!(
        config.metrics.address,
        Some("127.0.0.1:9102".parse().unwrap())
    );

    let config = Config::load(
        "",
        env(&[
            ("CORDIS_AUTH", "t"),
            ("CORDIS_STARTING_SHARD", "4"),
            ("CORDIS_SHARD_COUNT", "2"),
            ("CORDIS_TOTAL_SHARD_COUNT", "6"),
            ("CORDIS_WS_COMPRESS", "false"),
            ("CORDIS_WS_ENCODING", "etf"),
            ("CORDIS_AMQP_HOST", "broker"),
            ("CORDIS_WS_INTENTS", "guilds,guildMessages"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.token.expose(), "t");
    assert_eq!(config.discord.shard_ids, Some(vec![4, 5]));
    assert_eq!(config.discord.compression, Compression::None);
    assert_eq!(config.discord.encoding, Encoding::Etf);
    assert_eq!(config.amqp.url.expose(), "amqp://broker");
    assert_eq!(config.discord.intents, 513);

    // Gatehouse's own names win over the predecessors'.
    let config = Config::load(
        "",
        env(&[
            ("SHARDS_START", "0"),
            ("SHARDS_END", "1"),
            ("GATEHOUSE_SHARD_IDS", "7"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.shard_ids, Some(vec![7]));

    let err = Config::load("", env(&[("SHARDS_START", "1")])).unwrap_err();
    assert!(err.to_string().contains("SHARDS_END"), "{err}");

    // A profile's own predecessor names (here Spectacles' BROKER_GROUP) apply too.
    let config = Config::load(
        "",
        env(&[
            ("GATEHOUSE_PROFILE", "spectacles"),
            ("BROKER_GROUP", "mygroup"),
        ]),
    )
    .unwrap();
    assert_eq!(config.profile.exchange.as_deref(), Some("mygroup"));
}

#[test]
fn cluster_combines_configuration_and_recommendation() {
    let config = Config::load("", env(&[])).unwrap();
    let cluster = config.cluster(3).unwrap();
    assert_eq!(cluster.shard_count(), 3);
    assert_eq!(cluster.owned(), [0, 1, 2]);

    let config = Config::load("", env(&[("GATEHOUSE_SHARD_IDS", "4")])).unwrap();
    let err = config.cluster(3).unwrap_err();
    assert!(err.to_string().contains("shard 4 does not exist"), "{err}");

    let config = Config::load("", env(&[("GATEHOUSE_SHARD_COUNT", "8")])).unwrap();
    assert_eq!(config.cluster(1).unwrap().owned().len(), 8);
}

#[test]
fn validation_errors_are_messages_not_panics() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("[discord]\nshard_count = 0", &[], "discord.shard_count"),
        (
            "[discord]\nshard_count = 2\nshard_ids = [3]",
            &[],
            "shard 3",
        ),
        ("[discord]\nlarge_threshold = 10", &[], "50..=250"),
        ("[discord]\nintents = 131072", &[], "undefined bits"),
        ("[discord]\nbogus = 1", &[], "bogus"),
        ("[discord", &[], "configuration file"),
        (
            "",
            &[("GATEHOUSE_SHARD_COUNT", "many")],
            "GATEHOUSE_SHARD_COUNT",
        ),
        ("", &[("AMQP_URL", "http://x")], "amqp://"),
        ("[metrics]\naddress = \"nowhere\"", &[], "metrics.address"),
        ("[limits]\nmax_unconfirmed_publishes = 0", &[], "at least 1"),
        (
            "[limits]\nmax_unconfirmed_bytes = 1000",
            &[],
            "at least 1 MiB",
        ),
        (
            "",
            &[("GATEHOUSE_CONFIRM_TIMEOUT_SECS", "0")],
            "confirm_timeout_secs",
        ),
        ("discord = 3", &[("DISCORD_TOKEN", "t")], "not a table"),
    ];
    for (text, vars, needle) in cases {
        let err = Config::load(text, env(vars)).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let config = Config::load(
        "",
        env(&[
            ("DISCORD_TOKEN", "tok.en.value"),
            ("AMQP_URL", "amqp://user:hunter2@host:5672/%2f"),
            ("REDIS_URL", "redis://:redispw@host:6379/"),
        ]),
    )
    .unwrap();
    let debug = format!("{config:?}");
    for secret in ["tok.en.value", "hunter2", "redispw"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("amqp://user:***@host:5672/%2f"), "{debug}");
    let err = Config::load("", env(&[("AMQP_URL", "http://user:hunter2@host/")]))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

/// The `[profile]` table of the file.
fn parse_profile(toml_text: &str) -> Result<ProfileConfig, String> {
    toml::from_str(toml_text).map_err(|e| e.to_string())
}

#[test]
fn every_option_parses() {
    let cfg = parse_profile(
        r#"
        kind = "spectacles"
        exchange = "bot"
        subgroups = ["a", "b"]
        body = "json"
        message_timeout_ms = 120000
        events = ["MESSAGE_CREATE"]
        ignored_events = ["TYPING_START"]
        declare_queues = ["MESSAGE_CREATE"]
        extra_allowed_ops = [43]
        "#,
    )
    .unwrap();
    assert_eq!(cfg.kind, ProfileKind::Spectacles);
    assert_eq!(cfg.exchange_name(), "bot");
    assert_eq!(cfg.body_encoding(), BodyEncoding::Json);
    cfg.validate().unwrap();

    let cfg = parse_profile(
        r#"
        kind = "gatehouse"
        commands_exchange = "cmds"
        command_queue = "cmds.node-a"
        "#,
    )
    .unwrap();
    cfg.validate().unwrap();
    let cfg = parse_profile("kind = \"twilight-dispatch\"\ndefault_queue = true").unwrap();
    cfg.validate().unwrap();
    assert_eq!(parse_profile("").unwrap(), ProfileConfig::default());
}

#[test]
fn unknown_options_are_refused() {
    assert!(
        parse_profile("exchnage = \"x\"")
            .unwrap_err()
            .contains("unknown field")
    );
    assert!(
        parse_profile("kind = \"nope\"")
            .unwrap_err()
            .contains("unknown variant")
    );
    assert!(
        parse_profile("body = \"etf\"")
            .unwrap_err()
            .contains("unknown variant")
    );
}

fn profile_from_env(
    kind: ProfileKind,
    vars: &[(&str, &str)],
) -> Result<ProfileConfig, ConfigError> {
    let mut all = vec![("GATEHOUSE_PROFILE", kind.name())];
    all.extend_from_slice(vars);
    Config::load("", env(&all)).map(|c| c.profile)
}

#[test]
fn spectacles_profile_names() {
    let cfg = profile_from_env(
        ProfileKind::Spectacles,
        &[
            ("BROKER_GROUP", "mybot"),
            ("BROKER_MESSAGE_TIMEOUT", "2m"),
            ("DISCORD_EVENTS", "MESSAGE_CREATE, GUILD_CREATE"),
            ("DEFAULT_QUEUE", "true"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.exchange.as_deref(), Some("mybot"));
    assert_eq!(cfg.message_timeout_ms, Some(120_000));
    assert_eq!(cfg.events, ["MESSAGE_CREATE", "GUILD_CREATE"]);
    assert_eq!(cfg.declare_queues, cfg.events);
    assert!(!cfg.default_queue, "another profile's name is not read");
    let cfg =
        profile_from_env(ProfileKind::Spectacles, &[("BROKER_MESSAGE_TIMEOUT", "0")]).unwrap();
    assert_eq!(cfg.message_timeout_ms, None, "0 means no expiration");
    let err = profile_from_env(
        ProfileKind::Spectacles,
        &[("BROKER_MESSAGE_TIMEOUT", "soon")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("BROKER_MESSAGE_TIMEOUT"), "{err}");
}

#[test]
fn twilight_dispatch_profile_names() {
    let queue = |vars: &[(&str, &str)]| {
        profile_from_env(ProfileKind::TwilightDispatch, vars).map(|c| c.default_queue)
    };
    assert!(queue(&[("DEFAULT_QUEUE", "true")]).unwrap());
    assert!(queue(&[("DECLARE_QUEUE", "true")]).unwrap());
    assert!(!queue(&[("DEFAULT_QUEUE", "false"), ("DECLARE_QUEUE", "true")]).unwrap());
    let err = queue(&[("DEFAULT_QUEUE", "maybe")]).unwrap_err();
    assert!(err.to_string().contains("DEFAULT_QUEUE"), "{err}");
}

#[test]
fn nothing_set_means_the_profile_defaults() {
    for kind in [
        ProfileKind::Gatehouse,
        ProfileKind::Spectacles,
        ProfileKind::Cordis,
        ProfileKind::TwilightDispatch,
        ProfileKind::Retsu,
    ] {
        let cfg = profile_from_env(kind, &[]).unwrap();
        assert_eq!(
            cfg,
            ProfileConfig {
                kind,
                ..ProfileConfig::default()
            }
        );
    }
}

#[test]
fn publish_path_limits_come_from_the_file_or_the_environment() {
    let text = "[limits]\nmax_unconfirmed_bytes = 8388608\nconfirm_timeout_secs = 5";
    let config = Config::load(text, env(&[])).unwrap();
    assert_eq!(config.limits.max_unconfirmed_bytes, 8 << 20);
    assert_eq!(config.limits.confirm_timeout_secs, 5);
    let vars = [
        ("GATEHOUSE_MAX_UNCONFIRMED_BYTES", "16777216"),
        ("GATEHOUSE_CONFIRM_TIMEOUT_SECS", "7"),
    ];
    let config = Config::load("", env(&vars)).unwrap();
    assert_eq!(config.limits.max_unconfirmed_bytes, 16 << 20);
    assert_eq!(config.limits.confirm_timeout_secs, 7);
}

#[test]
fn shard_config_and_config_share_their_defaults() {
    let config = Config::load("", env(&[])).unwrap();
    assert_eq!(
        config.discord.large_threshold,
        proto_core::shard::defaults::LARGE_THRESHOLD
    );
    assert_eq!(
        config.limits.command_queue_capacity,
        proto_core::shard::defaults::COMMAND_QUEUE_CAPACITY
    );
    assert_eq!(
        config.limits.max_unconfirmed_publishes,
        proto_core::shard::defaults::MAX_UNCONFIRMED
    );
    assert_eq!(
        config.limits.max_unconfirmed_bytes,
        proto_core::shard::defaults::MAX_UNCONFIRMED_BYTES
    );
    assert_eq!(
        config.limits.confirm_timeout_secs,
        proto_core::outbox::DEFAULT_CONFIRM_TIMEOUT.as_secs()
    );
    assert_eq!(config.discord.api_version, proto_core::shard::API_VERSION);
}

#[test]
fn cluster_mode_is_named_by_file_or_environment_and_needs_redis() {
    let config = Config::load("", env(&[])).unwrap();
    assert_eq!(config.cluster, ClusterConfig::default());
    let config = Config::load(
        "[cluster]\nname = \"blue\"\nlease_ms = 3000",
        env(&[("GATEHOUSE_CLUSTER", "green")]),
    )
    .unwrap();
    assert_eq!(config.cluster.name.as_deref(), Some("green"));
    assert_eq!(config.cluster.lease_ms, 3000);
    let config = Config::load("", env(&[("GATEHOUSE_CLUSTER_LEASE_MS", "5000")])).unwrap();
    assert_eq!(config.cluster.lease_ms, 5000);
    for bad in [
        "[cluster]\nname = \"a:b\"",
        "[cluster]\nlease_ms = 10",
        "[cluster]\nname = \"a\"\n[redis]\nenabled = false",
    ] {
        assert!(Config::load(bad, env(&[])).is_err(), "{bad}");
    }
}

#[test]
fn cordis_starting_shard_alone_runs_every_shard_from_it() {
    let config = Config::load("", env(&[("CORDIS_STARTING_SHARD", "4")])).unwrap();
    assert_eq!(config.discord.shard_ids, None);
    assert_eq!(config.discord.first_shard, Some(4));
    assert_eq!(config.cluster(8).unwrap().owned(), [4, 5, 6, 7]);
    assert!(config.cluster(4).is_err(), "shard 4 of 4 does not exist");
    let config = Config::load("[discord]\nshard_ids = \"2-\"", env(&[])).unwrap();
    assert_eq!(config.cluster(4).unwrap().owned(), [2, 3]);
}

#[test]
fn cordis_1x_names_are_read_with_the_cordis_profile_only() {
    let vars = [
        ("AUTH", "tok"),
        ("AMQP_HOST", "broker"),
        ("STARTING_SHARD", "2"),
        ("SHARD_COUNT", "2"),
        ("TOTAL_SHARD_COUNT", "8"),
        ("WS_ENCODING", "json"),
        ("WS_COMPRESS", "false"),
        ("WS_INTENTS", "guilds,guildEmojis"),
        ("WS_HELLO_TIMEOUT", "5000"),
    ];
    let mut cordis = vec![("GATEHOUSE_PROFILE", "cordis")];
    cordis.extend_from_slice(&vars);
    let config = Config::load("", env(&cordis)).unwrap();
    assert_eq!(config.discord.token.expose(), "tok");
    assert_eq!(config.amqp.url.expose(), "amqp://broker");
    assert_eq!(config.discord.shard_ids, Some(vec![2, 3]));
    assert_eq!(config.discord.shard_count, Some(8));
    assert_eq!(config.discord.encoding, Encoding::Json);
    assert_eq!(config.discord.compression, Compression::None);
    assert_eq!(config.discord.intents, 1 | 8);
    assert_eq!(config.discord.hello_timeout.as_millis(), 5000);

    let loaded = Config::load_reporting("", env(&vars)).unwrap();
    assert!(
        !loaded.config.discord.has_token(),
        "AUTH is too generic elsewhere"
    );
    assert_eq!(loaded.config.discord.shard_count, None);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("SHARD_COUNT is not read")),
        "{:?}",
        loaded.warnings
    );
    // Alone, SHARD_COUNT is the conformance contract's total, with every profile.
    let config = Config::load(
        "",
        env(&[("GATEHOUSE_PROFILE", "cordis"), ("SHARD_COUNT", "4")]),
    )
    .unwrap();
    assert_eq!(config.discord.shard_count, Some(4));
}

#[test]
fn profile_dependent_defaults() {
    let load = |kind: &str| Config::load("", env(&[("GATEHOUSE_PROFILE", kind)])).unwrap();
    assert_eq!(load("cordis").discord.encoding, Encoding::Etf);
    assert_eq!(load("gatehouse").discord.encoding, Encoding::Json);
    assert_eq!(load("spectacles").redis.key_prefix, "gateway");
    assert_eq!(load("twilight-dispatch").redis.key_prefix, "");
    assert_eq!(load("retsu").redis.key_prefix, "gatehouse");
    // Cordis uses Redis only when a URL is given.
    assert!(!load("cordis").redis.enabled);
    assert!(load("gatehouse").redis.enabled);
    let config = Config::load(
        "",
        env(&[
            ("GATEHOUSE_PROFILE", "cordis"),
            ("CORDIS_REDIS_URL", "redis://h/"),
        ]),
    )
    .unwrap();
    assert!(config.redis.enabled);
}

#[test]
fn spectacles_environment_names() {
    let config = Config::load(
        "",
        env(&[
            ("DISCORD_TOKEN", "t"),
            ("DISCORD_INTENTS", "GUILDS,GUILD_EMOJIS"),
            ("DISCORD_SHARD_COUNT", "4"),
            ("DISCORD_SHARD_IDS", "1,3"),
            ("DISCORD_PRESENCE", r#"{"status":"idle","afk":false}"#),
            ("PROMETHEUS_ADDRESS", ":8080"),
            ("PROMETHEUS_ENDPOINT", "/stats"),
            ("SHARD_STORE_TYPE", "none"),
            ("SHARD_STORE_PREFIX", "bot"),
            ("REDIS_URL", "localhost:6379"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.intents, 1 | 8);
    assert_eq!(config.discord.shard_count, Some(4));
    assert_eq!(config.discord.shard_ids, Some(vec![1, 3]));
    assert!(config.discord.presence.unwrap().contains("idle"));
    assert_eq!(
        config.metrics.address,
        Some("0.0.0.0:8080".parse().unwrap())
    );
    assert_eq!(config.metrics.path, "/stats");
    assert!(!config.redis.enabled);
    assert_eq!(config.redis.key_prefix, "bot");
    assert_eq!(config.redis.url.expose(), "redis://localhost:6379/0");
    // The raw bitfield wins over the names, as in the original.
    let config = Config::load(
        "",
        env(&[
            ("DISCORD_INTENTS", "GUILDS"),
            ("DISCORD_RAW_INTENTS", "513"),
        ]),
    )
    .unwrap();
    assert_eq!(config.discord.intents, 513);
}

/// The configuration file of the Spectacles gateway's README, as it is.
const SPECTACLES_README_TOML: &str =
    include_str!("../../fixtures/predecessors/spectacles-gateway.toml");

#[test]
fn the_spectacles_gateway_toml_is_read() {
    let text = SPECTACLES_README_TOML
        .replace("token = \"\"", "token = \"tok\"")
        .replace("events = []", "events = [\"MESSAGE_CREATE\"]")
        .replace("intents = []", "intents = [\"GUILDS\", \"GUILD_EMOJIS\"]");
    let loaded = Config::load_reporting(&text, env(&[])).unwrap();
    let config = loaded.config;
    assert_eq!(config.profile.kind, ProfileKind::Spectacles);
    assert_eq!(config.discord.token.expose(), "tok");
    assert_eq!(config.discord.intents, 1 | 8);
    assert_eq!(config.discord.shard_count, Some(2));
    assert_eq!(config.discord.shard_ids, Some(vec![0, 1]));
    assert_eq!(config.profile.events, ["MESSAGE_CREATE"]);
    assert_eq!(config.profile.declare_queues, ["MESSAGE_CREATE"]);
    assert_eq!(config.profile.exchange_name(), "gateway");
    assert_eq!(config.profile.message_timeout_ms, Some(120_000));
    assert_eq!(
        config.metrics.address,
        Some("0.0.0.0:8080".parse().unwrap())
    );
    assert!(config.redis.enabled);
    assert_eq!(config.redis.key_prefix, "gateway");
    assert_eq!(config.redis.url.expose(), "redis://localhost:6379/0");
    assert_eq!(config.amqp.url.expose(), "amqp://localhost");
    let presence: serde_json::Value =
        serde_json::from_str(config.discord.presence.as_deref().unwrap()).unwrap();
    assert_eq!(presence["status"], "online");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("redis.pool_size")),
        "{:?}",
        loaded.warnings
    );
    // Presence with the old `game`.
    let config = Config::load(
        "token = \"t\"\n[presence]\nstatus = \"idle\"\n[presence.game]\nname = \"test\"\ntype = 0\n",
        env(&[]),
    )
    .unwrap();
    let presence: serde_json::Value =
        serde_json::from_str(config.discord.presence.as_deref().unwrap()).unwrap();
    assert_eq!(presence["activities"][0]["name"], "test");
    assert_eq!(presence["status"], "idle");
}

#[test]
fn retsus_config_json_is_read() {
    let text = r#"{
        "discord": {"token": "tok", "shard_count": 8, "shard_start_index": 2, "shard_num": 3,
                    "intents": 513, "use_large_bot_sharding": true},
        "ignore_packets": ["TYPING_START", "PRESENCE_UPDATE"],
        "loglevel": 1,
        "msg_queue": {"url": "amqp://user:pw@rabbit:5672/"},
        "redis_url": "cache:6380,password=s3cret,defaultDatabase=2,abortConnect=false",
        "sentry_url": "https://key@sentry.example/1"
    }"#;
    let loaded = Config::load_reporting(text, env(&[])).unwrap();
    let config = &loaded.config;
    assert_eq!(config.profile.kind, ProfileKind::Retsu);
    assert_eq!(config.discord.token.expose(), "tok");
    assert_eq!(config.discord.shard_count, Some(8));
    assert_eq!(config.discord.shard_ids, Some(vec![2, 3, 4]));
    assert_eq!(config.discord.intents, 513);
    assert_eq!(
        config.profile.ignored_events,
        ["TYPING_START", "PRESENCE_UPDATE"]
    );
    assert_eq!(config.amqp.url.expose(), "amqp://user:pw@rabbit:5672/");
    assert_eq!(config.redis.url.expose(), "redis://:s3cret@cache:6380/2");
    assert_eq!(
        config.sentry.url.as_ref().map(|u| u.redacted()),
        Some("https://***@sentry.example/1".to_owned())
    );
    for key in ["loglevel", "abortConnect"] {
        assert!(
            loaded.warnings.iter().any(|w| w.contains(key)),
            "{key}: {:?}",
            loaded.warnings
        );
    }
    assert!(!format!("{loaded:?}").contains("s3cret"));
    // Without redis_url, sessions stay in memory.
    let config = Config::load(r#"{"discord": {"token": "t"}, "redis_url": ""}"#, env(&[])).unwrap();
    assert!(!config.redis.enabled);
    // The key is `ignore_packets`; the misspelling is warned about, not silently dropped.
    let loaded = Config::load_reporting(r#"{"ignored_packets": ["READY"]}"#, env(&[])).unwrap();
    assert!(loaded.config.profile.ignored_events.is_empty());
    assert!(loaded.warnings.iter().any(|w| w.contains("ignore_packets")));
}

#[test]
fn stackexchange_redis_urls() {
    let mut warnings = Vec::new();
    let form = |s: &str, w: &mut Vec<String>| crate::validate::redis_url_form(s, w).unwrap();
    assert_eq!(form("localhost", &mut warnings), "redis://localhost:6379/0");
    assert_eq!(
        form("h:1,ssl=true,user=u,password=p@ss", &mut warnings),
        "rediss://u:p%40ss@h:1/0"
    );
    assert_eq!(form("redis://h/", &mut warnings), "redis://h/");
    assert!(warnings.is_empty(), "{warnings:?}");
    form("h:1,h2:2", &mut warnings);
    assert!(warnings[0].contains("first endpoint"), "{warnings:?}");
    assert!(crate::validate::redis_url_form("password=x", &mut warnings).is_err());
}

#[test]
fn twilight_dispatch_environment_names() {
    let config = Config::load(
        "",
        env(&[
            ("GATEHOUSE_PROFILE", "twilight-dispatch"),
            ("STATUS", "idle"),
            ("ACTIVITY_TYPE", "2"),
            ("ACTIVITY_NAME", "music"),
            ("RESUME", "false"),
            ("SHARDS_CONCURRENCY", "4"),
            ("LOG_CHANNEL", "81384788765712384"),
        ]),
    )
    .unwrap();
    let presence: serde_json::Value =
        serde_json::from_str(config.discord.presence.as_deref().unwrap()).unwrap();
    assert_eq!(presence["status"], "idle");
    assert_eq!(presence["activities"][0]["type"], 2);
    assert_eq!(presence["activities"][0]["name"], "music");
    assert!(!config.discord.resume);
    assert_eq!(config.discord.max_concurrency, Some(4));
    assert_eq!(config.discord.log_channel, Some(81_384_788_765_712_384));
    assert_eq!(config.redis.key_prefix, "");
}

#[test]
fn the_gateway_api_version_can_be_set() {
    let config = Config::load("", env(&[("GATEHOUSE_API_VERSION", "9")])).unwrap();
    assert_eq!(config.discord.api_version, 9);
    // The conformance contract's neutral name.
    let config = Config::load("", env(&[("DISCORD_API_VERSION", "9")])).unwrap();
    assert_eq!(config.discord.api_version, 9);
    assert!(Config::load("[discord]\napi_version = 3", env(&[])).is_err());
}

/// Issue 10 item 8: Sentinel and Redis Cluster URLs are accepted; on a Redis Cluster the key
/// prefix becomes one hash tag, elsewhere it stays as configured.
#[test]
fn redis_sentinel_and_cluster_urls_are_accepted() {
    let sentinel = Config::load(
        "",
        env(&[
            (
                "REDIS_URL",
                "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2?sentinel_password=spw%2B1",
            ),
            ("GATEHOUSE_REDIS_PREFIX", "bot"),
        ]),
    )
    .unwrap();
    assert_eq!(sentinel.redis.key_prefix, "bot");
    // Neither the primary's nor the Sentinels' password is shown, as written or decoded.
    for shown in [
        sentinel.redis.url.redacted(),
        sentinel.redis.url.scrub("AUTH failed: spw+1, spw%2B1, pw"),
    ] {
        assert!(!shown.contains("pw"), "{shown}");
    }
    // A Sentinel URL's unknown parameter is refused, without its value.
    let error = Config::load(
        "",
        env(&[("REDIS_URL", "redis+sentinel://s1/m?password=hunter2")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("redis.url") && error.contains("`password`"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
    let cluster = Config::load(
        "",
        env(&[
            ("REDIS_URL", "redis+cluster://n1:7000,n2:7001"),
            ("GATEHOUSE_REDIS_PREFIX", "bot"),
        ]),
    )
    .unwrap();
    assert_eq!(cluster.redis.key_prefix, "{bot}");
    for url in [
        "redis+sentinel://s1:26379,s2:26379",
        "redis-cluster://n1:7000",
        "redis+cluster://n1:7000/3",
    ] {
        let error = Config::load("", env(&[("REDIS_URL", url)]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("redis.url"), "{error}");
    }
    let plain = Config::load(
        "",
        env(&[
            ("REDIS_URL", "redis://h:1/"),
            ("GATEHOUSE_REDIS_PREFIX", "bot"),
        ]),
    )
    .unwrap();
    assert_eq!(plain.redis.key_prefix, "bot");
}

/// Issue 10 item 8: the Sentinels' credentials may also come apart from the URL
/// (`redis.sentinel_password`, `GATEHOUSE_REDIS_SENTINEL_PASSWORD`, and the username): they
/// join the Sentinel URL's query, percent-encoded, and are redacted with it.
#[test]
fn sentinel_credentials_apart_from_the_url_join_its_query() {
    use proto_core::redis_topology::RedisTopology;
    let config = Config::load(
        "[redis]\nsentinel_username = \"watch\"\n",
        env(&[
            ("REDIS_URL", "redis+sentinel://:pw@s1,s2/m/2"),
            ("GATEHOUSE_REDIS_SENTINEL_PASSWORD", "a&b c#d+e"),
        ]),
    )
    .unwrap();
    let url = config.redis.url.expose();
    assert!(
        url.ends_with("/m/2?sentinel_username=watch&sentinel_password=a%26b%20c%23d%2Be"),
        "{url}"
    );
    let Ok(RedisTopology::Sentinel(target)) = RedisTopology::parse(url) else {
        panic!("a Sentinel URL: {url}");
    };
    let auth = target.sentinel_auth.expect("the Sentinels' credentials");
    assert_eq!(auth.username.as_deref(), Some("watch"));
    assert_eq!(auth.password.expose(), "a&b c#d+e");
    let redacted = config.redis.url.redacted();
    assert!(
        !redacted.contains("a%26b") && !redacted.contains("pw"),
        "{redacted}"
    );
    assert!(!config.redis.url.scrub("bad: a&b c#d+e").contains("a&b"));

    for (url, says) in [
        ("redis://h:6379/", "redis.sentinel_password"),
        ("redis+sentinel://s1/m?sentinel_password=x", "given twice"),
    ] {
        let error = Config::load(
            "",
            env(&[
                ("REDIS_URL", url),
                ("GATEHOUSE_REDIS_SENTINEL_PASSWORD", "hunter2"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains(says), "{url}: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

/// Issue 14: the output is chosen by `broker.type` (Gatehouse's file), the Spectacles file's
/// `broker.type` and `BROKER_TYPE` (anything but `amqp` and `redis` is stdio, as in the
/// Spectacles gateway); nothing chosen is AMQP.
#[test]
fn the_broker_type_selects_the_output() {
    let none = Config::load("", |_| None).unwrap();
    assert_eq!(none.broker.kind, None);
    assert_eq!(none.broker.kind(), BrokerKind::Amqp);
    let own = Config::load(
        "[broker]\ntype = \"redis\"\nmax_len = 1000\nstream_prefix = \"bot1:\"\n",
        |_| None,
    )
    .unwrap();
    assert_eq!(own.broker.kind(), BrokerKind::Redis);
    assert_eq!(own.broker.max_len, Some(1000));
    assert_eq!(own.broker.stream_prefix, "bot1:");
    let spectacles =
        Config::load("token = \"t\"\n[broker]\ntype = \"stdout\"\n", |_| None).unwrap();
    assert_eq!(spectacles.broker.kind(), BrokerKind::Stdio);
    for (value, kind) in [
        ("amqp", BrokerKind::Amqp),
        ("REDIS", BrokerKind::Redis),
        ("stdio", BrokerKind::Stdio),
        ("x", BrokerKind::Stdio),
    ] {
        let env = |name: &str| (name == "BROKER_TYPE").then(|| value.to_owned());
        assert_eq!(
            Config::load("", env).unwrap().broker.kind(),
            kind,
            "{value}"
        );
    }
    assert!(Config::load("[broker]\nmax_len = 0\n", |_| None).is_err());
    // Gatehouse's own file names only its three outputs.
    assert!(Config::load("[discord]\n[broker]\ntype = \"kafka\"\n", |_| None).is_err());
}

#[test]
fn several_amqp_urls_from_the_environment_or_the_file() {
    // One URL: unchanged, the list has it alone.
    let config = Config::load("", env(&[("AMQP_URL", "amqp://u:p@h:5672/v")])).unwrap();
    assert_eq!(config.amqp.url.expose(), "amqp://u:p@h:5672/v");
    assert_eq!(config.amqp.urls, vec![config.amqp.url.clone()]);
    let defaults = Config::load("", env(&[])).unwrap();
    assert_eq!(defaults.amqp.urls.len(), 1);

    // A comma-separated list, in order; a comma inside a password does not split.
    let config = Config::load(
        "",
        env(&[(
            "AMQP_URL",
            "amqp://u:p,w@a:5672/%2f, amqps://u:s3cret@b:5671/%2f,amqp://c",
        )]),
    )
    .unwrap();
    let urls: Vec<&str> = config.amqp.urls.iter().map(|u| u.expose()).collect();
    assert_eq!(
        urls,
        [
            "amqp://u:p,w@a:5672/%2f",
            "amqps://u:s3cret@b:5671/%2f",
            "amqp://c"
        ]
    );
    assert_eq!(config.amqp.url.expose(), "amqp://u:p,w@a:5672/%2f");
    // Every URL is shown redacted.
    let shown = format!("{:?}", config.amqp);
    assert!(
        !shown.contains("s3cret") && !shown.contains("p,w"),
        "{shown}"
    );

    // The file's list; AMQP_URL wins over it, with a warning.
    let file = "[amqp]\nurls = [\"amqp://a:5672\", \"amqp://b:5673\"]\n";
    let config = Config::load(file, env(&[])).unwrap();
    let urls: Vec<&str> = config.amqp.urls.iter().map(|u| u.expose()).collect();
    assert_eq!(urls, ["amqp://a:5672", "amqp://b:5673"]);
    let loaded = Config::load_reporting(file, env(&[("AMQP_URL", "amqp://c")])).unwrap();
    assert_eq!(loaded.config.amqp.urls.len(), 1);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("amqp.urls is ignored")),
        "{:?}",
        loaded.warnings
    );

    // Each URL is checked, and a bad one is named without its password.
    let err = Config::load(
        "",
        env(&[("AMQP_URL", "amqp://a,amqp://u:hunter2@b,amqpx://c")]),
    );
    assert!(err.is_ok(), "amqpx://c is part of the second URL: {err:?}");
    let err = Config::load(
        "[amqp]\nurls = [\"amqp://a\", \"http://u:hunter2@b\"]\n",
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("amqp.urls") && !err.contains("hunter2"),
        "{err}"
    );
    let err = Config::load("[amqp]\nurls = []\n", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn the_queue_type_from_the_file_or_the_environment() {
    use proto_core::profile::QueueType;
    let config = Config::load("", env(&[])).unwrap();
    assert_eq!(config.profile.queue_type, QueueType::Classic);
    let config = Config::load("[profile]\nqueue_type = \"quorum\"\n", env(&[])).unwrap();
    assert_eq!(config.profile.queue_type, QueueType::Quorum);
    let config = Config::load("", env(&[("GATEHOUSE_QUEUE_TYPE", "quorum")])).unwrap();
    assert_eq!(config.profile.queue_type, QueueType::Quorum);
    assert!(Config::load("", env(&[("GATEHOUSE_QUEUE_TYPE", "stream")])).is_err());
}

/// Issue 13, item 1: `amqp.client` / `GATEHOUSE_AMQP_CLIENT` chooses the client events are
/// published with; lapin unless set; anything else is an error that names the key.
#[test]
fn the_amqp_client_is_lapin_unless_amqprs_is_chosen() {
    let none = Config::load("", |_| None).unwrap();
    assert_eq!(none.amqp.client, AmqpClient::Lapin);
    let file = Config::load("[amqp]\nclient = \"amqprs\"\n", |_| None).unwrap();
    assert_eq!(file.amqp.client, AmqpClient::Amqprs);
    let env = |name: &str| (name == "GATEHOUSE_AMQP_CLIENT").then(|| "amqprs".to_owned());
    assert_eq!(
        Config::load("[amqp]\nclient = \"lapin\"\n", env)
            .unwrap()
            .amqp
            .client,
        AmqpClient::Amqprs,
        "the environment wins"
    );
    let err = Config::load("[amqp]\nclient = \"kombu\"\n", |_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("client"), "{err}");
}
