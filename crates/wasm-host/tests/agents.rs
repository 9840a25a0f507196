//! The example agents (built for wasm32 by the SDK) through the host: noop, waf, header-rewrite,
//! handshake capabilities, configuration (refused and accepted), reload between calls.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{
    BROWSER_HEADERS, Req, answer, body_chunk, cancel, engine, example, example_module,
    request_headers,
};
use turnstile_wasm_host::{WasmAgent, WasmError, WasmLimits};
use turnstile_wire::turnstile_capnp::EventType;

fn browser(cid: u64, path: &str, query: &str) -> Vec<u8> {
    request_headers(&Req {
        cid,
        method: "GET",
        path,
        query,
        headers: BROWSER_HEADERS,
    })
}

#[test]
fn noop_allows_and_declares_itself() {
    let module = example_module("noop", WasmLimits::default());
    let (mut agent, caps) = WasmAgent::new(engine(), module, b"").expect("start");
    assert_eq!(caps.agent_id, "noop");
    assert!(caps.events.contains(EventType::RequestHeaders));
    assert!(!caps.events.contains(EventType::RequestBody));
    let mut reply = Vec::new();
    for cid in 1..=100 {
        agent
            .call(&browser(cid, "/api/v1/items/42", "page=2"), &mut reply)
            .unwrap();
        let a = answer(&reply);
        assert_eq!((a.cid, a.verdict.as_str()), (cid, "allow"));
    }
    // Cancel gets no reply and is no fault.
    agent.call(&cancel(7), &mut reply).unwrap();
    assert!(reply.is_empty());
    assert_eq!(agent.stats().faults, 0);
    assert_eq!(agent.instance_count(), 2, "serving + one spare by default");
}

#[test]
fn waf_blocks_with_the_uds_rules() {
    let t = Instant::now();
    let module = example_module("waf", WasmLimits::default());
    eprintln!("waf.wasm compiled in {:?}", t.elapsed());
    let (mut agent, caps) = WasmAgent::new(engine(), module, b"").expect("start");
    assert_eq!(caps.agent_id, "waf");
    assert!(caps.events.contains(EventType::RequestBody));
    assert_eq!(caps.max_body_bytes, 64 * 1024);
    let mut reply = Vec::new();
    let mut decide = |payload: Vec<u8>| {
        agent.call(&payload, &mut reply).expect("call");
        answer(&reply)
    };
    let a = decide(browser(1, "/api/v1/items/42", "page=2&sort=name"));
    assert_eq!(a.verdict, "allow");
    let a = decide(browser(2, "/search", "q=1%20UNION%20ALL%20SELECT+password"));
    assert_eq!(a.verdict, "block 403");
    assert_eq!(a.rule_ids, ["942100"]);
    assert_eq!(a.tags, ["waf"]);
    assert_eq!(a.block_body, "blocked by waf: 942100\n");
    let a = decide(browser(3, "/static/%2e%2e/%2e%2e/etc/passwd", ""));
    assert_eq!(a.rule_ids, ["930100"]);
    let a = decide(request_headers(&Req {
        cid: 4,
        method: "GET",
        path: "/",
        query: "",
        headers: &[("user-agent", "sqlmap/1.7")],
    }));
    assert_eq!(a.rule_ids, ["913100"]);
    // A body: headers ask for more, the chunk decides.
    let a = decide(request_headers(&Req {
        cid: 5,
        method: "POST",
        path: "/comment",
        query: "",
        headers: &[("content-length", "25")],
    }));
    assert!(a.need_more, "{a:?}");
    let a = decide(body_chunk(5, b"text=<script>alert(1)</script>", true));
    assert_eq!(
        (a.cid, a.rule_ids.as_slice()),
        (5, ["941100".to_owned()].as_slice())
    );
    // A chunk it holds nothing for is allowed, as the UDS waf does.
    assert_eq!(decide(body_chunk(6, b"' or 1=1", true)).verdict, "allow");
}

