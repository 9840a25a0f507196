//! Shared fixtures for turnstile's criterion micro-benchmarks (`benches/benches/*.rs`).
//!
//! The fixtures are realistic messages: an HTTP request of 20 headers (about 1 KB), encoded with
//! Cap'n Proto through `turnstile-wire`, and the same data as the JSON a conventional agent
//! protocol sends (owned strings, as Agent Protocol v1 and most peers do). [`dispatch_fixture`]
//! holds the three-agent dispatch plan.
#![forbid(unsafe_code)]

pub mod dispatch_fixture;

use serde::{Deserialize, Serialize};
use turnstile_wire::turnstile_capnp::{http_request, proxy_to_agent};
use turnstile_wire::{FrameWriter, Message, WireError};

/// The 20 headers of a typical browser request through a reverse proxy (~1 KB in all).
pub const HEADERS: [(&str, &str); 20] = [
    ("host", "api.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    (
        "cookie",
        "session=3f9a8c7e1b2d4f6a8c0e2b4d6f8a0c2e; theme=dark; _ga=GA1.2.1234567890.1700000000",
    ),
    (
        "referer",
        "https://www.example.com/products/category/widgets?page=2",
    ),
    ("x-forwarded-for", "203.0.113.195, 198.51.100.17"),
    ("x-forwarded-proto", "https"),
    ("x-request-id", "7f3c9a2e-4b1d-4e8f-9a6c-2d5e8f1a3b7c"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("content-type", "application/json; charset=utf-8"),
    ("content-length", "512"),
    (
        "authorization",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
    ),
    ("cache-control", "no-cache"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "same-origin"),
    (
        "sec-ch-ua",
        "\"Chromium\";v=\"120\", \"Not?A_Brand\";v=\"8\"",
    ),
    ("x-api-key", "k_live_51HqLyjWDarjtT1zdp7dc"),
];

/// The JSON shape of a request-headers event, as a serde_json agent protocol sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonRequestHeaders {
    /// Request correlation id.
    pub correlation_id: u64,
    /// Request id for logs.
    pub request_id: String,
    /// Client address "ip:port".
    pub client_address: String,
    /// Route id.
    pub route_id: String,
    /// HTTP method.
    pub method: String,
    /// Authority.
    pub authority: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers as (name, value) pairs.
    pub headers: Vec<(String, String)>,
}

/// The JSON fixture.
pub fn json_fixture() -> JsonRequestHeaders {
    JsonRequestHeaders {
        correlation_id: 42,
        request_id: "7f3c9a2e-4b1d-4e8f-9a6c-2d5e8f1a3b7c".into(),
        client_address: "203.0.113.195:51234".into(),
        route_id: "default".into(),
        method: "POST".into(),
        authority: "api.example.com".into(),
        path: "/v1/orders/12345/items".into(),
        query: "expand=price&currency=EUR".into(),
        headers: HEADERS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

/// Encodes the request-headers event as a framed `ProxyToAgent` into `out` (cleared first).
pub fn capnp_encode(writer: &mut FrameWriter<'_>, out: &mut Vec<u8>) -> Result<usize, WireError> {
    out.clear();
    writer.write::<proxy_to_agent::Owned, _>(out, |mut m| {
        m.set_correlation_id(42);
        let mut e = m.init_request_headers();
        let mut md = e.reborrow().init_metadata();
        md.set_request_id("7f3c9a2e-4b1d-4e8f-9a6c-2d5e8f1a3b7c");
        md.set_client_ip(&[203, 0, 113, 195]);
        md.set_client_port(51234);
        md.set_route_id("default");
        fill_request(e.init_request());
        Ok(())
    })
}

fn fill_request(mut r: http_request::Builder<'_>) {
    r.set_method("POST");
    r.set_authority("api.example.com");
    r.set_path("/v1/orders/12345/items");
    r.set_query("expand=price&currency=EUR");
    let mut headers = r.init_headers(HEADERS.len() as u32);
    for (i, (n, v)) in HEADERS.iter().enumerate() {
        let mut h = headers.reborrow().get(i as u32);
        h.set_name(n.as_bytes());
        h.set_value(v.as_bytes());
    }
}

/// Decodes a framed request-headers event in place and touches every header byte length, the way
/// an agent reads it. Returns a checksum so the work cannot be optimised away.
pub fn capnp_decode(frame: &[u8]) -> Result<usize, WireError> {
    let msg = Message::from_frame_bytes(frame)?;
    let root = msg.root::<proxy_to_agent::Owned>()?;
    let proxy_to_agent::RequestHeaders(event) = root.which()? else {
        return Err(WireError::BadMessage(capnp::Error::failed(
            "not request headers".into(),
        )));
    };
    let event = event?;
    let request = event.get_request()?;
    let mut sum = request.get_method()?.len() + request.get_path()?.len();
    sum += request.get_authority()?.len() + request.get_query()?.len();
    sum += event.get_metadata()?.get_request_id()?.len();
    for h in request.get_headers()? {
        sum += h.get_name()?.len() + h.get_value()?.len();
    }
    Ok(sum)
}

/// Encodes the JSON fixture into `out` (cleared first).
pub fn json_encode(value: &JsonRequestHeaders, out: &mut Vec<u8>) -> serde_json::Result<usize> {
    out.clear();
    serde_json::to_writer(&mut *out, value)?;
    Ok(out.len())
}

/// Decodes the JSON fixture and touches the same fields as [`capnp_decode`].
pub fn json_decode(bytes: &[u8]) -> serde_json::Result<usize> {
    let v: JsonRequestHeaders = serde_json::from_slice(bytes)?;
    let mut sum = v.method.len() + v.path.len() + v.authority.len() + v.query.len();
    sum += v.request_id.len();
    for (n, val) in &v.headers {
        sum += n.len() + val.len();
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_agree() {
        let mut scratch = vec![0u8; turnstile_wire::limits::WRITER_SCRATCH_BYTES];
        let mut writer = FrameWriter::new(&mut scratch);
        let mut capnp = Vec::new();
        capnp_encode(&mut writer, &mut capnp).unwrap();
        let mut json = Vec::new();
        json_encode(&json_fixture(), &mut json).unwrap();
        assert_eq!(capnp_decode(&capnp).unwrap(), json_decode(&json).unwrap());
        let header_bytes: usize = HEADERS.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(
            (900..1400).contains(&header_bytes),
            "about 1 KB of headers: {header_bytes}"
        );
    }
}
