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
    assert_eq!(cluster.shard_count, 3);
    assert_eq!(cluster.owned, vec![0, 1, 2]);

    let config = Config::load("", env(&[("GATEHOUSE_SHARD_IDS", "4")])).unwrap();
    let err = config.cluster(3).unwrap_err();
    assert!(err.to_string().contains("shard 4 does not exist"), "{err}");

    let config = Config::load("", env(&[("GATEHOUSE_SHARD_COUNT", "8")])).unwrap();
    assert_eq!(config.cluster(1).unwrap().owned.len(), 8);
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

fn cluster() -> proto_core::profile::ClusterInfo {
    proto_core::profile::ClusterInfo {
        shard_count: 4,
        owned: vec![0, 1],
    }
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
    cfg.validate(&cluster()).unwrap();

    let cfg = parse_profile(
        r#"
        kind = "gatehouse"
        commands_exchange = "cmds"
        command_queue = "cmds.node-a"
        "#,
    )
    .unwrap();
    cfg.validate(&cluster()).unwrap();
    let cfg = parse_profile("kind = \"twilight-dispatch\"\ndefault_queue = true").unwrap();
    cfg.validate(&cluster()).unwrap();
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
    assert_eq!(config.discord.api_version, proto_core::shard::API_VERSION);
}
