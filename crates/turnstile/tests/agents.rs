//! The agent plane through the real binary with real agent processes (started by turnstile's
//! supervisor): verdicts, chains, parallel groups, failures.

// Each test holds `common::serial()` for its whole run, across awaits, on purpose: it keeps the
// servers of different tests from competing for the machine's two cores.
#![allow(clippy::await_holding_lock)]

mod common;

use std::time::{Duration, Instant};

use common::{Engine, Server, agent_binary, call, client_endpoint, decide};

/// Runs the test function `$name(engine)` on turnstile and on the tokio + quinn baseline: the
/// same agents, routes, timeouts and fail modes must behave the same on both.
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn turnstile() {
                super::$name(super::Engine::Turnstile).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn baseline() {
                super::$name(super::Engine::Baseline).await
            }
        }
    };
}

fn agent_table(id: &str, binary: &str, extra: &str) -> String {
    format!(
        "[agents.{id}]\ncommand = [\"{}\", \"--socket\", \"{{socket}}\"]\n{extra}\n",
        agent_binary(binary).display()
    )
}

on_both_engines!(waf_blocks_attacks_and_allows_clean_requests);
async fn waf_blocks_attacks_and_allows_clean_requests(engine: Engine) {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"waf\"]]\n",
        // Pinned to the first core, as an agent placed next to its shard would be.
        agent_table("waf", "waf", "timeout_ms = 1000\ncpus = [0]")
    );
    let server = Server::start_on(engine, "", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let t0 = Instant::now();
    let clean = call(
        &conn,
        &decide(
            "",
            "GET",
            "/products",
            "page=2",
            &[("user-agent", "curl/8")],
        ),
    )
    .await
    .unwrap();
    let (verdict, _, timings) = common::decision(&clean);
    assert_eq!(verdict, "allow");
    assert_eq!(timings, vec![("waf".to_string(), "Allowed".to_string())]);
    let attack = call(
        &conn,
        &decide("", "GET", "/search", "q=1 union select 2", &[]),
    )
    .await
    .unwrap();
    let (verdict, rules, _) = common::decision(&attack);
    assert_eq!(verdict, "block:403");
    assert!(!rules.is_empty(), "the block names its rule");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// The demo chain: auth first, then waf and ratelimit in parallel.
fn demo_chain(extra_route: &str) -> String {
    format!(
        "{}{}{}\n[[routes]]\nid = \"default\"\nchain = [[\"auth\"], [\"waf\", \"ratelimit\"]]\n{extra_route}",
        agent_table(
            "auth",
            "auth",
            "timeout_ms = 1000\nconfig = '''\n[api_keys]\n\"k-good\" = \"tests\"\n'''"
        ),
        agent_table("waf", "waf", "timeout_ms = 1000"),
        agent_table(
            "ratelimit",
            "ratelimit",
            "timeout_ms = 1000\nconfig = '''\nrate_per_second = 0.001\nburst = 3\n'''"
        ),
    )
}

on_both_engines!(auth_then_waf_and_ratelimit_in_parallel);
async fn auth_then_waf_and_ratelimit_in_parallel(engine: Engine) {
    let _serial = common::serial();
    let server = Server::start_on(engine, "", &demo_chain(""));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    // No key: auth blocks, and the second group never runs.
    let (v, _, timings) =
        common::decision(&call(&conn, &decide("", "GET", "/", "", &[])).await.unwrap());
    assert_eq!(v, "block:401");
    assert_eq!(timings[0], ("auth".to_string(), "Blocked".to_string()));
    assert!(
        timings[1..]
            .iter()
            .all(|(_, o)| o == "Skipped" || o == "Cancelled"),
        "{timings:?}"
    );
    // Good key: all three run, in chain order in the timings.
    let (v, _, timings) = common::decision(
        &call(
            &conn,
            &decide("", "GET", "/ok", "", &[("x-api-key", "k-good")]),
        )
        .await
        .unwrap(),
    );
    assert_eq!(v, "allow");
    let names: Vec<&str> = timings.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, vec!["auth", "waf", "ratelimit"]);
    assert!(timings.iter().all(|(_, o)| o == "Allowed"), "{timings:?}");
    // Good key, attack: waf blocks.
    let (v, rules, _) = common::decision(
        &call(
            &conn,
            &decide(
                "",
                "GET",
                "/q",
                "id=1 union select pw",
                &[("x-api-key", "k-good")],
            ),
        )
        .await
        .unwrap(),
    );
    assert_eq!(v, "block:403");
    assert!(!rules.is_empty());
    // The burst of 3 is spent by now: ratelimit blocks.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (v, _, _) = common::decision(
            &call(
                &conn,
                &decide("", "GET", "/ok", "", &[("x-api-key", "k-good")]),
            )
            .await
            .unwrap(),
        );
        statuses.push(v);
    }
    assert!(statuses.contains(&"block:429".to_string()), "{statuses:?}");
}