#[test]
fn waf_configuration_refused_and_reconfigured() {
    let module = example_module("waf", WasmLimits::default());
    let err = WasmAgent::new(
        engine(),
        module.clone(),
        b"[[rules]]\nid = \"1\"\npattern = \"(\"",
    )
    .unwrap_err();
    assert!(
        matches!(err, WasmError::Config { ref field, .. } if field == "rules[0].pattern"),
        "{err}"
    );
    let cfg = b"inspect_body = false\nblock_status = 406\n[[rules]]\nid = \"100001\"\npattern = \"^/internal/\"\ntargets = [\"path\"]";
    let (mut agent, caps) = WasmAgent::new(engine(), module, cfg).unwrap();
    assert!(!caps.events.contains(EventType::RequestBody));
    let mut reply = Vec::new();
    agent
        .call(&browser(1, "/internal/x", ""), &mut reply)
        .unwrap();
    let a = answer(&reply);
    assert_eq!(
        (a.verdict.as_str(), a.rule_ids.as_slice()),
        ("block 406", ["100001".to_owned()].as_slice())
    );
    // A refused reconfiguration keeps the old one; an accepted one applies to later calls.
    assert!(agent.configure(b"block_status = 42").is_err());
    agent
        .call(&browser(2, "/internal/x", ""), &mut reply)
        .unwrap();
    assert_eq!(answer(&reply).verdict, "block 406");
    agent.configure(b"disabled_rules = [\"942100\"]").unwrap();
    agent
        .call(&browser(3, "/internal/x", "q=union select 1"), &mut reply)
        .unwrap();
    assert_eq!(answer(&reply).verdict, "allow");
    // The spare was reconfigured too: after a fault it serves the same configuration.
    assert_eq!(agent.instance_count(), 2);
}

#[test]
fn header_rewrite_applies_its_configuration() {
    let module = example_module("header_rewrite", WasmLimits::default());
    let cfg = br#"{"path_prefixes": ["/api/"],
        "request": [{"op": "set", "name": "x-env", "value": "prod"},
                    {"op": "add", "name": "x-trace", "value": "1"},
                    {"op": "remove", "name": "cookie"}],
        "response": [{"op": "remove", "name": "server"}]}"#;
    let (mut agent, caps) = WasmAgent::new(engine(), module, cfg).unwrap();
    assert_eq!(caps.interest.path_prefixes, ["/api/"]);
    let mut reply = Vec::new();
    agent
        .call(&browser(9, "/api/v1/items", ""), &mut reply)
        .unwrap();
    let a = answer(&reply);
    assert_eq!(a.verdict, "allow");
    assert_eq!(
        a.ops,
        [
            "set x-env: prod",
            "add x-trace: 1",
            "remove cookie",
            "response remove server"
        ]
    );
    let err = agent
        .configure(b"[[request]]\nop = \"add\"\nname = \"bad name\"")
        .unwrap_err();
    assert!(
        matches!(err, WasmError::Config { ref field, .. } if field == "request[0].name"),
        "{err}"
    );
}

#[test]
fn reload_between_calls_serves_the_new_module() {
    let noop = example_module("noop", WasmLimits::default());
    let rewrite = example_module("header_rewrite", WasmLimits::default());
    let (mut agent, _) = WasmAgent::new(engine(), noop, b"").unwrap();
    let mut reply = Vec::new();
    agent.call(&browser(1, "/", ""), &mut reply).unwrap();
    assert!(answer(&reply).ops.is_empty());
    // A bad configuration for the new module: the old one keeps serving.
    let bad = b"[[request]]\nop = \"nope\"\nname = \"x\"";
    assert!(agent.replace_module(rewrite.clone(), bad).is_err());
    assert_eq!(agent.module().id(), "noop");
    agent.call(&browser(2, "/", ""), &mut reply).unwrap();
    assert_eq!(answer(&reply).verdict, "allow");
    // The swap: the next call runs on the new module.
    let caps = agent
        .replace_module(
            rewrite,
            b"[[request]]\nop = \"set\"\nname = \"x-v\"\nvalue = \"2\"",
        )
        .unwrap();
    assert_eq!(caps.agent_id, "header-rewrite");
    agent.call(&browser(3, "/", ""), &mut reply).unwrap();
    assert_eq!(answer(&reply).ops, ["set x-v: 2"]);
    assert!(agent.instance_count() <= 4);
    assert_eq!(agent.stats().faults, 0);
}

#[test]
fn one_module_serves_many_shards() {
    let module = example_module("noop", WasmLimits::default());
    let threads: Vec<_> = (0..2u16)
        .map(|shard| {
            let module = module.clone();
            std::thread::spawn(move || {
                let (mut agent, _) = WasmAgent::new_on_shard(engine(), module, b"", shard).unwrap();
                let mut reply = Vec::new();
                for cid in 1..=50 {
                    agent.call(&browser(cid, "/", ""), &mut reply).unwrap();
                }
                agent.stats().calls
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 50);
    }
    assert!(!example("noop").is_empty());
}
