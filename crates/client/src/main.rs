//! `turnstile-call`: sends one request to a turnstile server over QUIC (pinning the server's
//! certificate) and prints the answer as JSON. Meant for trying turnstile by hand and for
//! scripts; it is not a load generator (see `turnstile-load`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use turnstile_wire::turnstile_capnp::{audit, header_op, request, response, verdict};
use turnstile_wire::{FrameWriter, Message};

/// Largest answer read.
const RESPONSE_BYTES_MAX: usize = 8 << 20;

/// Send one request to turnstile and print the answer as JSON.
#[derive(Parser, Debug)]
#[command(name = "turnstile-call", version, about)]
struct Cli {
    /// Server address (UDP).
    #[arg(long, default_value = "127.0.0.1:4433")]
    addr: SocketAddr,
    /// The server's certificate (PEM) to pin. Default: the development certificate in the
    /// default state directory.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo: the server sends the bytes back.
    Echo {
        /// Text to send.
        text: String,
    },
    /// Ask for a decision on an HTTP request.
    Decide {
        /// Route id ("" = default).
        #[arg(long, default_value = "")]
        route: String,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path (without the query).
        #[arg(long, default_value = "/")]
        path: String,
        /// Query string (without '?').
        #[arg(long, default_value = "")]
        query: String,
        /// Host / :authority.
        #[arg(long, default_value = "example.com")]
        authority: String,
        /// Client address as the proxy saw it.
        #[arg(long, default_value = "203.0.113.10:50000")]
        client: String,
        /// A header, as `name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Request body.
        #[arg(long)]
        body: Option<String>,
    },
    /// The server's version and limits.
    Hello,
    /// Which shard serves this connection, and its counters.
    Status,
}

fn default_cert() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".local/state"))
                .filter(|p| p.is_absolute())
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("turnstile/dev-cert.pem")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("turnstile-call: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("turnstile-call: {e}");
            ExitCode::FAILURE
        }
    }
}