on_both_engines!(three_agents_in_one_parallel_group);
async fn three_agents_in_one_parallel_group(engine: Engine) {
    let _serial = common::serial();
    let config = format!(
        "{}{}{}\n[[routes]]\nid = \"default\"\nchain = [[\"a\", \"b\", \"c\"]]\n",
        agent_table("a", "noop", ""),
        agent_table("b", "noop", ""),
        agent_table("c", "delay", "config = 'delay_ms = 50'"),
    );
    let server = Server::start_on(engine, "", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let conn = conn.clone();
        set.spawn(async move {
            let t0 = Instant::now();
            let bytes = call(&conn, &decide("", "GET", "/", "", &[])).await.unwrap();
            (t0.elapsed(), common::decision(&bytes))
        });
    }
    while let Some(r) = set.join_next().await {
        let (elapsed, (v, _, timings)) = r.unwrap();
        assert_eq!(v, "allow");
        assert_eq!(timings.len(), 3);
        // 20 requests at 50 ms each would take a second if the delay agent served them one by
        // one; in parallel on multiplexed connections they all finish well below that.
        assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    }
}

fn chaos_config(fail_mode: &str) -> String {
    format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"chaos\"]]\n",
        agent_table(
            "chaos",
            "chaos",
            &format!(
                "timeout_ms = 300\nfail_mode = \"{fail_mode}\"\nfail_status = 503\n[agents.chaos.breaker]\nconsecutive_failures = 1000\n"
            )
        )
    )
}

/// Sends `mode` via `x-chaos` and returns (verdict, timing outcome, elapsed).
async fn chaos(conn: &quinn::Connection, mode: &str) -> (String, String, Duration) {
    let t0 = Instant::now();
    let bytes = call(conn, &decide("", "GET", "/", "", &[("x-chaos", mode)]))
        .await
        .unwrap();
    let (v, _, timings) = common::decision(&bytes);
    (v, timings[0].1.clone(), t0.elapsed())
}

on_both_engines!(hanging_agent_gets_the_fail_mode_within_its_timeout);
async fn hanging_agent_gets_the_fail_mode_within_its_timeout(engine: Engine) {
    let _serial = common::serial();
    let server = Server::start_on(engine, "", &chaos_config("closed"));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let (v, outcome, elapsed) = chaos(&conn, "hang").await;
    assert_eq!((v.as_str(), outcome.as_str()), ("block:503", "Timeout"));
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(300 + 700),
        "timeout plus a margin: {elapsed:?}"
    );
    // Others on the same agent are not held up by the hung call.
    let (v, outcome, _) = chaos(&conn, "allow").await;
    assert_eq!((v.as_str(), outcome.as_str()), ("allow", "Allowed"));
}

