//! WASM agents through the real binary: alone, in a chain mixed with UDS agents, and replaced by
//! a reload while requests keep flowing.

// Each test holds `common::serial()` for its whole run, across awaits, on purpose: it keeps the
// servers of different tests from competing for the machine's two cores.
#![allow(clippy::await_holding_lock)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, agent_binary, call, client_endpoint, decide, wasm_agent};

fn wasm_table(id: &str, module: &str, extra: &str) -> String {
    format!(
        "[agents.{id}]\nwasm = \"{}\"\n{extra}\n",
        wasm_agent(module).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_waf_blocks_and_allows() {
    let _serial = common::serial();
    let config = format!(
        "{}\n[[routes]]\nid = \"default\"\nchain = [[\"wafw\"]]\n",
        wasm_table("wafw", "waf", "timeout_ms = 1000")
    );
    let server = Server::start("", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let bytes = call(&conn, &decide("", "GET", "/ok", "", &[]))
        .await
        .unwrap();
    let (v, _, timings) = common::decision(&bytes);
    assert_eq!(v, "allow");
    assert_eq!(timings, vec![("wafw".to_string(), "Allowed".to_string())]);
    // The module's own time shows (the waf scans path, query and headers: never 0 µs in a
    // debug build).
    assert!(
        common::timing_us(&bytes)[0] > 0,
        "{:?}",
        common::timing_us(&bytes)
    );
    let (v, rules, _) = common::decision(
        &call(&conn, &decide("", "GET", "/s", "q=1 union select 2", &[]))
            .await
            .unwrap(),
    );
    assert_eq!(v, "block:403");
    assert!(rules.contains(&"942100".to_string()), "{rules:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_chain_of_uds_and_wasm_agents() {
    let _serial = common::serial();
    let config = format!(
        "[agents.noop]\ncommand = [\"{}\", \"--socket\", \"{{socket}}\"]\n{}{}\n[[routes]]\nid = \"default\"\nchain = [[\"noop\", \"rewrite\"], [\"wafw\"]]\n",
        agent_binary("noop").display(),
        wasm_table(
            "rewrite",
            "header_rewrite",
            "config = '''\n[[request]]\nop = \"set\"\nname = \"x-from-wasm\"\nvalue = \"yes\"\n'''"
        ),
        wasm_table("wafw", "waf", ""),
    );
    let server = Server::start("", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let bytes = call(&conn, &decide("", "GET", "/ok", "", &[]))
        .await
        .unwrap();
    let (v, _, timings) = common::decision(&bytes);
    assert_eq!(v, "allow");
    let names: Vec<&str> = timings.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, vec!["noop", "rewrite", "wafw"]);
    let (v, _, _) = common::decision(
        &call(
            &conn,
            &decide("", "GET", "/x", "a=<script>alert(1)</script>", &[]),
        )
        .await
        .unwrap(),
    );
    assert_eq!(v, "block:403");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_module_under_load() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("agent.wasm");
    std::fs::copy(wasm_agent("noop"), &module).unwrap();
    wasm_agent("waf");
    let config = format!(
        "[agents.swap]\nwasm = \"{}\"\n[[routes]]\nid = \"default\"\nchain = [[\"swap\"]]\n",
        module.display()
    );
    let mut server = Server::start("", &config);
    let ep = client_endpoint();
    let conn = server.connect(&ep).await;
    let attack = decide("", "GET", "/s", "q=1 union select 2", &[]);
    assert_eq!(
        common::decision(&call(&conn, &attack).await.unwrap()).0,
        "allow"
    );
    // Requests keep flowing while the module is replaced; every one gets a verdict.
    let load = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let bytes = call(&conn, &decide("", "GET", "/ok", "", &[]))
                    .await
                    .unwrap();
                assert_eq!(common::decision(&bytes).0, "allow");
                answered += 1;
            }
            answered
        })
    };
    std::fs::copy(wasm_agent("waf"), &module).unwrap();
    server.signal("HUP");
    server.wait_for_line("new modules for 1 WASM agent", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if common::decision(&call(&conn, &attack).await.unwrap()).0 == "block:403" {
            break;
        }
        assert!(Instant::now() < deadline, "the new module never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(load.await.unwrap() > 10);
}