fn frame(command: &Command) -> Result<Vec<u8>, String> {
    let mut scratch = vec![0u8; turnstile_wire::limits::WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer
        .write::<request::Owned, _>(&mut out, |mut r| {
            r.set_correlation_id(1);
            match command {
                Command::Echo { text } => r.set_echo(text.as_bytes()),
                Command::Hello => r.init_hello().init_versions(1).set(0, 1),
                Command::Status => {
                    r.init_status();
                }
                Command::Decide {
                    route,
                    method,
                    path,
                    query,
                    authority,
                    client,
                    headers,
                    body,
                } => {
                    let mut d = r.init_decide();
                    d.set_route_id(route.as_str());
                    let mut dr = d.init_phase().init_request();
                    let mut req = dr.reborrow().init_request();
                    req.set_method(method.as_str());
                    req.set_path(path.as_str());
                    req.set_query(query.as_str());
                    req.set_authority(authority.as_str());
                    req.set_client_address(client.as_str());
                    req.set_scheme("https");
                    req.set_protocol("HTTP/2");
                    let mut hs = req.init_headers(headers.len() as u32);
                    for (i, h) in headers.iter().enumerate() {
                        let (n, v) = h.split_once(':').unwrap_or((h.as_str(), ""));
                        let mut hb = hs.reborrow().get(i as u32);
                        hb.set_name(n.trim().to_ascii_lowercase().as_bytes());
                        hb.set_value(v.trim().as_bytes());
                    }
                    if let Some(b) = body {
                        let mut c = dr.init_body();
                        c.set_data(b.as_bytes());
                        c.set_is_last(true);
                        c.set_total_bytes(b.len() as u64);
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| format!("cannot encode the request: {e}"))?;
    Ok(out)
}

async fn run(cli: Cli) -> Result<Value, String> {
    let cert_path = cli.cert.clone().unwrap_or_else(default_cert);
    let pem = std::fs::read(&cert_path).map_err(|e| {
        format!(
            "cannot read the server certificate {}: {e} (pass --cert; turnstile prints its path at start)",
            cert_path.display()
        )
    })?;
    let cert = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: not a PEM certificate: {e}", cert_path.display()))?;
    let crypto = turnstile_config::dev_client_crypto(&cert).map_err(|e| e.to_string())?;
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| e.to_string())?;
    let config = quinn::ClientConfig::new(Arc::new(quic));
    let bind: SocketAddr = if cli.addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let bytes = frame(&cli.command)?;
    let timeout = Duration::from_millis(cli.timeout_ms);
    let t0 = Instant::now();
    let answer = tokio::time::timeout(timeout, async {
        let conn = endpoint
            .connect_with(config, cli.addr, "localhost")
            .map_err(|e| format!("cannot connect: {e}"))?
            .await
            .map_err(|e| format!("handshake with {} failed: {e}", cli.addr))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&bytes).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let answer = recv
            .read_to_end(RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        conn.close(0u32.into(), b"done");
        Ok::<_, String>(answer)
    })
    .await
    .map_err(|_| format!("no answer within {} ms", cli.timeout_ms))??;
    let elapsed_us = t0.elapsed().as_micros() as u64;
    endpoint.wait_idle().await;
    let mut v = describe(&answer)?;
    if let Value::Object(m) = &mut v {
        m.insert(
            "round_trip_us_including_handshake".into(),
            json!(elapsed_us),
        );
    }
    Ok(v)
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> String {
    t.ok().and_then(|t| t.to_string().ok()).unwrap_or_default()
}

fn ops(list: capnp::Result<capnp::struct_list::Reader<'_, header_op::Owned>>) -> Value {
    let Ok(list) = list else { return json!([]) };
    list.iter()
        .map(|op| match op.which() {
            Ok(header_op::Add(Ok(h))) => json!({"add": [String::from_utf8_lossy(h.get_name().unwrap_or_default()), String::from_utf8_lossy(h.get_value().unwrap_or_default())]}),
            Ok(header_op::Set(Ok(h))) => json!({"set": [String::from_utf8_lossy(h.get_name().unwrap_or_default()), String::from_utf8_lossy(h.get_value().unwrap_or_default())]}),
            Ok(header_op::Remove(Ok(n))) => json!({"remove": String::from_utf8_lossy(n)}),
            _ => json!("?"),
        })
        .collect()
}

fn describe(bytes: &[u8]) -> Result<Value, String> {
    let msg = Message::from_frame_bytes(bytes).map_err(|e| format!("bad answer: {e}"))?;
    let r = msg
        .root::<response::Owned>()
        .map_err(|e| format!("bad answer: {e}"))?;
    let which = r.which().map_err(|e| format!("bad answer: {e}"))?;
    let err = |e: capnp::Error| format!("bad answer: {e}");
    Ok(match which {
        response::Echo(e) => json!({"echo": String::from_utf8_lossy(e.map_err(err)?)}),
        response::HelloAck(h) => {
            let h = h.map_err(err)?;
            json!({"version": h.get_version(), "server": text(h.get_server_name()), "frame_bytes_max": h.get_frame_bytes_max(), "request_bytes_max": h.get_request_bytes_max(), "streams_max": h.get_streams_max()})
        }
        response::StatusEvent(s) => {
            let s = s.map_err(err)?;
            json!({"shard": s.get_shard(), "connections": s.get_connections(), "streams": s.get_streams(), "requests_total": s.get_requests_total()})
        }
        response::Error(e) => {
            let e = e.map_err(err)?;
            json!({"error": format!("{:?}", e.get_code().map_err(|e| format!("bad answer: {e}"))?), "message": text(e.get_message())})
        }
        response::Decision(d) => {
            let d = d.map_err(err)?;
            let verdict = match d
                .get_verdict()
                .map_err(err)?
                .which()
                .map_err(|e| format!("bad answer: {e}"))?
            {
                verdict::Allow(()) => json!("allow"),
                verdict::Block(b) => {
                    let b = b.map_err(err)?;
                    json!({"block": {"status": b.get_status(), "body": String::from_utf8_lossy(b.get_body().unwrap_or_default())}})
                }
                verdict::Redirect(rd) => {
                    let rd = rd.map_err(err)?;
                    json!({"redirect": {"location": text(rd.get_location()), "status": rd.get_status()}})
                }
            };
            let a = d.get_audit().map_err(err)?;
            let list = |l: capnp::Result<capnp::text_list::Reader<'_>>| -> Value {
                l.map(|l| l.iter().map(|t| json!(text(t))).collect())
                    .unwrap_or(json!([]))
            };
            let confidence = match a.get_confidence().which() {
                Ok(audit::confidence::Value(v)) => json!(v),
                _ => Value::Null,
            };
            let timings: Value = d
                .get_timings()
                .map(|t| {
                    t.iter()
                        .map(|t| json!({"agent": text(t.get_agent_id()), "outcome": t.get_outcome().map(|o| format!("{o:?}")).unwrap_or_else(|_| "unknown".into()), "elapsed_us": t.get_elapsed_us()}))
                        .collect()
                })
                .unwrap_or(json!([]));
            json!({
                "verdict": verdict,
                "request_headers": ops(d.get_request_headers()),
                "response_headers": ops(d.get_response_headers()),
                "audit": {"tags": list(a.get_tags()), "rule_ids": list(a.get_rule_ids()), "reason_codes": list(a.get_reason_codes()), "confidence": confidence},
                "timings": timings,
            })
        }
        _ => json!({"other": "a response member this tool does not print"}),
    })
}
