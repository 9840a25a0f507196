//! Each example agent binary, driven over its socket by a test turnstile.

mod common;

use std::time::{Duration, Instant};

use common::{AgentProc, Client, Msg, RecvError, Req, Verdict, WAIT};
use turnstile_wire::limits::FRAME_BYTES_MAX;
use turnstile_wire::turnstile_capnp::EventType;
use turnstile_wire::{WireError, split_frame};

const NOOP: &str = env!("CARGO_BIN_EXE_turnstile-agent-noop");
const WAF: &str = env!("CARGO_BIN_EXE_turnstile-agent-waf");
const AUTH: &str = env!("CARGO_BIN_EXE_turnstile-agent-auth");
const RATELIMIT: &str = env!("CARGO_BIN_EXE_turnstile-agent-ratelimit");
const DELAY: &str = env!("CARGO_BIN_EXE_turnstile-agent-delay");
const CHAOS: &str = env!("CARGO_BIN_EXE_turnstile-agent-chaos");

fn sign(secret: &str, payload: &str) -> String {
    turnstile_agents::auth::sign_token(secret.as_bytes(), payload)
}

#[test]
fn noop_handshake_multiplexing_health_metrics_and_sigterm() {
    let mut agent = AgentProc::start(
        NOOP,
        &["--health-interval-ms", "50", "--metrics-interval-ms", "50"],
        None,
    );
    let (mut c, caps) = agent.connect();
    assert_eq!(caps.protocol_version, 2);
    assert_eq!(caps.agent_id, "noop");
    assert_eq!(caps.events, [EventType::RequestHeaders]);
    assert!(caps.cancellation && caps.capnp && caps.metrics_export);
    assert_eq!(caps.report_interval_ms, 50);
    assert!(caps.concurrency >= 64);
    // The first health report follows the handshake at once.
    assert_eq!(c.health(Duration::from_millis(500)).state, "healthy");
    c.configure("", 1);

    // 200 requests in flight at once, pipelined in one write; every answer matched by id.
    let mut batch = Vec::new();
    for cid in 1..=200u64 {
        batch.extend(c.request_frame(cid, &Req::get("/bench")));
    }
    c.send_raw(&batch);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let r = c.response(WAIT);
        assert_eq!(r.verdict, Verdict::Allow);
        assert!(seen.insert(r.cid), "answered twice: {}", r.cid);
    }
    assert_eq!(seen.len(), 200);

    // Periodic reports: health with load, metrics with the standard counters.
    let start = Instant::now();
    while c.metrics.is_empty() || c.healths.len() < 2 {
        assert!(start.elapsed() < WAIT, "no periodic health and metrics");
        match c.recv(WAIT).unwrap() {
            Msg::Health(h) => c.healths.push(h),
            Msg::Metrics(m) => c.metrics.push(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(c.healths.iter().any(|h| h.processed > 0), "{:?}", c.healths);
    let metrics = c.metrics.last().unwrap();
    let total = metrics
        .iter()
        .find(|(n, _)| n == "agent_requests_total")
        .unwrap()
        .1;
    assert!(total >= 200, "{metrics:?}");

    // SIGTERM: exit 0, socket file removed.
    agent.signal("TERM");
    let status = agent.wait_exit(WAIT);
    assert!(status.success(), "{status}:\n{}", agent.stderr());
    assert!(!agent.socket.exists());
}

#[test]
fn handshake_without_common_version_is_rejected() {
    let agent = AgentProc::start(NOOP, &[], None);
    let mut c = Client::connect(&agent.socket);
    c.send_handshake(&[1, 3]);
    match c.recv(WAIT).unwrap() {
        Msg::Rejected(reason) => assert!(reason.contains("version"), "{reason}"),
        other => panic!("expected rejection, got {other:?}"),
    }
    c.expect_closed(WAIT);
    // The agent still serves others.
    let (mut c, _) = agent.connect();
    assert_eq!(c.decide(1, &Req::get("/")).verdict, Verdict::Allow);
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let agent = AgentProc::start(NOOP, &[], None);
    let (mut a, _) = agent.connect();
    let (mut b, _) = agent.connect();
    // A valid header (ProxyToAgent, 16 bytes) around a payload that is no Cap'n Proto message.
    let mut bad = 16u32.to_le_bytes().to_vec();
    bad.push(3);
    bad.extend([0xffu8; 16]);
    a.send_raw(&bad);
    a.expect_closed(WAIT);
    // A header announcing more than FRAME_BYTES_MAX.
    let (mut big, _) = agent.connect();
    let mut header = (FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
    header.push(3);
    big.send_raw(&header);
    big.expect_closed(WAIT);
    // A request event before the handshake.
    let mut early = Client::connect(&agent.socket);
    let f = early.request_frame(1, &Req::get("/"));
    early.send_raw(&f);
    early.expect_closed(WAIT);
    // The other connection and new ones are unaffected.
    assert_eq!(b.decide(7, &Req::get("/")).verdict, Verdict::Allow);
    let (mut c, _) = agent.connect();
    assert_eq!(c.decide(8, &Req::get("/")).verdict, Verdict::Allow);
    assert!(
        agent.stderr().contains("closing this connection"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn delay_answers_out_of_order_and_cancel_drops_the_reply() {
    let agent = AgentProc::start(DELAY, &["--delay-ms", "20"], None);
    let (mut c, _) = agent.connect();
    let start = Instant::now();
    for (cid, ms) in [(1u64, "300"), (2, "0"), (3, "100")] {
        c.request(
            cid,
            &Req {
                headers: &[("x-delay-ms", ms)],
                ..Req::get("/")
            },
        );
    }
    let order: Vec<u64> = (0..3).map(|_| c.response(WAIT).cid).collect();
    assert_eq!(order, [2, 3, 1]);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    // The configured delay (flag) applies without the header.
    assert_eq!(c.decide(4, &Req::get("/")).verdict, Verdict::Allow);

    // Cancel: the reply for 5 is dropped; 6 (answered later) arrives; nothing for 5.
    c.request(
        5,
        &Req {
            headers: &[("x-delay-ms", "100")],
            ..Req::get("/")
        },
    );
    c.cancel(5);
    c.request(
        6,
        &Req {
            headers: &[("x-delay-ms", "250")],
            ..Req::get("/")
        },
    );
    assert_eq!(c.response(WAIT).cid, 6);
    assert_eq!(
        c.try_response(Duration::from_millis(100)),
        Err(RecvError::Timeout)
    );

    // Configuration changes the delay; shutdown closes after in-flight requests.
    c.configure("delay_ms = 0", 2);
    assert_eq!(c.decide(7, &Req::get("/")).verdict, Verdict::Allow);
    c.request(
        8,
        &Req {
            headers: &[("x-delay-ms", "100")],
            ..Req::get("/")
        },
    );
    c.send(0, |mut m| m.set_shutdown(()));
    assert_eq!(c.response(WAIT).cid, 8);
    c.expect_closed(WAIT);
}

#[test]
fn waf_blocks_attacks_and_allows_clean_requests() {
    let agent = AgentProc::start(WAF, &[], None);
    let (mut c, caps) = agent.connect();
    assert!(caps.events.contains(&EventType::RequestBody));
    assert_eq!(caps.max_body_bytes, 65536);
    assert!(!caps.streaming_body);

    let r = c.decide(
        1,
        &Req {
            query: "q=1 union select 2",
            ..Req::get("/")
        },
    );
    assert_eq!(r.status(), 403, "{r:?}");
    assert_eq!(r.rule_ids, ["942100"]);
    let r = c.decide(
        2,
        &Req {
            query: "q=1%20UNION%20SELECT%202",
            ..Req::get("/search")
        },
    );
    assert_eq!(r.rule_ids, ["942100"]);
    let r = c.decide(
        3,
        &Req {
            query: "q=rust&page=2",
            ..Req::get("/search")
        },
    );
    assert_eq!(r.verdict, Verdict::Allow);
    assert!(!r.need_more);
    let r = c.decide(
        4,
        &Req {
            headers: &[("user-agent", "sqlmap/1.7")],
            ..Req::get("/")
        },
    );
    assert_eq!(
        (r.status(), r.rule_ids.as_slice()),
        (403, &["913100".to_owned()][..])
    );
    let r = c.decide(5, &Req::get("/files/../../etc/passwd"));
    assert_eq!(r.rule_ids, ["930100"]);

    // A body: headers answer needMore, the chunks decide.
    let post = |len: &'static str| Req {
        method: "POST",
        headers: Box::leak(Box::new([("content-length", len)])),
        ..Req::get("/comment")
    };
    let r = c.decide(6, &post("31"));
    assert!(r.need_more && r.verdict == Verdict::Allow, "{r:?}");
    c.body(6, 0, b"text=hello+", false);
    assert!(c.response(WAIT).need_more);
    c.body(6, 1, b"<script>alert(1)</script>", true);
    let r = c.response(WAIT);
    assert_eq!(
        (r.cid, r.status(), r.rule_ids.clone()),
        (6, 403, vec!["941100".to_owned()])
    );
    assert!(!r.need_more);
    // Blocked on the headers: the inline chunk turnstile sends right after is not buffered.
    let attack = Req {
        query: "q=<script>",
        ..post("10")
    };
    assert_eq!(c.decide(11, &attack).status(), 403);
    c.body(11, 0, b"text=", false);
    let r = c.response(WAIT);
    assert_eq!((r.cid, r.need_more), (11, false));
    assert!(c.decide(7, &post("10")).need_more);
    c.body(7, 0, b"text=hello", true);
    assert_eq!(c.response(WAIT).verdict, Verdict::Allow);

    // A bad rule is refused with the field named; the previous rules stay.
    c.configure("[[rules]]\nid = \"1\"\npattern = \"(\"", 2);
    match c.next_other(WAIT).unwrap() {
        Msg::ConfigError { field, .. } => assert_eq!(field, "rules[0].pattern"),
        other => panic!("expected configError, got {other:?}"),
    }
    assert_eq!(
        c.decide(
            8,
            &Req {
                query: "x=<script>",
                ..Req::get("/")
            }
        )
        .status(),
        403
    );
    // A custom rule, body inspection off.
    c.configure(
        "inspect_body = false\n[[rules]]\nid = \"100001\"\npattern = \"^/internal/\"\ntargets = [\"path\"]",
        3,
    );
    let r = c.decide(9, &Req::get("/internal/metrics"));
    assert_eq!(r.rule_ids, ["100001"]);
    assert_eq!(c.decide(10, &post("10")).verdict, Verdict::Allow);
}

#[test]
fn waf_config_file_applies_at_start() {
    let agent = AgentProc::start(
        WAF,
        &[],
        Some("block_status = 406\ndisabled_rules = [\"942100\"]"),
    );
    let (mut c, _) = agent.connect();
    assert_eq!(
        c.decide(
            1,
            &Req {
                query: "q=1 union select 2",
                ..Req::get("/")
            }
        )
        .verdict,
        Verdict::Allow
    );
    assert_eq!(
        c.decide(
            2,
            &Req {
                query: "q=<script>",
                ..Req::get("/")
            }
        )
        .status(),
        406
    );
}

#[test]
fn auth_api_keys_and_hmac_tokens() {
    let config = "hmac_secret = \"s3cret\"\n[api_keys]\nk-good = \"billing\"\n";
    let agent = AgentProc::start(AUTH, &[], None);
    let (mut c, _) = agent.connect();
    // Unconfigured: everything is refused.
    assert_eq!(
        c.decide(
            1,
            &Req {
                headers: &[("x-api-key", "k-good")],
                ..Req::get("/")
            }
        )
        .status(),
        401
    );
    c.configure(config, 1);

    let r = c.decide(
        2,
        &Req {
            headers: &[("x-api-key", "k-good")],
            ..Req::get("/")
        },
    );
    assert_eq!(r.verdict, Verdict::Allow);
    assert_eq!(
        r.request_ops,
        [("set".into(), "x-auth-subject".into(), "billing".into())]
    );
    let r = c.decide(
        3,
        &Req {
            headers: &[("x-api-key", "k-bad")],
            ..Req::get("/")
        },
    );
    assert_eq!(
        (r.status(), r.reasons.clone()),
        (401, vec!["auth:invalid-api-key".to_owned()])
    );
    let r = c.decide(4, &Req::get("/"));
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.block_header("www-authenticate").as_deref(),
        Some("Bearer realm=\"turnstile\"")
    );

    let bearer = format!("Bearer {}", sign("s3cret", "alice@example.com"));
    let r = c.decide(
        5,
        &Req {
            headers: &[("authorization", &bearer)],
            ..Req::get("/")
        },
    );
    assert_eq!(r.verdict, Verdict::Allow, "{r:?}");
    assert_eq!(r.request_ops[0].2, "alice@example.com");
    let forged = format!("Bearer {}", sign("guess", "alice@example.com"));
    let r = c.decide(
        6,
        &Req {
            headers: &[("authorization", &forged)],
            ..Req::get("/")
        },
    );
    assert_eq!(
        (r.status(), r.reasons.clone()),
        (401, vec!["auth:bad-signature".to_owned()])
    );
    let expired = format!("Bearer {}", sign("s3cret", "alice:1000"));
    let r = c.decide(
        7,
        &Req {
            headers: &[("authorization", &expired)],
            ..Req::get("/")
        },
    );
    assert_eq!(r.reasons, ["auth:expired"]);
    let r = c.decide(
        8,
        &Req {
            headers: &[("authorization", "Bearer nonsense")],
            ..Req::get("/")
        },
    );
    assert_eq!(r.status(), 401);
}

#[test]
fn ratelimit_blocks_after_the_burst() {
    let agent = AgentProc::start(RATELIMIT, &[], Some("rate_per_second = 0.5\nburst = 3"));
    let (mut c, _) = agent.connect();
    let from = |ip: [u8; 4]| Req {
        client_ip: ip,
        ..Req::get("/")
    };
    for cid in 1..=3 {
        let r = c.decide(cid, &from([198, 51, 100, 1]));
        assert_eq!(r.verdict, Verdict::Allow, "request {cid}");
        let left = (3 - cid).to_string();
        assert_eq!(
            r.response_ops,
            [("set".into(), "x-ratelimit-remaining".into(), left)]
        );
    }
    let r = c.decide(4, &from([198, 51, 100, 1]));
    assert_eq!(r.status(), 429, "{r:?}");
    assert_eq!(r.block_header("retry-after").as_deref(), Some("2"));
    // Another client, and an API key from the limited address, have buckets of their own.
    assert_eq!(
        c.decide(5, &from([198, 51, 100, 2])).verdict,
        Verdict::Allow
    );
    let keyed = Req {
        headers: &[("x-api-key", "k1")],
        ..from([198, 51, 100, 1])
    };
    assert_eq!(c.decide(6, &keyed).verdict, Verdict::Allow);
    // Buckets are shared across connections.
    let (mut d, _) = agent.connect();
    assert_eq!(d.decide(1, &from([198, 51, 100, 1])).status(), 429);
}

#[test]
fn chaos_misbehaves_as_declared() {
    let agent = AgentProc::start(CHAOS, &["--health-interval-ms", "5000"], None);
    let chaos = |mode: &'static str| Req {
        headers: Box::leak(Box::new([("x-chaos", mode)])),
        ..Req::get("/")
    };

    // garbage: bytes that are no valid frame.
    let (mut c, _) = agent.connect();
    assert_eq!(c.health(WAIT).state, "healthy");
    c.request(1, &chaos("garbage"));
    let bytes = c.read_raw(64, WAIT);
    assert!(bytes.len() >= 5, "{bytes:?}");
    assert!(split_frame(&bytes).is_err(), "garbage parsed: {bytes:?}");

    // oversized: a header over the limit, refused before any payload.
    let (mut c, _) = agent.connect();
    c.health(WAIT);
    c.request(1, &chaos("oversized"));
    let bytes = c.read_raw(5, WAIT);
    assert!(
        matches!(split_frame(&bytes), Err(WireError::TooLarge { .. })),
        "{bytes:?}"
    );

    // hang: no answer, while other requests on the connection go on; slow answers later.
    let (mut c, _) = agent.connect();
    c.request(1, &chaos("hang"));
    c.request(2, &chaos("slow:50"));
    assert_eq!(c.decide(3, &chaos("block")).status(), 503);
    assert_eq!(c.response(WAIT).cid, 2);
    assert_eq!(
        c.try_response(Duration::from_millis(100)),
        Err(RecvError::Timeout)
    );

    // panic: the SDK answers the dropped reply; unhealthy: reported at once.
    let r = c.decide(4, &chaos("panic"));
    assert_eq!(
        (r.verdict.clone(), r.tags.clone()),
        (Verdict::Allow, vec!["sdk:dropped-reply".to_owned()])
    );
    c.healths.clear();
    c.request(5, &chaos("unhealthy"));
    let h = c.health(WAIT);
    assert_eq!(h.state, "unhealthy");
    assert_eq!(c.response(WAIT).cid, 5);
    assert_eq!(c.decide(6, &chaos("healthy")).verdict, Verdict::Allow);
    assert_eq!(c.health(WAIT).state, "healthy");

    // crash: the process exits, the connection ends.
    let mut agent = agent;
    c.request(7, &chaos("crash"));
    c.expect_closed(WAIT);
    let status = agent.wait_exit(WAIT);
    assert_eq!(status.code(), Some(70));
}

#[test]
fn busy_poll_serves_and_stops() {
    let mut agent = AgentProc::start(NOOP, &["--busy-poll"], None);
    let (mut c, _) = agent.connect();
    for cid in 1..=50 {
        assert_eq!(c.decide(cid, &Req::get("/")).verdict, Verdict::Allow);
    }
    agent.signal("INT");
    let status = agent.wait_exit(WAIT);
    assert!(status.success(), "{status}:\n{}", agent.stderr());
    c.expect_closed(WAIT);
}

#[test]
fn bad_command_lines_exit_2() {
    let run = |args: &[&str]| {
        std::process::Command::new(NOOP)
            .args(args)
            .env_remove(turnstile_agent_sdk::SOCKET_ENV)
            .output()
            .unwrap()
    };
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["--socket", "x", "--bogus"]).status.code(), Some(2));
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--busy-poll"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "burst = 0").unwrap();
    let out = std::process::Command::new(RATELIMIT)
        .arg("--socket")
        .arg(dir.path().join("s"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("burst"));
}