on_both_engines!(fail_open_allows_with_an_audit_trail);
async fn fail_open_allows_with_an_audit_trail(engine: Engine) {
    let _serial = common::serial();
    let server = Server::start_on(engine, "", &chaos_config("open"));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let (v, outcome, _) = chaos(&conn, "hang").await;
    assert_eq!((v.as_str(), outcome.as_str()), ("allow", "Timeout"));
    let bytes = call(&conn, &decide("", "GET", "/", "", &[("x-chaos", "hang")]))
        .await
        .unwrap();
    let tags = common::audit_tags(&bytes);
    assert!(
        tags.iter()
            .any(|t| t.contains("fail-open") && t.contains("chaos")),
        "{tags:?}"
    );
}

on_both_engines!(garbage_and_oversized_frames_fail_only_their_connection);
async fn garbage_and_oversized_frames_fail_only_their_connection(engine: Engine) {
    let _serial = common::serial();
    let server = Server::start_on(engine, "", &chaos_config("closed"));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    for mode in ["garbage", "oversized"] {
        // Concurrent good requests may share the broken connection and fail with it; they
        // must all get an answer (a verdict), none may be lost.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..10 {
            let conn = conn.clone();
            let m = if i == 0 { mode } else { "allow" };
            set.spawn(async move { chaos(&conn, m).await });
        }
        let mut answered = 0;
        while let Some(r) = set.join_next().await {
            let (_, _, elapsed) = r.unwrap();
            assert!(elapsed < Duration::from_secs(2), "{mode}: {elapsed:?}");
            answered += 1;
        }
        assert_eq!(answered, 10);
        // The pool reconnects: later requests are served normally.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (v, _, _) = chaos(&conn, "allow").await;
            if v == "allow" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: agent never served again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

on_both_engines!(killed_agent_is_restarted_by_the_supervisor);
async fn killed_agent_is_restarted_by_the_supervisor(engine: Engine) {
    let _serial = common::serial();
    let server = Server::start_on(engine, "", &chaos_config("closed"));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    // The agent process exits mid-request: that request gets the fail mode at once.
    let (v, outcome, elapsed) = chaos(&conn, "crash").await;
    assert_eq!(v, "block:503");
    assert!(outcome == "Error" || outcome == "Timeout", "{outcome}");
    assert!(elapsed < Duration::from_millis(300 + 700), "{elapsed:?}");
    // The supervisor restarts it; the pool reconnects; requests are allowed again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (v, _, _) = chaos(&conn, "allow").await;
        if v == "allow" {
            break;
        }
        assert!(Instant::now() < deadline, "agent never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_engines!(unknown_route_is_a_typed_error);
async fn unknown_route_is_a_typed_error(engine: Engine) {
    let _serial = common::serial();
    let server = Server::start_on(engine, "", &demo_chain(""));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let bytes = call(&conn, &decide("nope", "GET", "/", "", &[]))
        .await
        .unwrap();
    assert!(matches!(
        common::parse(&bytes),
        common::Reply::Error(11, code, _) if code == "UnknownRoute"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_pushes_new_agent_configuration() {
    let _serial = common::serial();
    let rules = |word: &str| {
        format!(
            "timeout_ms = 1000\nconfig = '''\ndefault_rules = false\n[[rules]]\nid = \"r-{word}\"\ndescription = \"test\"\npattern = \"{word}\"\ntargets = [\"path\"]\n'''"
        )
    };
    let config = |word: &str| {
        format!(
            "{}\n[[routes]]\nid = \"default\"\nchain = [[\"waf\"]]\n",
            agent_table("waf", "waf", &rules(word))
        )
    };
    let mut server = Server::start("", &config("alpha"));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let verdict = |path: &'static str| {
        let conn = conn.clone();
        async move {
            common::decision(
                &call(&conn, &decide("", "GET", path, "", &[]))
                    .await
                    .unwrap(),
            )
            .0
        }
    };
    assert_eq!(verdict("/alpha").await, "block:403");
    assert_eq!(verdict("/beta").await, "allow");
    let path = server.dir.path().join("turnstile.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"alpha\"", "\"beta\"")
            .replace("r-alpha", "r-beta"),
    )
    .unwrap();
    server.signal("HUP");
    server.wait_for_line(
        "reload: pushing new configuration to 1 agent",
        Duration::from_secs(10),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if verdict("/beta").await == "block:403" && verdict("/alpha").await == "allow" {
            break;
        }
        assert!(Instant::now() < deadline, "the new rules never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_chunks_on_later_frames_reach_body_agents() {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"waf\"]]\n",
        agent_table("waf", "waf", "timeout_ms = 2000")
    );
    let server = Server::start("", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let body_request = |second: &'static str| async {
        let first = common::request_frame(|mut r| {
            r.set_correlation_id(3);
            let mut dr = r.init_decide().init_phase().init_request();
            let mut req = dr.reborrow().init_request();
            req.set_method("POST");
            req.set_path("/comments");
            let mut h = req.init_headers(1).get(0);
            h.set_name(b"content-type");
            h.set_value(b"text/plain");
            let mut b = dr.init_body();
            b.set_data(b"first part, harmless; ");
            b.set_is_last(false);
        });
        let next = common::request_frame(|mut r| {
            r.set_correlation_id(3);
            let mut b = r.init_decide().init_phase().init_request_body();
            b.set_chunk_index(1);
            b.set_data(second.as_bytes());
            b.set_is_last(true);
        });
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await; // the second chunk comes later
        send.write_all(&next).await.unwrap();
        send.finish().unwrap();
        common::decision(&recv.read_to_end(1 << 20).await.unwrap()).0
    };
    assert_eq!(
        body_request("second part, <script>alert(1)</script>").await,
        "block:403"
    );
    assert_eq!(body_request("second part, also harmless").await, "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_shows_turnstile_and_agent_series() {
    let _serial = common::serial();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[agents.noop]\ncommand = [\"{}\", \"--socket\", \"{{socket}}\", \"--metrics-interval-ms\", \"100\"]\n[[routes]]\nid = \"default\"\nchain = [[\"noop\"]]\n",
        agent_binary("noop").display()
    );
    let server = Server::start(
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &config,
    );
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    for _ in 0..5 {
        let (v, _, _) =
            common::decision(&call(&conn, &decide("", "GET", "/", "", &[])).await.unwrap());
        assert_eq!(v, "allow");
    }
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = get("/metrics");
        let requests: u64 = body
            .lines()
            .filter(|l| l.starts_with("turnstile_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let calls: u64 = body
            .lines()
            .filter(|l| {
                l.starts_with("turnstile_agent_calls_total{") && l.contains("agent=\"noop\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let agent_series = body.lines().any(|l| {
            !l.starts_with('#') && !l.starts_with("turnstile_") && l.contains("agent_id=\"noop\"")
        });
        if requests >= 5 && calls >= 5 && agent_series {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the requests ({requests}), calls ({calls}) and agent series ({agent_series}):\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_agents_die_with_a_killed_turnstile() {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"noop\"]]\n",
        agent_table("noop", "noop", "")
    );
    let mut server = Server::start("", &config);
    // The supervisor logs "agent started" with the pid before the listening line.
    let mut pid = None;
    for line in server.drain_lines() {
        if line.contains("agent started")
            && let Some(p) = line.split("pid=").nth(1)
        {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            pid = digits.parse::<u32>().ok();
        }
    }
    let pid = pid.expect("the supervisor logged the agent's pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    server.kill(); // SIGKILL: no drain, no supervisor shutdown
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        if stat.is_empty()
            || stat
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent {pid} outlived turnstile: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_engines!(bodyless_post_is_decided_not_timed_out);
async fn bodyless_post_is_decided_not_timed_out(engine: Engine) {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"waf\"]]\n",
        agent_table("waf", "waf", "timeout_ms = 2000")
    );
    let server = Server::start_on(engine, "", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    for _ in 0..3 {
        let t0 = Instant::now();
        let bytes = call(&conn, &decide("", "POST", "/orders", "", &[]))
            .await
            .unwrap();
        let (v, _, timings) = common::decision(&bytes);
        assert_eq!(v, "allow");
        assert_eq!(timings[0].1, "Allowed");
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
    }
}

/// Forwards each connection on `listen` to the agent at `target` after `delay`: the agent's
/// handshake answer arrives late, as from an agent still starting up.
fn slow_link(listen: &std::path::Path, target: std::path::PathBuf, delay: Duration) {
    use std::os::unix::net::{UnixListener, UnixStream};
    let listener = UnixListener::bind(listen).expect("bind slow link");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let target = target.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(agent) = UnixStream::connect(&target) else {
                    return;
                };
                let (mut c2, mut a2) = (
                    client.try_clone().expect("clone"),
                    agent.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut a2);
                });
                let (mut c, mut a) = (client, agent);
                let _ = std::io::copy(&mut a, &mut c);
            });
        }
    });
}

on_both_engines!(first_requests_wait_for_a_handshaking_agent_instead_of_failing);
async fn first_requests_wait_for_a_handshaking_agent_instead_of_failing(engine: Engine) {
    let _serial = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_socket = dir.path().join("noop.sock");
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = KillOnDrop(
        std::process::Command::new(agent_binary("noop"))
            .arg("--socket")
            .arg(&agent_socket)
            .spawn()
            .expect("start noop agent"),
    );
    let t0 = Instant::now();
    while !agent_socket.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "agent socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let front = dir.path().join("slow.sock");
    slow_link(&front, agent_socket, Duration::from_millis(400));
    let config = format!(
        "[agents.slow]\nsocket = \"{}\"\ntimeout_ms = 3000\nfail_mode = \"closed\"\n[[routes]]\nid = \"default\"\nchain = [[\"slow\"]]\n",
        front.display()
    );
    let server = Server::start_on(engine, "", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    // Sent while every connection to the agent is still waiting for its handshake answer.
    let (v, _, timings) =
        common::decision(&call(&conn, &decide("", "GET", "/", "", &[])).await.unwrap());
    assert_eq!(v, "allow", "{timings:?}");
    assert_eq!(timings, vec![("slow".to_string(), "Allowed".to_string())]);
}

on_both_engines!(inline_body_reaches_body_agents);
async fn inline_body_reaches_body_agents(engine: Engine) {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"waf\"]]\n",
        agent_table("waf", "waf", "timeout_ms = 2000")
    );
    let server = Server::start_on(engine, "", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let with_body = |body: &'static [u8]| {
        common::request_frame(|mut r| {
            r.set_correlation_id(5);
            let mut dr = r.init_decide().init_phase().init_request();
            let mut req = dr.reborrow().init_request();
            req.set_method("POST");
            req.set_path("/comments");
            let mut hs = req.init_headers(2);
            hs.reborrow().get(0).set_name(b"content-type");
            hs.reborrow().get(0).set_value(b"text/plain");
            hs.reborrow().get(1).set_name(b"content-length");
            hs.reborrow()
                .get(1)
                .set_value(body.len().to_string().as_bytes());
            let mut b = dr.init_body();
            b.set_data(body);
            b.set_is_last(true);
            b.set_total_bytes(body.len() as u64);
        })
    };
    let (v, rules, _) = common::decision(
        &call(&conn, &with_body(b"hello <script>alert(1)</script>"))
            .await
            .unwrap(),
    );
    assert_eq!(v, "block:403");
    assert!(!rules.is_empty(), "the block names its rule");
    let (v, _, timings) = common::decision(
        &call(&conn, &with_body(b"a harmless comment"))
            .await
            .unwrap(),
    );
    assert_eq!(v, "allow");
    assert_eq!(timings, vec![("waf".to_string(), "Allowed".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_to_the_agents_declared_concurrency() {
    let _serial = common::serial();
    // One connection, one call at a time, 100 ms each: four requests at once must queue, not
    // fail, and the last cannot be answered before four delays have passed.
    let config = format!(
        "[agents.one]\ncommand = [\"{}\", \"--socket\", \"{{socket}}\", \"--delay-ms\", \"100\", \"--max-concurrency\", \"1\"]\nconnections = 1\ntimeout_ms = 3000\n\n[[routes]]\nid = \"default\"\nchain = [[\"one\"]]\n",
        agent_binary("delay").display()
    );
    let server = Server::start("", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let conn = conn.clone();
        set.spawn(async move { call(&conn, &decide("", "GET", "/", "", &[])).await });
    }
    while let Some(r) = set.join_next().await {
        let (v, _, timings) = common::decision(&r.unwrap().unwrap());
        assert_eq!(v, "allow", "{timings:?}");
    }
    // Two shards may each hold one connection: at most two calls at once, so four take at
    // least two rounds of 100 ms (without the limit they would all finish after one).
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_turnstile_tells_its_agents() {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"a\"]]\n",
        agent_table("a", "noop", "")
    );
    let mut server = Server::start("drain_timeout_ms = 2000", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    // A request first, so every shard's connection to the agent is surely up.
    let (v, _, _) = common::decision(&call(&conn, &decide("", "GET", "/", "", &[])).await.unwrap());
    assert_eq!(v, "allow");
    server.signal("TERM");
    let line = server.wait_for_line("draining (deadline", Duration::from_secs(10));
    assert!(line.contains("ms)"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_required_waits_for_its_grace_period() {
    let _serial = common::serial();
    let mut server = Server::start_on(Engine::Turnstile, "", &chaos_config("closed"));
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let (v, _, _) = chaos(&conn, "restart:800").await;
    assert_eq!(v, "allow");
    server.wait_for_line("asked for a restart (in 800 ms)", Duration::from_secs(5));
    let asked = Instant::now();
    // Within the grace period the agent still serves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (v, outcome, _) = chaos(&conn, "allow").await;
    assert_eq!((v.as_str(), outcome.as_str()), ("allow", "Allowed"));
    server.wait_for_line("restart requested", Duration::from_secs(10));
    assert!(
        asked.elapsed() >= Duration::from_millis(550),
        "restarted {:?} after the request, before its 800 ms grace",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_call_gets_its_body_only_after_resume() {
    let _serial = common::serial();
    // A longer timeout than `chaos_config`'s 300 ms: the pause below must not run into it.
    let config = chaos_config("closed").replace("timeout_ms = 300", "timeout_ms = 3000");
    let server = Server::start_on(Engine::Turnstile, "", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    // Headers first (the agent pauses this request for 400 ms), the body 100 ms later (time for
    // the pause to reach turnstile even on a loaded machine): it must wait in turnstile until the
    // agent resumes, or the agent blocks with 409.
    let first = common::request_frame(|mut r| {
        r.set_correlation_id(9);
        let mut dr = r.init_decide().init_phase().init_request();
        let mut req = dr.reborrow().init_request();
        req.set_method("POST");
        req.set_path("/upload");
        let mut h = req.init_headers(1).get(0);
        h.set_name(b"x-chaos");
        h.set_value(b"pause:400");
        dr.init_body().set_is_last(false);
    });
    let next = common::request_frame(|mut r| {
        r.set_correlation_id(9);
        let mut b = r.init_decide().init_phase().init_request_body();
        b.set_chunk_index(1);
        b.set_data(b"the whole body");
        b.set_is_last(true);
    });
    let t0 = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    send.write_all(&next).await.unwrap();
    send.finish().unwrap();
    let (v, _, timings) = common::decision(&recv.read_to_end(1 << 20).await.unwrap());
    assert_eq!(v, "allow", "{timings:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t0.elapsed()
    );
}
