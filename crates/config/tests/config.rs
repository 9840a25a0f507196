//! Loading and validating configuration files: defaults, and one test per kind of error.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use turnstile_config::limits::CONFIG_FILE_BYTES_MAX;
use turnstile_config::{Config, ConfigError, Congestion, DEFAULT_CONFIG_TOML, SpinPolicy};

/// The error message `text` fails with.
fn error(text: &str) -> String {
    match Config::parse(text) {
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_default_loads_and_validates() {
    let cfg = Config::load(None).expect("embedded default is valid");
    assert_eq!(
        cfg.server.listen,
        "127.0.0.1:4433".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(cfg.server.shards, 0);
    assert!(cfg.server.shard_count() >= 1);
    assert!(cfg.server.cores.is_empty());
    assert!(cfg.server.state_dir.ends_with("turnstile"));
    assert_eq!(cfg.server.drain_timeout, Duration::from_secs(5));
    assert_eq!(cfg.shard.spin, SpinPolicy::Fixed(50));
    assert_eq!(cfg.shard.ring_entries, 1024);
    assert!(!cfg.shard.sqpoll);
    assert_eq!(cfg.shard.max_sleep, None);
    assert_eq!(cfg.quic.max_concurrent_bidi_streams, 1024);
    assert_eq!(cfg.quic.idle_timeout, Duration::from_secs(30));
    assert_eq!(cfg.quic.keep_alive, Some(Duration::from_secs(10)));
    assert_eq!(cfg.quic.max_connections_per_shard, 10_000);
    assert_eq!(cfg.quic.max_request_bytes, 4 << 20);
    assert_eq!(cfg.quic.retry_above_initials_per_sec, 1000);
    assert_eq!(cfg.quic.congestion, Congestion::Cubic);
    assert!(cfg.quic.zero_rtt);
    assert_eq!(cfg.tls, Default::default());
}

#[test]
fn an_empty_file_means_the_embedded_defaults() {
    // The serde defaults and default.toml must not drift apart.
    assert_eq!(
        Config::parse("").expect("empty"),
        Config::load(None).expect("default")
    );
    assert_eq!(
        Config::parse(DEFAULT_CONFIG_TOML).expect("text"),
        Config::load(None).expect("default")
    );
}

#[test]
fn a_minimal_file_overrides_only_its_keys() {
    let cfg = Config::parse("[quic]\ncongestion = \"bbr\"\n[server]\nlisten = \"[::1]:443\"\n")
        .expect("valid");
    assert_eq!(cfg.quic.congestion, Congestion::Bbr);
    assert_eq!(cfg.server.listen.port(), 443);
    assert_eq!(cfg.quic.max_concurrent_bidi_streams, 1024);
    let cfg = Config::parse("[quic]\ncongestion = \"newreno\"\nkeep_alive_ms = 0\n").expect("ok");
    assert_eq!(
        (cfg.quic.congestion, cfg.quic.keep_alive),
        (Congestion::NewReno, None)
    );
}

#[test]
fn spin_policy_forms() {
    let spin = |text: &str| Config::parse(text).expect("valid").shard.spin;
    assert_eq!(spin("[shard]\nspin_us = 0"), SpinPolicy::Fixed(0));
    assert_eq!(
        spin("[shard]\nspin = \"adaptive\""),
        SpinPolicy::Adaptive { max_us: 50 }
    );
    assert_eq!(
        spin("[shard]\nspin = \"adaptive\"\nspin_us = 200"),
        SpinPolicy::Adaptive { max_us: 200 }
    );
    assert_eq!(spin("[shard]\nspin = \"busy-poll\""), SpinPolicy::BusyPoll);
    assert_eq!(
        error("[shard]\nspin = \"busy-poll\"\nspin_us = 50"),
        "shard.spin_us = 50: has no meaning with shard.spin = \"busy-poll\": remove it"
    );
    assert_eq!(
        error("[shard]\nspin = \"sometimes\""),
        "shard.spin = \"sometimes\": must be one of \"fixed\", \"adaptive\", \"busy-poll\""
    );
    assert_eq!(
        error("[shard]\nspin = \"adaptive\"\nspin_us = 0"),
        "shard.spin_us = 0: must be between 1 and 100000"
    );
}

#[test]
fn max_sleep_bounds_the_kernel_sleep() {
    let max_sleep = |text: &str| Config::parse(text).expect("valid").shard.max_sleep;
    assert_eq!(max_sleep("[shard]\nmax_sleep_ms = 0"), None);
    assert_eq!(
        max_sleep("[shard]\nmax_sleep_ms = 5"),
        Some(Duration::from_millis(5))
    );
    assert_eq!(
        error("[shard]\nmax_sleep_ms = 1001"),
        "shard.max_sleep_ms = 1001: must be between 0 and 1000"
    );
}

#[test]
fn zero_streams_is_refused() {
    assert_eq!(
        error("[quic]\nmax_concurrent_bidi_streams = 0\n"),
        "quic.max_concurrent_bidi_streams = 0: must be between 1 and 100000"
    );
}

#[test]
fn an_unknown_congestion_controller_is_refused() {
    assert_eq!(
        error("[quic]\ncongestion = \"vegas\"\n"),
        "quic.congestion = \"vegas\": must be one of \"cubic\", \"bbr\", \"newreno\""
    );
}

#[test]
fn unknown_keys_are_refused_with_their_position() {
    let message = error("[quic]\nmax_streams = 5\n");
    assert!(message.contains("unknown field `max_streams`"), "{message}");
    assert!(message.contains("line 2, column 1"), "{message}");
    let message = error("[server]\nlisten = \"127.0.0.1:1\"\n[sharding]\n");
    assert!(message.contains("unknown field `sharding`"), "{message}");
    let message = error("[agents.waf]\nsocket = \"/tmp/w.sock\"\ntimeout = 5\n");
    assert!(message.contains("unknown field `timeout`"), "{message}");
}

const TWO_AGENTS: &str = r#"
[agents.auth]
command = ["turnstile-agent-auth", "--socket", "{socket}"]
timeout_ms = 50
cpus = [0]
fail_mode = "closed"
fail_status = 401
config = 'keys = ["k1"]'

[agents.waf]
socket = "/run/waf.sock"
peer_uid = 1000
connections = 8
fail_mode = "open"
[agents.waf.breaker]
consecutive_failures = 3
open_ms = 1000

[[routes]]
id = "default"
chain = [["auth"], ["waf"]]

[[routes]]
id = "api"
chain = [["auth", "waf"]]
fail_mode = "open"
"#;

#[test]
fn agents_and_routes_parse() {
    use turnstile_config::{FailMode, Placement};
    let cfg = Config::parse(TWO_AGENTS).expect("valid config");
    assert_eq!(cfg.agents.len(), 2);
    let auth = &cfg.agents[0];
    assert_eq!(auth.id, "auth");
    assert!(matches!(&auth.placement, Placement::Supervised { argv } if argv[2] == "{socket}"));
    assert_eq!(auth.fail_mode, FailMode::Closed { status: 401 });
    assert_eq!(auth.connections, 4, "default pool size");
    assert_eq!(auth.cpus, vec![0]);
    let waf = &cfg.agents[1];
    assert!(
        matches!(&waf.placement, Placement::External { socket } if socket.ends_with("waf.sock"))
    );
    assert_eq!(waf.peer_uid, Some(1000));
    assert_eq!(waf.breaker.consecutive_failures, 3);
    assert_eq!(waf.breaker.min_calls, 20, "default");
    assert_eq!(cfg.routes.len(), 2);
    assert_eq!(
        cfg.routes[0].chain,
        vec![vec!["auth".to_string()], vec!["waf".to_string()]]
    );
    assert_eq!(cfg.routes[1].fail_mode, Some(FailMode::Open));
}

#[test]
fn agent_and_route_errors_name_the_key() {
    let cases = [
        ("[agents.x]\n", "set `command = [...]`"),
        (
            "[agents.x]\ncommand = [\"a\"]\nsocket = \"/s\"\n",
            "set exactly one of",
        ),
        ("[agents.X]\nsocket = \"/s\"\n", "agent ids are"),
        (
            "[agents.x]\nsocket = \"/s\"\nconnections = 33\n",
            "agents.x.connections = 33",
        ),
        (
            "[agents.x]\nsocket = \"/s\"\nfail_mode = \"maybe\"\n",
            "agents.x.fail_mode = \"maybe\"",
        ),
        (
            "[agents.x]\nsocket = \"/s\"\n[[routes]]\nchain = [[\"y\"]]\n",
            "no such agent",
        ),
        (
            "[agents.x]\nsocket = \"/s\"\n[[routes]]\nchain = [[\"x\"], [\"x\"]]\n",
            "appears twice",
        ),
        ("[[routes]]\nchain = []\n", "routes[0].chain"),
        (
            "[agents.x]\nsocket = \"/s\"\ncpus = [0]\n",
            "only agents turnstile starts",
        ),
        (
            "[agents.x]\nsocket = \"/s\"\n[[routes]]\nchain = [[\"x\"]]\n[[routes]]\nid = \"default\"\nchain = [[\"x\"]]\n",
            "route id used twice",
        ),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
    }
}

#[test]
fn syntax_and_type_errors_name_line_and_column() {
    let message = error("[quic]\nidle_timeout_ms = = 3\n");
    assert!(
        message.starts_with("config: TOML parse error at line 2, column"),
        "{message}"
    );
    let message = error("[quic]\nzero_rtt = \"yes\"\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("expected a boolean"), "{message}");
}

#[test]
fn bad_listen_addresses_are_refused() {
    assert_eq!(
        error("[server]\nlisten = \"localhost:4433\"\n"),
        "server.listen = \"localhost:4433\": not an IP address and port, e.g. \
         \"127.0.0.1:4433\" or \"[::]:4433\" (host names are not resolved)"
    );
    assert!(
        error("[server]\nlisten = \"127.0.0.1\"\n").starts_with("server.listen = \"127.0.0.1\"")
    );
    assert_eq!(
        error("[server]\nlisten = \"127.0.0.1:0\"\n"),
        "server.listen = \"127.0.0.1:0\": port 0 is not allowed: every shard must bind the same port"
    );
}

#[test]
fn range_and_consistency_errors() {
    let cases = [
        (
            "[server]\nshards = 2000",
            "server.shards = 2000: must be between 0 and 1024",
        ),
        (
            "[server]\ncores = [1, 3, 1]",
            "server.cores = [1, 3, 1]: core 1 is listed twice",
        ),
        (
            "[server]\ncores = [-1]",
            "server.cores = -1: must be between 0 and 8191",
        ),
        (
            "[server]\nshards = 3\ncores = [0, 1]",
            "server.shards = 3: must be 0 or equal to the number of server.cores (2)",
        ),
        (
            "[shard]\nring_entries = 1000",
            "shard.ring_entries = 1000: must be a power of two",
        ),
        (
            "[quic]\nidle_timeout_ms = -5",
            "quic.idle_timeout_ms = -5: must be between 100 and 600000",
        ),
        (
            "[quic]\nidle_timeout_ms = 5000\nkeep_alive_ms = 5000",
            "quic.keep_alive_ms = 5000: must be below quic.idle_timeout_ms (5000), or 0 for off",
        ),
        (
            "[quic]\nstream_receive_window_bytes = 2000000\nreceive_window_bytes = 1000000",
            "quic.receive_window_bytes = 1000000: must be at least \
             quic.stream_receive_window_bytes (2000000)",
        ),
        (
            "[quic]\nmax_request_bytes = 0",
            "quic.max_request_bytes = 0: must be between 1 and 67108864",
        ),
        (
            "[tls]\ncert = \"c.pem\"",
            "tls.key = \"\": must be set when tls.cert is set (or leave both empty for a \
             development certificate)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "for {text:?}");
    }
    let cfg = Config::parse("[server]\ncores = [4, 5]").expect("valid");
    assert_eq!(cfg.server.shard_count(), 2);
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.toml");
    let mut text = String::from("# padding\n");
    while (text.len() as u64) <= CONFIG_FILE_BYTES_MAX {
        text.push_str("# .................................................................\n");
    }
    std::fs::write(&path, &text).expect("write");
    let err = Config::load(Some(&path)).expect_err("too large");
    assert!(matches!(err, ConfigError::ConfigTooLarge { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("big.toml is larger than 1048576 bytes"),
        "{message}"
    );
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let err = Config::load(Some(Path::new("/nonexistent/turnstile.toml"))).expect_err("missing");
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/turnstile.toml: "),
        "{err}"
    );
}

#[test]
fn file_errors_name_the_file_and_relative_paths_follow_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("turnstile.toml");
    std::fs::write(&path, "[quic]\nmax_concurrent_bidi_streams = 0\n").expect("write");
    let message = Config::load(Some(&path)).expect_err("invalid").to_string();
    assert_eq!(
        message,
        "quic.max_concurrent_bidi_streams = 0: must be between 1 and 100000"
    );

    std::fs::write(&path, "[quic\n").expect("write");
    let message = Config::load(Some(&path)).expect_err("syntax").to_string();
    assert!(
        message.starts_with(&format!("{}: TOML parse error", path.display())),
        "{message}"
    );

    let text = "[server]\nstate_dir = \"state\"\n[tls]\ncert = \"c.pem\"\nkey = \"/k.pem\"\n";
    std::fs::write(&path, text).expect("write");
    let cfg = Config::load(Some(&path)).expect("valid");
    assert_eq!(cfg.server.state_dir, dir.path().join("state"));
    assert_eq!(cfg.tls.cert, Some(dir.path().join("c.pem")));
    assert_eq!(cfg.tls.key.as_deref(), Some(Path::new("/k.pem")));
}
